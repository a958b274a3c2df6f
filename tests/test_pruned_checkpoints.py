"""Checkpoints that pruning tools emit: torch.nn.utils.prune state_dicts and live modules, structurally thinned
state_dicts, Torch-Pruning's tp.state_dict; each reloaded with the logits of the library's own loading."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune

from fixtures.loading import logits, one_line
from fixtures.pruned import torch_pruned, tp_thinned
from robusteval.cli import main
from robusteval.errors import RobustEvalError
from robusteval.models.archs import build_arch
from robusteval.models.loading import load_model
from robusteval.models.pruned_state import has_prune_hooks
from robusteval.models.thinned import resize_to_state
from robusteval.models.wrap import check_model
from robusteval.pruning import model_info

X = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _pytorch_reload(path: Path, pruned: nn.Module) -> nn.Module:
    """PyTorch's own way back: re-apply (identity) pruning to the same tensors, then load the state_dict."""
    model = build_arch("cifar_resnet20", 10).eval()
    modules = dict(model.named_modules())
    for name, module in pruned.named_modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.identity(modules[name], hook._tensor_name)
    model.load_state_dict(torch.load(path))
    return model


def test_torch_prune_state_dict_gives_pytorchs_logits_and_sparsity_from_the_masks(tmp_path: Path) -> None:
    pruned = torch_pruned()
    path = tmp_path / "pruned.pt"
    torch.save(pruned.state_dict(), path)
    assert any(k.endswith("weight_mask") for k in torch.load(path))
    loaded = load_model(path, arch="cifar_resnet20")
    torch.testing.assert_close(logits(loaded, X), logits(_pytorch_reload(path, pruned), X), rtol=0, atol=0)
    state = torch.load(path)
    masks = {k[: -len("_mask")]: v for k, v in state.items() if k.endswith("_mask")}
    weights = [k for k in masks if k.endswith("weight")]
    info = model_info(loaded, X, measure_latency=False)
    assert info["sparsity"] == pytest.approx(1 - sum(int(masks[k].sum()) for k in weights)
                                             / sum(masks[k].numel() for k in weights))
    assert not (loaded.linear.bias[masks["linear.bias"] == 0]).any()


def test_a_live_pruned_module_is_folded_as_its_hooks_compute(tmp_path: Path) -> None:
    pruned = torch_pruned(1)
    expected = logits(pruned, X)
    path = tmp_path / "full.pt"
    torch.save(pruned, path)
    loaded = load_model(path, trust_pickle=True)
    assert not has_prune_hooks(loaded) and "weight" in dict(loaded.conv1.named_parameters())
    torch.testing.assert_close(logits(loaded, X), expected, rtol=0, atol=0)


def test_python_api_folds_a_copy_and_leaves_the_callers_module(tmp_path: Path) -> None:
    import dataclasses

    from robusteval import audit, load_config

    pruned = torch_pruned(2)
    config = load_config("clean")
    audit(pruned, config=config.replace(data=dataclasses.replace(config.data, subset=16)),
                out=tmp_path / "run", progress=False)
    assert has_prune_hooks(pruned)  # the caller's module keeps its re-parametrisation
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0.7 < summary["models"][0]["sparsity"] < 0.9


