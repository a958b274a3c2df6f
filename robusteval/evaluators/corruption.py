"""Corruption and noise summaries over a family's flat metrics (no model is run here).

Per-condition accuracies come from the accuracy evaluator run on each condition, stored as
``corruption/<name>/<severity>/accuracy`` and ``noise/<eps>/accuracy`` (see ``corruption_key``
and ``noise_key``). The summaries follow Hendrycks & Dietterich, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations" (ICLR 2019), with the audit's own dense
model in AlexNet's place: CE and mCE are ratios (1.0 = as robust as the dense model; the
paper prints them as percentages). mCE averages every corruption the audit ran; published
mCE uses the 15 benchmark corruptions only.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from robusteval.errors import RobustEvalError
from robusteval.registry import unknown_name_message

_CORRUPTION = re.compile(r"^corruption/(?P<name>[^/]+)/(?P<severity>[1-5])/accuracy$")
_NOISE = re.compile(r"^noise/(?P<eps>[^/]+)/(?P<metric>.+)$")


def corruption_key(name: str, severity: int, metric: str = "accuracy") -> str:
    """The flat metric name of ``metric`` on corruption ``name`` at ``severity``."""
    return f"corruption/{name}/{severity}/{metric}"


def noise_key(eps: float, metric: str = "accuracy") -> str:
    """The flat metric name of ``metric`` under uniform noise of radius ``eps`` (e.g. ``noise/0.15/accuracy``)."""
    return f"noise/{eps:g}/{metric}"


def _errors(metrics: Mapping[str, float], model: str) -> dict[str, dict[int, float]]:
    """corruption → severity → error (1 − accuracy) of one model."""
    out: dict[str, dict[int, float]] = {}
    for key, value in metrics.items():
        if (m := _CORRUPTION.match(key)) is None:
            continue
        if not 0.0 <= float(value) <= 1.0:
            raise RobustEvalError(f"model {model!r}: expected {key} in [0, 1], got {value!r}")
        out.setdefault(m["name"], {})[int(m["severity"])] = 1.0 - float(value)
    return out


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def corruption_summary(metrics: Mapping[str, Mapping[str, float]], dense_id: str) -> dict[str, dict[str, float]]:
    """Per model: mean corruption accuracy, per-corruption mean accuracy and CE, mCE and relative mCE.

    ``corruption/<c>/ce`` = Σ_s E_s,c(model) / Σ_s E_s,c(dense) over the severities both
    have; ``corruption/mce`` is its mean over the corruptions both have. Relative CE uses
    errors in excess of each model's clean error, Σ_s (E_s,c − E_clean); it needs
    ``clean/accuracy`` for both models. A ratio whose dense denominator is 0 (dense never
    wrong, or no worse than clean) is undefined: that corruption gets no CE and leaves the
    mean; ``corruption/mce_corruptions`` counts the corruptions in ``corruption/mce``.
    """
    if dense_id not in metrics:
        raise RobustEvalError(unknown_name_message("dense model", dense_id, metrics))
    dense_errors = _errors(metrics[dense_id], dense_id)
    dense_clean = metrics[dense_id].get("clean/accuracy")
    summary: dict[str, dict[str, float]] = {}
    for model, values in metrics.items():
        errors = _errors(values, model)
        clean = values.get("clean/accuracy")
        out: dict[str, float] = {}
        ces: list[float] = []
        relative: list[float] = []
        for name in sorted(errors):
            out[f"corruption/{name}/mean_accuracy"] = 1.0 - _mean(errors[name].values())
            common = sorted(set(errors[name]) & set(dense_errors.get(name, {})))
            if not common:
                continue
            own = sum(errors[name][s] for s in common)
            ref = sum(dense_errors[name][s] for s in common)
            if ref > 0:
                ces.append(own / ref)
                out[f"corruption/{name}/ce"] = ces[-1]
            if clean is not None and dense_clean is not None:
                excess_ref = ref - len(common) * (1.0 - float(dense_clean))
                if excess_ref > 0:
                    relative.append((own - len(common) * (1.0 - float(clean))) / excess_ref)
                    out[f"corruption/{name}/relative_ce"] = relative[-1]
        every = [1.0 - e for per in errors.values() for e in per.values()]
        if every:
            out["corruption/mean_accuracy"] = _mean(every)
        if ces:
            out["corruption/mce"] = _mean(ces)
            out["corruption/mce_corruptions"] = float(len(ces))
        if relative:
            out["corruption/relative_mce"] = _mean(relative)
        summary[model] = out
    return summary


def noise_summary(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Per model and per noise metric m: ``noise/auc/<m>``, the area under m(ε) over the ε range
    divided by its width (trapezoid rule), i.e. the curve's mean level; needs two or more ε.

    The noise-resilience curve is the ε-ball experiment of Liebenwein et al. (MLSys 2021).
    """
    summary: dict[str, dict[str, float]] = {}
    for model, values in metrics.items():
        curves: dict[str, dict[float, float]] = {}
        for key, value in values.items():
            if (m := _NOISE.match(key)) is None:
                continue
            try:
                eps = float(m["eps"])
            except ValueError:
                continue  # not a noise level, e.g. noise/auc/accuracy
            curves.setdefault(m["metric"], {})[eps] = float(value)
        out: dict[str, float] = {}
        for metric, curve in sorted(curves.items()):
            points = sorted(curve.items())
            width = points[-1][0] - points[0][0]
            if len(points) < 2 or width <= 0 or any(math.isnan(v) for _, v in points):
                continue
            area = sum((e1 - e0) * (v0 + v1) / 2 for (e0, v0), (e1, v1) in zip(points, points[1:]))
            out[f"noise/auc/{metric}"] = area / width
        summary[model] = out
    return summary
