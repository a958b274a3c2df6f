"""Spatter's Canny edge map is OpenCV's: against a literal port of ``canny.cpp`` (always) and against
``cv2.Canny`` itself (opencv-python-headless, in the ``test`` extra), on spatter liquid layers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robusteval.data.corruptions.params import CIFAR
from robusteval.data.corruptions.spatter import canny, liquid_layer
import canny_reference


def _layers() -> np.ndarray:
    """30 uint8 liquid layers (10 per water severity 1-3 of the CIFAR table), as spatter makes them."""
    out = []
    for severity in (1, 2, 3):
        liquid = liquid_layer(torch.zeros(10, 3, 32, 32), CIFAR["spatter"][severity - 1],
                              torch.Generator().manual_seed(severity))
        out.append(torch.floor(liquid.clamp(0, 1) * 255)[:, 0].numpy().astype(np.uint8))
    return np.concatenate(out)


def _textures() -> np.ndarray:
    """Images with edges in every direction: blocky noise, rings and diagonal ramps."""
    g = np.random.default_rng(0)
    r = np.hypot(*np.meshgrid(np.arange(24) - 11.5, np.arange(24) - 11.5))
    rings = (np.sin(r) * 120 + 128).astype(np.uint8)
    ramp = ((np.add.outer(np.arange(24), 2 * np.arange(24)) * 7) % 256).astype(np.uint8)
    blocks = np.kron(g.integers(0, 256, (6, 6)), np.ones((4, 4))).astype(np.uint8)
    return np.stack([rings, ramp, ramp.T, blocks, g.integers(0, 256, (24, 24)).astype(np.uint8)])


def _ours(images: np.ndarray) -> np.ndarray:
    edges = canny(torch.from_numpy(images.astype(np.float64))[:, None], 50, 150)
    return np.where(edges[:, 0].numpy(), 255, 0).astype(np.uint8)


@pytest.mark.parametrize("make", [_layers, _textures])
def test_canny_equals_a_literal_port_of_opencv(make) -> None:
    images = make()
    reference = np.stack([canny_reference.canny(im, 50, 150) for im in images])
    assert reference.any()
    np.testing.assert_array_equal(_ours(images), reference)


@pytest.mark.parametrize("make", [_layers, _textures])
def test_canny_equals_cv2(make) -> None:
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (the test extra) is not installed")
    images = make()
    reference = np.stack([cv2.Canny(im, 50, 150) for im in images])
    assert reference.any()
    np.testing.assert_array_equal(_ours(images), reference)
    np.testing.assert_array_equal(np.stack([canny_reference.canny(im, 50, 150) for im in images]), reference)
