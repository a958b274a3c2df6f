"""The verdict in words: one sentence per method, the terminal table, amounts in the metric's unit."""
from __future__ import annotations

import math

from robusteval.analysis.candidate import GIVEN, candidate_lines
from robusteval.analysis.forgetting import impact_lines
from robusteval.analysis.model import Analysis
from robusteval.analysis.potential import Curve
from robusteval.metrics import FAMILIES


def pct(ratio: float) -> str:
    """A prune ratio as a percentage: 0.9 → '90%', 0.875 → '87.5%'."""
    return f"{100 * ratio:.4g}%"


def format_drop(key: str, d: float, *, lower_is_better: bool) -> str:
    """A drop in words: accuracy-like metrics in points, error-like metrics as an increase."""
    return f"{key.rsplit('/', 1)[-1]} {d:+.3g}" if lower_is_better else f"{100 * d:.1f} points lower"


def _point_note(curve: Curve, ratio: float) -> str:
    point = curve.point_at(ratio)
    if point is None or not math.isfinite(point.drop):
        return " (value missing or NaN)"
    note = format_drop(curve.metric, point.drop, lower_is_better=curve.lower_is_better)
    if point.ci is not None:
        lo, hi = (100 * c for c in point.ci)
        note += f"; 95% CI of the drop {lo:.1f} to {hi:.1f}" + (", within noise" if point.within_noise else "")
    return f" ({note})"


def verdict_lines(analysis: Analysis) -> list[str]:
    """One sentence per method naming its most fragile metric family, e.g. 'synflow keeps clean
    accuracy up to 90% but corruption accuracy leaves tolerance at 70% (3.1 points lower; ...)'."""
    lines = candidate_lines(analysis)
    for method in analysis.methods:
        if method == GIVEN:  # a candidate has no ratios: its size and drops are said above
            continue
        curves = {f: c for f in analysis.families if (c := analysis.family_curve(f, method)) is not None}
        if not curves:
            continue
        failing = {f: c for f, c in curves.items() if c.first_out is not None}
        clean = curves.get("clean")
        if not failing:
            lines.append(f"{method} stays within tolerance on every measured family up to "
                         f"{pct(max(analysis.ratios(method)))}, the largest ratio tested.")
            continue
        fragile, curve = min(failing.items(), key=lambda fc: (fc[1].first_out, list(FAMILIES).index(fc[0])))
        leaves = f"{FAMILIES[fragile]} leaves tolerance at {pct(curve.first_out)}{_point_note(curve, curve.first_out)}"
        if clean is None or fragile == "clean":
            others = [f for f in failing if f != fragile]
            tail = f"; also out of tolerance: {', '.join(FAMILIES[f] for f in others)}" if others else ""
            lines.append(f"{method}: {leaves}{tail}.")
        else:
            keeps = (f"keeps clean accuracy up to {pct(clean.prune_potential)}" if clean.prune_potential > 0
                     else "loses clean accuracy at its smallest ratio")
            lines.append(f"{method} {keeps} but {leaves}.")
        if (ranged := curves.get("clean", curve)).interval is not None:
            lines[-1] += (f" {FAMILIES['clean' if 'clean' in curves else fragile].capitalize()} prune potential "
                          f"{_potential_range(ranged)} (strict value; in brackets the range the 95% intervals allow).")
    forgetting = impact_lines(analysis.forgetting, analysis.methods) if analysis.forgetting is not None else []
    return lines + forgetting + _resolution_lines(analysis)


def _potential_range(curve: Curve) -> str:
    """'40% [20%–60%]': the strict potential and its range (see :mod:`robusteval.analysis.potential`)."""
    if curve.interval is None:
        return pct(curve.prune_potential)
    return f"{pct(curve.prune_potential)}[{pct(curve.interval[0])}–{pct(curve.interval[1])}]"


def _resolution_lines(analysis: Analysis) -> list[str]:
    """One line per family whose test set cannot resolve δ: the baseline's own 95% CI is wider than ±δ."""
    lines = []
    for family, key in analysis.families.items():
        curve = next(iter(analysis.curves[key].values()))
        if curve.dense_halfwidth is not None and curve.dense_halfwidth > curve.tolerance:
            tol, half = (format_amount(a, lower_is_better=curve.lower_is_better)
                         for a in (curve.tolerance, curve.dense_halfwidth))
            lines.append(f"The test set is too small to resolve δ = {tol} on {FAMILIES[family]}: the baseline's own "
                         f"95% interval is ±{half}, so drops below that are noise; "
                         "read the potentials' ranges, or evaluate on more images.")
    return lines


def format_amount(amount: float, *, lower_is_better: bool) -> str:
    """An amount in the metric's unit: accuracy-like metrics in points, others as numbers."""
    return f"{amount:.3g}" if lower_is_better else f"{100 * amount:.2g} points"


def format_verdict_table(analysis: Analysis) -> str:
    """The prune-potential table for the terminal: rows methods, columns metric families."""
    families = list(analysis.families)
    header = ["method", "ratios", *families]
    rows = [[m, "-".join(dict.fromkeys(pct(r) for r in (min(analysis.ratios(m)), max(analysis.ratios(m))))),
             *(_potential_range(c) if (c := analysis.family_curve(f, m)) is not None else "-" for f in families)]
            for m in analysis.methods]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]
    lines.append(f"cells: prune potential = largest ratio with every ratio up to it within δ of {analysis.baseline} "
                 f"(δ = {analysis.tolerance:g} unless set per metric); [range] where the drops' 95% intervals "
                 f"allow it; {analysis.baseline_note()}")
    return "\n".join(lines)
