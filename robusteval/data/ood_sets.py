"""Out-of-distribution inputs that need no download, and held-out-class splits for near-OOD.

Far-OOD generators follow Hendrycks et al. 2019 (Outlier Exposure): Gaussian noise, uniform
noise and blobs, mapped to [0, 1]; pixel- and patch-shuffled in-distribution images keep the
colour statistics but destroy the object. All are float32 NCHW in [0, 1] and deterministic
under ``seed``. Random numbers and permutations come from a seeded CPU generator (the same on
every device); the images are built on ``device`` (``make_ood_batch``: the input batch's).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from robusteval.data.arrays import LabeledArrays
from robusteval.errors import RobustEvalError
from robusteval.registry import Registry, unknown_name_message

Shape = tuple[int, int, int]
Device = torch.device | str | None


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _check_size(n: int, shape: Sequence[int]) -> Shape:
    if n < 0 or len(shape) != 3 or min(shape) < 1:
        raise RobustEvalError(f"expected n >= 0 and an image shape (channels, height, width), got n={n}, {shape}")
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def _check_images(x: torch.Tensor) -> None:
    if x.ndim != 4:
        raise RobustEvalError(f"expected NCHW images, got shape {tuple(x.shape)}")


def gaussian_noise_images(n: int, shape: Sequence[int], *, seed: int = 0, device: Device = None) -> torch.Tensor:
    """N(0.5, 0.25^2) per pixel, clipped to [0, 1] (OE's N(0, 0.5^2) clipped to [-1, 1], rescaled)."""
    c, h, w = _check_size(n, shape)
    return (torch.randn(n, c, h, w, generator=_generator(seed)).to(device) * 0.25 + 0.5).clamp_(0.0, 1.0)


def uniform_noise_images(n: int, shape: Sequence[int], *, seed: int = 0, device: Device = None) -> torch.Tensor:
    """U(0, 1) per pixel."""
    c, h, w = _check_size(n, shape)
    return torch.rand(n, c, h, w, generator=_generator(seed)).to(device)


def blobs(n: int, shape: Sequence[int], *, seed: int = 0, sigma: float = 1.5, device: Device = None) -> torch.Tensor:
    """Bernoulli(0.7) pixels, Gaussian-blurred (``sigma``), values below 0.75 set to 0 (Hendrycks et al. 2019).

    On CUDA the blur runs in float64: cuDNN's default TF32 would move values across the threshold.
    """
    c, h, w = _check_size(n, shape)
    x = torch.bernoulli(torch.full((n * c, 1, h, w), 0.7), generator=_generator(seed)).to(device)
    dtype = torch.float64 if x.device.type == "cuda" else torch.float32
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    taps = (taps / taps.sum()).to(x.device, dtype)
    x = F.pad(x.to(dtype), (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(F.conv2d(x, taps.view(1, 1, 1, -1)), taps.view(1, 1, -1, 1)).to(torch.float32)
    x[x < 0.75] = 0.0
    return x.view(n, c, h, w).clamp_(0.0, 1.0)


def pixel_shuffled(x: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """Each image's pixel positions permuted independently (channels move together)."""
    _check_images(x)
    n, c, h, w = x.shape
    perm = torch.argsort(torch.rand(n, h * w, generator=_generator(seed)), dim=1).to(x.device)  # CPU: same ties
    flat = x.reshape(n, c, h * w)
    return torch.gather(flat, 2, perm[:, None, :].expand(n, c, h * w)).reshape(n, c, h, w)


def patch_shuffled(x: torch.Tensor, *, patch: int, seed: int = 0) -> torch.Tensor:
    """Each image cut into ``patch`` x ``patch`` tiles whose positions are permuted independently."""
    _check_images(x)
    n, c, h, w = x.shape
    if patch < 1 or h % patch or w % patch:
        raise RobustEvalError(f"patch_shuffled: expected a patch size dividing {h}x{w}, got {patch}")
    gh, gw = h // patch, w // patch
    tiles = x.reshape(n, c, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, -1)
    perm = torch.argsort(torch.rand(n, gh * gw, generator=_generator(seed)), dim=1).to(x.device)
    tiles = torch.gather(tiles, 1, perm[:, :, None].expand_as(tiles))
    return tiles.reshape(n, gh, gw, c, patch, patch).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


def default_patch(h: int, w: int) -> int:
    """The divisor of gcd(h, w) closest to a quarter of it (8 for 32x32 images, 7 for 28x28)."""
    g = math.gcd(h, w)
    return min((d for d in range(1, g + 1) if g % d == 0), key=lambda d: (abs(d - g / 4), d))


# Each entry maps a batch of in-distribution images and a seed to an OOD batch of the same shape.
OodMaker = Callable[[torch.Tensor, int], torch.Tensor]
OOD_SETS: Registry[OodMaker] = Registry("synthetic OOD set")
OOD_SETS.add("gaussian_noise", lambda x, seed: gaussian_noise_images(len(x), x.shape[1:], seed=seed, device=x.device))
OOD_SETS.add("uniform_noise", lambda x, seed: uniform_noise_images(len(x), x.shape[1:], seed=seed, device=x.device))
OOD_SETS.add("blobs", lambda x, seed: blobs(len(x), x.shape[1:], seed=seed, device=x.device))
OOD_SETS.add("pixel_shuffled", lambda x, seed: pixel_shuffled(x, seed=seed))
OOD_SETS.add("patch_shuffled", lambda x, seed: patch_shuffled(x, patch=default_patch(*x.shape[2:]), seed=seed))


def make_ood_batch(name: str, id_images: torch.Tensor, *, seed: int) -> torch.Tensor:
    """The synthetic OOD set ``name`` for one batch of in-distribution images (same shape and device)."""
    _check_images(id_images)
    return OOD_SETS.get(name)(id_images, seed)


def split_classes(data: LabeledArrays, ood_classes: Sequence[str | int]) -> tuple[LabeledArrays, LabeledArrays]:
    """Split off held-out classes as near-OOD: ``(id_data, ood_data)``.

    Meaningful only for a model trained WITHOUT the held-out classes. Both parts re-index their
    labels to their own class list (original order kept), so ``id_data`` labels match a model
    trained on the remaining classes in their original order.
    """
    held = sorted({_class_index(data, c) for c in ood_classes})
    if not held or len(held) == data.num_classes:
        raise RobustEvalError(
            f"{data.name}: expected to hold out between 1 and {data.num_classes - 1} classes, got {len(held)}"
        )
    kept = [k for k in range(data.num_classes) if k not in held]
    return _subset(data, kept, f"{data.name}-id"), _subset(data, held, f"{data.name}-ood")


def _class_index(data: LabeledArrays, cls: str | int) -> int:
    if isinstance(cls, (int, np.integer)) and not isinstance(cls, bool):
        if not 0 <= cls < data.num_classes:
            raise RobustEvalError(f"{data.name}: expected a class index in [0, {data.num_classes - 1}], got {cls}")
        return int(cls)
    if cls not in data.classes:
        raise RobustEvalError(unknown_name_message(f"class of {data.name}", str(cls), data.classes))
    return data.classes.index(cls)


def _subset(data: LabeledArrays, classes: list[int], name: str) -> LabeledArrays:
    rows = np.flatnonzero(np.isin(data.y, classes))
    relabel = np.full(data.num_classes, -1, dtype=np.int64)
    relabel[classes] = np.arange(len(classes))
    return LabeledArrays(data.x[rows], relabel[data.y[rows]], tuple(data.classes[k] for k in classes), name)
