"""Calibration: ECE, adaptive ECE, MCE, classwise ECE, NLL, Brier score and temperature scaling.

Equal-width bins are ``(lo, hi]`` over [0, 1], except that a confidence of exactly 0 falls in
the first bin; a confidence of exactly 1.0 falls in the last bin (no hidden extra bin).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from robusteval import validate
from robusteval.declarations import METRICS
from robusteval.evaluators.accuracy import labelled
from robusteval.evaluators.base import LOGIT_EVALUATORS, LogitEvaluator, Outputs, Use

BRIER_CONVENTION = (
    "Brier score: squared distance between the softmax vector and the one-hot label, "
    "summed over classes and averaged over samples (range 0 to 2)."
)
TEMPERATURE_BOUNDS = (0.01, 100.0)


@dataclass(frozen=True)
class CalibrationSettings:
    """``bins`` for every binned metric; ``temperature_split`` of the samples fits T, the rest scores it."""

    bins: int = 15
    temperature_split: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        validate.positive_int("calibration bins", self.bins)
        validate.fraction("calibration temperature_split", self.temperature_split)


def bin_index(values: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin of each value in [0, 1]: bins are (lo, hi], with 0 in the first and 1.0 in the last."""
    inner_edges = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    return np.searchsorted(inner_edges, values, side="left")


def _binned_gaps(conf: np.ndarray, hits: np.ndarray, index: np.ndarray, bins: int) -> tuple[np.ndarray, ...]:
    """Per-bin count, mean confidence and mean hit rate (NaN where a bin is empty)."""
    count = np.bincount(index, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=conf, minlength=bins) / count
        mean_hit = np.bincount(index, weights=hits, minlength=bins) / count
    return count, mean_conf, mean_hit


def _weighted_gap(count: np.ndarray, mean_conf: np.ndarray, mean_hit: np.ndarray) -> float:
    full = count > 0
    return float(np.sum(count[full] * np.abs(mean_conf[full] - mean_hit[full])) / count.sum())


def expected_calibration_error(conf: np.ndarray, correct: np.ndarray, *, bins: int = 15) -> float:
    """Top-label ECE with equal-width bins (Naeini et al. 2015; Guo et al. 2017)."""
    return _weighted_gap(*_binned_gaps(conf, correct, bin_index(conf, bins), bins))


def maximum_calibration_error(conf: np.ndarray, correct: np.ndarray, *, bins: int = 15) -> float:
    """Largest |accuracy - confidence| over non-empty equal-width bins (Naeini et al. 2015)."""
    _, mean_conf, mean_hit = _binned_gaps(conf, correct, bin_index(conf, bins), bins)
    return float(np.nanmax(np.abs(mean_conf - mean_hit)))


def adaptive_calibration_error(conf: np.ndarray, correct: np.ndarray, *, bins: int = 15) -> float:
    """Top-label ECE with equal-mass bins (Nguyen & O'Connor 2015; Mukhoti et al. 2020's AdaECE).

    Samples are sorted by confidence (stable) and split into ``min(bins, n)`` groups whose sizes
    differ by at most one.
    """
    order = np.argsort(conf, kind="stable")
    groups = min(bins, len(conf))
    index = np.empty(len(conf), dtype=np.int64)
    index[order] = np.repeat(np.arange(groups), [len(g) for g in np.array_split(order, groups)])
    return _weighted_gap(*_binned_gaps(conf, correct, index, groups))


def classwise_calibration_error(probs: np.ndarray, labels: np.ndarray, *, bins: int = 15) -> float:
    """Mean over classes of each class's equal-width-binned ECE of p_k vs 1[y = k] (Kull et al. 2019)."""
    errors = [
        expected_calibration_error(probs[:, k], (labels == k).astype(np.float64), bins=bins)
        for k in range(probs.shape[1])
    ]
    return float(np.mean(errors))


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score (Brier 1950) in the convention of ``BRIER_CONVENTION``."""
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def nll(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits)."""
    return torch.nn.functional.cross_entropy(logits, labels).item()


