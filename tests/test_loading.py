"""Safe model loading: every supported format reloads to the same logits; unsafe or broken files fail in one line."""
from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from fixtures.loading import logits, one_line
from robusteval.errors import RobustEvalError
from robusteval.models.archs import build_arch
from robusteval.models.loading import PICKLE_REFUSED, detect_format, extract_state_dict, file_sha256, load_model
from robusteval.models.wrap import Normalized, check_model, parse_floats, with_normalization

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    model = build_arch("cifar_resnet20", 10).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a missed buffer would change the logits
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))




def _prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


STATE_DICT_LAYOUTS: dict[str, Callable[[dict[str, torch.Tensor]], object]] = {
    "bare": lambda sd: sd,
    "nested_state_dict": lambda sd: {"state_dict": sd, "epoch": 3},
    "nested_model": lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
    "module_prefix": lambda sd: _prefixed(sd, "module."),
    "orig_mod_prefix": lambda sd: _prefixed(sd, "_orig_mod."),
    "both_prefixes_nested": lambda sd: {"state_dict": _prefixed(sd, "module._orig_mod.")},
}


@pytest.mark.parametrize("layout", sorted(STATE_DICT_LAYOUTS))
def test_state_dict_layouts_reload_identically(layout: str, resnet: nn.Module, x: torch.Tensor, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(STATE_DICT_LAYOUTS[layout](resnet.state_dict()), path)
    loaded = load_model(path, arch="cifar_resnet20", num_classes=10)
    assert not loaded.training
    torch.testing.assert_close(logits(loaded, x), logits(resnet, x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_safetensors_reloads_identically(prefix: str, resnet: nn.Module, x: torch.Tensor, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file(_prefixed({k: v.contiguous() for k, v in resnet.state_dict().items()}, prefix), str(path))
    assert detect_format(path) == "safetensors"
    loaded = load_model(path, arch="cifar_resnet20")
    torch.testing.assert_close(logits(loaded, x), logits(resnet, x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_reloads_identically(how: str, resnet: nn.Module, x: torch.Tensor, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    scripted = torch.jit.script(resnet) if how == "script" else torch.jit.trace(resnet, x)
    scripted.save(str(path))
    assert detect_format(path) == "torchscript"
    loaded = load_model(path, arch="ignored_for_self_describing_formats")
    torch.testing.assert_close(logits(loaded, x), logits(resnet, x), atol=1e-6, rtol=0)


def test_torch_export_reloads_identically_and_wraps(
    resnet: nn.Module, x: torch.Tensor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exported exactly as the pickle refusal advises, so following that advice gives a usable file."""
    advice = re.search(r"torch\.export\.save\(.*'model\.pt2'\)", PICKLE_REFUSED.format(path="m.pt"))
    assert advice is not None
    monkeypatch.chdir(tmp_path)
    exec(advice.group(0), {"torch": torch, "model": resnet, "example": x})
    path = tmp_path / "model.pt2"
    assert detect_format(path) == "export"
    loaded = load_model(path)
    assert not loaded.training
    torch.testing.assert_close(logits(loaded, x), logits(resnet, x), atol=1e-6, rtol=0)
    wrapped = with_normalization(loaded, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))  # wrapping calls .eval() again
    check_model(wrapped, (3, 32, 32), 10)
    torch.testing.assert_close(logits(wrapped, x), logits(resnet, (x - 0.5) / 0.25), atol=1e-6, rtol=0)


@pytest.mark.parametrize("batch", [1, 3, 9])
def test_static_batch_export_runs_on_any_batch(batch: int, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 10)).eval()
    path = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(model, (torch.rand(4, 3, 8, 8),)), path)  # batch fixed at 4
    loaded = load_model(path)
    check_model(loaded, (3, 8, 8), 10)
    x = torch.rand(batch, 3, 8, 8, generator=torch.Generator().manual_seed(batch))
    torch.testing.assert_close(logits(loaded, x), logits(model, x), atol=1e-6, rtol=0)


def test_pickled_module_refused_unless_trusted(resnet: nn.Module, x: torch.Tensor, tmp_path: Path) -> None:
    path = tmp_path / "full.pt"
    torch.save(resnet, path)
    with pytest.raises(RobustEvalError) as exc:
        load_model(path, arch="cifar_resnet20")
    message = one_line(exc)
    assert "--trust-pickle" in message and "state_dict" in message and "torch.export" in message
    loaded = load_model(path, trust_pickle=True)
    torch.testing.assert_close(logits(loaded, x), logits(resnet, x), atol=1e-6, rtol=0)


class _WritesFile:
    """Unpickling this runs ``pathlib.Path(target).write_text('pwned')``."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (pathlib.Path.write_text, (pathlib.Path(self.target), "pwned"))


class _RunsShell:
    """Unpickling this runs ``os.system('touch target')``."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("payload", [_WritesFile, _RunsShell])
@pytest.mark.parametrize("nested", [False, True])
def test_malicious_pickle_runs_nothing_without_trust(payload: type, nested: bool, tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    obj = payload(target)
    torch.save({"state_dict": obj} if nested else obj, path)
    assert not target.exists()
    with pytest.raises(RobustEvalError) as exc:
        load_model(path, arch="cifar_resnet20")
    assert "--trust-pickle" in one_line(exc)
    assert not target.exists()


def _truncated(valid: bytes) -> bytes:
    return valid[: len(valid) // 2]


@pytest.mark.parametrize("kind", ["state_dict", "safetensors", "torchscript", "export"])
def test_truncated_files_fail_in_one_line(kind: str, resnet: nn.Module, x: torch.Tensor, tmp_path: Path) -> None:
    full = tmp_path / ("full.safetensors" if kind == "safetensors" else "full.pt")
    if kind == "state_dict":
        torch.save(resnet.state_dict(), full)
    elif kind == "safetensors":
        save_file({k: v.contiguous() for k, v in resnet.state_dict().items()}, str(full))
    elif kind == "torchscript":
        torch.jit.trace(resnet, x).save(str(full))
    else:
        torch.export.save(torch.export.export(nn.Linear(3, 2), (torch.rand(1, 3),)), full)
    cut = tmp_path / ("cut" + full.suffix)
    cut.write_bytes(_truncated(full.read_bytes()))
    with pytest.raises(RobustEvalError) as exc:
        load_model(cut, arch="cifar_resnet20")
    assert str(cut) in one_line(exc)


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\xffnot a model\x13" * 50, b"plain text, not a model file\n" * 20, b"\x80\x02}q\x00",
     b"PK\x03\x04broken zip"],
    ids=["empty", "binary", "text", "cut_legacy_pickle", "broken_zip"],
)
def test_garbage_files_fail_in_one_line(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    for trust in (False, True):
        with pytest.raises(RobustEvalError) as exc:
            load_model(path, arch="cifar_resnet20", trust_pickle=trust)
        message = one_line(exc)
        assert str(path) in message
        assert "--trust-pickle" not in message  # garbage is not a pickled module: no advice to trust it


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RobustEvalError, match="does not exist") as exc:
        load_model(tmp_path / "nope.pt", arch="cifar_resnet20")
    one_line(exc)


def test_state_dict_needs_arch(resnet: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(resnet.state_dict(), path)
    with pytest.raises(RobustEvalError, match="--arch") as exc:
        load_model(path)
    one_line(exc)


def test_unknown_arch_suggests(resnet: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(resnet.state_dict(), path)
    with pytest.raises(RobustEvalError, match="did you mean 'cifar_resnet20'") as exc:
        load_model(path, arch="cifar_resnt20")
    one_line(exc)


def test_state_dict_that_does_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(build_arch("cifar_resnet20", 100).state_dict(), path)
    with pytest.raises(RobustEvalError, match="does not fit architecture 'cifar_resnet20' with 10 classes") as exc:
        load_model(path, arch="cifar_resnet20", num_classes=10)
    assert "linear.weight" in one_line(exc)
    with pytest.raises(RobustEvalError, match="missing keys") as exc:  # a deeper net than the weights
        load_model(path, arch="cifar_resnet32", num_classes=100)
    one_line(exc)


@pytest.mark.parametrize("obj", [{}, {"a": 1}, [torch.zeros(1)], {"model": {"w": "x"}}])
def test_extract_state_dict_rejects_non_state_dicts(obj: object) -> None:
    with pytest.raises(RobustEvalError, match="expected a state_dict") as exc:
        extract_state_dict(obj, "ckpt.pt")
    one_line(exc)


def test_non_tensor_checkpoint_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"epoch": 3, "acc": 0.9}, path)
    with pytest.raises(RobustEvalError, match="expected a state_dict") as exc:
        load_model(path, arch="cifar_resnet20")
    one_line(exc)


class _NaNModel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x), 10), float("nan"))


class _TupleModel(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.flatten(1)[:, :10], x


def test_check_model_accepts_a_fitting_model(resnet: nn.Module) -> None:
    check_model(resnet, (3, 32, 32), 10)


@pytest.mark.parametrize(
    ("model", "shape", "classes", "match"),
    [
        (lambda: build_arch("cifar_resnet20", 10), (3, 32, 32), 100, "outputs 10 logits .* data has 100 classes"),
        (lambda: build_arch("lenet_300_100", 10), (3, 64, 64), 10, r"cannot run on inputs of shape \(N, 3, 64, 64\)"),
        (lambda: build_arch("cifar_resnet20", 10), (1, 32, 32), 10, r"cannot run on inputs of shape \(N, 1, 32, 32\)"),
        (_NaNModel, (3, 32, 32), 10, "NaN or infinite"),
        (_TupleModel, (3, 32, 32), 10, r"expected logits of shape \(batch, classes\), got tuple"),
        (lambda: nn.Identity(), (3, 32, 32), 10, r"got \(2, 3, 32, 32\)"),
    ],
    ids=["class_count", "input_size", "channels", "nan", "tuple", "4d_output"],
)
def test_check_model_errors(
    model: Callable[[], nn.Module], shape: tuple[int, int, int], classes: int, match: str
) -> None:
    with pytest.raises(RobustEvalError, match=match) as exc:
        check_model(model().eval(), shape, classes, name="m.pt")
    assert one_line(exc).startswith("m.pt")


def test_normalized_equals_manual_normalisation(resnet: nn.Module, x: torch.Tensor) -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    manual = torch.stack([(x[:, c] - mean[c]) / std[c] for c in range(3)], dim=1)
    torch.testing.assert_close(logits(Normalized(resnet, mean, std), x), logits(resnet, manual), atol=1e-5, rtol=0)
    assert with_normalization(resnet, None, None) is resnet


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [((0.5,), None, "both --mean and --std"), (None, (0.5,), "both --mean and --std"),
     ((0.5, 0.5), (0.5,), "--mean has 2 values but --std has 1"), ((0.5,), (0.0,), "must be positive")],
)
def test_with_normalization_errors(mean: tuple | None, std: tuple | None, match: str) -> None:
    with pytest.raises(RobustEvalError, match=match):
        with_normalization(nn.Identity(), mean, std)


def test_parse_floats() -> None:
    assert parse_floats("0.485,0.456, 0.406", "--mean") == (0.485, 0.456, 0.406)
    assert parse_floats([1, 2.5], "--std") == (1.0, 2.5)
    assert parse_floats(None, "--mean") is None
    for bad in ("0.5,abc", "0.5,,0.5", ""):
        with pytest.raises(RobustEvalError, match="--mean: expected comma-separated numbers") as exc:
            parse_floats(bad, "--mean")
        one_line(exc)


class _SmallBatchesOnly(nn.Module):
    """A TorchScript export that works on the load-time probe (2 images) but refuses larger batches."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 4:
            raise ValueError("this export takes at most 4 images")
        return self.fc(x.flatten(1))


class _WrongRowsAbove4(nn.Module):
    """A TorchScript export that silently returns only 4 rows for larger batches."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))[:4]


class _TracedForBatch2(nn.Module):
    """Traced with a hard-coded batch of 2 (the probe's size): batch 1 (MAC counting) fails."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.reshape(2, -1))


@pytest.mark.parametrize(
    ("make", "match"),
    [(lambda: torch.jit.script(_SmallBatchesOnly()),
      r"model 'dense' failed on a batch of 8 inputs .*: builtins.ValueError: this export takes at most 4 images$"),
     (lambda: torch.jit.script(_WrongRowsAbove4()),
      r"model 'dense' returned \(4, 10\) for a batch of 8 inputs: expected \(8, classes\)$"),
     (lambda: torch.jit.trace(_TracedForBatch2(), torch.rand(2, 3, 32, 32)),
      r"model 'dense' failed while its costs were measured \(MACs on a batch of 1\): RuntimeError: mat1 and mat2")],
    ids=["raises", "wrong_rows", "batch_1"],
)
def test_torchscript_failing_only_on_larger_batches(make: Callable[[], nn.Module], match: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from robusteval.cli import main

    path = tmp_path / "model.pt"
    make().save(str(path))
    code = main(["evaluate", str(path), "--subset", "20", "--batch-size", "8", "--out", str(tmp_path / "run"),
                 "--quiet", "--no-report"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    assert re.search(match, err), err


def test_file_sha256_streams(tmp_path: Path) -> None:
    """The manifest's model hash equals hashlib's and reads in chunks (a 64 MiB file never sits in memory)."""
    import hashlib
    import tracemalloc

    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(3 * (1 << 20) + 17))  # several chunks and a partial one
    assert file_sha256(small) == hashlib.sha256(small.read_bytes()).hexdigest()
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(64 << 20)
    tracemalloc.start()
    digest = file_sha256(big)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert digest == hashlib.sha256(bytes(64 << 20)).hexdigest()
    assert peak < 8 << 20, f"hashing held {peak / 2**20:.0f} MiB"
