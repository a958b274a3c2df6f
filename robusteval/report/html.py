"""The self-contained HTML report (one template, figures as base64 PNG) plus analysis.json and summary.csv.

Reads summary.json, records.jsonl and manifest.json only; never loads a model. Sections whose
metrics are absent are left out.
"""
from __future__ import annotations

import base64
import csv
import fnmatch
import html
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from robusteval.analysis import (
    CORRUPTION_ACCURACY,
    DEFAULT_TOLERANCE,
    FAMILIES,
    NOISE_ACCURACY,
    NUMBER,
    Analysis,
    analyse,
    pct,
    verdict_lines,
)
from robusteval.errors import RobustEvalError
from robusteval.report import plots
from robusteval.results import RunDir, incomplete_message, write_text_atomic

SECTIONS = {
    "verdict": "Verdict", "curves": "Metrics vs prune ratio", "corruption": "Corruptions",
    "robustness": "Adversarial and noise robustness", "calibration": "Calibration and OOD detection",
    "models": "Models", "metadata": "Run metadata and reproduction",
}
#: curve panels per family: glob patterns, the first three present metrics are drawn
_CURVE_PANELS = {
    "clean": ("clean/accuracy", "clean/top5", "clean/loss"),
    "corruption": ("corruption/mean_accuracy", "corruption/mce", "corruption/relative_mce"),
    "noise": ("noise/auc/accuracy", "noise/mean_accuracy"),
    "adversarial": ("$adversarial", "adversarial/min_norm/*/median"),
    "calibration": ("calibration/ece", "calibration/nll", "calibration/brier"),
    "ood": ("ood/mean_auroc_msp", "ood/*/fpr95_msp"),
    "agreement": ("agreement/top1", "agreement/kl", "agreement/dense_correct_pruned_wrong"),
    "distribution shift": ("shift/*/accuracy",),
}
_ATTACK_KEY = re.compile(rf"^adversarial/(?P<transfer>transfer/)?(?P<attack>[^/]+)/(?P<eps>{NUMBER})/accuracy$")


def write_report(run_dir: Path, *, tolerance: float = DEFAULT_TOLERANCE,
                 tolerances: Mapping[str, float] | None = None) -> Path:
    """Write report.html, analysis.json and summary.csv into ``run_dir``; return the report's path."""
    return build_report(run_dir, tolerance=tolerance, tolerances=tolerances)[0]


