"""Who pays for the pruning, per class: per-class accuracies and disparate impact.

Computed from the records' per-sample correctness and the labels the run keeps
(:mod:`robusteval.samples`); nothing loads a model.

* ``clean/class/<class>/accuracy``: the share of the clean samples of that class a model gets
  right (its recall); ``corruption/<name>/class/<class>/accuracy``: its mean over the severities.
* ``clean/worst_class_accuracy``: the lowest of those; ``clean/max_class_drop``: the largest per-class
  drop against the baseline (0 for the baseline itself).
* **Disparate impact** follows Hooker et al., "What Do Compressed Deep Neural Networks Forget?"
  (arXiv 1911.05248, v3 p. 3): a class is disparately impacted when its accuracy, *mean-shifted* by
  the change of top-1 accuracy, differs from the baseline's. The *normalised recall difference* is
  that shifted difference, ``(R_c(pruned) - R_c(base)) - (A(pruned) - A(base))``: the class's change
  minus the overall change, negative when the class loses more than the average. The paper tests it
  with a two-tailed Welch t-test over populations of 30 trained models per sparsity; an audit has
  one model per (method, ratio), so the test here is over test images instead: a class-stratified
  paired bootstrap (resampling each class's (baseline, pruned) correctness pairs) gives each class's
  interval at the Bonferroni level ``1 - (1 - confidence) / classes``, and a class is
  *significantly* affected when its interval lies below 0 (one side of the paper's two-tailed test:
  classes that gain are not reported as harmed). ``multiple`` states it as a ratio of drops: the
  class's accuracy drop over the overall drop ("loses 3x the average"). The same resamples give the
  interval of the largest per-class drop (the maximum itself resampled, so its selection is
  accounted for and the interval sits above the point estimate when many classes are close).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from robusteval.metrics import class_key, corruption_of
from robusteval.records import Record, as_records
from robusteval.results import decode_bits
from robusteval.samples import Samples


def class_recall(correct: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per class, the share of its samples that are correct (NaN for a class without samples)."""
    totals = np.bincount(labels, minlength=num_classes).astype(float)
    hits = np.bincount(labels, weights=np.asarray(correct, dtype=float), minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, hits / np.maximum(totals, 1), np.nan)


