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
    means = _resampled_means(np.asarray(diff, dtype=float), n_resamples, np.random.default_rng(seed))
    return _percentile_interval(means, confidence)


def bootstrap_difference_ci(base: np.ndarray, new: np.ndarray, *, confidence: float = 0.95,
                            n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of ``mean(new) - mean(base)`` for two *independent* samples (unpaired:
    each is resampled on its own, as :func:`scipy.stats.bootstrap` does with ``paired=False``); for
    samples of the same test items use :func:`bootstrap_mean_ci` on the per-item differences."""
    rng = np.random.default_rng(seed)
    base_means = _resampled_means(np.asarray(base, dtype=float), n_resamples, rng)
    new_means = _resampled_means(np.asarray(new, dtype=float), n_resamples, rng)
    return _percentile_interval(new_means - base_means, confidence)


def _resampled_means(sample: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_resamples`` resamples with replacement, drawn as multinomial counts of the distinct values."""
    values, counts = np.unique(sample, return_counts=True)
    draws = rng.multinomial(sample.size, counts / sample.size, size=n_resamples)
    return draws @ values / sample.size


def _percentile_interval(means: np.ndarray, confidence: float) -> tuple[float, float]:
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
    lower_is_better: bool  # the metric's declared direction (True: error-like)
    interval: tuple[float, float] | None = None  # prune potential's 95% range (potential_interval)
    dense_halfwidth: float | None = None  # half-width of the reference value's 95% bootstrap CI

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
