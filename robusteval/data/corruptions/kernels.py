"""Linear operators shared by the corruptions, built to match the reference libraries.

Every spatial filter of the reference scripts (scikit-image ``gaussian``, SciPy ``zoom``,
PIL ``BOX`` resizing, OpenCV ``filter2D``/``GaussianBlur``, ImageMagick ``-motion-blur``)
is a fixed linear map per image axis or a small kernel. Here they are built once as
matrices/kernels (cached) and applied to whole batches with ``matmul``/``conv2d``/``gather``.
They are built on the CPU and moved to the batch's device where they are applied.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

BORDER_MODES = ("nearest", "reflect", "mirror")
"""SciPy names: ``nearest`` = edge replicate (skimage default), ``reflect`` = half-sample
symmetric (d c b a | a b c d), ``mirror`` = whole-sample symmetric (OpenCV REFLECT_101)."""


def work_device(x: Tensor) -> torch.device:
    """Where float64 work derived from ``x`` runs: ``x``'s device, but the CPU for MPS (no float64 there)."""
    return torch.device("cpu") if x.device.type == "mps" else x.device


def conv_dtype(x: Tensor) -> torch.dtype:
    """float64 for convolutions on CUDA (cuDNN's default TF32 rounds float32 inputs to 10 bits), else ``x``'s."""
    return torch.float64 if x.device.type == "cuda" else x.dtype


def fold_index(index: Tensor, n: int, mode: str) -> Tensor:
    """Map integer positions outside [0, n) back inside according to a border ``mode``."""
    if mode == "nearest":
        return index.clamp(0, n - 1)
    if mode == "reflect":
        m = index.remainder(2 * n)
        return torch.where(m >= n, 2 * n - 1 - m, m)
    if mode == "mirror":
        if n == 1:
            return torch.zeros_like(index)
        m = index.remainder(2 * n - 2)
        return torch.where(m >= n, 2 * n - 2 - m, m)
    raise ValueError(f"unknown border mode {mode!r}")


def _filter_matrix(n: int, taps: Tensor, mode: str) -> Tensor:
    """The n×n matrix of correlating a length-n signal with centred ``taps`` under ``mode``."""
    radius = (len(taps) - 1) // 2
    rows = torch.arange(n).repeat_interleave(len(taps))
    cols = fold_index(torch.arange(n)[:, None] + torch.arange(-radius, radius + 1)[None, :], n, mode).reshape(-1)
    matrix = torch.zeros(n, n, dtype=torch.float64)
    matrix.index_put_((rows, cols), taps.repeat(n), accumulate=True)
    return matrix


@functools.lru_cache(maxsize=256)
def gaussian_matrix(n: int, sigma: float, *, truncate: float = 4.0, mode: str = "nearest") -> Tensor:
    """``scipy.ndimage.gaussian_filter1d`` along an axis of length n, as a matrix (float64).

    Matches scikit-image's ``gaussian`` (which calls SciPy) including its defaults
    (``mode='nearest'``, ``truncate=4``); sigma <= 1e-15 is the identity, as in SciPy.
    """
    if sigma <= 1e-15:
        return torch.eye(n, dtype=torch.float64)
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return _filter_matrix(n, taps / taps.sum(), mode)


@functools.lru_cache(maxsize=256)
def zoom_matrix(n: int, factor: float) -> Tensor:
    """The reference's ``clipped_zoom`` along one axis of length n, as an n×n matrix.

    Centre crop of ``ceil(n / factor)`` samples, ``scipy.ndimage.zoom(order=1)`` (output
    ``round(crop * factor)`` samples, end points aligned), then a centred trim back to n.
    """
    crop = int(math.ceil(n / factor))
    top = (n - crop) // 2
    size = int(round(crop * factor))
    coords = torch.arange(size, dtype=torch.float64) * ((crop - 1) / (size - 1) if size > 1 else 0.0)
    lower = coords.floor().long().clamp(max=crop - 1)
    frac = coords - lower
    upper = (lower + 1).clamp(max=crop - 1)
    interp = torch.zeros(size, crop, dtype=torch.float64)
    rows = torch.arange(size)
    interp.index_put_((rows, lower), 1 - frac, accumulate=True)
    interp.index_put_((rows, upper), frac, accumulate=True)
    trim = (size - n) // 2
    matrix = torch.zeros(n, n, dtype=torch.float64)
    matrix[:, top : top + crop] = interp[trim : trim + n]
    return matrix


