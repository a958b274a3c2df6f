"""Weather corruptions of Hendrycks & Dietterich (ICLR 2019): snow, frost, fog, batched."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from robusteval.data.corruptions import kernels
from robusteval.data.corruptions.textures import FROST_TEXTURES, frost_texture, plasma_fractal

_GRAY = (0.299, 0.587, 0.114)  # cv2.COLOR_RGB2GRAY


def fog(x: Tensor, params: tuple[float, float], gen: torch.Generator) -> Tensor:
    """Add ``strength``·plasma fractal, rescale by max/(max + strength) per image."""
    strength, decay = params
    n, _, h, w = x.shape
    mapsize = 1 << (max(h, w) - 1).bit_length()  # 32 for CIFAR, 256 for 224 px, as in the reference
    haze = plasma_fractal(n, mapsize, decay, gen)[:, None, :h, :w].to(x.device, x.dtype)
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + strength * haze) * peak / (peak + strength)


def snow(x: Tensor, params: tuple[float, ...], gen: torch.Generator) -> Tensor:
    """Thresholded zoomed Gaussian flakes, motion-blurred at U(−135°, −45°), added twice (rotated 180°).

    The reference motion-blurs the flake layer with ImageMagick via an 8-bit PNG; here the
    same kernel (``kernels.motion_blur``) is applied without re-quantising its output.
    """
    loc, scale, zoom, threshold, radius, sigma, blend = params
    n, _, h, w = x.shape
    layer = loc + scale * torch.randn((n, 1, h, w), generator=gen, dtype=torch.float64)
    layer = kernels.separable(layer, kernels.zoom_matrix(h, zoom), kernels.zoom_matrix(w, zoom))
    layer = torch.where(layer < threshold, 0.0, layer).clamp(0, 1)
    layer = torch.floor(layer * 255) / 255  # the reference's uint8 'L' image
    angles = torch.rand(n, generator=gen, dtype=torch.float64) * 90 - 135
    layer = kernels.motion_blur(layer, radius, sigma, angles).to(x.device, x.dtype)
    gray = sum(weight * x[:, i : i + 1] for i, weight in enumerate(_GRAY))
    x = blend * x + (1 - blend) * torch.maximum(x, gray * 1.5 + 0.5)
    return x + layer + layer.flip(-2, -1)


@functools.lru_cache(maxsize=8)
def frost_stack(scale: float, min_height: int, min_width: int) -> Tensor:
    """The five textures resized by ``scale`` (bilinear, like ``cv2.resize``), at least the given size."""
    base = torch.stack([frost_texture(i) for i in range(FROST_TEXTURES)])
    size = base.shape[-1]
    side = max(int(round(size * scale)), min_height, min_width)
    if side == size:
        return base
    return F.interpolate(base, size=(side, side), mode="bilinear", align_corners=False)


def frost(x: Tensor, params: tuple[float, float, float], gen: torch.Generator) -> Tensor:
    """``image_weight``·x + ``frost_weight``·(random crop of a random frost texture) per image.

    Textures are procedural stand-ins for the reference's photographs (see ``textures``).
    """
    image_weight, frost_weight, scale = params
    n, _, h, w = x.shape
    stack = frost_stack(scale, h + 1, w + 1)
    which = torch.randint(0, FROST_TEXTURES, (n,), generator=gen)
    top = torch.randint(0, stack.shape[-2] - h, (n,), generator=gen)
    left = torch.randint(0, stack.shape[-1] - w, (n,), generator=gen)
    rows = (top[:, None] + torch.arange(h))[:, :, None]
    cols = (left[:, None] + torch.arange(w))[:, None, :]
    crops = stack[which[:, None, None], :, rows, cols].permute(0, 3, 1, 2)  # (n, 3, h, w)
    return image_weight * x + frost_weight * crops.to(x.device, x.dtype)
