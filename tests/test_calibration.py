"""Calibration metrics against closed-form cases, an independent per-bin loop and torch."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robusteval.errors import RobustEvalError
from robusteval.evaluators.base import Outputs
from robusteval.evaluators.calibration import (
    CalibrationEvaluator,
    CalibrationSettings,
    adaptive_calibration_error,
    bin_index,
    fit_temperature,
    temperature_split,
)

# Two classes. Logits [0, -1000] give softmax [1.0, 0.0] exactly: top-label confidence 1.0 and
# a class-1 probability of exactly 0. Logits log([0.7, 0.3]) give confidence 0.7.
SURE = [0.0, -1000.0]
SEVENTY = [math.log(0.7), math.log(0.3)]
LOGITS = torch.tensor([SURE, SURE, SURE, SURE, SEVENTY, SEVENTY], dtype=torch.float64)
LABELS = torch.tensor([0, 0, 0, 1, 0, 1])


def test_bin_edges_put_zero_first_and_one_last() -> None:
    values = np.array([0.0, 1 / 30, 1 / 15, 0.5, 0.99, 1.0])
    np.testing.assert_array_equal(bin_index(values, 15), [0, 0, 0, 7, 14, 14])


def test_closed_form_case_with_confidence_one_and_zero() -> None:
    got = CalibrationEvaluator().metrics(Outputs(LOGITS, LABELS))
    # bin 15 (conf 1.0): 4 samples, accuracy 3/4, gap 0.25; bin (0.667, 0.733]: 2 samples, acc 1/2, gap 0.2
    assert got["ece"] == pytest.approx(4 / 6 * 0.25 + 2 / 6 * 0.2)
    assert got["mce"] == pytest.approx(0.25)
    # class 0: p0 in {1.0 (x4, freq 3/4), 0.7 (x2, freq 1/2)} -> 0.2333...
    # class 1: p1 in {0.0 (x4, first bin, freq 1/4), 0.3 (x2, freq 1/2)} -> 4/6 * 0.25 + 2/6 * 0.2
    assert got["classwise_ece"] == pytest.approx(4 / 6 * 0.25 + 2 / 6 * 0.2)
    # NLL: -log p_y; p_y = 1, 1, 1, 0 (logit gap 1000: -log p = 1000), 0.7, 0.3
    assert got["nll"] == pytest.approx((1000.0 - math.log(0.7) - math.log(0.3)) / 6)
    # Brier (sum over classes): 0, 0, 0, 2, 2 * 0.3^2, 2 * 0.7^2
    assert got["brier"] == pytest.approx((2 + 2 * 0.09 + 2 * 0.49) / 6)
    assert got["confidence"] == pytest.approx((4 + 1.4) / 6)
    assert got["confidence_gap"] == pytest.approx((4 + 1.4) / 6 - 4 / 6)


def test_adaptive_ece_uses_equal_mass_bins() -> None:
    conf = np.array([0.9, 0.6, 0.8, 0.7])
    correct = np.array([1.0, 0.0, 1.0, 1.0])
    # bins {0.6, 0.7}: conf 0.65, acc 0.5; {0.8, 0.9}: conf 0.85, acc 1.0 -> 0.15 each
    assert adaptive_calibration_error(conf, correct, bins=2) == pytest.approx(0.15)
    # one sample per bin when bins >= n: mean |conf - correct|
    assert adaptive_calibration_error(conf, correct, bins=15) == pytest.approx((0.1 + 0.6 + 0.2 + 0.3) / 4)


def _reference_ece(probs: np.ndarray, labels: np.ndarray, bins: int) -> tuple[float, float]:
    """Guo et al. 2017's per-bin loop ((lo, hi] bins), with 0 folded into the first bin."""
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    ece, mce = 0.0, 0.0
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        inside = (conf > lo) & (conf <= hi) | ((conf == 0) & (i == 0))
        if inside.any():
            gap = abs(conf[inside].mean() - (pred[inside] == labels[inside]).mean())
            ece += inside.mean() * gap
            mce = max(mce, gap)
    return ece, mce


def test_matches_reference_loop_and_torch_cross_entropy_on_random_logits() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3000, 10, generator=gen, dtype=torch.float64) * 3
    labels = torch.randint(0, 10, (3000,), generator=gen)
    got = CalibrationEvaluator().metrics(Outputs(logits, labels))
    probs = torch.softmax(logits, 1).numpy()
    ece, mce = _reference_ece(probs, labels.numpy(), 15)
    assert got["ece"] == pytest.approx(ece, rel=1e-10)
    assert got["mce"] == pytest.approx(mce, rel=1e-10)
    assert got["nll"] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-12)
    brier = ((torch.softmax(logits, 1) - torch.nn.functional.one_hot(labels, 10)) ** 2).sum(1).mean().item()
    assert got["brier"] == pytest.approx(brier, rel=1e-12)


def _overconfident(n: int, true_t: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A calibrated model (labels drawn from softmax(z)) made over-confident: logits = z * true_t."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 10, generator=gen, dtype=torch.float64) * 1.5
    labels = torch.multinomial(torch.softmax(z, 1), 1, generator=gen).squeeze(1)
    return z * true_t, labels


def test_temperature_scaling_recovers_known_temperature_and_reduces_held_out_nll() -> None:
    logits, labels = _overconfident(20000, 3.0, seed=2)
    settings = CalibrationSettings(temperature_split=0.5, seed=7)
    got = CalibrationEvaluator(settings).metrics(Outputs(logits, labels))
    assert got["temperature"] == pytest.approx(3.0, rel=0.05)
    _, held = temperature_split(len(labels), fraction=0.5, seed=7)
    held_nll = torch.nn.functional.cross_entropy(logits[held], labels[held]).item()
    assert got["nll_after_ts"] < held_nll - 0.1
    assert got["ece_after_ts"] < got["ece"] / 3


def test_fit_temperature_is_one_for_a_calibrated_model() -> None:
    logits, labels = _overconfident(20000, 1.0, seed=3)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.05)


def test_temperature_split_is_deterministic_and_disjoint() -> None:
    fit, held = temperature_split(101, fraction=0.5, seed=4)
    again = temperature_split(101, fraction=0.5, seed=4)
    assert np.array_equal(fit, again[0]) and np.array_equal(held, again[1])
    assert len(fit) + len(held) == 101 and not set(fit) & set(held)


def test_reliability_details_count_every_sample() -> None:
    details = CalibrationEvaluator().details(Outputs(LOGITS, LABELS))["reliability"]
    assert len(details["edges"]) == 16 and sum(details["count"]) == 6
    assert details["count"][-1] == 4 and details["accuracy"][-1] == 0.75 and details["confidence"][0] is None


def test_unlabelled_condition_gives_no_metrics_and_settings_are_validated() -> None:
    assert CalibrationEvaluator().metrics(Outputs(LOGITS, torch.full((6,), -1))) == {}
    with pytest.raises(RobustEvalError, match="bins"):
        CalibrationSettings(bins=0)
    with pytest.raises(RobustEvalError, match="temperature_split"):
        CalibrationSettings(temperature_split=1.0)
