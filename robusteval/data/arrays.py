"""In-memory labelled image arrays: the one format every data source produces."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from robusteval.errors import RobustEvalError


@dataclass(frozen=True)
class LabeledArrays:
    """Images as uint8 NHWC (or float32 NCHW in [0, 1]) with int64 labels and class names.

    ``logit_indices`` marks a class subset of a larger label space (ImageNet-R/A: 200 of the
    1,000 ImageNet classes): a model has ``logit_space`` outputs, and its logits are restricted
    to these columns (in this order, so label ``i`` is column ``logit_indices[i]``) before any
    metric, as the data sets' official evaluation code does.
    """

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    name: str = "data"
    logit_indices: tuple[int, ...] | None = None
    logit_space: int | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise RobustEvalError(f"{self.name}: expected images of 4 dimensions, got shape {self.x.shape}")
        if len(self.x) != len(self.y):
            raise RobustEvalError(f"{self.name}: {len(self.x)} images but {len(self.y)} labels")
        if self.x.dtype != np.uint8 and self.x.dtype != np.float32:
            raise RobustEvalError(f"{self.name}: expected uint8 NHWC or float32 NCHW images, got {self.x.dtype}")
        if self.x.dtype == np.float32 and not np.isfinite(self.x).all():
            raise RobustEvalError(f"{self.name}: images contain NaN or infinite values")
        check_labels(self.y, len(self.classes), self.name)
        if self.logit_indices is not None and (len(self.logit_indices) != len(self.classes) or self.logit_space is None
                                               or max(self.logit_indices) >= self.logit_space):
            raise ValueError(f"{self.name}: logit indices must name one column of logit_space per class")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_logits(self) -> int:
        """How many outputs a model for this data has (more than ``num_classes`` for a class subset)."""
        return self.num_classes if self.logit_space is None else self.logit_space

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

    def restrict(self, logits: torch.Tensor) -> torch.Tensor:
        """A model's logits in this data's label space (the subset's columns; unchanged otherwise)."""
        return logits if self.logit_indices is None else logits[:, list(self.logit_indices)]

    def take(self, index: np.ndarray, name: str | None = None) -> LabeledArrays:
        return LabeledArrays(self.x[index], self.y[index], self.classes, name or self.name, self.logit_indices,
                             self.logit_space)

    def channel_std(self, chunk: int = 256) -> tuple[float, ...]:
        """Per-channel standard deviation of the images in [0, 1] over every pixel (float64, in chunks)."""
        total = sq = None
        for start in range(0, len(self), chunk):
            part = self.images(slice(start, start + chunk)).double().transpose(0, 1).flatten(1)
            total = part.sum(1) if total is None else total + part.sum(1)
            sq = (part**2).sum(1) if sq is None else sq + (part**2).sum(1)
        if total is None or sq is None:
            raise RobustEvalError(f"{self.name}: no images to measure the per-channel std on")
        count = len(self) * self.image_shape[1] * self.image_shape[2]
        var = (sq / count - (total / count) ** 2).clamp_min(0.0)
        return tuple(round(float(v), 6) for v in var.sqrt())

    def stratified(self, size: int | None, seed: int = 0) -> LabeledArrays:
        """A deterministic class-balanced subset of ``size`` rows (all rows when None or larger)."""
        if size is None or size >= len(self):
            return self
        return self.take(stratified_indices(self.y, self.num_classes, size, seed, self.name), self.name)


def stratified_indices(y: np.ndarray, num_classes: int, size: int, seed: int = 0, name: str = "data") -> np.ndarray:
    """Sorted row indices of a seeded class-balanced sample of ``size`` labels ``y`` (round-robin over classes)."""
    if size <= 0:
        raise RobustEvalError(f"{name}: subset size must be positive, got {size}")
    if size >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in range(num_classes)]
    order = []  # round-robin over classes keeps the subset balanced
    for i in range(max(len(p) for p in per_class)):
        order.extend(p[i] for p in per_class if i < len(p))
    return np.sort(np.asarray(order[:size]))


def check_labels(y: np.ndarray, num_classes: int, name: str) -> None:
    """Labels must lie in [0, num_classes); the message names the first bad label and its index."""
    if not len(y):
        return
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if len(bad):
        i = int(bad[0])
        raise RobustEvalError(f"{name}: labels must lie in [0, {num_classes - 1}], got {int(y[i])} at index {i} "
                              f"({len(bad)} out of range, range [{y.min()}, {y.max()}])")


def match_sources(data: LabeledArrays, reference: LabeledArrays, what: str, ref_what: str) -> str | None:
    """Refuse ``data`` unless it has the image size and label space of ``reference``; class names are
    optional, so differing names give a warning (returned) that lists both, not an error."""
    if data.image_shape != reference.image_shape or data.num_logits != reference.num_logits:
        raise RobustEvalError(
            f"{what} ({_space(data)}, images {data.image_shape}) does not match {ref_what} "
            f"({_space(reference)}, images {reference.image_shape})"
        )
    if data.logit_indices is not None or reference.logit_indices is not None or data.classes == reference.classes:
        return None
    return (f"{what} and {ref_what} name their {data.num_classes} classes differently "
            f"(matched by index): {_names(data.classes)} vs {_names(reference.classes)}")


def _space(data: LabeledArrays) -> str:
    if data.logit_indices is None:
        return f"{data.num_classes} classes"
    return f"{data.num_classes} of {data.num_logits} classes"


def _names(classes: tuple[str, ...], limit: int = 12) -> str:
    shown = ", ".join(classes[:limit])
    return f"[{shown}{', …' if len(classes) > limit else ''}]"
