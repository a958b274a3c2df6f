"""Candidate-vs-reference wording: a given pruned model has no ratios, so say how much smaller and faster it is
and what it costs, e.g. "deployed: 1.99x fewer parameters, 1.98x fewer MACs, measured speed-up 1.3x at batch 1
(IQR 1.2–1.4x); clean accuracy 0.2 points lower (95% CI -0.1 to 0.6), ...; within tolerance on every family"."""
from __future__ import annotations

import math

from robusteval.analysis.model import Analysis
from robusteval.card import GIVEN, Costs, MemberCard
from robusteval.metrics import FAMILIES


def times_fewer(reduction: float | None, noun: str) -> str | None:
    """A reduction 1 - new/old as a factor: 0.5 → '2x fewer parameters' (None when unknown)."""
    if reduction is None or not math.isfinite(reduction) or reduction >= 1:
        return None
    factor = 1.0 / (1.0 - reduction)
    if abs(factor - 1.0) < 0.005:
        return f"as many {noun}"
    return f"{factor:.3g}x fewer {noun}" if factor > 1 else f"{1 / factor:.3g}x more {noun}"


def size_phrase(costs: Costs) -> str:
    """Size reduction and measured speed-up of a member's costs, '' when none is known."""
    parts = [p for p in (times_fewer(costs.params_reduction, "parameters"),
                         times_fewer(costs.macs_reduction, "MACs")) if p]
    measured, spread = costs.speedup_measured or {}, costs.speedup_iqr or {}
    for key, ratio in measured.items():
        low, high = spread.get(key, (ratio, ratio))
        parts.append(f"measured speed-up {ratio:.2f}x at {key.replace('_', ' ')} (IQR {low:.2f}–{high:.2f}x, "
                     f"{costs.latency_device or 'cpu'})")
    return ", ".join(parts)


def _drop_phrase(analysis: Analysis, family: str, model: MemberCard) -> str | None:
    curve = analysis.family_curve(family, model.method)
    point = curve.point_at(model.ratio) if curve is not None else None
    if point is None or not math.isfinite(point.drop):
        return None
    if curve.lower_is_better:
        text = f"{FAMILIES[family]} {point.drop:+.3g}"
    else:
        text = f"{FAMILIES[family]} {100 * point.drop:.1f} points {'lower' if point.drop >= 0 else 'higher'}"
    if point.ci is not None:
        lo, hi = (100 * c for c in point.ci)
        text += f" (95% CI of the drop {lo:.1f} to {hi:.1f})"
    return text + (" [out of tolerance]" if curve.first_out is not None else "")


def candidate_lines(analysis: Analysis) -> list[str]:
    """One sentence per given (candidate) model: its size and speed beside its drops from the reference."""
    lines = []
    for model in (m for m in analysis.models if m.role == GIVEN):
        drops = [d for f in analysis.families if (d := _drop_phrase(analysis, f, model))]
        failing = [f for f in analysis.families if (c := analysis.family_curve(f, GIVEN)) and c.first_out is not None]
        size = size_phrase(model.costs)
        parts = ([size] if size else []) + drops + ([] if failing else ["within tolerance on every measured family"])
        lines.append(f"{model.id} against {analysis.baseline}: {'; '.join(parts)}.")
    return lines
