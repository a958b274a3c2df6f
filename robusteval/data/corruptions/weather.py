"""Weather corruptions of Hendrycks & Dietterich (ICLR 2019): snow, frost, fog, batched.

Random layers are drawn on the CPU and built on the batch's device (float64; the CPU for MPS);
frost textures are cached on the batch's device in its dtype.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

import robusteval.data.corruptions.kernels as kernels
from robusteval.data.corruptions.registry import corruption
from robusteval.data.corruptions.textures import FROST_TEXTURES, frost_texture, plasma_fractal
from robusteval.errors import RobustEvalError

_GRAY = (0.299, 0.587, 0.114)  # cv2.COLOR_RGB2GRAY


@corruption("fog", random=True, note="same diamond-square plasma fractal, batched")
def fog(x: Tensor, params: tuple[float, float], gen: torch.Generator) -> Tensor:
    """Add ``strength``·plasma fractal, rescale by max/(max + strength) per image."""
    strength, decay = params
    n, _, h, w = x.shape
    mapsize = 1 << (max(h, w) - 1).bit_length()  # 32 for CIFAR, 256 for 224 px, as in the reference
    haze = plasma_fractal(n, mapsize, decay, gen, kernels.work_device(x))[:, None, :h, :w].to(x.device, x.dtype)
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + strength * haze) * peak / (peak + strength)


@corruption("snow", random=True, note="flake layer motion-blurred with the re-implemented ImageMagick kernel")
def snow(x: Tensor, params: tuple[float, ...], gen: torch.Generator) -> Tensor:
    """Thresholded zoomed Gaussian flakes, motion-blurred at U(−135°, −45°), added twice (rotated 180°).

    The reference motion-blurs the flake layer with ImageMagick via an 8-bit PNG; here the
    same kernel (``kernels.motion_blur``) is applied without re-quantising its output.
    """
    loc, scale, zoom, threshold, radius, sigma, blend = params
    n, _, h, w = x.shape
    layer = loc + scale * torch.randn((n, 1, h, w), generator=gen, dtype=torch.float64).to(kernels.work_device(x))
    layer = kernels.separable(layer, kernels.zoom_matrix(h, zoom), kernels.zoom_matrix(w, zoom))
    layer = torch.where(layer < threshold, 0.0, layer).clamp(0, 1)
    layer = torch.floor(layer * 255) / 255  # the reference's uint8 'L' image
    angles = torch.rand(n, generator=gen, dtype=torch.float64) * 90 - 135
    layer = kernels.motion_blur(layer, radius, sigma, angles).to(x.device, x.dtype)
    gray = sum(weight * x[:, i : i + 1] for i, weight in enumerate(_GRAY))
    x = blend * x + (1 - blend) * torch.maximum(x, gray * 1.5 + 0.5)
    return x + layer + layer.flip(-2, -1)


FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
"""The reference's photographs; it draws ``np.random.randint(5)``, so ``frost6.jpg`` is never used."""


@functools.lru_cache(maxsize=8)
def frost_stack(scale: float, min_height: int, min_width: int) -> Tensor:
    """The five procedural textures resized by ``scale`` (bilinear, like ``cv2.resize``), at least the given size."""
    base = torch.stack([frost_texture(i) for i in range(FROST_TEXTURES)])
    size = base.shape[-1]
    side = max(int(round(size * scale)), min_height, min_width)
    if side == size:
        return base
    return F.interpolate(base, size=(side, side), mode="bilinear", align_corners=False)


@functools.lru_cache(maxsize=8)
def frost_photos(directory: str, scale: float, min_height: int, min_width: int) -> tuple[Tensor, ...]:
    """The reference's ``frost1.png`` … ``frost5.jpg`` from ``directory``, RGB float64, resized by ``scale``.

    ``cv2.resize(fx=fy=scale)`` is bilinear without antialiasing, as ``F.interpolate`` here.
    """
    photos = []
    for name in FROST_FILES[:FROST_TEXTURES]:
        path = Path(directory) / name
        if not path.is_file():
            raise RobustEvalError(f"frost photographs: {path} does not exist (expected {', '.join(FROST_FILES[:5])})")
        try:
            with Image.open(path) as image:
                array = np.asarray(image.convert("RGB"), dtype=np.float64) / 255
        except (OSError, ValueError) as exc:
            raise RobustEvalError(f"frost photographs: cannot read {path}: {exc}") from None
        photo = torch.from_numpy(array).permute(2, 0, 1)
        height, width = (int(round(side * scale)) for side in photo.shape[1:])
        if (height, width) != photo.shape[1:]:
            photo = F.interpolate(photo[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        if height < min_height or width < min_width:
            raise RobustEvalError(f"frost photographs: {path} is {height}x{width} px after the {scale} resize, "
                                  f"expected at least {min_height}x{min_width} to crop from")
        photos.append(photo)
    return tuple(photos)


@corruption("frost", random=True,
            note=("procedural frost textures instead of the reference photographs (not cached and not "
                  "downloadable when the run began; set frost_dir to a copy): not comparable with published "
                  "frost numbers"))
def frost(x: Tensor, params: tuple[float, float, float], gen: torch.Generator, photos: str | None = None) -> Tensor:
    """``image_weight``·x + ``frost_weight``·(random crop of a random frost texture) per image.

    Textures are the reference's photographs read from ``photos`` when given, else
    procedural stand-ins (see ``textures``).
    """
    image_weight, frost_weight, scale = params
    n, _, h, w = x.shape
    textures = _frost_textures(photos, scale, h + 1, w + 1, x.device, x.dtype)
    which = torch.randint(0, FROST_TEXTURES, (n,), generator=gen).tolist()
    crops = []
    for t in which:
        texture = textures[t]
        top = int(torch.randint(0, texture.shape[-2] - h, (1,), generator=gen))
        left = int(torch.randint(0, texture.shape[-1] - w, (1,), generator=gen))
        crops.append(texture[:, top : top + h, left : left + w])
    return image_weight * x + frost_weight * torch.stack(crops)


@functools.lru_cache(maxsize=8)
def _frost_textures(photos: str | None, scale: float, min_height: int, min_width: int, device: torch.device,
                    dtype: torch.dtype) -> tuple[Tensor, ...]:
    """The frost textures (``frost_photos`` or ``frost_stack``) in ``dtype`` on ``device``, cached there.

    Casting before cropping gives the same values as cropping before casting.
    """
    textures = frost_photos(photos, scale, min_height, min_width) if photos else frost_stack(scale, min_height,
                                                                                             min_width)
    return tuple(texture.to(dtype).to(device) for texture in textures)