def build_report(run_dir: Path, *, tolerance: float = DEFAULT_TOLERANCE,
                 tolerances: Mapping[str, float] | None = None) -> tuple[Path, Analysis]:
    """:func:`write_report`, also returning the analysis it rendered (for the terminal verdict)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RobustEvalError(f"expected a run directory, got {str(run_dir)!r} (not a directory)")
    run = RunDir(run_dir)
    with run.locked():
        summary, records, manifest = run.read_summary(), run.records(), run.read_manifest() or {}
        analysis = analyse(summary, records, tolerance=tolerance, tolerances=tolerances)
        write_text_atomic(run_dir / "analysis.json", json.dumps(analysis.to_json(), indent=1) + "\n")
        write_summary_csv(analysis, run_dir / "summary.csv")
        out = run_dir / "report.html"
        write_text_atomic(out, render_report(analysis, summary, records, manifest,
                                             title=f"robusteval report: {run_dir.name}"))
    return out, analysis


def render_report(analysis: Analysis, summary: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
                  manifest: Mapping[str, Any], *, title: str = "robusteval report") -> str:
    """The report as one HTML string."""
    strength = attack_strength_note(manifest) if "adversarial" in analysis.families else ""
    with matplotlib.rc_context({"text.parse_math": False}):  # '$' in a model id is text, not mathtext
        robustness = _robustness(analysis)
        parts = {
            "verdict": _recovery(summary) + _verdict(analysis) + strength, "curves": _curves(analysis),
            "corruption": _corruptions(analysis) + _condition_notes(records, "corruption"),
            "robustness": strength + robustness if robustness else "",
            "calibration": _calibration_ood(analysis, records),
            "models": _models(summary, records), "metadata": _metadata(manifest, summary),
        }
    present = {k: v for k, v in parts.items() if v}
    warning = incomplete_message(summary)
    sections = [f'<section id="{k}"><h2>{SECTIONS[k]}</h2>\n{v}\n</section>' for k, v in present.items()]
    body = "\n".join(([f'<p class="incomplete">{_e(warning)}</p>'] if warning else []) + sections)
    nav = "".join(f'<a href="#{k}">{SECTIONS[k]}</a>' for k in present)
    n_pruned = len(analysis.models) - len(set(analysis.references) | {analysis.dense})
    subtitle = (f"dense model {_e(analysis.untouched or analysis.dense)} vs {n_pruned} pruned models of "
                f"{len(analysis.methods)} methods; drops against {_e(analysis.dense)}; "
                f"tolerance δ = {analysis.tolerance:g}")
    template = Template(resources.files("robusteval.report").joinpath("template.html").read_text(encoding="utf-8"))
    return template.substitute(title=_e(title), subtitle=subtitle, nav=nav, body=body)


def write_summary_csv(analysis: Analysis, path: Path) -> None:
    """One row per model × metric: value, dense value, drop, tolerance verdict and CI."""
    points = {(p.model, key): p for key, by_method in analysis.curves.items()
              for c in by_method.values() for p in c.points}
    with io.StringIO(newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "method", "ratio", "metric", "value", "dense", "drop", "within_tolerance",
                         "ci_low", "ci_high"])
        for m in analysis.models:
            for key, value in sorted(analysis.values[m.id].items()):
                p = points.get((m.id, key))
                dense = analysis.values[analysis.dense].get(key)
                ci = p.ci if p and p.ci else ("", "")
                writer.writerow([m.id, m.method, m.ratio, key, value, "" if dense is None else dense,
                                 "" if p is None else p.drop, "" if p is None else p.within_tolerance, *ci])
        write_text_atomic(path, f.getvalue())


def chosen_models(analysis: Analysis) -> list[str]:
    """Dense plus, per method, the model at its clean-accuracy prune potential (else its smallest ratio):
    the model a user would pick by test accuracy alone, whose hidden costs the report shows."""
    chosen = [analysis.dense]
    for method in analysis.methods:
        curve = analysis.curves.get("clean/accuracy", {}).get(method)
        ratios = analysis.ratios(method)
        target = curve.prune_potential if curve and curve.prune_potential > 0 else ratios[0]
        chosen += [m.id for m in analysis.models if m.method == method and m.ratio == target][:1]
    return chosen


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.4g}"
    return _e(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, cls: str = "") -> str:
    """An HTML table from already-escaped cell strings (a cell may be ``(html, css class)``)."""
    def cell(c: Any) -> str:
        return f'<td class="{c[1]}">{c[0]}</td>' if isinstance(c, tuple) else f"<td>{c}</td>"
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table class="{cls}"><tr>{head}</tr>{body}</table></div>'


def _figure(fig: Figure, alt: str) -> str:
    data = base64.b64encode(plots.to_png(fig)).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


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


_ATTACK_BUDGET = (("pgd_steps", "PGD {} steps"), ("autoattack_iters", "AutoAttack {} APGD iterations"),
                  ("apgd_targets", "{} APGD-T target classes"), ("min_norm_steps", "minimum-norm attacks {} steps"),
                  ("sample_size", "{} attacked images"))


def attack_strength_note(manifest: Mapping[str, Any]) -> str:
    """A warning when the run's attack settings are weaker than the defaults, derived from the config."""
    from robusteval.evaluators.adversarial import AdversarialSettings

    settings = ((manifest.get("config") or {}).get("evaluate") or {}).get("adversarial") or {}
    defaults = vars(AdversarialSettings())
    weaker = [f"{label.format(settings[key])} (default {defaults[key]})" for key, label in _ATTACK_BUDGET
              if isinstance(settings.get(key), (int, float)) and settings[key] < defaults[key]]
    if not weaker:
        return ""
    return (f'<p class="note warn">Attacks weaker than the defaults: {_e(", ".join(weaker))}. Weaker attacks '
            "overstate adversarial accuracy (each number is an upper bound, higher than the default attacks would "
            "measure) and fewer images widen its error bars: compare the models of this run with each other, not "
            "with published robust accuracies.</p>")


