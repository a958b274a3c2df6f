"""Saved family members are device-independent archives that reload on the device asked for."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from robusteval.pruning import PruneSettings, build_family, load_member, prune_model, save_member
from robusteval.pruning import family

FAST = PruneSettings(measure_latency=False, methods=("magnitude",), ratios=(0.5,))
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to save a member from CUDA")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


def _saved(model: nn.Module, out: Path) -> tuple[Path, nn.Module]:
    x = torch.rand(2, 3, 8, 8)
    member = prune_model(model, "magnitude", 0.5, settings=FAST, example_input=x, train_data=None)
    return save_member(member, out, example_input=x), member.model


def _tensors(model: nn.Module) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers()]


def _archive_text(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        return " ".join(archive.read(n).decode("latin-1") for n in archive.namelist() if n.endswith(".json"))


def test_a_member_reloads_on_cpu_by_default(tmp_path: Path) -> None:
    path, model = _saved(_net(), tmp_path)
    loaded = load_member(path)
    assert {t.device.type for t in _tensors(loaded.model)} == {"cpu"}
    assert "cuda" not in _archive_text(path)
    x = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=1e-6)


def test_load_member_moves_the_program_to_the_device(tmp_path: Path) -> None:
    path, _ = _saved(_net(), tmp_path)
    loaded = load_member(path, "meta")  # a non-CPU device every machine has
    assert {t.device.type for t in _tensors(loaded.model)} == {"meta"}
    assert loaded.model(torch.rand(5, 3, 8, 8, device="meta")).shape == (5, 4)


def test_reused_members_go_to_the_dense_models_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.rand(1, 3, 8, 8)
    list(build_family(_net(), settings=FAST, example_input=x, train_data=None, out_dir=tmp_path, progress=False))
    monkeypatch.setattr(family, "model_device", lambda model: torch.device("meta"))
    reused = list(build_family(_net(), settings=FAST, example_input=x, train_data=None, out_dir=tmp_path,
                               progress=False))
    assert [m.id for m in reused] == ["dense", "magnitude@0.5"]
    for member in reused:
        assert isinstance(member.model, family.ExportedModel)
        assert {t.device.type for t in _tensors(member.model)} == {"meta"}


@CUDA
def test_a_member_saved_from_cuda_reloads_on_cpu_and_cuda(tmp_path: Path) -> None:
    path, model = _saved(_net().cuda(), tmp_path)
    assert {t.device.type for t in _tensors(model)} == {"cuda"}  # the saved member itself stays put
    assert "cuda" not in _archive_text(path)
    x = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        expected = model(x.cuda()).cpu()
        on_cpu = load_member(path).model
        on_cuda = load_member(path, "cuda").model
        assert {t.device.type for t in _tensors(on_cpu)} == {"cpu"}
        assert {t.device.type for t in _tensors(on_cuda)} == {"cuda"}
        torch.testing.assert_close(on_cpu(x), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(on_cuda(x.cuda()).cpu(), expected, rtol=1e-4, atol=1e-5)
