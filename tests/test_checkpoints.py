"""Checkpoints as people publish them load exactly as PyTorch loads them; wrong ones say what differs in one line."""
from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from fixtures.loading import logits, one_line
from robusteval.errors import RobustEvalError
from robusteval.models.archs import build_arch
from robusteval.models.checkpoint import extract_state_dict, strip_prefixes
from robusteval.models.loading import load_model


def _trained_like(seed: int) -> nn.Module:
    """A ResNet-20 with non-trivial BatchNorm statistics, so a dropped buffer would change the logits."""
    torch.manual_seed(seed)
    model = build_arch("cifar_resnet20", 10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))




def _akamaster_keys() -> dict[str, tuple[int, ...]]:
    """Key names and shapes of akamaster/pytorch_resnet_cifar10's resnet20 (its resnet.py, ported literally):
    conv1/bn1, layer1-3 of 3 BasicBlocks (conv1, bn1, conv2, bn2; option-A shortcuts hold no weights), linear."""
    bn = lambda p, c: {f"{p}.weight": (c,), f"{p}.bias": (c,), f"{p}.running_mean": (c,), f"{p}.running_var": (c,)}  # noqa: E731
    keys = {"conv1.weight": (16, 3, 3, 3), **bn("bn1", 16)}
    in_planes = 16
    for stage, planes in enumerate((16, 32, 64), start=1):
        for block in range(3):
            p = f"layer{stage}.{block}"
            keys.update({f"{p}.conv1.weight": (planes, in_planes, 3, 3), **bn(f"{p}.bn1", planes),
                         f"{p}.conv2.weight": (planes, planes, 3, 3), **bn(f"{p}.bn2", planes)})
            in_planes = planes
    keys.update({"linear.weight": (10, 64), "linear.bias": (10,)})
    return keys


def _old_checkpoint(model: nn.Module, *, pytorch: str) -> dict:
    """What akamaster's trainer.py saved with PyTorch 0.3 / 0.4.0: a DataParallel state_dict (``module.``
    keys) without ``num_batches_tracked``, nested beside metadata, in the legacy (non-zip) format.
    0.3 state_dicts carry no ``_metadata``; 0.4.0 ones record BatchNorm at version 1."""
    state = nn.DataParallel(model).state_dict()
    for key in [k for k in state if k.endswith("num_batches_tracked")]:
        del state[key]
    if pytorch == "0.3":
        del state._metadata
    else:
        for name, module in nn.DataParallel(model).named_modules():
            if isinstance(module, nn.BatchNorm2d):
                state._metadata[name]["version"] = 1
    return {"epoch": 200, "state_dict": state, "best_prec1": 91.73}


def test_cifar_resnet20_has_the_key_names_and_shapes_of_the_public_checkpoints() -> None:
    ours = {k: tuple(v.shape) for k, v in build_arch("cifar_resnet20", 10).state_dict().items()
            if not k.endswith("num_batches_tracked")}
    assert ours == _akamaster_keys()


@pytest.mark.parametrize("pytorch", ["0.3", "0.4.0"])
def test_old_public_checkpoint_gives_the_logits_pytorch_gives(pytorch: str, x: torch.Tensor, tmp_path: Path) -> None:
    path = tmp_path / "resnet20-12fca82f.th"
    torch.save(_old_checkpoint(_trained_like(0), pytorch=pytorch), path, _use_new_zipfile_serialization=False)
    # what akamaster's README and trainer.py do: wrap in DataParallel, load the nested state_dict strictly
    reference = nn.DataParallel(build_arch("cifar_resnet20", 10))
    reference.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    loaded = load_model(path, arch="cifar_resnet20", num_classes=10)
    assert torch.equal(logits(loaded, x), logits(reference.module.eval(), x))
    assert all(int(b) == 0 for k, b in loaded.state_dict().items() if k.endswith("num_batches_tracked"))


