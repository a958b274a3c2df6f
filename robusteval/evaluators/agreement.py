"""Agreement of a pruned model with its dense parent on the same inputs.

The functional-distance measures of Liebenwein et al. 2021 ("Lost in Pruning"): top-1
agreement, KL(dense || pruned) of the softmax outputs, L2 and L-infinity distances of the
softmax vectors, and the samples one model gets right and the other wrong.
"""
from __future__ import annotations

import torch

from robusteval.declarations import METRICS
from robusteval.errors import RobustEvalError
from robusteval.evaluators.accuracy import checked_logits
from robusteval.evaluators.base import DENSE_LOGITS, LOGIT_EVALUATORS, LogitEvaluator, Outputs, Use


class AgreementEvaluator(LogitEvaluator):
    """Compare ``Outputs.logits`` (pruned) with ``Outputs.dense``; the dense model itself gets no metrics.

    Flip fractions and counts use only samples with known labels (label != -1) and are left out
    when there are none; the distance measures use every sample.
    """

    name = "agreement"
    needs = frozenset({DENSE_LOGITS})
    declares = METRICS["agreement"]

    def metrics(self, outputs: Outputs) -> dict[str, float]:
        if outputs.dense is None:
            return {}
        pruned = checked_logits(outputs.logits, what="pruned logits")
        dense = checked_logits(outputs.dense, what="dense logits")
        if pruned.shape != dense.shape:
            raise RobustEvalError(
                f"agreement: expected dense logits of the pruned logits' shape {tuple(pruned.shape)}, "
                f"got {tuple(dense.shape)}"
            )
        log_p, log_q = torch.log_softmax(dense, dim=1), torch.log_softmax(pruned, dim=1)
        p, q = log_p.exp(), log_q.exp()
        pred_dense, pred_pruned = dense.argmax(dim=1), pruned.argmax(dim=1)
        result = {
            "top1": (pred_dense == pred_pruned).double().mean().item(),
            "kl": (p * (log_p - log_q)).sum(dim=1).mean().item(),
            "l2": (p - q).norm(dim=1).mean().item(),
            "linf": (p - q).abs().amax(dim=1).mean().item(),
        }
        labels = outputs.labels.detach().to("cpu", torch.int64).reshape(-1)
        if len(labels) != len(pruned):
            raise RobustEvalError(f"agreement: expected one label per logit row ({len(pruned)}), got {len(labels)}")
        known = labels >= 0
        if known.any():
            dense_right = pred_dense[known] == labels[known]
            pruned_right = pred_pruned[known] == labels[known]
            lost = int((dense_right & ~pruned_right).sum())
            gained = int((~dense_right & pruned_right).sum())
            n = int(known.sum())
            result |= {
                "dense_correct_pruned_wrong": lost / n,
                "dense_wrong_pruned_correct": gained / n,
                "dense_correct_pruned_wrong_count": float(lost),
                "dense_wrong_pruned_correct_count": float(gained),
            }
        return result


LOGIT_EVALUATORS.add("agreement", Use(("clean", "corruption", "noise", "shift"),
                                      lambda settings: AgreementEvaluator() if settings.agreement else None))
