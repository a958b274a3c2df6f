"""CE / mCE / relative mCE (Hendrycks & Dietterich 2019) and noise-curve areas on hand-worked examples."""
from __future__ import annotations

import numpy as np
import pytest

from robusteval.errors import RobustEvalError
from robusteval.analysis.derive import corruption_summary, noise_summary
from robusteval.metrics import corruption_key, noise_key


def flat(clean: float, accuracies: dict[tuple[str, int], float]) -> dict[str, float]:
    return {"clean/accuracy": clean, **{corruption_key(n, s): a for (n, s), a in accuracies.items()}}


METRICS = {
    "dense": flat(0.9, {("fog", 1): 0.8, ("fog", 2): 0.6, ("snow", 1): 0.7, ("contrast", 1): 1.0}),
    "pruned": flat(0.88, {("fog", 1): 0.7, ("fog", 2): 0.5, ("snow", 1): 0.7, ("contrast", 1): 0.9, ("frost", 1): 0.4}),
}


def test_ce_mce_and_relative_mce_by_hand() -> None:
    out = corruption_summary(METRICS, "dense")["pruned"]
    # fog: errors 0.3 + 0.5 vs dense 0.2 + 0.4; snow: 0.3 vs 0.3
    assert out["corruption/fog/ce"] == pytest.approx(0.8 / 0.6)
    assert out["corruption/snow/ce"] == pytest.approx(1.0)
    assert out["corruption/mce"] == pytest.approx((0.8 / 0.6 + 1.0) / 2)
    assert out["corruption/mce_corruptions"] == 2.0
    # relative: errors in excess of clean error (0.12 pruned, 0.10 dense)
    assert out["corruption/fog/relative_ce"] == pytest.approx((0.8 - 2 * 0.12) / (0.6 - 2 * 0.10))
    assert out["corruption/snow/relative_ce"] == pytest.approx((0.3 - 0.12) / (0.3 - 0.10))
    assert out["corruption/relative_mce"] == pytest.approx((1.4 + 0.9) / 2)
    assert out["corruption/fog/mean_accuracy"] == pytest.approx(0.6)
    assert out["corruption/mean_accuracy"] == pytest.approx(np.mean([0.7, 0.5, 0.7, 0.9, 0.4]))


def test_missing_corruptions_and_zero_dense_error() -> None:
    out = corruption_summary(METRICS, "dense")["pruned"]
    # frost: the dense model has no result; contrast: the dense model made no error
    assert out["corruption/frost/mean_accuracy"] == pytest.approx(0.4)
    assert "corruption/frost/ce" not in out and "corruption/contrast/ce" not in out
    assert "corruption/contrast/relative_ce" not in out
    partial = {"dense": METRICS["dense"], "p": flat(0.9, {("fog", 1): 0.6})}
    assert corruption_summary(partial, "dense")["p"]["corruption/fog/ce"] == pytest.approx(0.4 / 0.2)
    no_clean = {"dense": METRICS["dense"], "p": {corruption_key("fog", 1): 0.6}}
    assert "corruption/relative_mce" not in corruption_summary(no_clean, "dense")["p"]


def test_dense_is_the_unit() -> None:
    out = corruption_summary(METRICS, "dense")["dense"]
    assert out["corruption/mce"] == pytest.approx(1.0) and out["corruption/relative_mce"] == pytest.approx(1.0)


def test_bad_inputs() -> None:
    with pytest.raises(RobustEvalError, match="did you mean 'dense'"):
        corruption_summary(METRICS, "dens")
    with pytest.raises(RobustEvalError, match=r"corruption/fog/1/accuracy in \[0, 1\]"):
        corruption_summary({"dense": {corruption_key("fog", 1): 85.0}}, "dense")


def test_noise_curve_area() -> None:
    eps = [0.0, 0.1, 0.3]
    accuracy, agreement = [0.9, 0.7, 0.3], [1.0, 0.8, 0.5]
    metrics = {"m": {**{noise_key(e): a for e, a in zip(eps, accuracy)},
                     **{noise_key(e, "agreement/top1"): a for e, a in zip(eps, agreement)},
                     "noise/mean_accuracy": 0.63, "clean/accuracy": 0.9},
               "single": {noise_key(0.1): 0.5}}
    out = noise_summary(metrics)
    assert out["m"]["noise/auc/accuracy"] == pytest.approx(np.trapezoid(accuracy, eps) / 0.3)
    assert out["m"]["noise/auc/agreement/top1"] == pytest.approx(np.trapezoid(agreement, eps) / 0.3)
    assert len(out["m"]) == 2 and out["single"] == {}


def test_metric_keys() -> None:
    assert corruption_key("fog", 3) == "corruption/fog/3/accuracy"
    assert noise_key(0.15000000000000002) == "noise/0.15/accuracy"
    assert noise_key(0.0, "loss") == "noise/0/loss"


def test_mce_averages_the_15_benchmark_corruptions_only() -> None:
    """Hendrycks & Dietterich's mCE: the 4 held-out extras (spatter, ...) never enter it; *_all has every one."""
    metrics = {"dense": flat(0.9, {("fog", 1): 0.8, ("spatter", 1): 0.8}),
               "p": flat(0.88, {("fog", 1): 0.6, ("spatter", 1): 0.8})}
    out = corruption_summary(metrics, "dense")["p"]
    assert out["corruption/spatter/ce"] == pytest.approx(1.0)
    assert out["corruption/mce"] == pytest.approx(0.4 / 0.2) and out["corruption/mce_corruptions"] == 1.0
    assert out["corruption/mce_all"] == pytest.approx((2.0 + 1.0) / 2)
    assert out["corruption/relative_mce"] == pytest.approx((0.4 - 0.12) / (0.2 - 0.1))
    assert out["corruption/relative_mce_all"] == pytest.approx(((0.4 - 0.12) / 0.1 + (0.2 - 0.12) / 0.1) / 2)
