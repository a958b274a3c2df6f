"""The report's sections, each rendered from the :class:`Analysis` (and the manifest for attack settings)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from robusteval.analysis import Analysis, pct, verdict_lines
from robusteval.card import MemberCard, as_cards
from robusteval.metrics import (
    CURVE_PANELS,
    FAMILIES,
    attack_point,
    corruption_key,
    corruption_point,
    family_of,
    key_matches,
    noise_point,
    shift_point,
)
from robusteval.report import plots
from robusteval.report.markup import esc as _e
from robusteval.report.markup import figure as _figure
from robusteval.report.markup import num as _num
from robusteval.report.markup import table as _table


def chosen_models(analysis: Analysis) -> list[str]:
    """Dense plus, per method, the model at its clean-accuracy prune potential (else its smallest ratio):
    the model a user would pick by test accuracy alone, whose hidden costs the report shows."""
    chosen = [analysis.baseline]
    for method in analysis.methods:
        curve = analysis.curves.get("clean/accuracy", {}).get(method)
        ratios = analysis.ratios(method)
        target = curve.prune_potential if curve and curve.prune_potential > 0 else ratios[0]
        chosen += [m.id for m in analysis.models if m.method == method and m.ratio == target][:1]
    return chosen


def _verdict(analysis: Analysis) -> str:
    if not analysis.families:
        return ""
    rows = []
    for method in analysis.methods:
        top = max(analysis.ratios(method))
        row: list[Any] = [_e(method)]
        for family in analysis.families:
            c = analysis.family_curve(family, method)
            if c is None:
                row.append(("–", "none"))
                continue
            cls = "ok" if c.first_out is None else "warn" if c.prune_potential > 0 else "bad"
            note = "" if c.first_out is None else f"<small>out at {pct(c.first_out)}"
            if c.interval is not None and c.first_out is not None:
                note = f"<small>range {pct(c.interval[0])}–{pct(c.interval[1])}</small>" + note
            p = c.point_at(c.first_out) if c.first_out is not None else None
            note += " (within noise)</small>" if p is not None and p.within_noise else ("</small>" if note else "")
            row.append((f"{pct(c.prune_potential) if c.first_out is not None else '≥ ' + pct(top)}{note}", cls))
        rows.append(row)
    header = ["method", *(f"{_e(f)}<small>{_e(k)}</small>" for f, k in analysis.families.items())]
    lines = "".join(f"<li>{_e(line)}</li>" for line in verdict_lines(analysis))
    return (f'<p class="note">Cells: <b>prune potential</b> (Liebenwein et al. 2021) — the largest prune ratio '
            f"such that the family's headline metric stays within δ of the dense model at that ratio and every "
            f"smaller one (δ = {analysis.tolerance:g} in the metric's unit unless set per metric). Green: never "
            f"leaves tolerance; amber: leaves it; red: out already at the smallest ratio. \"Within noise\": the 95% "
            f"paired-bootstrap interval of the drop contains 0. \"Range\": from the largest ratio whose drops are "
            f"all significantly within δ to the largest whose drops are all not significantly worse than δ "
            f"(95% intervals). Baseline: {_e(analysis.baseline_note())}.</p>"
            + _table(header, rows) + f'<ul class="verdict">{lines}</ul>')


ATTACK_BUDGET = {"pgd_steps": ("PGD {} steps", 40), "autoattack_iters": ("AutoAttack {} APGD iterations", 100),
                 "apgd_targets": ("{} APGD-T target classes", 9),
                 "min_norm_steps": ("minimum-norm attacks {} steps", 100), "sample_size": ("{} attacked images", 500)}
"""Attack setting → (wording, default): the defaults of ``AdversarialSettings`` as plain numbers, so that the
report imports no attack code (tests/test_report_validity.py checks that they agree)."""


def attack_strength_note(manifest: Mapping[str, Any]) -> str:
    """A warning when the run's attack settings are weaker than the defaults, derived from the config."""
    settings = ((manifest.get("config") or {}).get("evaluate") or {}).get("adversarial") or {}
    weaker = [f"{label.format(settings[key])} (default {default})" for key, (label, default) in ATTACK_BUDGET.items()
              if isinstance(settings.get(key), (int, float)) and settings[key] < default]
    if not weaker:
        return ""
    return (f'<p class="note warn">Attacks weaker than the defaults: {_e(", ".join(weaker))}. Weaker attacks '
            "overstate adversarial accuracy (each number is an upper bound, higher than the default attacks would "
            "measure) and fewer images widen its error bars: compare the models of this run with each other, not "
            "with published robust accuracies.</p>")