def correctness(records: Iterable[Record | Mapping[str, Any]],
                labels: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """model → condition → per-sample correctness, for the conditions whose labels the run keeps."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for rec in as_records(records):
        y = labels.get(rec.condition)
        if y is not None and rec.correct and rec.n == len(y):
            out.setdefault(rec.model, {})[rec.condition] = decode_bits(rec.correct, len(y))
    return out


def class_metrics(records: Iterable[Record | Mapping[str, Any]], samples: Samples,
                  baseline: str) -> dict[str, dict[str, float]]:
    """model → the per-class metrics of the module docstring."""
    correct = correctness(records, samples.labels)
    k = len(samples.classes)
    recalls = {m: {c: class_recall(bits, samples.labels[c], k) for c, bits in conds.items()}
               for m, conds in correct.items()}
    base = recalls.get(baseline, {}).get("clean")
    return {model: _model_class_metrics(by_condition, samples.classes, base) for model, by_condition in recalls.items()}


def _model_class_metrics(by_condition: Mapping[str, np.ndarray], classes: tuple[str, ...],
                         base: np.ndarray | None) -> dict[str, float]:
    out: dict[str, float] = {}
    clean = by_condition.get("clean")
    if clean is not None:
        out |= {class_key("clean", name): float(r) for name, r in zip(classes, clean) if not math.isnan(r)}
        if not np.isnan(clean).all():
            out["clean/worst_class_accuracy"] = float(np.nanmin(clean))
        if base is not None and not np.isnan(base - clean).all():
            out["clean/max_class_drop"] = float(np.nanmax(base - clean))
    by_corruption: dict[str, list[np.ndarray]] = {}
    for condition, recall in by_condition.items():
        if (point := corruption_of(condition)) is not None:
            by_corruption.setdefault(point[0], []).append(recall)
    for name, parts in sorted(by_corruption.items()):
        stacked = np.vstack(parts)
        for j, cls in enumerate(classes):
            if not np.isnan(stacked[:, j]).all():
                out[class_key(f"corruption/{name}", cls)] = float(np.nanmean(stacked[:, j]))
    return out


@dataclass(frozen=True)
class ClassImpact:
    """One class of one pruned model against the baseline (recalls as fractions)."""

    name: str
    n: int
    baseline_recall: float
    recall: float
    normalised: float  # mean-shifted recall difference (Hooker et al.; negative: hit harder than average)
    ci: tuple[float, float]  # its Bonferroni-corrected bootstrap interval
    multiple: float | None  # the class's drop over the overall drop (None when the overall drop is <= 0)

    @property
    def drop(self) -> float:
        return self.baseline_recall - self.recall

    @property
    def significant(self) -> bool:
        """Significantly hit harder than the average: the whole interval below 0."""
        return self.ci[1] < 0


@dataclass(frozen=True)
class ModelImpact:
    """Disparate impact on one pruned model: overall drop, per class, and the largest class drop."""

    model: str
    method: str
    ratio: float
    overall_drop: float
    classes: tuple[ClassImpact, ...]
    max_class_drop: float
    max_class_drop_ci: tuple[float, float]

    def most_affected(self) -> ClassImpact | None:
        """The significantly affected class with the most negative normalised difference (then the largest
        drop), if any."""
        hit = [c for c in self.classes if c.significant]
        return min(hit, key=lambda c: (c.normalised, -c.drop)) if hit else None

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "method": self.method, "ratio": self.ratio, "overall_drop": self.overall_drop,
                "max_class_drop": self.max_class_drop, "max_class_drop_ci": list(self.max_class_drop_ci),
                "most_affected": (c.name if (c := self.most_affected()) else None),
                "classes": [{"class": c.name, "n": c.n, "baseline_recall": c.baseline_recall, "recall": c.recall,
                             "drop": c.drop, "normalised_recall_difference": c.normalised, "ci": list(c.ci),
                             "multiple": c.multiple, "significant": c.significant} for c in self.classes]}


def disparate_impact(base: np.ndarray, pruned: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], *,
                     confidence: float = 0.95, n_resamples: int = 2000,
                     seed: int = 0) -> tuple[tuple[ClassImpact, ...], tuple[float, float]]:
    """Per class impact of ``pruned`` vs ``base`` correctness (see the module docstring), and the
    95% interval of the largest per-class drop."""
    present = [c for c in range(len(classes)) if (labels == c).any()]
    rng = np.random.default_rng(seed)
    sizes = np.array([(labels == c).sum() for c in present], dtype=float)
    r0 = np.empty((n_resamples, len(present)))
    r1 = np.empty_like(r0)
    for j, c in enumerate(present):
        code = 2 * base[labels == c].astype(int) + pruned[labels == c].astype(int)  # (base, pruned) pair
        draws = rng.multinomial(int(sizes[j]), np.bincount(code, minlength=4) / sizes[j], size=n_resamples)
        r0[:, j] = (draws[:, 2] + draws[:, 3]) / sizes[j]
        r1[:, j] = (draws[:, 1] + draws[:, 3]) / sizes[j]
    boot = _normalised(r0, r1, sizes)
    alpha = (1.0 - confidence) / max(1, len(present))
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2], axis=0)
    b0, b1 = class_recall(base, labels, len(classes))[present], class_recall(pruned, labels, len(classes))[present]
    point = _normalised(b0[None], b1[None], sizes)[0]
    overall = float(base.mean() - pruned.mean())
    out = tuple(ClassImpact(classes[c], int(sizes[j]), float(b0[j]), float(b1[j]), float(point[j]),
                            (float(low[j]), float(high[j])),
                            float((b0[j] - b1[j]) / overall) if overall > 0 else None)
                for j, c in enumerate(present))
    a = (1.0 - confidence) / 2
    max_ci = np.quantile((r0 - r1).max(axis=1), [a, 1 - a])
    return out, (float(max_ci[0]), float(max_ci[1]))


def _normalised(r0: np.ndarray, r1: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """(R_c(pruned) - R_c(base)) - (A(pruned) - A(base)) per row; overall accuracies weighted by class size."""
    a0, a1 = r0 @ sizes / sizes.sum(), r1 @ sizes / sizes.sum()
    return (r1 - r0) - (a1 - a0)[:, None]
