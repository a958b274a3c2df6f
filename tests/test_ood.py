"""OOD metrics against scipy's Mann-Whitney U, hand-computed cases and direct score formulas."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu

from robusteval.errors import RobustEvalError
from robusteval.evaluators.base import Outputs
from robusteval.evaluators.ood import (
    OOD_CONVENTION,
    OODEvaluator,
    OODSettings,
    auroc,
    average_precision,
    fpr_at_tpr,
    roc_curve,
)


def test_auroc_equals_mann_whitney_u_with_ties() -> None:
    rng = np.random.default_rng(0)
    pos = rng.integers(0, 8, 300).astype(float)  # few distinct values: many ties
    neg = rng.integers(-2, 6, 200).astype(float)
    u = mannwhitneyu(pos, neg, alternative="two-sided").statistic
    assert auroc(pos, neg) == pytest.approx(u / (300 * 200), rel=1e-12)


def test_auroc_extremes_and_all_tied() -> None:
    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert auroc(np.array([0.0]), np.array([1.0, 2.0])) == 0.0
    assert auroc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5


def test_fpr95_hand_case() -> None:
    pos = np.arange(1.0, 21.0)  # 20 ID scores 1..20; accepting 95% (19) needs threshold 2
    neg = np.array([0.5, 2.0, 2.5, 30.0])  # accepted at score >= 2: 2.0, 2.5, 30.0
    assert fpr_at_tpr(pos, neg, tpr_level=0.95) == pytest.approx(3 / 4)


def test_aupr_in_and_out_are_not_swapped() -> None:
    pos = np.array([4.0, 3.0])  # ID
    neg = np.array([3.5, 1.0, 0.0, -1.0])  # OOD
    # ID positives, ranked 4(ID) 3.5 3(ID): precision 1 at recall 1/2, 2/3 at recall 1
    assert average_precision(pos, neg) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # OOD positives on negated scores, ranked 1 0 -1 (OOD) -3 -3.5 (OOD) -4: 1, 1, 1, then 4/5
    assert average_precision(-neg, -pos) == pytest.approx((1 + 1 + 1 + 4 / 5) / 4)
    got = OODEvaluator(OODSettings(scores=("max_logit",))).metrics(_outputs(pos, neg))
    assert got["aupr_in_max_logit"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert got["aupr_out_max_logit"] == pytest.approx(0.95)


def test_average_precision_groups_tied_scores() -> None:
    # one threshold at score 1 takes both ID samples and one OOD sample: precision 2/3 at recall 1
    assert average_precision(np.array([1.0, 1.0]), np.array([1.0, 0.0])) == pytest.approx(2 / 3)


def test_roc_curve_runs_from_origin_to_corner() -> None:
    fpr, tpr, thr = roc_curve(np.array([3.0, 1.0, 1.0]), np.array([2.0, 1.0]))
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1 / 3, 1])
    assert thr[0] == np.inf


def _outputs(id_max_logit: np.ndarray, ood_max_logit: np.ndarray) -> Outputs:
    """Two-class logits [s, 0] whose max logit is s for s >= 0 (and 0 otherwise)."""

    def logits(s: np.ndarray) -> torch.Tensor:
        return torch.stack([torch.tensor(s), torch.zeros(len(s), dtype=torch.float64)], dim=1)

    shift = -min(id_max_logit.min(), ood_max_logit.min())  # keep s >= 0 so max logit = s + shift
    unknown = torch.full((len(ood_max_logit),), -1)
    return Outputs(logits(ood_max_logit + shift), unknown, clean=logits(id_max_logit + shift))


def test_evaluator_scores_match_their_formulas() -> None:
    gen = torch.Generator().manual_seed(0)
    id_z = torch.randn(500, 10, generator=gen) * 4
    ood_z = torch.randn(400, 10, generator=gen)
    ev = OODEvaluator()
    ev.update(Outputs(ood_z[:200], torch.full((200,), -1), clean=id_z))
    ev.update(Outputs(ood_z[200:], torch.full((200,), -1), clean=id_z))
    got = ev.compute()
    formulas = {
        "msp": lambda z: torch.softmax(z.double(), 1).max(1).values,
        "max_logit": lambda z: z.double().max(1).values,
        "energy": lambda z: torch.logsumexp(z.double(), 1),
    }
    for name, f in formulas.items():
        u = mannwhitneyu(f(id_z).numpy(), f(ood_z).numpy()).statistic
        assert got[f"auroc_{name}"] == pytest.approx(u / (500 * 400), rel=1e-9)
        assert 0 <= got[f"fpr95_{name}"] <= 1
    assert got["auroc_max_logit"] > 0.8  # larger ID logits are more confident


def test_details_roc_is_downsampled_with_convention() -> None:
    gen = torch.Generator().manual_seed(1)
    id_z, ood_z = torch.randn(1000, 10, generator=gen) * 3, torch.randn(1000, 10, generator=gen)
    out = Outputs(ood_z, torch.full((1000,), -1), clean=id_z)
    details = OODEvaluator().details(out)
    roc = details["roc"]["msp"]
    assert len(roc["fpr"]) <= 101 and roc["fpr"][0] == 0.0 and roc["tpr"][-1] == 1.0 and roc["fpr"][-1] == 1.0
    assert details["convention"] == OOD_CONVENTION and details["n_id"] == 1000


def test_missing_clean_logits_and_unknown_score_are_reported() -> None:
    with pytest.raises(ValueError, match="clean"):
        OODEvaluator().metrics(Outputs(torch.zeros(2, 3), torch.full((2,), -1)))
    with pytest.raises(RobustEvalError, match="did you mean 'energy'"):
        OODSettings(scores=("energi",))
