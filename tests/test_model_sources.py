"""Model hubs, offline first: hf-hub: from a Hugging Face cache, torchvision weights from the torch hub cache, timm.

Every cache here is a folder the test builds in the real on-disk layout; nothing downloads.
"""
from __future__ import annotations

import hashlib
import json
import logging
import pathlib
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from fixtures.loading import logits, one_line
from robusteval.errors import RobustEvalError
from robusteval.models.archs import build_arch
from robusteval.models.loading import load_model
from robusteval.models.sources import hf_cache_dir, resolve_model

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))




def _hf_repo(cache: Path, repo: str, files: dict[str, bytes]) -> Path:
    """huggingface_hub's cache layout: blobs/<sha256>, snapshots/<revision>/<file> -> blob, refs/main."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / REVISION
    (root / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", blob.name))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(REVISION)
    return snapshot


def _safetensors_bytes(model: nn.Module, tmp_path: Path) -> bytes:
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path.read_bytes()


@pytest.fixture()
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.mark.parametrize("ref", ["hf-hub:acme/cifar-resnet20", f"hf-hub:acme/cifar-resnet20@{REVISION}"])
def test_hf_hub_weights_load_from_the_cache(ref: str, hf_cache: Path, x: torch.Tensor, tmp_path: Path) -> None:
    pytest.importorskip("huggingface_hub")
    torch.manual_seed(0)
    model = build_arch("cifar_resnet20", 10).eval()
    snapshot = _hf_repo(hf_cache, "acme/cifar-resnet20", {"model.safetensors": _safetensors_bytes(model, tmp_path)})
    source = resolve_model(ref)
    assert source.path == snapshot / "model.safetensors" and source.arch is None
    loaded = load_model(ref, arch="cifar_resnet20")
    assert torch.equal(logits(loaded, x), logits(model, x))


def test_hf_hub_timm_repo_names_its_architecture(hf_cache: Path, x: torch.Tensor, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A timm hub repository's config.json says the architecture and classes; no --arch needed."""
    pytest.importorskip("huggingface_hub")
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=7).eval()
    config = {"architecture": "test_efficientnet", "num_classes": 7,
              "pretrained_cfg": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    _hf_repo(hf_cache, "timm/test_efficientnet.r160_in1k", {"model.safetensors": _safetensors_bytes(model, tmp_path),
                                                            "config.json": json.dumps(config).encode()})
    with caplog.at_level(logging.WARNING):
        loaded = load_model("hf-hub:timm/test_efficientnet.r160_in1k", num_classes=10)  # the repo's 7 classes win
    assert torch.equal(logits(loaded, x), logits(model, x))
    assert "--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225" in caplog.text


@pytest.mark.parametrize("home", [False, True], ids=["HF_HUB_CACHE", "HF_HOME"])
def test_hf_hub_offline_and_not_cached_names_the_cache_folder(home: bool, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    if home:
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hfhome"))
        folder = tmp_path / "hfhome" / "hub" / "models--acme--absent"
    else:
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
        folder = tmp_path / "cache" / "models--acme--absent"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hf_cache_dir() == folder.parent
    with pytest.raises(RobustEvalError) as exc:
        load_model("hf-hub:acme/absent", arch="cifar_resnet20")
    message = one_line(exc)
    assert f"model.safetensors is not in the Hugging Face cache ({folder})" in message and "HF_HUB_OFFLINE" in message


def test_hf_hub_download_failure_names_the_cache_folder(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def no_network(*args: object, **kwargs: object) -> str:
        raise huggingface_hub.errors.LocalEntryNotFoundError("cannot reach the Hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    with pytest.raises(RobustEvalError) as exc:
        load_model("hf-hub:acme/absent", arch="cifar_resnet20")
    assert f"({hf_cache / 'models--acme--absent'}) and downloading it failed (LocalEntryNotFoundError" in one_line(exc)


@pytest.mark.parametrize("ref", ["hf-hub:no-slash", "hf-hub:a/b/c", "hf-hub:"])
def test_hf_hub_malformed_reference(ref: str) -> None:
    with pytest.raises(RobustEvalError, match="expected hf-hub:<org>/<repo>") as exc:
        load_model(ref, arch="cifar_resnet20")
    one_line(exc)


@pytest.fixture()
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    return tmp_path / "torch" / "hub" / "checkpoints"


def _resnet18_file(torch_home: Path) -> Path:
    """The cache file torchvision expects for ResNet18_Weights.IMAGENET1K_V1 (the enum's URL basename)."""
    from torchvision.models import ResNet18_Weights

    return torch_home / ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]


def test_torchvision_weights_load_from_the_torch_hub_cache(torch_home: Path, x: torch.Tensor,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    path = _resnet18_file(torch_home)
    assert path.name == "resnet18-f37072fd.pth"
    torch.save(reference.state_dict(), path)
    with caplog.at_level(logging.WARNING):
        source = resolve_model("torchvision:resnet18:IMAGENET1K_V1")
    assert (source.path, source.num_classes) == (path, 1000)
    assert "--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225" in caplog.text
    loaded = load_model(source, arch=None, num_classes=10)
    assert torch.equal(logits(loaded, x), logits(reference, x))


class _WritesFile:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (pathlib.Path.write_text, (pathlib.Path(self.target), "pwned"))


def test_torchvision_cache_file_with_pickled_code_is_not_loaded(torch_home: Path, tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    torch.save({"conv1.weight": _WritesFile(target)}, _resnet18_file(torch_home))
    with pytest.raises(RobustEvalError, match="not a plain weights file") as exc:
        load_model("torchvision:resnet18:IMAGENET1K_V1")
    one_line(exc)
    assert not target.exists()


def test_torchvision_weights_not_cached_and_no_network(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(RobustEvalError) as exc:
        load_model("torchvision:resnet18:IMAGENET1K_V1")
    message = one_line(exc)
    assert f"{_resnet18_file(torch_home)} is not in the torch hub cache and downloading it failed (URLError" in message


@pytest.mark.parametrize(
    ("ref", "match"),
    [("torchvision:resnet18:IMAGENET1K_V9", "unknown weights for torchvision:resnet18 'IMAGENET1K_V9' "
                                            r"\(did you mean 'IMAGENET1K_V1'\?\)"),
     ("torchvision:resnet81:IMAGENET1K_V1", r"unknown torchvision model 'resnet81' \(did you mean 'resnet18'\?\)"),
     ("torchvision:a:b:c", "torchvision:<name>:<WEIGHTS>")],
)
def test_torchvision_weights_names_are_checked(ref: str, match: str, torch_home: Path) -> None:
    with pytest.raises(RobustEvalError, match=match) as exc:
        load_model(ref)
    one_line(exc)


def test_torchvision_weights_as_arch_say_where_they_belong(tmp_path: Path) -> None:
    with pytest.raises(RobustEvalError, match="give torchvision:resnet18:IMAGENET1K_V1 in place of the model file"):
        build_arch("torchvision:resnet18:IMAGENET1K_V1", 1000)


def test_timm_arch_loads_a_state_dict(x: torch.Tensor, tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=10).eval()
    path = tmp_path / "model.pth"
    torch.save({"state_dict": model.state_dict(), "epoch": 300}, path)
    assert torch.equal(logits(load_model(path, arch="timm:test_efficientnet"), x), logits(model, x))
    with pytest.raises(RobustEvalError, match=r"unknown timm model 'test_efficientnett' \(did you mean "
                                              r"'test_efficientnet'\?\); \d+ known$") as exc:
        build_arch("timm:test_efficientnett", 10)
    one_line(exc)


def test_timm_missing_isone_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(RobustEvalError, match=r"needs timm: pip install 'robusteval\[timm\]'") as exc:
        build_arch("timm:resnet18", 10)
    one_line(exc)


def test_cli_evaluates_a_hub_model_and_records_the_cached_file_hash(hf_cache: Path, tmp_path: Path) -> None:
    pytest.importorskip("huggingface_hub")
    from robusteval.cli import main

    torch.manual_seed(0)
    data = _safetensors_bytes(build_arch("cifar_resnet20", 10), tmp_path)
    _hf_repo(hf_cache, "acme/cifar-resnet20", {"model.safetensors": data})
    out = tmp_path / "run"
    assert main(["evaluate", "hf-hub:acme/cifar-resnet20", "--arch", "cifar_resnet20", "--subset", "20", "--out",
                 str(out), "--quiet", "--no-report"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model_sha256"] == {"dense": hashlib.sha256(data).hexdigest()}
