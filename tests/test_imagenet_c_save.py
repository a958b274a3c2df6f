"""Generated ImageNet-size corruptions end as ImageNet-C's files do: ``make_imagenet_c.py`` saves
``Image.fromarray(np.uint8(corruption(img, severity)))`` with ``quality=85, optimize=True``."""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from robusteval.conditions import build_conditions
from robusteval.data.arrays import LabeledArrays
from robusteval.data.corruptions import condition_seed, corrupt
from robusteval.evaluators.settings import CorruptionSettings, EvaluateSettings


def _reference_save(corrupted: np.ndarray) -> np.ndarray:
    """The reference's last line on a float image in [0, 255], read back as a data loader reads the file."""
    buffer = io.BytesIO()
    Image.fromarray(np.uint8(corrupted)).save(buffer, format="JPEG", quality=85, optimize=True)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _conditions(size: int) -> tuple[LabeledArrays, list]:
    g = np.random.default_rng(0)
    x = np.kron(g.integers(0, 256, (2, size // 8, size // 8, 3)), np.ones((1, 8, 8, 1))).astype(np.uint8)
    data = LabeledArrays(x, np.array([0, 1]), ("a", "b"), "t")
    ev = EvaluateSettings(clean=False, agreement=False, calibration=None,
                          corruption=CorruptionSettings(corruptions=("fog", "gaussian_noise"), severities=(2,),
                                                        subset=None))
    return data, build_conditions(ev, data, seed=0)[1:]


def test_imagenet_size_conditions_are_saved_as_jpeg_q85() -> None:
    data, conditions = _conditions(224)
    for cond in conditions:
        name = cond.meta["corruption"]
        corrupted = corrupt(data.images(slice(0, 2)), name, 2, seed=condition_seed(name, 2, 0, 0))
        pixels = (corrupted.clamp(0, 1) * 255).permute(0, 2, 3, 1).double().numpy()
        expected = np.stack([_reference_save(im) for im in pixels])
        got = (cond.inputs(0, 2, 0) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        np.testing.assert_array_equal(got, expected)
        assert "JPEG quality 85" in cond.note


def test_cifar_size_conditions_are_not_saved_as_jpeg() -> None:
    """make_cifar_c.py stores uint8 arrays, no JPEG: CIFAR-size results stay the corruption itself."""
    data, conditions = _conditions(32)
    for cond in conditions:
        name = cond.meta["corruption"]
        expected = corrupt(data.images(slice(0, 2)), name, 2, seed=condition_seed(name, 2, 0, 0))
        torch.testing.assert_close(cond.inputs(0, 2, 0), expected, atol=0, rtol=0)
        assert "JPEG" not in cond.note
