"""Prune potential and its uncertainty: potentials, curves, bootstrap intervals.

Definitions are in :mod:`robusteval.analysis.drops`; the package re-exports everything here. The
uncertainty of a prune potential comes from the drops' 95% paired-bootstrap intervals:

* the **strict** potential (``Curve.prune_potential``) uses the point estimate, drop <= δ;
* the **interval** (``Curve.interval``) runs from the largest ratio whose drops are all
  *significantly* within δ (interval's upper bound <= δ) to the largest ratio whose drops are
  all *not significantly worse* than δ (interval's lower bound <= δ);
* the test set **cannot resolve δ** when the reference value's own 95% interval is wider
  than ±δ (``Curve.dense_halfwidth > tolerance``).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from robusteval.metrics import lower_is_better


def prune_potential(points: Iterable[tuple[float, bool]]) -> tuple[float, float | None]:
    """(prune potential, first ratio out of tolerance) from ``(ratio, within_tolerance)`` pairs."""
    potential = 0.0
    for ratio, ok in sorted(points):
        if not ok:
            return potential, ratio
        potential = ratio
    return potential, None


def bootstrap_mean_ci(diff: np.ndarray, *, confidence: float = 0.95, n_resamples: int = 2000,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of ``mean(diff)`` (Efron & Tibshirani 1993, ch. 13).

    Resampling n samples with replacement and averaging depends only on how often each
    distinct value is drawn, so the resamples are drawn as multinomial counts over the
    distinct values: the same distribution as index resampling at O(#distinct) per resample
    (per-sample correctness differences take at most a handful of values).
    """
    diff = np.asarray(diff, dtype=float)
    values, counts = np.unique(diff, return_counts=True)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(diff.size, counts / diff.size, size=n_resamples)
    means = draws @ values / diff.size
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


@dataclass(frozen=True)
class Point:
    """One pruned model on one metric."""

    model: str
    ratio: float
    value: float
    drop: float
    within_tolerance: bool
    ci: tuple[float, float] | None = None  # 95% CI of the drop (accuracy metrics with records)

    @property
    def within_noise(self) -> bool | None:
        """True when the drop's CI contains 0; None without a CI."""
        return None if self.ci is None else self.ci[0] <= 0.0 <= self.ci[1]


@dataclass(frozen=True)
class Curve:
    """One metric of one method across its prune ratios."""

    metric: str
    method: str
    dense: float
    tolerance: float
    points: tuple[Point, ...]
    prune_potential: float
    first_out: float | None
    interval: tuple[float, float] | None = None  # prune potential's 95% range (potential_interval)
    dense_halfwidth: float | None = None  # half-width of the reference value's 95% bootstrap CI

    @property
    def lower_is_better(self) -> bool:
        return lower_is_better(self.metric)

    def point_at(self, ratio: float) -> Point | None:
        return next((p for p in self.points if p.ratio == ratio), None)


def potential_interval(points: Sequence[Point], tolerance: float) -> tuple[float, float] | None:
    """(lower, upper) prune potential from the drops' CIs; None when a point has no CI."""
    if not points or any(p.ci is None for p in points):
        return None
    low, _ = prune_potential((p.ratio, p.ci[1] <= tolerance + 1e-12) for p in points)
    high, _ = prune_potential((p.ratio, p.ci[0] <= tolerance + 1e-12) for p in points)
    return low, high


def mean_halfwidth(values: np.ndarray, *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> float:
    """Half-width of the percentile-bootstrap CI of ``mean(values)`` (e.g. the dense accuracy)."""
    low, high = bootstrap_mean_ci(values, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return (high - low) / 2
