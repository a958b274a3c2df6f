"""Corruptions and synthetic OOD sets on accelerators: same device out, same values as on the CPU.

The device tests skip (with the reason) where no CUDA / MPS device is present; the layout test
runs everywhere.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from robusteval.data.corruptions import CORRUPTIONS, corrupt
from robusteval.data.corruptions.weather import FROST_FILES
from robusteval.data.ood_sets import OOD_SETS, make_ood_batch


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def _devices() -> list:
    """'cuda' and 'mps', each skipped with a reason where this machine lacks it."""
    return [
        pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
        pytest.param("mps", marks=pytest.mark.skipif(not _mps_available(), reason="no MPS device")),
    ]


QUANTISED = {"glass_blur", "snow", "spatter", "jpeg_compression"}
"""Corruptions that floor, threshold or re-encode in 8 bits: a value at a step may land on the other side."""

NAMES = sorted(CORRUPTIONS.names())


def _batch(shape: tuple[int, ...] = (4, 3, 32, 32), seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _check_close(name: str, out: torch.Tensor, ref: torch.Tensor, device: str) -> None:
    """On ``device``, same shape/dtype as the CPU result, in [0, 1], and equal to it up to rounding."""
    assert out.device.type == device
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    diff = (out.cpu() - ref).abs()
    if name in QUANTISED:
        assert float(diff.mean()) < 1e-3, f"{name}: mean |device − cpu| = {float(diff.mean()):.2e}"
    else:
        assert float(diff.max()) < 1e-4, f"{name}: max |device − cpu| = {float(diff.max()):.2e}"


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("severity", [1, 5])
@pytest.mark.parametrize("name", NAMES)
def test_corruption_on_device_matches_cpu(device: str, name: str, severity: int) -> None:
    x = _batch()
    ref = corrupt(x, name, severity, seed=11)
    _check_close(name, corrupt(x.to(device), name, severity, seed=11), ref, device)


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("name", ["elastic_transform", "motion_blur", "glass_blur", "frost", "fog", "spatter"])
def test_imagenet_size_on_device_matches_cpu(device: str, name: str) -> None:
    x = _batch((2, 3, 224, 224), seed=1)
    ref = corrupt(x, name, 3, seed=5)
    _check_close(name, corrupt(x.to(device), name, 3, seed=5), ref, device)


@pytest.mark.parametrize("device", _devices())
def test_frost_photographs_on_device_match_cpu(device: str, tmp_path) -> None:
    rng = np.random.default_rng(0)
    for file in FROST_FILES:
        Image.fromarray(rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)).save(tmp_path / file)
    x = _batch()
    for severity in (1, 5):
        ref = corrupt(x, "frost", severity, seed=2, frost_dir=str(tmp_path))
        out = corrupt(x.to(device), "frost", severity, seed=2, frost_dir=str(tmp_path))
        _check_close("frost", out, ref, device)


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("name", sorted(OOD_SETS.names()))
def test_ood_set_on_device_matches_cpu(device: str, name: str) -> None:
    x = _batch()
    ref = make_ood_batch(name, x, seed=4)
    out = make_ood_batch(name, x.to(device), seed=4)
    assert out.device.type == device
    assert out.shape == ref.shape and out.dtype == ref.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    diff = (out.cpu() - ref).abs()
    if name == "blobs":  # thresholded at 0.75 after a blur
        assert float(diff.mean()) < 1e-3
    elif name == "gaussian_noise":  # x·0.25 + 0.5 of the same draws
        assert float(diff.max()) < 1e-6
    else:  # the same draws, or the same pixels moved by the same permutation
        assert torch.equal(out.cpu(), ref)


@pytest.mark.parametrize("name", NAMES)
def test_memory_layout_does_not_change_the_result(name: str) -> None:
    x = _batch()
    ref = corrupt(x, name, 3, seed=9)
    channels_last = x.to(memory_format=torch.channels_last)
    window = torch.zeros(4, 3, 40, 40)
    window[:, :, 4:36, 2:34] = x
    for view in (channels_last, window[:, :, 4:36, 2:34], x.transpose(2, 3).contiguous().transpose(2, 3)):
        assert not view.is_contiguous()
        assert torch.equal(corrupt(view, name, 3, seed=9), ref), name
