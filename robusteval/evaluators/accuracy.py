"""Top-1 / top-5 accuracy and cross-entropy, plus the logit checks every logit evaluator shares.

Accuracy on a shifted labelled set (``shift/<set>/accuracy``) is this same evaluator run on
that set's condition.
"""
from __future__ import annotations

import numpy as np
import torch

from robusteval.declarations import METRICS
from robusteval.errors import RobustEvalError
from robusteval.evaluators.base import LOGIT_EVALUATORS, LogitEvaluator, Outputs, Use


def checked_logits(logits: torch.Tensor, *, what: str = "logits") -> torch.Tensor:
    """Logits as a finite float64 CPU tensor of shape (samples, classes), or a clear error."""
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise RobustEvalError(f"expected {what} of shape (samples, classes), got shape {tuple(logits.shape)}")
    out = logits.detach().to("cpu", torch.float64)
    if not torch.isfinite(out).all():
        raise RobustEvalError(f"{what} contain NaN or infinite values: the model output is unusable")
    return out


def labelled(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked logits and int64 labels restricted to samples whose label is known (not -1)."""
    z = checked_logits(logits)
    y = labels.detach().to("cpu", torch.int64).reshape(-1)
    if len(y) != len(z):
        raise RobustEvalError(f"expected one label per logit row ({len(z)}), got {len(y)} labels")
    if len(y) and int(y.max()) >= z.shape[1]:
        raise RobustEvalError(
            f"labels must lie in [0, {z.shape[1] - 1}] for a model with {z.shape[1]} outputs, got label {int(y.max())}"
        )
    known = y >= 0
    return z[known], y[known]


def per_sample_correct(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Whether each sample's top-1 prediction equals its label (False where the label is -1)."""
    z = checked_logits(logits)
    y = labels.detach().to("cpu", torch.int64).reshape(-1)
    if len(y) != len(z):
        raise RobustEvalError(f"expected one label per logit row ({len(z)}), got {len(y)} labels")
    return (z.argmax(dim=1) == y).numpy()


class AccuracyEvaluator(LogitEvaluator):
    """``accuracy`` (top-1), ``top5`` (top-min(5, classes)), ``loss`` (mean cross-entropy), ``error``.

    Only samples with known labels count; a condition without any returns no metrics.
    """

    name = "accuracy"
    declares = METRICS["accuracy"]

    def metrics(self, outputs: Outputs) -> dict[str, float]:
        z, y = labelled(outputs.logits, outputs.labels)
        if len(y) == 0:
            return {}
        k = min(5, z.shape[1])
        top1 = (z.argmax(dim=1) == y).double().mean().item()
        topk = (z.topk(k, dim=1).indices == y[:, None]).any(dim=1).double().mean().item()
        loss = torch.nn.functional.cross_entropy(z, y).item()
        return {"accuracy": top1, "top5": topk, "loss": loss, "error": 1.0 - top1}


LOGIT_EVALUATORS.add("accuracy", Use(("clean", "corruption", "noise", "shift", "transfer"),
                                     lambda settings: AccuracyEvaluator()))