def _recovery(summary: Mapping[str, Any]) -> str:
    """What recovery followed pruning, per method: the report must say it (it changes the picture)."""
    by_method: dict[str, set[str]] = {}
    for m in summary.get("models", []):
        if m.get("method") in (None, "dense", "given"):
            continue
        rec = m.get("recovery") or {}
        steps = []
        if rec.get("finetune_epochs"):
            steps.append(f"fine-tuned {rec['finetune_epochs']:.2g} epoch(s)")
        if rec.get("bn_recalibrated"):
            steps.append("BatchNorm re-calibrated")
        by_method.setdefault(m["method"], set()).add(", ".join(steps) or "no recovery (one-shot pruning only)")
    if not by_method:
        return ""
    items = "".join(f"<li><b>{_e(method)}</b>: {_e('; '.join(sorted(steps)))}</li>" for method, steps in by_method.items())
    return f'<p class="note">Recovery after pruning, before evaluation:</p><ul class="recovery">{items}</ul>'


def _condition_notes(records: Sequence[Mapping[str, Any]], family: str) -> str:
    """How the inputs of each condition of ``family`` were made (generated or read from files, deviations)."""
    notes: dict[str, str] = {}
    for r in records:
        if r.get("family") == family and r.get("note"):
            name = (r.get("meta") or {}).get("corruption") or r["condition"]
            notes.setdefault(str(name), str(r["note"]))
    if not notes:
        return ""
    return ("<h3>How the corrupted inputs were made</h3>"
            + _table(["corruption", "source and difference from the reference"],
                     [[_e(k), _e(v)] for k, v in notes.items()], cls="text"))


def _curve_keys(analysis: Analysis, patterns: Sequence[str]) -> list[str]:
    keys: list[str] = []
    for pattern in patterns:
        pattern = analysis.families.get("adversarial", "") if pattern == "$adversarial" else pattern
        keys += [k for k in sorted(analysis.curves) if fnmatch.fnmatchcase(k, pattern) and k not in keys]
    return keys[:3]


def _curves(analysis: Analysis) -> str:
    parts = []
    for family, patterns in _CURVE_PANELS.items():
        keys = _curve_keys(analysis, patterns)
        if keys:
            parts.append(f"<h3>{_e(FAMILIES.get(family, family))}</h3>"
                         + _figure(plots.metric_curves(analysis, keys), f"{family} metrics vs prune ratio"))
    if not parts:
        return ""
    heads = [k for k in (analysis.families.get(f) for f in ("corruption", "noise", "adversarial")) if k]
    heads += sorted(k for k in analysis.curves if k.startswith("shift/") and k.endswith("/accuracy"))
    rows = [[_e(m), *(f"{100 * excess[k]:.1f}" if k in excess else "–" for k in heads)]
            for m, excess in analysis.excess.items()]
    table = ("<h3>Excess error</h3><p class=\"note\">Drop on the shifted condition minus drop on clean data, in "
              "accuracy points: positive means the condition loses more than the test set shows.</p>"
              + _table(["model", *map(_e, heads)], rows)) if heads and rows else ""
    return ('<p class="note">Lines start at the dense model (0%). Grey band: tolerance δ on the bad side of the '
            "dense value (dashed). Error bars: 95% paired-bootstrap intervals where per-sample results were "
            "recorded.</p>" + "".join(parts) + table)