def _top_label(z: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Softmax probabilities, top-label confidence and top-1 correctness (as 0/1 floats)."""
    probs = torch.softmax(z, dim=1).numpy()
    return probs, probs.max(axis=1), (probs.argmax(axis=1) == y.numpy()).astype(np.float64)


def temperature_split(n: int, *, fraction: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic disjoint (fit, held-out) sample indices; ``fraction`` of them fit the temperature."""
    perm = np.random.default_rng(seed).permutation(n)
    cut = min(max(int(round(n * fraction)), 1), n - 1)
    return np.sort(perm[:cut]), np.sort(perm[cut:])


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Temperature T minimising NLL of softmax(logits / T) (Guo et al. 2017), searched on log T.

    NLL is convex in 1/T, hence unimodal in log T, so bounded Brent search finds the optimum.
    """
    z = logits.double()

    def objective(log_t: float) -> float:
        return nll(z / float(np.exp(log_t)), labels)

    lo, hi = np.log(TEMPERATURE_BOUNDS)
    found = minimize_scalar(objective, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(found.x))


class CalibrationEvaluator(LogitEvaluator):
    """Calibration of one model on one labelled condition (clean or shifted); unlabelled samples are skipped.

    ``temperature`` is fitted on a seeded ``temperature_split`` of the condition's samples;
    ``ece_after_ts`` and ``nll_after_ts`` are measured on the remaining, held-out samples.
    ``confidence_gap`` is mean confidence minus accuracy (positive = over-confident, negative = under-confident),
    so neither sign is better and it has no direction; ``abs_confidence_gap`` (its absolute value) is
    lower-is-better. Mean ``confidence`` and the fitted ``temperature`` have no better direction either.
    """

    name = "calibration"
    declares = METRICS["calibration"]

    def __init__(self, settings: CalibrationSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or CalibrationSettings()

    def metrics(self, outputs: Outputs) -> dict[str, float]:
        z, y = labelled(outputs.logits, outputs.labels)
        if len(y) == 0:
            return {}
        bins = self.settings.bins
        probs, conf, correct = _top_label(z, y)
        labels = y.numpy()
        result = {
            "ece": expected_calibration_error(conf, correct, bins=bins),
            "aece": adaptive_calibration_error(conf, correct, bins=bins),
            "mce": maximum_calibration_error(conf, correct, bins=bins),
            "classwise_ece": classwise_calibration_error(probs, labels, bins=bins),
            "nll": nll(z, y),
            "brier": brier_score(probs, labels),
            "confidence": float(conf.mean()),
            "confidence_gap": float(conf.mean() - correct.mean()),
            "abs_confidence_gap": abs(float(conf.mean() - correct.mean())),
        }
        if len(y) >= 2:
            result.update(self._temperature_metrics(z, y))
        return result

    def _temperature_metrics(self, z: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        fit, held = temperature_split(len(y), fraction=self.settings.temperature_split, seed=self.settings.seed)
        t = fit_temperature(z[fit], y[fit])
        scaled = z[held] / t
        _, conf, correct = _top_label(scaled, y[held])
        return {
            "temperature": t,
            "ece_after_ts": expected_calibration_error(conf, correct, bins=self.settings.bins),
            "nll_after_ts": nll(scaled, y[held]),
        }

    def details(self, outputs: Outputs) -> dict[str, Any]:
        """Reliability-diagram data: per equal-width bin its edges, mean confidence, accuracy and count."""
        z, y = labelled(outputs.logits, outputs.labels)
        if len(y) == 0:
            return {}
        bins = self.settings.bins
        _, conf, correct = _top_label(z, y)
        count, mean_conf, mean_hit = _binned_gaps(conf, correct, bin_index(conf, bins), bins)

        def listed(values: np.ndarray) -> list[float | None]:
            return [None if np.isnan(v) else float(v) for v in values]

        return {
            "reliability": {
                "edges": np.linspace(0.0, 1.0, bins + 1).tolist(),
                "confidence": listed(mean_conf),
                "accuracy": listed(mean_hit),
                "count": [int(c) for c in count],
            },
            "brier_convention": BRIER_CONVENTION,
        }


LOGIT_EVALUATORS.add("calibration", Use(("clean", "corruption", "shift"), lambda settings: None if settings.calibration
                                        is None else CalibrationEvaluator(settings.calibration)))
