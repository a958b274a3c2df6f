"""The self-contained HTML report (one template, figures as base64 PNG) plus analysis.json and summary.csv.

Reads the run directory only and never loads a model: the page renders an :class:`Analysis`
(which holds the summary's numbers and the records' evidence) and the manifest. Sections whose
metrics are absent are left out.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import matplotlib

from robusteval.analysis import DEFAULT_TOLERANCE, Analysis, analyse
from robusteval.analysis.compare import flatten
from robusteval.card import Costs
from robusteval.files import write_text_atomic
from robusteval.report.forgetting import forgetting_section
from robusteval.report.gallery import strips_html
from robusteval.report.markup import esc as _e
from robusteval.report.markup import num as _num
from robusteval.report.markup import table as _table
from robusteval.report.sections import (
    _calibration_ood,
    _condition_notes,
    _corruptions,
    _curves,
    _recovery,
    _robustness,
    _verdict,
    attack_strength_note,
    precision_note,
)
from robusteval.results import RunDir
from robusteval.samples import read_samples

SECTIONS = {
    "verdict": "Verdict", "curves": "Metrics vs prune ratio", "corruption": "Corruptions",
    "forgetting": "What pruning forgets", "robustness": "Adversarial and noise robustness",
    "calibration": "Calibration and OOD detection",
    "models": "Models", "metadata": "Run metadata and reproduction",
}


def write_report(run_dir: Path, *, tolerance: float = DEFAULT_TOLERANCE,
                 tolerances: Mapping[str, float] | None = None) -> Path:
    """Write report.html, analysis.json and summary.csv into ``run_dir``; return the report's path."""
    return build_report(run_dir, tolerance=tolerance, tolerances=tolerances)[0]


def build_report(run_dir: Path, *, tolerance: float = DEFAULT_TOLERANCE,
                 tolerances: Mapping[str, float] | None = None) -> tuple[Path, Analysis]:
    """:func:`write_report`, also returning the analysis it rendered (for the terminal verdict)."""
    run = RunDir.existing(run_dir)
    with run.locked():
        analysis = analyse(run.read_summary(), run.records(), tolerance=tolerance, tolerances=tolerances,
                           samples=read_samples(run.path))
        write_text_atomic(run.analysis_path, json.dumps(analysis.to_json(), indent=1) + "\n")
        write_summary_csv(analysis, run.summary_csv_path)
        out = run.report_path
        write_text_atomic(out, render_report(analysis, run.read_manifest() or {},
                                             title=f"robusteval report: {run.path.name}"))
    return out, analysis


def render_report(analysis: Analysis, manifest: Mapping[str, Any], *, title: str = "robusteval report") -> str:
    """The report as one HTML string."""
    strength = attack_strength_note(manifest) if "adversarial" in analysis.families else ""
    with matplotlib.rc_context({"text.parse_math": False}):  # '$' in a model id is text, not mathtext
        robustness = _robustness(analysis)
        parts = {
            "verdict": precision_note(manifest) + _recovery(analysis.models) + _verdict(analysis)
            + strength,
            "curves": _curves(analysis),
            "corruption": _corruptions(analysis) + strips_html(analysis.forgetting)
            + _condition_notes(analysis.evidence.notes.get("corruption", {})),
            "forgetting": forgetting_section(analysis),
            "robustness": strength + robustness if robustness else "",
            "calibration": _calibration_ood(analysis),
            "models": _models(analysis), "metadata": _metadata(manifest, analysis.config),
        }
    present = {k: v for k, v in parts.items() if v}
    warning = analysis.incomplete
    sections = [f'<section id="{k}"><h2>{SECTIONS[k]}</h2>\n{v}\n</section>' for k, v in present.items()]
    body = "\n".join(([f'<p class="incomplete">{_e(warning)}</p>'] if warning else []) + sections)
    nav = "".join(f'<a href="#{k}">{SECTIONS[k]}</a>' for k in present)
    n_pruned = sum(not m.is_reference for m in analysis.models)
    subtitle = (f"dense model {_e(analysis.dense or analysis.baseline)} vs {n_pruned} pruned models of "
                f"{len(analysis.methods)} methods; drops against {_e(analysis.baseline)}; "
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
                dense = analysis.values[analysis.baseline].get(key)
                ci = p.ci if p and p.ci else ("", "")
                writer.writerow([m.id, m.method, m.ratio, key, value, "" if dense is None else dense,
                                 "" if p is None else p.drop, "" if p is None else p.within_tolerance, *ci])
        write_text_atomic(path, f.getvalue())


def _models(analysis: Analysis) -> str:
    rows, warnings = [], []
    for m in analysis.models:
        costs = m.costs
        timing = [_latency_cells(costs, key) for key in ("batch_1", "batch_128")]
        rows.append([_e(m.id), _e(m.method), _num(m.ratio), _num(costs.sparsity), _num(costs.params),
                     _num(costs.nonzero_params), _num(costs.macs), _num(costs.macs_effective), *timing[0], *timing[1],
                     _num(m.structured), _e(", ".join(costs.collapsed_layers or [])) or "–"])
        warnings += [(m.id, "model", w) for w in m.warnings]
    warnings += analysis.evidence.warnings
    devices = sorted({m.costs.latency_device for m in analysis.models if m.costs.latency_device})
    unit = _e(f"ms, {', '.join(devices)}" if devices else "ms")
    header = ["model", "method", "ratio", "sparsity", "params", "nonzero params", "MACs", "effective MACs",
              f"latency b=1 ({unit})", "speed-up b=1", f"latency b=128 ({unit})", "speed-up b=128", "structured",
              "collapsed layers"]
    out = _table(header, rows)
    if len(devices) > 1:
        out += ('<p class="note">Latency was measured on several devices: '
                + _e("; ".join(f"{m.id}: {m.costs.latency_device}" for m in analysis.models if m.costs.latency_device))
                + ".</p>")
    if any(m.costs.speedup_basis for m in analysis.models):
        out += ('<p class="note">Latency: median (IQR) over paired runs timed alternately with the dense model'
                + (" (on CUDA: between CUDA events, synchronized, after warm-up passes)"
                   if any(d.startswith("cuda") for d in devices) else "")
                + ". Speed-up is stated as 1.0 for models that run the dense kernels (masked weights: no sparse "
                "runtime ran); the measured ratio is in summary.json (speedup_measured).</p>")
    if warnings:
        out += "<h3>Warnings</h3>" + _table(["model", "where", "warning"],
                                            [[_e(a), _e(b), _e(c)] for a, b, c in warnings], cls="text")
    return out


def _latency_cells(costs: Costs, key: str) -> tuple[str, str]:
    """'median (q1–q3)' latency and the stated speed-up of one batch size."""
    latency = (costs.latency_ms or {}).get(key)
    iqr = (costs.latency_iqr_ms or {}).get(key)
    cell = _num(latency) + (f" ({_num(iqr[0])}–{_num(iqr[1])})" if iqr else "")
    return cell, _num((costs.speedup or {}).get(key))


def _flatten(data: Any) -> list[tuple[str, Any]]:
    return [(k, json.dumps(v) if isinstance(v, (list, Mapping)) else v) for k, v in flatten(data).items()]


def _metadata(manifest: Mapping[str, Any], config: Mapping[str, Any] | None) -> str:
    manifest = dict(manifest) or ({"config": config} if config else {})
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
