"""Synthetic far-OOD sets and held-out-class splits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from robusteval.data.arrays import LabeledArrays
from robusteval.data.ood_sets import (
    OOD_SETS,
    blobs,
    default_patch,
    gaussian_noise_images,
    make_ood_batch,
    patch_shuffled,
    pixel_shuffled,
    split_classes,
)
from robusteval.errors import RobustEvalError

ID_IMAGES = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", OOD_SETS.names())
def test_every_set_is_deterministic_in_range_and_shaped_like_the_batch(name: str) -> None:
    a = make_ood_batch(name, ID_IMAGES, seed=3)
    assert a.shape == ID_IMAGES.shape and a.dtype == torch.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert torch.equal(a, make_ood_batch(name, ID_IMAGES, seed=3))
    assert not torch.equal(a, make_ood_batch(name, ID_IMAGES, seed=4))


def test_gaussian_noise_statistics() -> None:
    x = gaussian_noise_images(64, (3, 32, 32), seed=0)
    assert x.mean().item() == pytest.approx(0.5, abs=0.01)
    # N(0, 1) clipped to [-2, 2]: E[X^2] = (2 Phi(2) - 1) - 4 phi(2) + 4 * 2 (1 - Phi(2))
    clipped_var = (2 * norm.cdf(2) - 1) - 4 * norm.pdf(2) + 8 * norm.sf(2)
    assert x.std().item() == pytest.approx(0.25 * np.sqrt(clipped_var), abs=0.003)


def test_blobs_are_zero_or_above_threshold_and_spatially_smooth() -> None:
    x = blobs(16, (3, 32, 32), seed=0)
    assert bool(((x == 0) | (x >= 0.75)).all()) and 0.05 < (x > 0).double().mean() < 0.95
    neighbours_equal = ((x[..., 1:] > 0) == (x[..., :-1] > 0)).double().mean()
    assert neighbours_equal > 0.8  # blobs, not salt-and-pepper noise


def test_pixel_shuffle_moves_whole_pixels_within_each_image() -> None:
    out = pixel_shuffled(ID_IMAGES, seed=0)
    for a, b in zip(ID_IMAGES, out):
        before = sorted(map(tuple, a.reshape(3, -1).T.tolist()))
        assert before == sorted(map(tuple, b.reshape(3, -1).T.tolist()))
    assert not torch.equal(out, ID_IMAGES)


def test_patch_shuffle_permutes_tiles_within_each_image() -> None:
    out = patch_shuffled(ID_IMAGES, patch=8, seed=0)

    def tiles(img: torch.Tensor) -> list[bytes]:
        return sorted(img[:, i : i + 8, j : j + 8].numpy().tobytes() for i in range(0, 32, 8) for j in range(0, 32, 8))

    for a, b in zip(ID_IMAGES, out):
        assert tiles(a) == tiles(b)
    assert not torch.equal(out, ID_IMAGES)
    with pytest.raises(RobustEvalError, match="patch size dividing"):
        patch_shuffled(ID_IMAGES, patch=5)


def test_default_patch() -> None:
    assert (default_patch(32, 32), default_patch(28, 28), default_patch(224, 224)) == (8, 7, 56)


def test_unknown_set_suggests_a_name() -> None:
    with pytest.raises(RobustEvalError, match="did you mean 'blobs'"):
        make_ood_batch("blob", ID_IMAGES, seed=0)


DATA = LabeledArrays(
    np.arange(6 * 2 * 2 * 3, dtype=np.uint8).reshape(6, 2, 2, 3),
    np.array([0, 1, 2, 3, 2, 1]),
    ("cat", "dog", "frog", "ship"),
    "toy",
)


def test_split_classes_reindexes_both_parts() -> None:
    id_data, ood_data = split_classes(DATA, ["dog", 3])
    assert id_data.classes == ("cat", "frog") and id_data.y.tolist() == [0, 1, 1]
    assert ood_data.classes == ("dog", "ship") and ood_data.y.tolist() == [0, 1, 0]
    np.testing.assert_array_equal(id_data.x, DATA.x[[0, 2, 4]])
    np.testing.assert_array_equal(ood_data.x, DATA.x[[1, 3, 5]])


@pytest.mark.parametrize(
    ("held", "message"),
    [(["dgo"], "did you mean 'dog'"), ([7], r"class index in \[0, 3\]"), ([], "hold out"), ([0, 1, 2, 3], "hold out")],
)
def test_split_classes_rejects_bad_choices(held: list[str | int], message: str) -> None:
    with pytest.raises(RobustEvalError, match=message):
        split_classes(DATA, held)
