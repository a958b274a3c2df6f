"""Accuracy evaluator against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robusteval.errors import RobustEvalError
from robusteval.evaluators.accuracy import AccuracyEvaluator, per_sample_correct
from robusteval.evaluators.base import Outputs

# 3 classes, 4 samples: predictions 0, 1, 2, 0; labels 0, 2, 2, -1 (unknown)
LOGITS = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
LABELS = torch.tensor([0, 2, 2, -1])


def _ce(row: list[float], label: int) -> float:
    return math.log(sum(math.exp(v) for v in row)) - row[label]


def test_per_sample_correct_marks_unknown_labels_wrong() -> None:
    np.testing.assert_array_equal(per_sample_correct(LOGITS, LABELS), [True, False, True, False])


def test_accuracy_top5_loss_on_known_labels_only() -> None:
    ev = AccuracyEvaluator()
    ev.update(Outputs(LOGITS[:2], LABELS[:2]))
    ev.update(Outputs(LOGITS[2:], LABELS[2:]))
    got = ev.compute()
    rows = LOGITS.tolist()
    loss = (_ce(rows[0], 0) + _ce(rows[1], 2) + _ce(rows[2], 2)) / 3
    assert got["accuracy"] == pytest.approx(2 / 3)
    assert got["error"] == pytest.approx(1 / 3)
    assert got["top5"] == pytest.approx(1.0)  # top-min(5, 3) = top-3 always contains the label
    assert got["loss"] == pytest.approx(loss, rel=1e-12)


def test_top5_with_more_than_five_classes() -> None:
    logits = torch.arange(8.0).repeat(2, 1)  # ranking 7, 6, 5, 4, 3, 2, 1, 0
    got = AccuracyEvaluator().metrics(Outputs(logits, torch.tensor([3, 2])))
    assert got["top5"] == pytest.approx(0.5) and got["accuracy"] == 0.0


def test_no_known_labels_gives_no_metrics() -> None:
    assert AccuracyEvaluator().metrics(Outputs(LOGITS, torch.full((4,), -1))) == {}


@pytest.mark.parametrize(
    ("logits", "labels", "message"),
    [
        (LOGITS, torch.tensor([0, 1]), "one label per logit row"),
        (LOGITS, torch.tensor([0, 1, 3, 0]), "labels must lie in"),
        (LOGITS[0], LABELS, "shape"),
        (torch.full((4, 3), float("nan")), LABELS, "NaN"),
    ],
)
def test_bad_inputs_raise_clear_errors(logits: torch.Tensor, labels: torch.Tensor, message: str) -> None:
    with pytest.raises(RobustEvalError, match=message):
        AccuracyEvaluator().metrics(Outputs(logits, labels))
