"""Keep what the report's per-class figures and pictures need in the run, when evaluation ends.

:func:`save_samples` writes ``samples.npz`` (:mod:`robusteval.samples`): labels of the clean and
corruption conditions, thumbnails of the gallery's forgotten inputs (chosen from the records'
predictions, :mod:`robusteval.analysis.forgetting`) and one image per corruption and severity.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from robusteval.analysis.forgetting import Member, find_pies, gallery, predictions, pruned_population
from robusteval.conditions import Condition
from robusteval.errors import RobustEvalError
from robusteval.data.arrays import LabeledArrays
from robusteval.metrics import corruption_of
from robusteval.results import RunDir
from robusteval.samples import THUMBNAIL_PX, Samples, write_samples


def save_samples(run: RunDir, clean: LabeledArrays, conditions: Sequence[Condition], baseline: str) -> None:
    """Write ``samples.npz`` for a run whose conditions are evaluated (rewritten on resume)."""
    labels = {c.key: c.labels(0, len(c)).numpy() for c in conditions
              if c.labelled and (c.key == "clean" or corruption_of(c.key) is not None)}
    predicted = {m: p for m, p in predictions(run.records()).items() if len(p) == len(clean)}
    population = pruned_population([Member.of(c) for c in run.models()], (baseline,))
    pies = find_pies(predicted, labels["clean"], clean.classes, population, baseline) if "clean" in labels else []
    index = np.array([g.index for g in gallery(pies, predicted, clean.y, clean.classes, baseline)], dtype=np.int64)
    pictures = clean.image_shape[0] in (1, 3)  # gray or RGB: other images get no thumbnails
    index = index if pictures else index[:0]
    images = thumbnails(clean.images(index)) if len(index) else np.zeros((0, 1, 1, 3), dtype=np.uint8)
    strips, severities = _strips(conditions) if pictures else ({}, ())
    write_samples(run.path, Samples(clean.classes, labels, index, images, strips, severities))


def _strips(conditions: Sequence[Condition]) -> tuple[dict[str, np.ndarray], tuple[int, ...]]:
    """corruption → the first input of its condition at each severity, made by the condition itself (its
    transform and seed; drawn for a batch of one, so random corruptions differ in detail from the batch
    the models saw)."""
    by_name: dict[str, dict[int, Condition]] = {}
    for c in conditions:
        if (point := corruption_of(c.key)) is not None and len(c):
            by_name.setdefault(point[0], {})[point[1]] = c
    severities = sorted({s for per in by_name.values() for s in per})
    strips = {name: thumbnails(torch.cat([per[s].inputs(0, 1, 0) for s in severities]))
              for name, per in by_name.items() if sorted(per) == severities}
    return strips, tuple(severities)


def thumbnails(images: torch.Tensor, px: int = THUMBNAIL_PX) -> np.ndarray:
    """Float NCHW images in [0, 1] as uint8 NHWC RGB no larger than ``px`` a side (area averaging)."""
    x = images.detach().to("cpu", torch.float32)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        raise RobustEvalError(f"thumbnails need 1 or 3 channels, got images of shape {tuple(x.shape)}")
    scale = px / max(x.shape[2], x.shape[3])
    if scale < 1:
        size = (max(1, round(x.shape[2] * scale)), max(1, round(x.shape[3] * scale)))
        x = F.interpolate(x, size=size, mode="area")
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
