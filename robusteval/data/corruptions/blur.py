"""Blur corruptions of Hendrycks & Dietterich (ICLR 2019), batched.

Each function takes a (N, C, H, W) batch in [0, 1], the severity's reference parameters and
a CPU ``torch.Generator``; the caller clips the result to [0, 1].
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

import robusteval.data.corruptions.kernels as kernels
from robusteval.data.corruptions.registry import corruption


@corruption("gaussian_blur", random=False, note="exact: scikit-image gaussian (edge borders, truncate 4)")
def gaussian_blur(x: Tensor, sigma: float, gen: torch.Generator) -> Tensor:
    """scikit-image ``gaussian(x, sigma)`` (edge-replicating borders, truncate 4σ)."""
    return kernels.gaussian_blur(x, sigma)


@functools.lru_cache(maxsize=32)
def disk_kernel(radius: float, alias_blur: float) -> Tensor:
    """The reference's anti-aliased disk: a normalised disk, then ``cv2.GaussianBlur``.

    The 17×17 (or (2r+1)², r > 8) array is trimmed to its non-zero support, which does not
    change the filtered image.
    """
    span, ksize = (8, 3) if radius <= 8 else (radius, 5)
    grid = torch.arange(-span, span + 1, dtype=torch.float64)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).double()
    kernel = kernels.opencv_gaussian_kernel(disk / disk.sum(), ksize, alias_blur)
    support = int(torch.nonzero(kernel.abs().sum(0)).max()) - len(grid) // 2
    centre = len(grid) // 2
    return kernel[centre - support : centre + support + 1, centre - support : centre + support + 1]


@corruption("defocus_blur", random=False, note="exact: same anti-aliased disk kernel and REFLECT_101 borders")
def defocus_blur(x: Tensor, params: tuple[float, float], gen: torch.Generator) -> Tensor:
    """Correlation with an anti-aliased disk (``cv2.filter2D``, REFLECT_101 borders)."""
    return kernels.filter2d(x, disk_kernel(*params))


@functools.lru_cache(maxsize=32)
def _visit_schedule(height: int, width: int, delta: int) -> list[tuple[Tensor, Tensor]]:
    """Groups of visited pixels that can be updated at once without changing the sequential result.

    The reference visits rows h = H−δ … δ+1 and, in each, columns w = W−δ … δ+1, and sets
    pixel (h, w) from (h+dy, w+dx), dy, dx ∈ [−δ, δ−1]. A visit depends on an earlier one
    only when both their row and column distances are at most δ (< 2δ). With u, v the visit
    indices of row and column, ``level = 2δ·u + v`` strictly increases along every such
    pair, so running the levels in order (each level reading before it writes) is exact.
    Returns, per level, (flat pixel positions, indices into the u-major visit order).
    """
    rows, cols = height - 2 * delta, width - 2 * delta
    if rows <= 0 or cols <= 0:
        return []
    u, v = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    level = (2 * delta * u + v).reshape(-1)
    position = ((height - delta - u) * width + (width - delta - v)).reshape(-1)
    order = torch.argsort(level, stable=True)
    counts = torch.unique_consecutive(level[order], return_counts=True)[1].tolist()
    return [(position[group], group) for group in torch.split(order, counts)]


def glass_permutation(offsets: Tensor, height: int, width: int, delta: int) -> Tensor:
    """Where each pixel comes from after the reference's local pixel "shuffling".

    The reference writes ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on an (H, W, 3) NumPy
    array, where ``x[h, w]`` is a view: the right-hand side holds two views, the first
    assignment overwrites (h, w) with (h', w'), and the second writes (h', w') back with
    the now-updated (h, w). So each visit *copies* (h', w') into (h, w) and leaves (h', w')
    unchanged; every visit sees the copies made before it. This reproduces that exactly.
    ``offsets`` (iterations, N, H−2δ, W−2δ, 2) holds (dy, dx) per visited pixel in visit
    order (rows from the bottom, columns from the right). Returns (N, H·W) source indices
    (a map, not a permutation: pixels can be duplicated).
    """
    iterations, n = offsets.shape[:2]
    source = torch.arange(height * width).repeat(n, 1)
    schedule = _visit_schedule(height, width, delta)
    for it in range(iterations):
        flat = offsets[it].reshape(n, -1, 2)
        shift = flat[..., 0] * width + flat[..., 1]
        for position, group in schedule:
            p = position.expand(n, -1)
            source.scatter_(1, p, source.gather(1, p + shift[:, group]))
    return source


def _reference_input(x: Tensor) -> Tensor:
    """``x`` in float64; a batch of 8-bit levels becomes exactly the reference's ``uint8 / 255.``.

    The reference truncates its first blur to uint8; with σ ≤ 0.4 most blurred values are
    within 1e-5 of an integer, so float32 input error alone would flip ~1% of them.
    """
    x = x.double()
    levels = torch.round(x * 255)
    return levels / 255 if bool(((x * 255 - levels).abs() < 1e-3).all()) else x


@corruption("glass_blur", random=True,
            note=("the reference's per-pixel 'swap' (a copy: NumPy views alias) vectorised in dependency-free waves; "
                  "same pixel map for the same offsets"))
def glass_blur(x: Tensor, params: tuple[float, int, int], gen: torch.Generator) -> Tensor:
    """Gaussian blur, uint8 truncation, local pixel copying (the reference's "swap"), Gaussian blur again.

    The reference's per-pixel Python loop is replaced by ``glass_permutation``, which gives
    the same result for the same random offsets, vectorised over the batch.
    """
    sigma, delta, iterations = params
    n, c, h, w = x.shape
    blurred = torch.floor(kernels.gaussian_blur(_reference_input(x.to(kernels.work_device(x))), sigma) * 255) / 255
    shape = (iterations, n, max(h - 2 * delta, 0), max(w - 2 * delta, 0), 2)
    offsets = torch.randint(-delta, delta, shape, generator=gen)
    source = glass_permutation(offsets, h, w, delta).to(x.device)  # index bookkeeping, launch-bound: on the CPU
    shuffled = blurred.to(x.device, x.dtype).reshape(n, c, h * w).gather(2, source[:, None].expand(n, c, h * w))
    return kernels.gaussian_blur(shuffled.reshape(n, c, h, w), sigma)


@corruption("motion_blur", random=True,
            note=("ImageMagick's MotionBlurImage kernel re-implemented (no ImageMagick); output not re-quantised "
                  "to 8 bits"))
def motion_blur(x: Tensor, params: tuple[float, float], gen: torch.Generator) -> Tensor:
    """ImageMagick ``motion_blur(radius, sigma, angle ~ U(−45°, 45°))`` per image, without ImageMagick."""
    radius, sigma = params
    angles = torch.rand(x.shape[0], generator=gen, dtype=torch.float64) * 90 - 45
    return kernels.motion_blur(x, radius, sigma, angles)


@corruption("zoom_blur", random=False,
            note="exact: clipped_zoom as resampling matrices (per axis for non-square images)")
def zoom_blur(x: Tensor, params: tuple[float, float, float], gen: torch.Generator) -> Tensor:
    """Mean of the image and its centre zooms by ``np.arange(*params)`` (``clipped_zoom`` per axis)."""
    h, w = x.shape[-2:]
    factors = np.arange(*params)
    out = x.clone()
    for factor in factors.tolist():
        out += kernels.separable(x, kernels.zoom_matrix(h, factor), kernels.zoom_matrix(w, factor))
    return out / (len(factors) + 1)