def test_masks_whose_shapes_disagree_with_orig_are_one_line_exit_2(tmp_path: Path, capsys) -> None:
    state = torch_pruned().state_dict()
    state["layer1.0.conv1.weight_mask"] = state["layer1.0.conv1.weight_mask"][:8]
    path = tmp_path / "bad_mask.pt"
    torch.save(state, path)
    with pytest.raises(RobustEvalError) as exc:
        load_model(path, arch="cifar_resnet20")
    assert "'layer1.0.conv1.weight_mask' has shape [8, 16, 3, 3]" in one_line(exc)
    assert main(["evaluate", str(path), "--arch", "cifar_resnet20", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("robusteval: error:") and "\n" not in err


def test_thinned_state_dict_and_tp_format_reload_with_identical_logits(tmp_path: Path) -> None:
    thinned = tp_thinned(X)
    torch.save(thinned.state_dict(), tmp_path / "thin.pt")
    torch.save(tp.state_dict(thinned), tmp_path / "thin_tp.pth")
    loaded = load_model(tmp_path / "thin.pt", arch="cifar_resnet20")
    assert loaded.layer2[1].conv1.out_channels == 16 and loaded.layer2[1].bn1.num_features == 16
    torch.testing.assert_close(logits(loaded, X), logits(thinned, X), rtol=0, atol=0)
    check_model(loaded, (3, 32, 32), 10)
    reference = tp.load_state_dict(build_arch("cifar_resnet20", 10),
                                   state_dict=torch.load(tmp_path / "thin_tp.pth", weights_only=False)).eval()
    from_tp = load_model(tmp_path / "thin_tp.pth", arch="cifar_resnet20", trust_pickle=True)
    torch.testing.assert_close(logits(from_tp, X), logits(reference, X), rtol=0, atol=0)
    dense = sum(p.numel() for p in build_arch("cifar_resnet20", 10).parameters())
    params = model_info(loaded, X, measure_latency=False)["params"]
    assert params == sum(p.numel() for p in thinned.parameters()) < dense


def _stem_thinned(tmp_path: Path) -> Path:
    """The stem's output thinned 16 -> 12: option-A shortcuts zero-pad a hard-coded number of channels."""
    state = build_arch("cifar_resnet20", 10).state_dict()
    for key in [k for k in state if k.startswith(("conv1.", "bn1.")) and state[k].ndim]:
        state[key] = state[key][:12]
    for block in range(3):
        state[f"layer1.{block}.conv1.weight"] = state[f"layer1.{block}.conv1.weight"][:, :12]
        prefixes = (f"layer1.{block}.conv2.", f"layer1.{block}.bn2.")
        for key in [k for k in state if k.startswith(prefixes) and state[k].ndim]:
            state[key] = state[key][:12]
    state["layer2.0.conv1.weight"] = state["layer2.0.conv1.weight"][:, :12]
    torch.save(state, tmp_path / "stem.pt")
    return tmp_path / "stem.pt"


@pytest.mark.parametrize(("case", "arch", "match"), [
    ("stem", "cifar_resnet20", r"forward fails in 'layer2\.0' \(_BasicBlock\).*export the pruned model itself"),
    ("thin", "cifar_resnet32", r"does not fit architecture 'cifar_resnet32' with 10 classes: 60 missing keys"),
    ("thin_tp", "cifar_vgg11", r"does not fit architecture 'cifar_vgg11': its modules are not the architecture's"),
])
def test_wrong_thinned_files_are_one_line_exit_2(case: str, arch: str, match: str, tmp_path: Path, capsys) -> None:
    thinned = tp_thinned(X)
    torch.save(thinned.state_dict(), tmp_path / "thin.pt")
    torch.save(tp.state_dict(thinned), tmp_path / "thin_tp.pth")
    path = _stem_thinned(tmp_path) if case == "stem" else tmp_path / ("thin_tp.pth" if case == "thin_tp" else "thin.pt")
    code = main(["evaluate", str(path), "--arch", arch, "--subset", "8", "--out", str(tmp_path / "run"), "--quiet",
                 "--trust-pickle"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith("robusteval: error:"), err
    assert re.search(match, err), err


def test_a_wider_checkpoint_is_not_taken_for_a_thinned_one(tmp_path: Path) -> None:
    """Pruning only removes channels: a layer wider than the architecture is a shape mismatch, as before."""
    state = build_arch("cifar_resnet20", 10).state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(24, 16, 3, 3)
    torch.save(state, tmp_path / "wide.pt")
    with pytest.raises(RobustEvalError) as exc:
        load_model(tmp_path / "wide.pt", arch="cifar_resnet20")
    assert "1 shape mismatch: 'layer1.0.conv1.weight' is [24, 16, 3, 3] in the file" in one_line(exc)


@pytest.mark.parametrize("wide, narrow", [
    (lambda: nn.Conv2d(8, 16, 3), lambda: nn.Conv2d(6, 10, 3)),
    (lambda: nn.Conv2d(8, 8, 3, groups=8), lambda: nn.Conv2d(5, 5, 3, groups=5)),  # depthwise stays depthwise
    (lambda: nn.ConvTranspose2d(8, 16, 3), lambda: nn.ConvTranspose2d(6, 10, 3)),
    (lambda: nn.ConvTranspose2d(8, 8, 3, groups=8), lambda: nn.ConvTranspose2d(5, 5, 3, groups=5)),
])
def test_a_resized_convolution_is_the_narrower_module(wide, narrow) -> None:
    """Every Conv/ConvTranspose resized to a thinned file's shapes has the attributes (and output) of the
    module built at those widths: channels, groups, and a forward pass with its weights."""
    model, reference = nn.Sequential(wide()), nn.Sequential(narrow())
    assert resize_to_state(model, reference.state_dict()) == ["0"]
    model.load_state_dict(reference.state_dict(), strict=True)
    got, want = model[0], reference[0]
    assert (got.in_channels, got.out_channels, got.groups) == (want.in_channels, want.out_channels, want.groups)
    x = torch.randn(2, want.in_channels, 7, 7)
    torch.testing.assert_close(model(x), reference(x), atol=0, rtol=0)
