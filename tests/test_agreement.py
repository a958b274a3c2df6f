"""Agreement metrics against torch's kl_div and hand-computed cases."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robusteval.errors import RobustEvalError
from robusteval.evaluators.agreement import AgreementEvaluator
from robusteval.evaluators.base import Outputs

# dense predicts 0, 1, 2, 0; pruned predicts 0, 2, 2, 1; labels 0, 1, 1, -1 (unknown)
DENSE = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
PRUNED = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0], [0.0, 0.0, 4.0], [0.0, 1.0, 0.0]])
LABELS = torch.tensor([0, 1, 1, -1])


def test_distances_match_torch_and_hand_counts() -> None:
    ev = AgreementEvaluator()
    ev.update(Outputs(PRUNED[:3], LABELS[:3], dense=DENSE[:3]))
    ev.update(Outputs(PRUNED[3:], LABELS[3:], dense=DENSE[3:]))
    got = ev.compute()
    kl = F.kl_div(F.log_softmax(PRUNED, 1), F.log_softmax(DENSE, 1), reduction="batchmean", log_target=True)
    p, q = F.softmax(DENSE, 1), F.softmax(PRUNED, 1)
    assert got["top1"] == pytest.approx(2 / 4)
    assert got["kl"] == pytest.approx(kl.item(), rel=1e-5)
    assert got["l2"] == pytest.approx(torch.linalg.vector_norm(p - q, dim=1).mean().item(), rel=1e-5)
    assert got["linf"] == pytest.approx((p - q).abs().max(1).values.mean().item(), rel=1e-5)
    # known labels: sample 0 both right; sample 1 dense right, pruned wrong; sample 2 both wrong
    assert got["dense_correct_pruned_wrong"] == pytest.approx(1 / 3)
    assert got["dense_correct_pruned_wrong_count"] == 1.0
    assert got["dense_wrong_pruned_correct"] == 0.0 and got["dense_wrong_pruned_correct_count"] == 0.0


def test_identical_models_agree_fully() -> None:
    got = AgreementEvaluator().metrics(Outputs(DENSE, LABELS, dense=DENSE.clone()))
    assert got["top1"] == 1.0 and got["kl"] == pytest.approx(0.0, abs=1e-12) and got["linf"] == 0.0


def test_dense_model_and_unlabelled_data() -> None:
    assert AgreementEvaluator().metrics(Outputs(DENSE, LABELS)) == {}
    got = AgreementEvaluator().metrics(Outputs(PRUNED, torch.full((4,), -1), dense=DENSE))
    assert "dense_correct_pruned_wrong" not in got and got["top1"] == 0.5


def test_shape_mismatch_is_reported() -> None:
    with pytest.raises(RobustEvalError, match="shape"):
        AgreementEvaluator().metrics(Outputs(PRUNED, LABELS, dense=DENSE[:, :2]))
