"""Out-of-distribution detection from logits: MSP, max-logit and energy scores; AUROC, AUPR, FPR@95.

The in-distribution (ID) logits are this model's clean logits (``Outputs.clean``); the OOD
logits are the condition's (``Outputs.logits``). Every score is higher for inputs the model
considers in-distribution.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robusteval import validate
from robusteval.declarations import METRICS
from robusteval.errors import RobustEvalError
from robusteval.evaluators.accuracy import checked_logits
from robusteval.evaluators.base import CLEAN_LOGITS, LOGIT_EVALUATORS, LogitEvaluator, Outputs, Use
from robusteval.registry import Registry

OOD_CONVENTION = (
    "OOD detection: scores are higher for in-distribution inputs. AUROC is the probability that "
    "an in-distribution sample scores above an OOD one (ties count half). AUPR-In treats "
    "in-distribution samples as positives, AUPR-Out treats OOD samples as positives (scores "
    "negated); both are average precision. FPR@95 is the fraction of OOD samples accepted at the "
    "threshold that accepts 95% of in-distribution samples (accept when score >= threshold)."
)

Score = Callable[[torch.Tensor], torch.Tensor]
SCORES: Registry[Score] = Registry("OOD score")
SCORES.add("msp", lambda z: torch.softmax(z, dim=1).amax(dim=1))  # Hendrycks & Gimpel 2017
SCORES.add("max_logit", lambda z: z.amax(dim=1))  # Hendrycks et al. 2022 (MaxLogit)
SCORES.add("energy", lambda z: torch.logsumexp(z, dim=1))  # Liu et al. 2020: -E(x) at T = 1


@dataclass(frozen=True)
class OODSettings:
    """Which ``scores`` to evaluate and at most how many ``roc_points`` to keep per ROC curve."""

    scores: tuple[str, ...] = ("msp", "max_logit", "energy")
    roc_points: int = 101

    def __post_init__(self) -> None:
        if not self.scores:
            raise RobustEvalError(f"ood scores: expected at least one of {SCORES.names()}, got none")
        for name in self.scores:
            SCORES.get(name)
        validate.integer("ood roc_points", self.roc_points, minimum=2)


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(pos > neg) + P(pos = neg) / 2, from average ranks (Mann & Whitney 1947)."""
    _, inverse, counts = np.unique(np.concatenate([pos, neg]), return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based mean rank of each tie group
    rank_sum = average_rank[inverse[: len(pos)]].sum()
    u = rank_sum - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def roc_curve(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, threshold) at every distinct score, descending, starting at (0, 0) with threshold +inf.

    A sample is accepted as positive when its score >= threshold, so tied scores enter together.
    """
    scores = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.argsort(-scores, kind="stable")
    scores, is_pos = scores[order], is_pos[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tps = np.cumsum(is_pos)[last_of_group]
    fps = (last_of_group + 1) - tps
    return (
        np.r_[0.0, fps / len(neg)],
        np.r_[0.0, tps / len(pos)],
        np.r_[np.inf, scores[last_of_group]],
    )


def average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    """Area under the precision-recall curve as sum over thresholds of (R_n - R_{n-1}) P_n."""
    fpr, tpr, _ = roc_curve(pos, neg)
    tp, fp = tpr[1:] * len(pos), fpr[1:] * len(neg)
    return float(np.sum(np.diff(tpr) * tp / (tp + fp)))


def fpr_at_tpr(pos: np.ndarray, neg: np.ndarray, *, tpr_level: float = 0.95) -> float:
    """FPR at the highest threshold whose TPR reaches ``tpr_level``."""
    fpr, tpr, _ = roc_curve(pos, neg)
    return float(fpr[np.argmax(tpr >= tpr_level - 1e-12)])


def _downsample(fpr: np.ndarray, tpr: np.ndarray, points: int) -> dict[str, list[float]]:
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(points, len(fpr))).round().astype(np.int64))
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}


class OODEvaluator(LogitEvaluator):
    """Detection of the condition's OOD inputs against this model's clean inputs.

    Keys per score: ``auroc_<s>``, ``aupr_in_<s>``, ``aupr_out_<s>``, ``fpr95_<s>``
    (conventions in ``OOD_CONVENTION``).
    """

    name = "ood"
    needs = frozenset({CLEAN_LOGITS})
    declares = METRICS["ood"]

    def __init__(self, settings: OODSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or OODSettings()

    def _scores(self, outputs: Outputs) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if outputs.clean is None:
            raise ValueError("ood: Outputs.clean (this model's in-distribution logits) is required")
        id_z = checked_logits(outputs.clean, what="in-distribution logits")
        ood_z = checked_logits(outputs.logits, what="OOD logits")
        if len(id_z) == 0 or len(ood_z) == 0:
            raise RobustEvalError(
                f"ood: expected in-distribution and OOD samples, got {len(id_z)} and {len(ood_z)}"
            )
        return {s: (SCORES.get(s)(id_z).numpy(), SCORES.get(s)(ood_z).numpy()) for s in self.settings.scores}

    def metrics(self, outputs: Outputs) -> dict[str, float]:
        result: dict[str, float] = {}
        for s, (pos, neg) in self._scores(outputs).items():
            result[f"auroc_{s}"] = auroc(pos, neg)
            result[f"aupr_in_{s}"] = average_precision(pos, neg)
            result[f"aupr_out_{s}"] = average_precision(-neg, -pos)
            result[f"fpr95_{s}"] = fpr_at_tpr(pos, neg, tpr_level=0.95)
        return result

    def details(self, outputs: Outputs) -> dict[str, Any]:
        """ROC curves (at most ``roc_points`` points each), sample counts and the convention text."""
        scores = self._scores(outputs)
        roc = {s: _downsample(*roc_curve(pos, neg)[:2], self.settings.roc_points) for s, (pos, neg) in scores.items()}
        pos, neg = next(iter(scores.values()))
        return {"roc": roc, "n_id": len(pos), "n_ood": len(neg), "convention": OOD_CONVENTION}


LOGIT_EVALUATORS.add("ood", Use(("ood",), lambda settings: OODEvaluator(settings.ood.scores)))