@functools.lru_cache(maxsize=256)
def box_resize_matrix(n_in: int, n_out: int) -> Tensor:
    """PIL's ``Image.resize(..., Image.BOX)`` along one axis, as an n_out×n_in matrix.

    Same coefficients as PIL's ``precompute_coeffs`` (box support 0.5, scaled by the
    down-sampling factor); PIL also rounds to uint8 after each axis, which is not done here.
    """
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
    for out in range(n_out):
        center = (out + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        pos = (torch.arange(lo, hi, dtype=torch.float64) - center + 0.5) / filterscale
        weights = ((pos > -0.5) & (pos <= 0.5)).double()
        matrix[out, lo:hi] = weights / weights.sum()
    return matrix


def separable(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Apply ``rows`` (H'×H) and ``cols`` (W'×W) to the last two axes of ``x``: R · X · Cᵀ."""
    rows = rows.to(x.device, x.dtype)
    cols = cols.to(x.device, x.dtype)
    return torch.matmul(torch.matmul(rows, x), cols.T)


def gaussian_blur(x: Tensor, sigma: float, *, truncate: float = 4.0, mode: str = "nearest") -> Tensor:
    """scikit-image ``gaussian(x, sigma)`` on the two spatial axes of a (..., H, W) tensor."""
    h, w = x.shape[-2:]
    return separable(x, gaussian_matrix(h, sigma, truncate=truncate, mode=mode),
                     gaussian_matrix(w, sigma, truncate=truncate, mode=mode))


def opencv_gaussian_kernel(image: Tensor, ksize: int, sigma: float) -> Tensor:
    """``cv2.GaussianBlur(image, (ksize, ksize), sigma)`` of a small 2-D float64 array."""
    offsets = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    taps = torch.exp(-(offsets**2) / (2 * sigma**2))
    taps = taps / taps.sum()
    return _filter_matrix(image.shape[0], taps, "mirror") @ image @ _filter_matrix(image.shape[1], taps, "mirror").T


def filter2d(x: Tensor, kernel: Tensor) -> Tensor:
    """``cv2.filter2D(x, -1, kernel)`` per channel (correlation, REFLECT_101 borders)."""
    kh, kw = kernel.shape
    n, c, h, w = x.shape
    padded = F.pad(x.reshape(n * c, 1, h, w), (kw // 2, kw // 2, kh // 2, kh // 2), mode="reflect")
    dtype = conv_dtype(x)
    out = F.conv2d(padded.to(dtype), kernel.to(x.device, dtype)[None, None])
    return out.reshape(n, c, h, w).to(x.dtype)


def motion_blur(x: Tensor, radius: float, sigma: float, angles: Tensor) -> Tensor:
    """ImageMagick's ``MotionBlurImage(radius, sigma, angle)`` with one angle per image.

    Kernel width ``2·ceil(radius)+1``; one-sided Gaussian weights exp(-i²/2σ²) at offsets
    ``(ceil(i·cos a − ½), ceil(i·sin a − ½))``, i = 0..width−1; edge pixels extend the image.
    """
    n, c, h, w = x.shape
    width = 2 * int(math.ceil(radius)) + 1
    steps = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-(steps**2) / (2 * sigma**2))
    weights = (weights / weights.sum()).tolist()
    rad = torch.deg2rad(angles.double())[:, None]
    dx = torch.ceil(steps * torch.cos(rad) - 0.5).long()  # (n, width)
    dy = torch.ceil(steps * torch.sin(rad) - 0.5).long()
    pad = width - 1
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate").reshape(n, c, -1)
    wp = w + 2 * pad
    base = ((torch.arange(h)[:, None] + pad) * wp + torch.arange(w)[None, :] + pad).reshape(1, -1)
    shifts = (dy * wp + dx).to(x.device)
    base = base.to(x.device)
    out = torch.zeros(n, c, h * w, dtype=x.dtype, device=x.device)
    for i, weight in enumerate(weights):
        index = (base + shifts[:, i : i + 1]).unsqueeze(1).expand(n, c, h * w)
        out.add_(padded.gather(2, index), alpha=weight)
    return out.reshape(n, c, h, w)


def bilinear_sample(x: Tensor, rows: Tensor, cols: Tensor, mode: str) -> Tensor:
    """Bilinear interpolation of (N, C, H, W) at per-image (N, H', W') positions, borders by ``mode``."""
    n, c, h, w = x.shape
    r0, c0 = rows.floor(), cols.floor()
    fr, fc = (rows - r0).unsqueeze(1), (cols - c0).unsqueeze(1)
    r0, c0 = r0.long(), c0.long()
    flat = x.reshape(n, c, h * w)

    def at(r: Tensor, q: Tensor) -> Tensor:
        index = (fold_index(r, h, mode) * w + fold_index(q, w, mode)).reshape(n, 1, -1).expand(n, c, -1)
        return flat.gather(2, index).reshape(n, c, *rows.shape[1:])

    top = at(r0, c0) * (1 - fc) + at(r0, c0 + 1) * fc
    bottom = at(r0 + 1, c0) * (1 - fc) + at(r0 + 1, c0 + 1) * fc
    return top * (1 - fr) + bottom * fr