def precision_note(manifest: Mapping[str, Any]) -> str:
    """Says when forward passes ran in reduced precision (the attacks and pruning scores never do)."""
    precision = manifest.get("precision", "fp32")
    if precision == "fp32":
        return ""
    return (f'<p class="note">Precision: forward passes in {_e(precision)} autocast; attacks and pruning scores in '
            f"fp32 (device {_e(manifest.get('device', 'unknown'))}).</p>")


def _recovery(cards: Iterable[MemberCard | Mapping[str, Any]]) -> str:
    """What recovery followed pruning, per method: the report must say it (it changes the picture)."""
    by_method: dict[str, set[str]] = {}
    for m in as_cards(cards):
        if not m.built_here:
            continue
        rec = m.recovery
        steps = ["pruned at initialisation (the re-initialised architecture), then trained from scratch"] \
            if rec.get("at_init") else []
        if rec.get("pruning_steps"):
            steps.append(f"{rec['pruning_steps']} fine-tuning steps interleaved with pruning")
        if rec.get("finetune_epochs"):
            steps.append(f"fine-tuned {rec['finetune_epochs']:.2g} epoch(s)")
        if rec.get("bn_recalibrated"):
            steps.append("BatchNorm re-calibrated")
        by_method.setdefault(m.method, set()).add(", ".join(steps) or "no recovery (one-shot pruning only)")
    if not by_method:
        return ""
    items = "".join(f"<li><b>{_e(method)}</b>: {_e('; '.join(sorted(steps)))}</li>" for method, steps in by_method.items())
    return f'<p class="note">Recovery after pruning, before evaluation:</p><ul class="recovery">{items}</ul>'


def _condition_notes(notes: Mapping[str, str]) -> str:
    """How the inputs of each condition of a family were made (generated or read from files, deviations)."""
    if not notes:
        return ""
    return ("<h3>How the corrupted inputs were made</h3>"
            + _table(["corruption", "source and difference from the reference"],
                     [[_e(k), _e(v)] for k, v in notes.items()], cls="text"))


def _curve_keys(analysis: Analysis, patterns: Sequence[str]) -> list[str]:
    keys: list[str] = []
    for pattern in patterns:
        pattern = analysis.families.get("adversarial", "") if pattern == "$adversarial" else pattern
        keys += [k for k in sorted(analysis.curves) if key_matches(k, pattern) and k not in keys]
    return keys[:3]


def _panels(analysis: Analysis) -> dict[str, list[str]]:
    """family → the metrics its curve panel draws: :data:`CURVE_PANELS`, then (first three metrics each)
    every family no panel names, e.g. one a new evaluator brings."""
    panels = {family: keys for family, patterns in CURVE_PANELS.items() if (keys := _curve_keys(analysis, patterns))}
    for key in sorted(analysis.curves):
        family = family_of(key)
        if family not in FAMILIES and family != "shift" and len(panels.setdefault(family, [])) < 3:
            panels[family].append(key)
    return panels


def _curves(analysis: Analysis) -> str:
    parts = []
    for family, keys in _panels(analysis).items():
        if keys:
            parts.append(f"<h3>{_e(FAMILIES.get(family, family))}</h3>"
                         + _figure(plots.metric_curves(analysis, keys), f"{family} metrics vs prune ratio"))
    if not parts:
        return ""
    heads = [k for k in (analysis.families.get(f) for f in ("corruption", "noise", "adversarial")) if k]
    heads += sorted(k for k in analysis.curves if (p := shift_point(k)) is not None and p[1] == "accuracy")
    rows = [[_e(m), *(f"{100 * excess[k]:.1f}" if k in excess else "–" for k in heads)]
            for m, excess in analysis.excess.items()]
    table = ("<h3>Excess error</h3><p class=\"note\">Drop on the shifted condition minus drop on clean data, in "
              "accuracy points: positive means the condition loses more than the test set shows.</p>"
              + _table(["model", *map(_e, heads)], rows)) if heads and rows else ""
    return ('<p class="note">Lines start at the dense model (0%). Grey band: tolerance δ on the bad side of the '
            "dense value (dashed). Error bars: 95% paired-bootstrap intervals where per-sample results were "
            "recorded.</p>" + "".join(parts) + table)


