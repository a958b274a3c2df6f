"""Metric directions: the signed confidence gap, mean confidence and the fitted temperature have no better
direction (no drop, no prune potential, no drop-style gate budget); |confidence − accuracy| is lower-is-better."""
from __future__ import annotations

import pytest
import torch

from robusteval.analysis import analyse
from robusteval.errors import RobustEvalError
from robusteval.evaluators.base import Outputs
from robusteval.evaluators.calibration import CalibrationEvaluator
from robusteval.gate import evaluate_gate, parse_rules
from robusteval.declarations import BUILTIN


def _summary(dense_gap: float, pruned_gap: float) -> dict:
    def metrics(gap: float) -> dict:
        return {"clean/accuracy": 0.8, "calibration/confidence_gap": gap, "calibration/abs_confidence_gap": abs(gap),
                "calibration/confidence": 0.8 + gap, "calibration/temperature": 1.0 + gap}
    return {"dense": "dense", "models": [{"id": "dense", "metrics": metrics(dense_gap)},
                                         {"id": "m@0.5", "method": "m", "target_ratio": 0.5,
                                          "metrics": metrics(pruned_gap)}]}


def test_declarations() -> None:
    for key in ("calibration/confidence_gap", "calibration/confidence", "calibration/temperature"):
        assert not BUILTIN.has_direction(key) and not BUILTIN.lower_is_better(key)
    gap = "calibration/abs_confidence_gap"
    assert BUILTIN.has_direction(gap) and BUILTIN.lower_is_better(gap)


def test_more_over_confidence_is_a_drop_never_an_improvement() -> None:
    analysis = analyse(_summary(0.02, 0.10))  # the pruned model is far more over-confident
    assert "calibration/confidence_gap" not in analysis.curves
    assert "calibration/confidence" not in analysis.curves and "calibration/temperature" not in analysis.curves
    (point,) = analysis.curves["calibration/abs_confidence_gap"]["m"].points
    assert point.drop == pytest.approx(0.08) and not point.within_tolerance
    under = analyse(_summary(0.02, -0.10)).curves["calibration/abs_confidence_gap"]["m"].points[0]
    assert under.drop == pytest.approx(0.08)  # under-confidence is as far off


def test_gate_refuses_a_drop_budget_on_a_metric_without_direction() -> None:
    rules = parse_rules({"rules": {"calibration/confidence_gap": {"max_drop": 0.01}}})
    with pytest.raises(RobustEvalError, match="no better direction|has none"):
        evaluate_gate(_summary(0.02, 0.10), rules)
    rules = parse_rules({"rules": {"calibration/confidence_gap": {"max": 0.05},
                                   "calibration/abs_confidence_gap": {"max_drop": 0.01}}})
    ok = evaluate_gate(_summary(0.02, 0.10), rules)
    assert [c.passed for c in ok.checks] == [False, False]


def test_evaluator_reports_the_absolute_gap() -> None:
    logits = torch.tensor([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    out = CalibrationEvaluator().metrics(Outputs(logits, labels))
    assert out["abs_confidence_gap"] == pytest.approx(abs(out["confidence_gap"])) and out["confidence_gap"] > 0
