"""Tiny models for the adversarial tests: one normal, and some built to fool attacks in known ways.

The tests here pin down, in closed form, the behaviour each trap model is built to have, so
the sanity-check tests that use them cannot pass by accident.
"""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

N_CLASSES = 10


def synthetic(n: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """3x8x8 images in [0, 1]: a fixed random template per class plus Gaussian noise."""
    templates = torch.rand(N_CLASSES, 3, 8, 8, generator=torch.Generator().manual_seed(123))
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, N_CLASSES, (n,), generator=gen)
    x = (0.5 * templates[y] + 0.25 + 0.15 * torch.randn(n, 3, 8, 8, generator=gen)).clamp(0, 1)
    return x, y


@functools.lru_cache(maxsize=1)
def _trained_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = _conv_net()
    x, y = synthetic(512, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(120):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _conv_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, N_CLASSES)
    )


def tiny_net() -> nn.Module:
    """A normally trained small conv net (trained once per session, a fresh copy each call)."""
    model = _conv_net()
    model.load_state_dict(_trained_state())
    return model.eval()


class MeanMargin(nn.Module):
    """Two classes decided by the mean pixel value m; label 1 is predicted when margin(m) > 0.

    ``trap``: margin = (m-0.45) - 2 relu(m-0.52) + 2 relu(m-0.57): from m = 0.6 the margin falls
    towards a positive local minimum at 0.57, so small gradient steps get stuck there, while one
    step of ε >= 0.15 (FGSM) jumps past it to m < 0.45 where the class flips.
    ``window``: margin = |m - 0.525| - 0.025: only m in (0.5, 0.55) is adversarial, so FGSM fools
    at ε = 0.08 (m = 0.52) but not at ε = 0.2 (m = 0.4).
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def margin(self, m: torch.Tensor) -> torch.Tensor:
        if self.kind == "trap":
            return (m - 0.45) - 2 * torch.relu(m - 0.52) + 2 * torch.relu(m - 0.57)
        return (m - 0.525).abs() - 0.025

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 50.0 * self.margin(x.flatten(1).mean(dim=1))
        return torch.stack([-z, z], dim=1)


def mean_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """3x16x16 images with mean exactly 0.6 (a zero-mean pattern on 0.6), all labelled 1."""
    pattern = torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.2 - 0.1
    pattern = pattern - pattern.flatten(1).mean(dim=1).view(-1, 1, 1, 1)
    return 0.6 + pattern, torch.ones(n, dtype=torch.int64)


class QuantisedCount(nn.Module):
    """Counts pixels that round to 1 (zero gradient everywhere); class 1 when more than 42 of 64 do.

    Images of class 1 have every pixel at 0.56: sign noise of ±0.1 pushes half of them below
    0.5 (about 32 remain, class flips) while a uniform random start in [-0.1, 0.1] pushes only
    20% (about 51 remain), and gradient steps do nothing: PGD "fails" where noise succeeds.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        count = torch.round(x).flatten(1).sum(dim=1)
        z = count - 42.5
        return torch.stack([-z, z], dim=1)


def count_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.full((n, 1, 8, 8), 0.56), torch.ones(n, dtype=torch.int64)


def test_tiny_net_is_accurate_with_informative_gradients() -> None:
    x, y = synthetic(128, seed=2)
    model = tiny_net()
    assert (model(x).argmax(1) == y).float().mean() > 0.9
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(xg), y), [xg])
    assert (grad.flatten(1).abs().sum(1) > 0).all()


@pytest.mark.parametrize(
    ("kind", "m", "expected"),
    [("trap", 0.6, 0.05), ("trap", 0.57, 0.02), ("trap", 0.52, 0.07), ("trap", 0.4, -0.05),
     ("window", 0.6, 0.05), ("window", 0.52, -0.02), ("window", 0.4, 0.1)],
)
def test_mean_margin_closed_form(kind: str, m: float, expected: float) -> None:
    assert MeanMargin(kind).margin(torch.tensor([m])).item() == pytest.approx(expected, abs=1e-6)


def test_mean_images_have_mean_point_six_and_are_classified_correctly() -> None:
    x, y = mean_images(8)
    assert torch.allclose(x.flatten(1).mean(1), torch.full((8,), 0.6), atol=1e-6)
    for kind in ("trap", "window"):
        assert (MeanMargin(kind)(x).argmax(1) == y).all()


def test_quantised_count_has_zero_gradient_and_is_fooled_by_sign_noise_only() -> None:
    x, y = count_images(64)
    model = QuantisedCount()
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(xg), y), [xg])
    assert (grad == 0).all()
    gen = torch.Generator().manual_seed(0)
    signs = torch.randint(0, 2, x.shape, generator=gen).float() * 2 - 1
    uniform = torch.rand(x.shape, generator=gen) * 2 - 1
    assert (model(x).argmax(1) == 1).all()
    assert (model(x + 0.1 * signs).argmax(1) == 0).float().mean() > 0.9
    assert (model(x + 0.1 * uniform).argmax(1) == 1).float().mean() > 0.9
