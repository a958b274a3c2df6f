"""Spatter (Hendrycks & Dietterich 2019, extra corruption): water drops or mud, batched.

The water branch of the reference is an OpenCV pipeline (Canny, distance transform,
histogram equalisation, emboss filter). It is ported here: Canny with 3×3 Sobel, L1
magnitude, OpenCV's non-maximum suppression and 8-connected hysteresis; an exact Euclidean
distance transform (SciPy) where OpenCV uses its 5×5 approximation; OpenCV's rounding and
uint8 saturation at each step. The float64 pipeline runs on the batch's device (the CPU for
MPS); only the distance transform goes through SciPy on the CPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

import robusteval.data.corruptions.kernels as kernels
from robusteval.data.corruptions.registry import corruption

_WATER = (175 / 255, 238 / 255, 238 / 255)  # pale turquoise
_MUD = (63 / 255, 42 / 255, 20 / 255)
_EMBOSS = torch.tensor([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]], dtype=torch.float64)
_BOX3 = torch.full((3, 3), 1 / 9, dtype=torch.float64)
_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)


@corruption("spatter", random=True, note="OpenCV steps ported; exact Euclidean distance transform")
def spatter(x: Tensor, params: tuple[float, ...], gen: torch.Generator) -> Tensor:
    """Blurred, thresholded Gaussian 'liquid' drawn as water (mud = 0) or mud (mud = 1)."""
    _, _, _, threshold, intensity, mud = params
    liquid = liquid_layer(x, params, gen)
    if mud:
        mask = kernels.gaussian_blur((liquid > threshold).double(), intensity)
        mask = torch.where(mask < 0.8, 0.0, mask).to(x.device, x.dtype)
        return x * (1 - mask) + _colour(_MUD, x) * mask
    layer = torch.floor(liquid.clamp(0, 1) * 255)  # uint8; the reference wraps values above 1
    dist = _distance_to_edges(canny(layer, 50, 150), cap=20.0)
    dist = torch.floor(kernels.filter2d(dist, _BOX3))
    dist = equalize_hist(dist)
    dist = torch.round(kernels.filter2d(dist, _EMBOSS)).clamp(0, 255)
    dist = torch.round(kernels.filter2d(dist, _BOX3))
    mask = layer * dist
    peak = mask.amax(dim=(2, 3), keepdim=True)
    mask = torch.where(peak > 0, mask / peak.clamp_min(1e-12), 0.0) * intensity
    return x + mask.to(x.device, x.dtype) * _colour(_WATER, x)


def liquid_layer(x: Tensor, params: tuple[float, ...], gen: torch.Generator) -> Tensor:
    """The blurred, thresholded Gaussian 'liquid' (N, 1, H, W) in float64 on the work device."""
    loc, scale, sigma, threshold = params[:4]
    n, _, h, w = x.shape
    liquid = loc + scale * torch.randn((n, 1, h, w), generator=gen, dtype=torch.float64).to(kernels.work_device(x))
    liquid = kernels.gaussian_blur(liquid, sigma)
    return torch.where(liquid < threshold, 0.0, liquid)


def _colour(rgb: tuple[float, float, float], like: Tensor) -> Tensor:
    return torch.tensor(rgb, dtype=like.dtype).to(like.device)[None, :, None, None]


def canny(image: Tensor, low: float, high: float) -> Tensor:
    """``cv2.Canny(image, low, high)`` of (N, 1, H, W) uint8-valued floats, as a boolean edge map."""
    padded = F.pad(image, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, _SOBEL[None, None].to(image))
    gy = F.conv2d(padded, _SOBEL.T[None, None].to(image))
    mag = gx.abs() + gy.abs()
    m = F.pad(mag, (1, 1, 1, 1))  # outside the image the magnitude is 0

    def neighbour(dr: int, dc: int) -> Tensor:
        return m[..., 1 + dr : 1 + dr + mag.shape[-2], 1 + dc : 1 + dc + mag.shape[-1]]

    # OpenCV's fixed-point test (canny.cpp, CANNY_SHIFT = 15): tan 22.5° as TG22 = 13573 / 2^15
    ax, ay = gx.abs(), gy.abs() * 2**15
    tg22x = ax * 13573
    horizontal = ay < tg22x
    vertical = ay > tg22x + ax * 2**16
    same_sign = (gx < 0) == (gy < 0)  # s = (xs ^ ys) < 0 ? -1 : 1
    keep_h = (mag > neighbour(0, -1)) & (mag >= neighbour(0, 1))
    keep_v = (mag > neighbour(-1, 0)) & (mag >= neighbour(1, 0))  # m > row above, m >= row below
    keep_d = torch.where(  # m > mag[i-1][j-s] and m > mag[i+1][j+s]
        same_sign,
        (mag > neighbour(-1, -1)) & (mag > neighbour(1, 1)),
        (mag > neighbour(-1, 1)) & (mag > neighbour(1, -1)),
    )
    candidate = (mag > low) & torch.where(horizontal, keep_h, torch.where(vertical, keep_v, keep_d))
    edges = candidate & (mag > high)
    while True:
        grown = candidate & (F.max_pool2d(edges.to(image.dtype), 3, stride=1, padding=1) > 0)
        if torch.equal(grown, edges):
            return edges
        edges = grown


def _distance_to_edges(edges: Tensor, cap: float) -> Tensor:
    """Euclidean distance of each pixel to the nearest edge pixel, capped (no edge: ``cap``)."""
    out = torch.full(edges.shape, cap, dtype=torch.float64)
    for i, image in enumerate(edges[:, 0].cpu().numpy()):
        if image.any():
            out[i, 0] = torch.from_numpy(ndimage.distance_transform_edt(~image)).clamp(max=cap)
    return out.to(edges.device)


def equalize_hist(image: Tensor) -> Tensor:
    """``cv2.equalizeHist`` per image of (N, 1, H, W) uint8-valued floats."""
    n = image.shape[0]
    values = image.reshape(n, -1).long()
    hist = torch.zeros(n, 256, dtype=torch.float64, device=image.device)
    hist.scatter_add_(1, values, torch.ones_like(values, dtype=torch.float64))
    first = (hist > 0).double().argmax(dim=1, keepdim=True)
    cumulative = hist.cumsum(1)
    below = cumulative.gather(1, first)
    count = hist.gather(1, first)
    total = values.shape[1]
    scale = 255 / (total - count).clamp_min(1)
    lut = torch.round((cumulative - below) * scale).clamp(0, 255)
    equalized = lut.gather(1, values).reshape(image.shape)
    return torch.where((count == total).reshape(n, 1, 1, 1), image, equalized)