def _corruptions(analysis: Analysis) -> str:
    dense = analysis.values[analysis.dense]
    parsed = [m for k in dense if (m := CORRUPTION_ACCURACY.match(k))]
    if not parsed:
        return ""
    names = list(dict.fromkeys(m["name"] for m in parsed))
    severities = sorted({m["severity"] for m in parsed}, key=float)
    if not analysis.methods:  # one model, nothing to compare: its accuracies as a table
        rows = [[_e(c), *(_num(dense.get(f"corruption/{c}/{s}/accuracy")) for s in severities)] for c in names]
        return ("<h3>Accuracy per corruption and severity</h3>"
                + _table(["corruption", *(f"severity {_e(s)}" for s in severities)], rows))
    panels = {}
    for method in analysis.methods:
        ids = {"dense": analysis.dense,
               **{pct(m.ratio): m.id for m in sorted(analysis.models, key=lambda m: m.ratio) if m.method == method}}
        panels[method] = {label: {float(s): float(np.mean(vals)) for s in severities
                                  if (vals := [analysis.values[mid][f"corruption/{c}/{s}/accuracy"] for c in names
                                               if f"corruption/{c}/{s}/accuracy" in analysis.values[mid]])}
                          for label, mid in ids.items()}
    return ("<h3>Accuracy drop per corruption (mean over severities)</h3>"
            + _figure(plots.corruption_heatmaps(analysis, names), "corruption heatmap")
            + "<h3>Severity curves (mean over corruptions)</h3>"
            + _figure(plots.line_panels(panels, xlabel="severity", dense="dense"), "severity curves"))


def _eps_panels(analysis: Analysis, models: Sequence[str], key_of: Any) -> dict[str, dict[str, dict[float, float]]]:
    """panel title → model → {ε: accuracy} for keys that ``key_of(key)`` maps to (title, ε)."""
    panels: dict[str, dict[str, dict[float, float]]] = {}
    for model in models:
        for key, value in analysis.values[model].items():
            if (hit := key_of(key)) is not None:
                panels.setdefault(hit[0], {}).setdefault(model, {})[hit[1]] = value
    return panels


def _robustness(analysis: Analysis) -> str:
    models = chosen_models(analysis)
    adv = _eps_panels(analysis, models, lambda k: (f"{'transfer ' if m['transfer'] else ''}{m['attack']}",
                                                   float(m["eps"])) if (m := _ATTACK_KEY.match(k)) else None)
    noise = _eps_panels(analysis, models, lambda k: ("random noise in an ε-ball", float(m["eps"]))
                        if (m := NOISE_ACCURACY.match(k)) else None)
    parts = []
    if adv:
        parts.append("<h3>Adversarial accuracy vs ε</h3>"
                     + _figure(plots.line_panels(adv, xlabel="ε", dense=analysis.dense), "adversarial accuracy"))
    if noise:
        parts.append("<h3>Accuracy vs noise ε</h3>"
                     + _figure(plots.line_panels(noise, xlabel="noise ε", dense=analysis.dense), "noise accuracy"))
    return (_chosen_note(models) + "".join(parts)) if parts else ""


def _chosen_note(models: Sequence[str]) -> str:
    return (f'<p class="note">Models shown: the dense model and, per method, the model at its clean-accuracy '
            f"prune potential ({_e(', '.join(models[1:]))}) — what test accuracy alone would select.</p>")


def _calibration_ood(analysis: Analysis, records: Sequence[Mapping[str, Any]]) -> str:
    models = chosen_models(analysis)
    bins = {r["model"]: r["details"]["calibration"]["reliability"] for r in records
            if r.get("condition") == "clean" and "reliability" in (r.get("details") or {}).get("calibration", {})}
    rocs: dict[str, dict[str, Any]] = {}
    for r in records:
        by_score = (r.get("details") or {}).get("ood", {}).get("roc", {})
        if r.get("condition", "").startswith("ood/") and "msp" in by_score:
            rocs.setdefault(r["condition"][4:], {})[r["model"]] = by_score["msp"]
    parts = []
    if chosen := {m: bins[m] for m in models if m in bins}:
        parts.append("<h3>Reliability diagrams (clean test set)</h3>"
                     + _figure(plots.reliability_diagrams(chosen), "reliability diagrams"))
    rocs = {s: {m: by[m] for m in models if m in by} for s, by in rocs.items()}
    if rocs := {s: by for s, by in rocs.items() if by}:
        parts.append("<h3>OOD detection ROC (max softmax probability)</h3>"
                     + _figure(plots.roc_curves(rocs, dense=analysis.dense), "OOD ROC curves"))
    return (_chosen_note(models) + "".join(parts)) if parts else ""


