"""Derived metrics: every number computed from other metrics, in one place (no model is run here).

:func:`derive` adds them to each model's metrics before ``summary.json`` is written (their directions
are the ``derived`` row of :data:`robusteval.declarations.METRICS`), so the
report and the gate read the same numbers. Per-condition accuracies come from the accuracy
evaluator (``corruption/<name>/<severity>/accuracy``, ``noise/<ε>/accuracy``). Corruption
summaries follow Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations" (ICLR 2019), with the audit's own dense model in AlexNet's place:
CE and mCE are ratios (1.0 = as robust as the dense model; the paper prints them as
percentages). ``corruption/mce`` and ``corruption/relative_mce`` average the 15 benchmark corruptions
only, as the paper does (the held-out extras such as spatter never enter them);
``corruption/mce_all`` and ``corruption/relative_mce_all`` average every corruption the audit ran.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from robusteval.errors import RobustEvalError
from robusteval.metrics import BENCHMARK_CORRUPTIONS, corruption_point, noise_point, ood_point
from robusteval.registry import unknown_name_message

Metrics = Mapping[str, Mapping[str, float]]  # model id → key → value


def _errors(metrics: Mapping[str, float], model: str) -> dict[str, dict[int, float]]:
    """corruption → severity → error (1 − accuracy) of one model."""
    out: dict[str, dict[int, float]] = {}
    for key, value in metrics.items():
        if (point := corruption_point(key)) is None or not 1 <= point[1] <= 5:
            continue
        if not 0.0 <= float(value) <= 1.0:
            raise RobustEvalError(f"model {model!r}: expected {key} in [0, 1], got {value!r}")
        out.setdefault(point[0], {})[point[1]] = 1.0 - float(value)
    return out


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def corruption_summary(metrics: Metrics, dense_id: str) -> dict[str, dict[str, float]]:
    """Per model: mean corruption accuracy, per-corruption mean accuracy and CE, mCE and relative mCE.

    ``corruption/<c>/ce`` = Σ_s E_s,c(model) / Σ_s E_s,c(dense) over the severities both
    have; ``corruption/mce`` is its mean over the benchmark corruptions both have (``mce_all``: over
    all). Relative CE uses errors in excess of each model's clean error, Σ_s (E_s,c − E_clean); it needs
    ``clean/accuracy`` for both models. A ratio whose dense denominator is 0 (dense never
    wrong, or no worse than clean) is undefined: that corruption gets no CE and leaves the
    mean; ``corruption/mce_corruptions`` counts the corruptions in ``corruption/mce``.
    """
    if dense_id not in metrics:
        raise RobustEvalError(unknown_name_message("dense model", dense_id, metrics))
    dense_errors = _errors(metrics[dense_id], dense_id)
    dense_clean = metrics[dense_id].get("clean/accuracy")
    return {model: _corruption_entry(_errors(values, model), dense_errors, values.get("clean/accuracy"), dense_clean)
            for model, values in metrics.items()}


def _corruption_entry(errors: dict[str, dict[int, float]], dense_errors: dict[str, dict[int, float]],
                      clean: float | None, dense_clean: float | None) -> dict[str, float]:
    out: dict[str, float] = {}
    ces: dict[str, float] = {}
    relative: dict[str, float] = {}
    for name in sorted(errors):
        out[f"corruption/{name}/mean_accuracy"] = 1.0 - _mean(errors[name].values())
        common = sorted(set(errors[name]) & set(dense_errors.get(name, {})))
        if not common:
            continue
        own = sum(errors[name][s] for s in common)
        ref = sum(dense_errors[name][s] for s in common)
        if ref > 0:
            ces[name] = out[f"corruption/{name}/ce"] = own / ref
        if clean is not None and dense_clean is not None:
            excess_ref = ref - len(common) * (1.0 - float(dense_clean))
            if excess_ref > 0:
                relative[name] = (own - len(common) * (1.0 - float(clean))) / excess_ref
                out[f"corruption/{name}/relative_ce"] = relative[name]
    every = [1.0 - e for per in errors.values() for e in per.values()]
    if every:
        out["corruption/mean_accuracy"] = _mean(every)
    for key, per in (("mce", ces), ("relative_mce", relative)):
        benchmark = [v for name, v in per.items() if name in BENCHMARK_CORRUPTIONS]
        if benchmark:
            out[f"corruption/{key}"] = _mean(benchmark)
            if key == "mce":
                out["corruption/mce_corruptions"] = float(len(benchmark))
        if per:
            out[f"corruption/{key}_all"] = _mean(per.values())
    return out


def noise_summary(metrics: Metrics) -> dict[str, dict[str, float]]:
    """Per model and per noise metric m: ``noise/auc/<m>``, the area under m(ε) over the ε range
    divided by its width (trapezoid rule), i.e. the curve's mean level; needs two or more ε.

    The noise-resilience curve is the ε-ball experiment of Liebenwein et al. (MLSys 2021).
    """
    summary: dict[str, dict[str, float]] = {}
    for model, values in metrics.items():
        curves: dict[str, dict[float, float]] = {}
        for key, value in values.items():
            if (point := noise_point(key)) is not None:
                curves.setdefault(point[1], {})[point[0]] = float(value)
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


#: family means the headlines use: key → which metrics it averages
FAMILY_MEANS: dict[str, Callable[[str], bool]] = {
    "noise/mean_accuracy": lambda key: (p := noise_point(key)) is not None and p[1] == "accuracy",
    "ood/mean_auroc_msp": lambda key: (p := ood_point(key)) is not None and p[1] == "auroc_msp",
}


def family_means(metrics: Mapping[str, float]) -> dict[str, float]:
    """The means of :data:`FAMILY_MEANS` one model's metrics have parts for (NaN parts make NaN)."""
    out = {}
    for derived, member in FAMILY_MEANS.items():
        parts = [float(v) if v is not None else math.nan for k, v in metrics.items() if member(k)]
        if parts and derived not in metrics:
            out[derived] = float(np.mean(parts))
    return out


def derive(metrics: Metrics, dense_id: str) -> dict[str, dict[str, float]]:
    """Every model's metrics with all derived metrics added, keys sorted."""
    corruption, noise = corruption_summary(metrics, dense_id), noise_summary(metrics)
    out = {}
    for model, values in metrics.items():
        merged = {**values, **corruption.get(model, {}), **noise.get(model, {})}
        out[model] = dict(sorted((merged | family_means(merged)).items()))
    return out
