"""Digital corruptions of Hendrycks & Dietterich (ICLR 2019): brightness, contrast, saturate,
elastic transform, pixelate and JPEG, batched.

HSV edits use closed forms: with hue and saturation fixed, every RGB channel is proportional
to V = max(R, G, B); with hue and V fixed, V − channel is proportional to S. They equal
scikit-image's ``rgb2hsv``/``hsv2rgb`` round trip, including grey pixels (hue 0).
"""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch import Tensor

import robusteval.data.corruptions.kernels as kernels
from robusteval.data.corruptions.registry import corruption


@corruption("brightness", random=False, note="exact closed form of the HSV value shift")
def brightness(x: Tensor, shift: float, gen: torch.Generator) -> Tensor:
    """HSV value V → min(V + shift, 1)."""
    value = x.amax(dim=1, keepdim=True)
    new_value = (value + shift).clamp(max=1.0)
    return torch.where(value > 0, x * (new_value / value.clamp_min(1e-12)), new_value)


@corruption("saturate", random=False, note="exact closed form of the HSV saturation change")
def saturate(x: Tensor, params: tuple[float, float], gen: torch.Generator) -> Tensor:
    """HSV saturation S → clip(S·factor + offset, 0, 1)."""
    factor, offset = params
    value = x.amax(dim=1, keepdim=True)
    spread = value - x.amin(dim=1, keepdim=True)
    sat = torch.where(value > 0, spread / value.clamp_min(1e-12), torch.zeros_like(value))
    new_sat = (sat * factor + offset).clamp(0.0, 1.0)
    coloured = value - (value - x) * (new_sat / sat.clamp_min(1e-12))
    red_hue = torch.cat([value, value * (1 - new_sat), value * (1 - new_sat)], dim=1)  # grey: hue 0
    return torch.where(spread > 0, coloured, red_hue)


@corruption("contrast", random=False, note="exact")
def contrast(x: Tensor, factor: float, gen: torch.Generator) -> Tensor:
    """(x − m)·factor + m with m the per-image, per-channel mean."""
    means = x.mean(dim=(2, 3), keepdim=True)
    return (x - means) * factor + means


def _affine_from_points(src: Tensor, dst: Tensor) -> Tensor:
    """The (N, 2, 3) affine maps taking three ``src`` points to ``dst`` points (``cv2.getAffineTransform``)."""
    ones = torch.ones(*src.shape[:-1], 1, dtype=src.dtype)
    return torch.linalg.solve(torch.cat([src, ones], dim=-1), dst).transpose(1, 2)


@corruption("elastic_transform", random=True,
            note="float bilinear weights where OpenCV's warpAffine uses 5-bit fixed point")
def elastic_transform(x: Tensor, params: tuple[float, float, float], gen: torch.Generator) -> Tensor:
    """Random affine warp (REFLECT_101 borders), then a smooth random displacement field.

    Step 1 is ``cv2.warpAffine`` of three jittered points around the centre, step 2
    ``map_coordinates(order=1, mode='reflect')`` at positions displaced by
    ``alpha``·gaussian(U(−1, 1), ``sigma``, truncate 3) (Simard et al. 2003). OpenCV's
    5-bit fixed-point interpolation weights are exact floats here.
    """
    alpha, sigma, jitter = params
    n, _, h, w = x.shape
    device = kernels.work_device(x)
    cx, cy, half = w // 2, h // 2, min(h, w) // 3
    src = torch.tensor([[cx + half, cy + half], [cx + half, cy - half], [cx - half, cy - half]], dtype=torch.float64)
    src = src.expand(n, 3, 2)
    dst = src + (torch.rand((n, 3, 2), generator=gen, dtype=torch.float64) * 2 - 1) * jitter
    inverse = _affine_from_points(dst, src).to(device)  # output pixel → source pixel
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=device),
                                torch.arange(w, dtype=torch.float64, device=device), indexing="ij")
    points = torch.stack([cols, rows, torch.ones_like(rows)], dim=-1)  # (h, w, 3) as (x, y, 1)
    source = torch.einsum("nij,hwj->nhwi", inverse, points)
    warped = kernels.bilinear_sample(x.to(device), source[..., 1], source[..., 0], "mirror")
    smooth = kernels.separable(
        torch.rand((2, n, h, w), generator=gen, dtype=torch.float64).to(device) * 2 - 1,
        kernels.gaussian_matrix(h, sigma, truncate=3.0, mode="reflect"),
        kernels.gaussian_matrix(w, sigma, truncate=3.0, mode="reflect"),
    ) * alpha
    dx, dy = smooth[0], smooth[1]
    return kernels.bilinear_sample(warped, rows + dy, cols + dx, "reflect").to(x.device, x.dtype)


@corruption("pixelate", random=False, note="PIL BOX coefficients, without PIL's per-axis uint8 rounding")
def pixelate(x: Tensor, factor: float, gen: torch.Generator) -> Tensor:
    """PIL ``BOX`` resize to ``int(side·factor)`` and back, as one matrix per axis."""
    h, w = x.shape[-2:]
    small_h, small_w = int(h * factor), int(w * factor)
    rows = kernels.box_resize_matrix(small_h, h) @ kernels.box_resize_matrix(h, small_h)
    cols = kernels.box_resize_matrix(small_w, w) @ kernels.box_resize_matrix(w, small_w)
    return kernels.separable(x, rows, cols)


@corruption("jpeg_compression", random=False, note="exact: PIL JPEG at the reference quality")
def jpeg_compression(x: Tensor, quality: int, gen: torch.Generator) -> Tensor:
    """PIL JPEG encode/decode at ``quality`` of each image rounded to uint8 (libjpeg's defaults)."""
    return jpeg_round_trip((x.detach().clamp(0, 1) * 255).round(), int(quality)).to(x.dtype)


def jpeg_round_trip(pixels: Tensor, quality: int) -> Tensor:
    """PIL JPEG encode (``quality``, libjpeg's defaults) and decode of (N, 3, H, W) uint8-valued floats;
    returns [0, 1] floats on the same device."""
    images = pixels.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    decoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        with Image.open(buffer) as img:
            decoded.append(np.asarray(img.convert("RGB")))
    return torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).to(pixels.device, torch.float32) / 255