def _corruptions(analysis: Analysis) -> str:
    dense = analysis.values[analysis.baseline]
    parsed = [p for k in dense if (p := corruption_point(k))]
    if not parsed:
        return ""
    names = list(dict.fromkeys(name for name, _ in parsed))
    severities = sorted({severity for _, severity in parsed})
    if not analysis.methods:  # one model, nothing to compare: its accuracies as a table
        rows = [[_e(c), *(_num(dense.get(corruption_key(c, s))) for s in severities)] for c in names]
        return ("<h3>Accuracy per corruption and severity</h3>"
                + _table(["corruption", *(f"severity {_e(s)}" for s in severities)], rows))
    return ("<h3>Accuracy drop per corruption (mean over severities)</h3>"
            + _figure(plots.corruption_heatmaps(analysis, names), "corruption heatmap")
            + "<h3>Severity curves (mean over corruptions)</h3>"
            + _figure(plots.line_panels(severity_panels(analysis), xlabel="severity", dense="dense"),
                      "severity curves"))


def severity_panels(analysis: Analysis) -> dict[str, dict[str, dict[float, float]]]:
    """method → line (``dense`` or the ratio) → {severity: accuracy averaged over corruptions}."""
    parsed = [p for k in analysis.values[analysis.baseline] if (p := corruption_point(k))]
    if not parsed:
        return {}
    names = list(dict.fromkeys(name for name, _ in parsed))
    severities = sorted({severity for _, severity in parsed})
    panels = {}
    for method in analysis.methods:
        ids = {"dense": analysis.baseline,
               **{pct(m.ratio): m.id for m in sorted(analysis.models, key=lambda m: m.ratio) if m.method == method}}
        panels[method] = {label: {float(s): float(np.mean(vals)) for s in severities
                                  if (vals := [analysis.values[mid][corruption_key(c, s)] for c in names
                                               if corruption_key(c, s) in analysis.values[mid]])}
                          for label, mid in ids.items()}
    return panels


def _eps_panels(analysis: Analysis, models: Sequence[str], key_of: Any) -> dict[str, dict[str, dict[float, float]]]:
    """panel title → model → {ε: accuracy} for keys that ``key_of(key)`` maps to (title, ε)."""
    panels: dict[str, dict[str, dict[float, float]]] = {}
    for model in models:
        for key, value in analysis.values[model].items():
            if (hit := key_of(key)) is not None:
                panels.setdefault(hit[0], {}).setdefault(model, {})[hit[1]] = value
    return panels


def attack_curve_point(key: str) -> tuple[str, float] | None:
    """(panel title, ε) of an adversarial accuracy key, for the accuracy-vs-ε curves."""
    return (f"{'transfer ' if p.transfer else ''}{p.attack}", p.eps) if (p := attack_point(key)) else None


def noise_curve_point(key: str) -> tuple[str, float] | None:
    """(panel title, ε) of a noise accuracy key, for the accuracy-vs-noise-ε curve."""
    p = noise_point(key)
    return ("random noise in an ε-ball", p[0]) if p is not None and p[1] == "accuracy" else None


def _robustness(analysis: Analysis) -> str:
    models = chosen_models(analysis)
    adv = _eps_panels(analysis, models, attack_curve_point)
    noise = _eps_panels(analysis, models, noise_curve_point)
    parts = []
    if adv:
        parts.append("<h3>Adversarial accuracy vs ε</h3>"
                     + _figure(plots.line_panels(adv, xlabel="ε", dense=analysis.baseline), "adversarial accuracy"))
    if noise:
        units = next(iter(analysis.evidence.notes.get("noise", {}).values()), "")
        parts.append("<h3>Accuracy vs noise ε</h3>" + (f'<p class="note">Noise: {_e(units)}.</p>' if units else "")
                     + _figure(plots.line_panels(noise, xlabel="noise ε (normalised-input units)",
                                                 dense=analysis.baseline), "noise accuracy"))
    return (_chosen_note(models) + "".join(parts)) if parts else ""


def _chosen_note(models: Sequence[str]) -> str:
    return (f'<p class="note">Models shown: the dense model and, per method, the model at its clean-accuracy '
            f"prune potential ({_e(', '.join(models[1:]))}) — what test accuracy alone would select.</p>")


def _calibration_ood(analysis: Analysis) -> str:
    models = chosen_models(analysis)
    bins, parts = analysis.evidence.reliability, []
    if chosen := {m: bins[m] for m in models if m in bins}:
        parts.append("<h3>Reliability diagrams (clean test set)</h3>"
                     + _figure(plots.reliability_diagrams(chosen), "reliability diagrams"))
    rocs = {s: {m: by[m] for m in models if m in by} for s, by in analysis.evidence.roc.items()}
    if rocs := {s: by for s, by in rocs.items() if by}:
        parts.append("<h3>OOD detection ROC (max softmax probability)</h3>"
                     + _figure(plots.roc_curves(rocs, dense=analysis.baseline), "OOD ROC curves"))
    return (_chosen_note(models) + "".join(parts)) if parts else ""
