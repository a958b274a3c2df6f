"""Corruption API: registry, shapes, ranges, seeding, severity ordering and input checks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robusteval.data.corruptions import (
    BENCHMARK_CORRUPTIONS,
    CORRUPTIONS,
    DEFAULT_NOISE_EPS,
    EXTRA_CORRUPTIONS,
    condition_seed,
    corrupt,
    describe,
    parameter_set,
    uniform_noise,
)
from robusteval.data.corruptions.params import CIFAR, IMAGENET
from robusteval.errors import RobustEvalError


def scenes(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Natural-looking test images: smooth colour fields, a few sharp discs, mild grain."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(size, size), mode="bicubic", align_corners=False)
    r = torch.arange(size, dtype=torch.float32)
    for _ in range(3):
        centre = torch.rand(n, 2, generator=g) * size
        radius = (0.1 + 0.25 * torch.rand(n, generator=g)) * size
        dist2 = (r[None, :, None] - centre[:, 0, None, None]) ** 2 + (r[None, None, :] - centre[:, 1, None, None]) ** 2
        x = torch.where((dist2 < radius[:, None, None] ** 2)[:, None], torch.rand(n, 3, 1, 1, generator=g), x)
    return (x + 0.03 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)


X = scenes(8, 32)
ALL = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
# The reference tables do not grow the pixel distance with severity for these:
# elastic (CIFAR severity 1 has the largest affine jitter), glass (sigma alternates 0.4/0.25,
# and more blur hides the shuffling), frost (severities 4-5 darken the image as they add frost),
# saturate (1-2 desaturate, 3-5 saturate), spatter (1-3 water, 4-5 mud).
NOT_MONOTONE = {"elastic_transform", "glass_blur", "frost", "saturate", "spatter"}


def distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())


def test_registry_names_and_tables() -> None:
    assert len(BENCHMARK_CORRUPTIONS) == 15 and len(EXTRA_CORRUPTIONS) == 4
    assert set(CORRUPTIONS) == set(ALL) == set(CIFAR) == set(IMAGENET)
    assert all(len(CIFAR[n]) == 5 and len(IMAGENET[n]) == 5 for n in ALL)
    assert all(describe(n) for n in ALL)


@pytest.mark.parametrize("name", ALL)
def test_shape_dtype_range_and_seeding(name: str) -> None:
    a = corrupt(X, name, 3, seed=1)
    assert a.shape == X.shape and a.dtype == X.dtype
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, corrupt(X, name, 3, seed=1))
    assert not torch.equal(a, X)
    other = corrupt(X, name, 3, seed=2)
    assert torch.equal(a, other) != CORRUPTIONS.get(name).random  # random ones differ, the rest ignore the seed
    assert torch.equal(X, scenes(8, 32))  # the input is left alone


def test_float64_input_keeps_dtype() -> None:
    out = corrupt(X[:2].double(), "zoom_blur", 2, seed=0)
    assert out.dtype == torch.float64
    assert torch.allclose(out.float(), corrupt(X[:2], "zoom_blur", 2, seed=0), atol=1e-5)


@pytest.mark.parametrize("name", sorted(set(ALL) - NOT_MONOTONE))
def test_distance_grows_with_severity(name: str) -> None:
    d = [distance(corrupt(X, name, s, seed=7), X) for s in range(1, 6)]
    # CIFAR motion blur severities 3 and 4 differ only in kernel taps weighing < 1e-9
    assert all(b >= a * 0.999 for a, b in zip(d, d[1:])) and d[-1] > 1.1 * d[0], d
    if name != "motion_blur":
        assert all(b > a for a, b in zip(d, d[1:])), d


def test_spatter_grows_within_water_and_mud() -> None:
    d = [distance(corrupt(X, "spatter", s, seed=7), X) for s in range(1, 6)]
    assert d[0] < d[1] < d[2] and d[3] < d[4], d


def test_imagenet_parameter_set_on_224px() -> None:
    x = scenes(1, 224)
    for name in ALL:
        out = corrupt(x, name, 2, seed=3)
        assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1, name
        assert torch.equal(out, corrupt(x, name, 2, seed=3)), name
    # ImageNet noise is stronger than CIFAR noise: sigma 0.12 vs 0.06 at severity 2
    grey = torch.full((1, 3, 224, 224), 0.5)
    assert (corrupt(grey, "gaussian_noise", 2, seed=0) - grey).std() == pytest.approx(0.12, rel=0.02)


def test_non_square_and_empty_batches() -> None:
    x = scenes(2, 48)[:, :, :40, :]
    for name in ALL:
        assert corrupt(x, name, 5, seed=0).shape == x.shape, name
    empty = torch.zeros(0, 3, 32, 32)
    assert corrupt(empty, "fog", 1, seed=0).shape == empty.shape


def test_parameter_set_by_size() -> None:
    assert parameter_set(32, 32) == "cifar"
    assert parameter_set(100, 300) == "cifar"
    assert parameter_set(224, 224) == parameter_set(256, 512) == "imagenet"
    with pytest.raises(RobustEvalError, match="positive"):
        parameter_set(0, 32)


def test_condition_seed_is_stable_and_distinct() -> None:
    seed = condition_seed("gaussian_noise", 3, 7)
    assert seed == 1156031987821026800  # fixed across processes and Python hash seeds
    assert 0 <= seed < 2**63
    others = {condition_seed("gaussian_noise", 3, 8), condition_seed("gaussian_noise", 4, 7),
              condition_seed("shot_noise", 3, 7), condition_seed("gaussian_noise", 3, 7, base_seed=1)}
    assert seed not in others and len(others) == 4


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((X, "gausian_noise", 1), "did you mean 'gaussian_noise'"),
        ((X, "fog", 0), "severity in 1..5"),
        ((X, "fog", 6), "severity in 1..5"),
        ((X, "fog", True), "severity in 1..5"),
        ((X, "fog", 2.0), "severity in 1..5"),
        ((X[0], "fog", 1), r"shape \(N, 3, H, W\)"),
        ((X[:, :1], "fog", 1), r"shape \(N, 3, H, W\)"),
        ((X[:, :, :8, :8], "fog", 1), "at least 16x16"),
        (((X * 255).to(torch.uint8), "fog", 1), "float tensor"),
        ((X.numpy(), "fog", 1), "torch.Tensor"),
        ((X * 2, "fog", 1), r"values in \[0, 1\]"),
        ((torch.full_like(X, float("nan")), "fog", 1), "NaN"),
    ],
)
def test_bad_input_is_refused(args: tuple, match: str) -> None:
    with pytest.raises(RobustEvalError, match=match):
        corrupt(*args, seed=0)


def test_uniform_noise_statistics() -> None:
    grey = torch.full((8, 3, 32, 32), 0.5)
    std = (0.25, 0.5, 1.0)
    residual = uniform_noise(grey, 0.3, seed=0, std=std) - grey
    for c, s in enumerate(std):  # U(-eps·std_c, eps·std_c) per channel
        assert float(residual[:, c].abs().max()) <= 0.3 * s + 1e-6
        assert float(residual[:, c].mean()) == pytest.approx(0.0, abs=0.02 * s)
        assert float(residual[:, c].var()) == pytest.approx((0.3 * s) ** 2 / 3, rel=0.05)
    assert torch.equal(uniform_noise(X, 0.0, seed=0, std=std), X)
    assert torch.equal(uniform_noise(X, 0.2, seed=5, std=std), uniform_noise(X, 0.2, seed=5, std=std))
    assert not torch.equal(uniform_noise(X, 0.2, seed=5, std=std), uniform_noise(X, 0.2, seed=5, std=(0.2,)))
    assert not torch.equal(uniform_noise(X, 0.2, seed=5, std=std), uniform_noise(X, 0.2, seed=6, std=std))
    noisy = uniform_noise(X, 0.7, seed=0, std=std)
    assert float(noisy.min()) < 0 and float(noisy.max()) > 1  # unclipped, as eps_ball.py
    with pytest.raises(RobustEvalError, match="eps"):
        uniform_noise(X, -0.1, seed=0, std=std)
    with pytest.raises(RobustEvalError, match="std"):
        uniform_noise(X, 0.1, seed=0, std=(0.2, 0.2))
    assert DEFAULT_NOISE_EPS == pytest.approx(tuple(torch.linspace(0, 0.7, 15).tolist()))
