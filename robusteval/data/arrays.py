"""In-memory labelled image arrays: the one format every data source produces."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from robusteval.errors import RobustEvalError


@dataclass(frozen=True)
class LabeledArrays:
    """Images as uint8 NHWC (or float32 NCHW in [0, 1]) with int64 labels and class names."""

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    name: str = "data"

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise RobustEvalError(f"{self.name}: expected images of 4 dimensions, got shape {self.x.shape}")
        if len(self.x) != len(self.y):
            raise RobustEvalError(f"{self.name}: {len(self.x)} images but {len(self.y)} labels")
        if self.x.dtype != np.uint8 and self.x.dtype != np.float32:
            raise RobustEvalError(f"{self.name}: expected uint8 NHWC or float32 NCHW images, got {self.x.dtype}")
        if self.x.dtype == np.float32 and not np.isfinite(self.x).all():
            raise RobustEvalError(f"{self.name}: images contain NaN or infinite values")
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= len(self.classes)):
            raise RobustEvalError(
                f"{self.name}: labels must lie in [0, {len(self.classes) - 1}], "
                f"got range [{self.y.min()}, {self.y.max()}]"
            )

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image as models see it."""
        if self.x.dtype == np.uint8:
            n, h, w, c = self.x.shape
            return (c, h, w)
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    def images(self, index: np.ndarray | slice) -> torch.Tensor:
        """Float32 NCHW images in [0, 1] for the rows in ``index``."""
        part = self.x[index]
        if part.dtype == np.uint8:
            # contiguous NCHW: a permuted view keeps NHWC strides, which some libraries (AutoAttack) reject
            return torch.from_numpy(np.ascontiguousarray(part)).permute(0, 3, 1, 2).contiguous().float().div_(255.0)
        return torch.from_numpy(np.ascontiguousarray(part)).clamp_(0.0, 1.0)

    def labels(self, index: np.ndarray | slice) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.y[index])).long()

    def take(self, index: np.ndarray, name: str | None = None) -> LabeledArrays:
        return LabeledArrays(self.x[index], self.y[index], self.classes, name or self.name)

    def stratified(self, size: int | None, seed: int = 0) -> LabeledArrays:
        """A deterministic class-balanced subset of ``size`` rows (all rows when None or larger)."""
        if size is None or size >= len(self):
            return self
        if size <= 0:
            raise RobustEvalError(f"{self.name}: subset size must be positive, got {size}")
        rng = np.random.default_rng(seed)
        per_class = [rng.permutation(np.flatnonzero(self.y == c)) for c in range(self.num_classes)]
        order = []  # round-robin over classes keeps the subset balanced
        for i in range(max(len(p) for p in per_class)):
            order.extend(p[i] for p in per_class if i < len(p))
        return self.take(np.sort(np.asarray(order[:size])), self.name)