def test_a_current_checkpoint_missing_buffers_is_refused_as_pytorch_refuses_it(tmp_path: Path) -> None:
    """BatchNorm version 2 (PyTorch >= 0.4.1) must carry num_batches_tracked: PyTorch's tolerance, no wider."""
    state = _trained_like(0).state_dict()
    del state["layer2.1.bn2.num_batches_tracked"]
    with pytest.raises(RuntimeError, match="num_batches_tracked"):
        build_arch("cifar_resnet20", 10).load_state_dict(state)
    path = tmp_path / "model.pt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(RobustEvalError) as exc:
        load_model(path, arch="cifar_resnet20")
    assert one_line(exc).endswith("1 missing key: 'layer2.1.bn2.num_batches_tracked'")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda sd: {("fc" + k[6:] if k.startswith("linear") else k): v for k, v in sd.items()},
         "2 missing keys: 'linear.weight' (closest in the file: 'fc.weight'), 'linear.bias' (closest in the file: "
         "'fc.bias'); 2 unexpected keys: 'fc.weight' (closest expected: 'linear.weight'), 'fc.bias' (closest "
         "expected: 'linear.bias')"),
        (lambda sd: {**sd, "linear.weight": torch.zeros(100, 64), "linear.bias": torch.zeros(100)},
         "2 shape mismatches: 'linear.weight' is [100, 64] in the file, [10, 64] in the model, 'linear.bias' is "
         "[100] in the file, [10] in the model"),
        (lambda sd: {**sd, "layer4.0.conv1.weight": torch.zeros(1)},
         "1 unexpected key: 'layer4.0.conv1.weight'"),
        (lambda sd: {k: v for k, v in sd.items() if not k.startswith("layer3.2.")},
         "10 missing keys: 'layer3.2.conv1.weight', 'layer3.2.bn1.weight', 'layer3.2.bn1.bias', ... (+7 more)"),
    ],
    ids=["renamed", "shapes", "unexpected", "missing"],
)
def test_wrong_checkpoints_say_what_differs_in_one_line(edit, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "wrong.pt"
    torch.save({"state_dict": edit(_trained_like(0).state_dict()), "epoch": 3}, path)
    with pytest.raises(RobustEvalError) as exc:
        load_model(path, arch="cifar_resnet20")
    assert one_line(exc) == f"{path} does not fit architecture 'cifar_resnet20' with 10 classes: {expected}"


@pytest.mark.parametrize("regular", ["state_dict", "model"])
def test_ema_copy_is_named_and_selectable(regular: str, x: torch.Tensor, tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    weights, ema = _trained_like(0), _trained_like(1)
    path = tmp_path / "ckpt.pth"
    ema_key = {"state_dict": "state_dict_ema", "model": "model_ema"}[regular]
    torch.save({regular: weights.state_dict(), ema_key: ema.state_dict(), "optimizer": {"lr": 0.1}}, path)
    with caplog.at_level(logging.WARNING):
        loaded = load_model(path, arch="cifar_resnet20")
    assert torch.equal(logits(loaded, x), logits(weights, x))
    assert f"under {regular!r} and an EMA copy under {ema_key!r}; using {regular!r}" in caplog.text
    assert f"--checkpoint-key {ema_key}" in caplog.text
    chosen = load_model(path, arch="cifar_resnet20", checkpoint_key=ema_key)
    assert torch.equal(logits(chosen, x), logits(ema, x))


def test_ema_only_checkpoint_says_so(x: torch.Tensor, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ema = _trained_like(1)
    path = tmp_path / "ckpt.pth"
    torch.save({"ema": _prefixed(ema.state_dict(), "module."), "step": 1000}, path)
    with caplog.at_level(logging.WARNING):
        loaded = load_model(path, arch="cifar_resnet20")
    assert torch.equal(logits(loaded, x), logits(ema, x))
    assert "holds only an EMA copy of the weights (under 'ema'); using it" in caplog.text


def _prefixed(state: dict[str, torch.Tensor], prefix: str) -> OrderedDict[str, torch.Tensor]:
    return OrderedDict((prefix + k, v) for k, v in state.items())


def test_non_tensor_entries_inside_the_weights_are_metadata(x: torch.Tensor, tmp_path: Path) -> None:
    model = _trained_like(0)
    path = tmp_path / "ckpt.pt"
    torch.save({"net": {**model.state_dict(), "epoch": 7, "arch": "resnet20"}, "acc": 0.9}, path)
    assert torch.equal(logits(load_model(path, arch="cifar_resnet20"), x), logits(model, x))


def test_checkpoint_key_errors_list_the_entries(tmp_path: Path) -> None:
    state = _trained_like(0).state_dict()
    path = tmp_path / "ckpt.pt"
    torch.save({"student": state, "teacher": state, "epoch": 1}, path)
    with pytest.raises(RobustEvalError, match=r"several entries \('student', 'teacher'\).*--checkpoint-key") as exc:
        load_model(path, arch="cifar_resnet20")
    one_line(exc)
    with pytest.raises(RobustEvalError, match=r"no weights under 'ema'; its entries: 'student', 'teacher', 'epoch'"):
        load_model(path, arch="cifar_resnet20", checkpoint_key="ema")


class _Wrapper(nn.Module):
    """A model whose own keys start with ``module.``: such a prefix is part of the names, not a wrapper's."""

    def __init__(self) -> None:
        super().__init__()
        self.module = nn.Linear(3, 2)


def test_prefixes_are_stripped_only_when_the_model_lacks_them() -> None:
    own = _Wrapper().state_dict()
    assert list(strip_prefixes(extract_state_dict(own), _Wrapper())) == ["module.weight", "module.bias"]
    wrapped = extract_state_dict(_prefixed(nn.Linear(3, 2).state_dict(), "module._orig_mod."))
    assert list(strip_prefixes(wrapped, nn.Linear(3, 2))) == ["weight", "bias"]
    mixed = extract_state_dict({"module.weight": torch.zeros(2, 3), "bias": torch.zeros(2)})
    assert list(strip_prefixes(mixed, nn.Linear(3, 2))) == ["module.weight", "bias"]  # strict load will say so


def test_cli_evaluates_an_old_checkpoint_and_takes_the_ema_copy_on_request(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    from robusteval.cli import main

    old = tmp_path / "resnet20-12fca82f.th"
    torch.save(_old_checkpoint(_trained_like(0), pytorch="0.4.0"), old, _use_new_zipfile_serialization=False)
    args = ["--arch", "cifar_resnet20", "--subset", "20", "--quiet", "--no-report"]
    assert main(["evaluate", str(old), *args, "--out", str(tmp_path / "old")]) == 0
    both = tmp_path / "ckpt.pth"
    torch.save({"state_dict": _trained_like(0).state_dict(), "state_dict_ema": _trained_like(1).state_dict()}, both)
    with caplog.at_level(logging.WARNING):
        assert main(["evaluate", str(both), *args, "--out", str(tmp_path / "regular")]) == 0
    assert "using 'state_dict' (--checkpoint-key state_dict_ema takes the EMA copy)" in caplog.text
    assert main(["evaluate", str(both), *args, "--checkpoint-key", "state_dict_ema", "--out", str(tmp_path / "ema")]) == 0
    manifest = (tmp_path / "ema" / "manifest.json").read_text()
    assert '"checkpoint_key": "state_dict_ema"' in manifest
