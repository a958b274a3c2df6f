"""Noise corruptions (Hendrycks & Dietterich 2019) and the uniform ε-ball noise of Liebenwein et al. 2021.

Random numbers are always drawn on the CPU from the given generator and then moved to the
input's device, so results do not depend on the device.
"""
from __future__ import annotations

import torch
from torch import Tensor

from robusteval.data.corruptions.registry import corruption

_EXACT = "same formula as the reference; different random draws"


def draw(kind: str, like: Tensor, gen: torch.Generator, shape: tuple[int, ...] | None = None) -> Tensor:
    """Standard normal (``randn``) or uniform [0, 1) (``rand``) samples shaped like ``like``."""
    size = tuple(like.shape) if shape is None else shape
    sample = torch.randn if kind == "randn" else torch.rand
    return sample(size, generator=gen, dtype=like.dtype).to(like.device)


@corruption("gaussian_noise", random=True, note=_EXACT)
def gaussian_noise(x: Tensor, sigma: float, gen: torch.Generator) -> Tensor:
    """x + N(0, σ²) per pixel and channel."""
    return x + sigma * draw("randn", x, gen)


@corruption("shot_noise", random=True, note=_EXACT)
def shot_noise(x: Tensor, photons: float, gen: torch.Generator) -> Tensor:
    """Poisson(λ·x) / λ: photon counting noise with λ photons at full intensity."""
    rates = (x * photons).cpu().double()  # drawn with the CPU generator; MPS has no float64
    return (torch.poisson(rates, generator=gen) / photons).to(x.device, x.dtype)


@corruption("impulse_noise", random=True,
            note="current scikit-image random_noise('s&p') semantics, per channel value; the 2018 scikit-image that "
                 "made CIFAR-10-C differs (-2 to +4 accuracy points by severity)")
def impulse_noise(x: Tensor, amount: float, gen: torch.Generator) -> Tensor:
    """Salt-and-pepper: each value becomes 0 or 1 (equally likely) with probability ``amount``.

    scikit-image ``random_noise(mode='s&p', amount=...)`` semantics, per channel value.
    """
    flip = draw("rand", x, gen) < amount
    salt = draw("rand", x, gen) < 0.5
    return torch.where(flip, salt.to(x.dtype), x)


@corruption("speckle_noise", random=True, note=_EXACT)
def speckle_noise(x: Tensor, sigma: float, gen: torch.Generator) -> Tensor:
    """x + x·N(0, σ²): multiplicative noise."""
    return x + x * sigma * draw("randn", x, gen)


def uniform_noise_sample(x: Tensor, eps: float, std: Tensor, gen: torch.Generator) -> Tensor:
    """x + 2ε·σ_c·(U − ½), U ~ U[0, 1) per value, unclipped: for a model fed (x − mean)/σ this is
    ``eps_ball.py``'s ``imgs + 2 * eps * (noise - 0.5)`` on the normalised input (Liebenwein et al., MLSys 2021).
    ``std`` holds σ_c, shaped to broadcast over ``x``'s channels."""
    if eps == 0:
        return x.clone()
    return x + 2 * eps * std.to(x.device, x.dtype) * (draw("rand", x, gen) - 0.5)
