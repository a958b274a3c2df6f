"""Procedural textures: the fog's plasma fractal and the frost images, made in code.

The reference frost corruption blends photographs of frosted glass (``frost1.png`` …
``frost6.jpg``) that are not redistributed with this package. ``frost_texture`` draws
stand-ins instead: dendritic ice crystals (stems with side branches at ±60°, as ice grows
on a hexagonal lattice) over a soft glow and a plasma-fractal haze, tinted pale blue. They
are fixed (seeded by texture index), identical on every machine, and cached per process.
Their statistics only approximate the photographs, so frost accuracies are comparable
between models of one audit, not with published CIFAR-10-C frost numbers.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from scipy import ndimage
from torch import Tensor

FROST_TEXTURES = 5
"""The reference draws ``np.random.randint(5)``: only the first five of its six images are used."""

FROST_BASE_SIZE = 512
_FROST_SEED = 20190401
_TINT = (0.80, 0.88, 1.0)


def plasma_fractal(n: int, mapsize: int, decay: float, gen: torch.Generator,
                   device: torch.device | None = None) -> Tensor:
    """``n`` diamond-square height maps of side ``mapsize`` (a power of two), scaled to [0, 1].

    The reference's ``plasma_fractal(mapsize, wibbledecay)``, batched: midpoints get the
    mean of their neighbours plus ``wibble·U(−wibble, wibble)``; wibble starts at 100 and is
    divided by ``decay`` at each level. Float64 on ``device`` (default CPU); the uniforms are
    drawn on the CPU from ``gen``, so every device gives the same maps.
    """
    if mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two, got {mapsize}")
    grid = torch.zeros(n, mapsize, mapsize, dtype=torch.float64, device=device)
    step, wibble = mapsize, 100.0

    def wibbled(total: Tensor) -> Tensor:
        uniform = torch.rand(total.shape, generator=gen, dtype=torch.float64).to(grid.device)
        noise = uniform * 2 * wibble - wibble
        return total / 4 + wibble * noise

    while step >= 2:
        half = step // 2
        corners = grid[:, ::step, ::step]
        squares = corners + corners.roll(-1, dims=1)
        grid[:, half::step, half::step] = wibbled(squares + squares.roll(-1, dims=2))
        centres, corners = grid[:, half::step, half::step], grid[:, ::step, ::step]
        grid[:, ::step, half::step] = wibbled(centres + centres.roll(1, dims=1) + corners + corners.roll(-1, dims=2))
        grid[:, half::step, ::step] = wibbled(centres + centres.roll(1, dims=2) + corners + corners.roll(-1, dims=1))
        step, wibble = half, wibble / decay
    grid -= grid.amin(dim=(1, 2), keepdim=True)
    return grid / grid.amax(dim=(1, 2), keepdim=True)


@functools.lru_cache(maxsize=FROST_TEXTURES)
def frost_texture(index: int) -> Tensor:
    """Frost texture ``index`` (0..4) as a (3, 512, 512) float64 RGB tensor in [0, 1]."""
    gen = torch.Generator().manual_seed(_FROST_SEED + index)
    size = FROST_BASE_SIZE
    canvas = Image.new("L", (size, size), 0)
    _draw_crystals(ImageDraw.Draw(canvas), size, gen)
    lines = np.asarray(canvas, dtype=np.float64) / 255
    ice = 0.8 * ndimage.gaussian_filter(lines, 0.7) + 1.2 * ndimage.gaussian_filter(lines, 4.0)
    haze = F.interpolate(plasma_fractal(1, 64, 2.0, gen)[None], size=(size, size), mode="bilinear")[0, 0].numpy()
    value = ice + 0.3 * haze
    value = np.clip(value / np.quantile(value, 0.995), 0, 1)
    return torch.from_numpy(value)[None] * torch.tensor(_TINT, dtype=torch.float64)[:, None, None]


def _draw_crystals(draw: ImageDraw.ImageDraw, size: int, gen: torch.Generator) -> None:
    """Draw star-shaped crystals whose arms carry side branches at ±60°, recursively."""
    uniforms = iter(torch.rand(200_000, generator=gen, dtype=torch.float64).tolist())

    def arm(x: float, y: float, angle: float, length: float, depth: int, bright: float) -> None:
        points = [(x, y)]
        steps = max(int(length / 3), 1)
        for k in range(steps):
            angle += (next(uniforms) - 0.5) * 0.25
            x, y = x + 3 * math.cos(angle), y + 3 * math.sin(angle)
            points.append((x, y))
            if depth and next(uniforms) < 0.5:
                side = 1 if next(uniforms) < 0.5 else -1
                sub = length * (1 - k / steps) * (0.2 + 0.35 * next(uniforms))
                if sub > 4:
                    arm(x, y, angle + side * math.pi / 3, sub, depth - 1, bright * 0.85)
        draw.line(points, fill=int(255 * bright), width=1)

    for _ in range(70):
        x, y = next(uniforms) * size, next(uniforms) * size
        start = next(uniforms) * 2 * math.pi
        for a in range(3 + int(next(uniforms) * 4)):
            length = 25 + 110 * next(uniforms)
            arm(x, y, start + a * 2 * math.pi / 6 + next(uniforms) * 0.6, length, 2, 0.55 + 0.45 * next(uniforms))