def _models(summary: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> str:
    rows, warnings = [], []
    for m in summary.get("models", []):
        timing = [_latency_cells(m, key) for key in ("batch_1", "batch_128")]
        rows.append([_e(m["id"]), _e(m.get("method", "")), _num(m.get("target_ratio")), _num(m.get("sparsity")),
                     _num(m.get("params")), _num(m.get("nonzero_params")), _num(m.get("macs")),
                     _num(m.get("macs_effective")), *timing[0], *timing[1], _num(m.get("structured")),
                     _e(", ".join(m.get("collapsed_layers") or [])) or "–"])
        warnings += [(m["id"], "model", w) for w in m.get("warnings") or []]
    warnings += [(r["model"], r["condition"], w) for r in records for w in r.get("warnings") or []]
    header = ["model", "method", "ratio", "sparsity", "params", "nonzero params", "MACs", "effective MACs",
              "latency b=1 (ms)", "speed-up b=1", "latency b=128 (ms)", "speed-up b=128", "structured",
              "collapsed layers"]
    out = _table(header, rows)
    if any(m.get("speedup_basis") for m in summary.get("models", [])):
        out += ('<p class="note">Latency: median (IQR) over paired runs timed alternately with the dense model. '
                "Speed-up is stated as 1.0 for models that run the dense kernels (masked weights: no sparse "
                "runtime ran); the measured ratio is in summary.json (speedup_measured).</p>")
    if warnings:
        out += "<h3>Warnings</h3>" + _table(["model", "where", "warning"],
                                            [[_e(a), _e(b), _e(c)] for a, b, c in warnings], cls="text")
    return out


def _latency_cells(model: Mapping[str, Any], key: str) -> tuple[str, str]:
    """'median (q1–q3)' latency and the stated speed-up of one batch size."""
    latency = (model.get("latency_ms") or {}).get(key)
    iqr = (model.get("latency_iqr_ms") or {}).get(key)
    cell = _num(latency) + (f" ({_num(iqr[0])}–{_num(iqr[1])})" if iqr else "")
    return cell, _num((model.get("speedup") or {}).get(key))


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, Mapping) and data:
        return [kv for k, v in data.items() for kv in _flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    return [(prefix, json.dumps(data) if isinstance(data, (list, Mapping)) else data)]


def _metadata(manifest: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    manifest = dict(manifest) or ({"config": summary["config"]} if summary.get("config") else {})
    if not manifest:
        return '<p class="note">This run has no manifest.json and its summary records no config.</p>'
    command = manifest.pop("command", None)
    if isinstance(command, list):
        command = " ".join(command)
    out = (f"<h3>How to reproduce</h3><pre>{_e(command)}</pre>" if command else
           '<p class="note">The manifest records no command line.</p>')
    blocks = []
    scalars = [[_e(k), _e(v)] for k, v in manifest.items() if not isinstance(v, Mapping)]
    if scalars:
        blocks.append("<div><h3>run</h3>" + _table(["key", "value"], scalars, cls="text kv") + "</div>")
    blocks += [f"<div><h3>{_e(key)}</h3>" + _table(["key", "value"], [[_e(k), _e(v)] for k, v in _flatten(value)],
                                                   cls="text kv") + "</div>"
               for key, value in manifest.items() if isinstance(value, Mapping)]
    out += f'<div class="meta">{"".join(blocks)}</div>'
    return out
