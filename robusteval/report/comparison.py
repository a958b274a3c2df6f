"""The comparison of two runs as a page (``comparison.html``, the report's template and style), JSON
(``comparison.json``) and Markdown (``comparison.md``, for a pull-request comment).

``compare(base, new)`` is the Python API of ``robusteval compare``; the numbers come from
:func:`robusteval.analysis.compare.compare_runs`.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import matplotlib

from robusteval.analysis import Analysis, analyse
from robusteval.analysis.compare import Comparison, Delta, RunSide, compare_runs
from robusteval.analysis.drops import headline_metrics
from robusteval.errors import RobustEvalError
from robusteval.escaping import markdown_cell, markdown_code
from robusteval.files import write_text_atomic
from robusteval.gate import GateResult, markdown_summary
from robusteval.metrics import FAMILIES
from robusteval.report import plots
from robusteval.report.markup import esc as _e
from robusteval.report.markup import figure as _figure
from robusteval.report.markup import num as _num
from robusteval.report.markup import table as _table
from robusteval.report.sections import (
    _eps_panels,
    _panels,
    attack_curve_point,
    chosen_models,
    noise_curve_point,
    severity_panels,
)

SECTIONS = {"summary": "Summary", "changes": "Changes beyond noise", "curves": "Curves of both runs",
            "setup": "What else differs", "metrics": "Every metric"}
_CLASS = {"worse": "bad", "better": "ok", "within noise": ""}
_MARKDOWN_ROWS = 30
_SHOWN_CHANGES = 50
_ROC_PAIRS = 10  # lines of one colour each (tab10) on an OOD set's ROC panel


def compare(base: str | Path, new: str | Path, *, pairs: Sequence[tuple[str, str]] | None = None,
            out: str | Path | None = None) -> Comparison:
    """Compare run directory ``new`` with ``base`` (models matched by id, or by ``pairs`` of
    (base id, new id)); with ``out``, also write comparison.html, .json and .md there."""
    comparison = compare_runs(base, new, pairs=pairs)
    if out is not None:
        write_comparison(comparison, Path(out))
    return comparison


def write_comparison(comparison: Comparison, out: Path, *, gate: GateResult | None = None) -> Path:
    """Write comparison.html, comparison.json and comparison.md (with the gate's result when given) into ``out``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RobustEvalError(f"cannot create the comparison folder {out}: {exc.strerror or exc}") from exc
    data = comparison.to_json()
    if gate is not None:
        data["gate"] = {"passed": gate.passed, "reference": gate.reference,
                        "failures": [c.message for c in gate.failures]}
    write_text_atomic(out / "comparison.json", json.dumps(data, indent=1) + "\n")
    markdown = markdown_comparison(comparison) + ("\n" + markdown_summary(gate) if gate is not None else "")
    write_text_atomic(out / "comparison.md", markdown)
    write_text_atomic(out / "comparison.html", render_comparison(comparison))
    return out / "comparison.html"


def render_comparison(comparison: Comparison) -> str:
    """The comparison page as one self-contained HTML string."""
    with matplotlib.rc_context({"text.parse_math": False}):  # '$' in a model id is text, not mathtext
        parts = {"summary": _summary(comparison), "changes": _changes(comparison), "curves": _curves(comparison),
                 "setup": _setup(comparison), "metrics": _every_metric(comparison)}
    present = {k: v for k, v in parts.items() if v}
    body = "\n".join([f'<p class="incomplete">{_e(w)}</p>' for w in comparison.warnings]
                     + [f'<section id="{k}"><h2>{SECTIONS[k]}</h2>\n{v}\n</section>' for k, v in present.items()])
    nav = "".join(f'<a href="#{k}">{SECTIONS[k]}</a>' for k in present)
    base, new = comparison.base.path, comparison.new.path
    subtitle = (f"new run {_e(new)} against base run {_e(base)}: {len(comparison.pairs)} model pair(s), "
                f"{'paired' if comparison.paired else 'unpaired'} intervals")
    template = Template(resources.files("robusteval.report").joinpath("template.html").read_text(encoding="utf-8"))
    return template.substitute(title=_e(f"robusteval comparison: {base.name} → {new.name}"), subtitle=subtitle,
                               nav=nav, body=body)


def markdown_comparison(comparison: Comparison) -> str:
    """A Markdown summary for a pull-request comment: headline and worsened metrics, what else differs."""
    c = comparison
    worse = [d for d in c.deltas if d.verdict == "worse"]
    better = sum(d.verdict == "better" for d in c.deltas)
    lines = [f"### robusteval compare: {markdown_code(c.base.path.name)} → {markdown_code(c.new.path.name)}", "",
             (f"{len(worse)} metric(s) worse and {better} better beyond noise (95% "
              f"{'paired' if c.paired else 'unpaired'} bootstrap intervals), {len(c.pairs)} model pair(s).")]
    lines += [f"- ⚠️ {markdown_cell(w)}" for w in c.warnings]
    rows = list(dict.fromkeys(_headlines(c) + sorted(worse, key=lambda d: -d.drop)))
    lines += ["", "| base model | new model | metric | base | new | change | 95% CI | verdict |",
              "|---|---|---|---|---|---|---|---|"]
    for d in rows[:_MARKDOWN_ROWS]:
        cells = [markdown_code(d.base_model), markdown_code(d.new_model), markdown_code(d.metric), _fmt(d.base),
                 _fmt(d.new), _signed(d.change), _ci(d.ci), d.verdict or "–"]
        lines.append("| " + " | ".join(markdown_cell(cell) for cell in cells) + " |")
    if len(rows) > _MARKDOWN_ROWS:
        lines.append(f"\n… and {len(rows) - _MARKDOWN_ROWS} more rows in comparison.json.")
    differs = [(f"config {k}", a, b) for k, a, b in c.config_changes] + [r for r in c.setup if r[1] != r[2]]
    if differs:
        lines += ["", "What else differs (a change it causes is not a regression of the model):"]
        lines += [f"- {markdown_code(what)}: {markdown_cell(_value(a))} → {markdown_cell(_value(b))}"
                  for what, a, b in differs[:_MARKDOWN_ROWS]]
    return "\n".join(lines) + "\n"


def _headline_keys(comparison: Comparison) -> dict[str, str]:
    """family → its headline metric (clean accuracy, mean corruption accuracy, ...) among the compared metrics."""
    keys = dict.fromkeys(d.metric for d in comparison.deltas)
    return {family: key for family, key in headline_metrics(keys).items() if key in keys}


def _headlines(comparison: Comparison) -> list[Delta]:
    """Each pair's delta of every family's headline metric."""
    keys = list(_headline_keys(comparison).values())
    by_key = {(d.base_model, d.new_model, d.metric): d for d in comparison.deltas}
    return [by_key[(b, n, k)] for b, n in comparison.pairs for k in keys if (b, n, k) in by_key]


def _summary(comparison: Comparison) -> str:
    c = comparison
    counts = {v: sum(d.verdict == v for d in c.deltas) for v in _CLASS}
    pairing = ("Intervals are <b>paired</b>: both runs evaluated the same samples (same data digest, seed and "
               "subset), so each is the bootstrap of the per-sample differences, as within a run."
               if c.paired else "Intervals are <b>unpaired</b>: each run's samples are resampled on their own.")
    out = (f'<p class="note">Base run <b>{_e(c.base.path)}</b>, new run <b>{_e(c.new.path)}</b>. Change = new − '
           f"base; 95% percentile-bootstrap intervals for metrics with per-sample results (accuracies). {pairing} "
           f"Beyond noise: {counts['worse']} worse, {counts['better']} better; {counts['within noise']} within "
           "noise. Red: worse beyond noise (the interval excludes 0), green: better; uncoloured: within noise or "
           "without an interval.</p>")
    keys = list(_headline_keys(c).items())
    by_key = {(d.base_model, d.new_model, d.metric): d for d in c.deltas}
    rows = [[_e(_pair(b, n)), *(_cell(by_key.get((b, n, k))) for _, k in keys)] for b, n in c.pairs]
    header = ["model", *(f"{_e(f)}<small>{_e(k)}</small>" for f, k in keys)]
    return out + (_table(header, rows) if keys else "")


def _cell(d: Delta | None) -> Any:
    if d is None:
        return ("–", "none")
    text = f"{_num(d.new)}<small>{_e(_signed(d.change))} {_e(_ci(d.ci))}</small>"
    return (text, _CLASS[d.verdict]) if _CLASS.get(d.verdict) else text


def _delta_rows(deltas: Sequence[Delta], *, models: bool) -> list[list[Any]]:
    return [[*([_e(d.base_model), _e(d.new_model)] if models else []), _e(d.metric), _num(d.base), _num(d.new),
             _e(_signed(d.change)), _e(_ci(d.ci)), _e({True: "paired", False: "unpaired"}.get(d.paired, "–")),
             (_e(d.verdict), _CLASS[d.verdict]) if _CLASS.get(d.verdict) else _e(d.verdict or "–")] for d in deltas]


_DELTA_HEADER = ["metric", "base", "new", "change", "95% CI of change", "intervals", "verdict"]


def _changes(comparison: Comparison) -> str:
    beyond = sorted((d for d in comparison.deltas if d.verdict in ("worse", "better")),
                    key=lambda d: (d.verdict != "worse", -abs(d.drop)))
    if not beyond:
        return '<p class="note">No metric with an interval changed beyond noise.</p>'
    header = ["base model", "new model", *_DELTA_HEADER]
    out = _table(header, _delta_rows(beyond[:_SHOWN_CHANGES], models=True))
    if len(beyond) > _SHOWN_CHANGES:
        out += (f"<details><summary>{len(beyond) - _SHOWN_CHANGES} more</summary>"
                + _table(header, _delta_rows(beyond[_SHOWN_CHANGES:], models=True)) + "</details>")
    return out


def _every_metric(comparison: Comparison) -> str:
    parts = []
    for b, n in comparison.pairs:
        deltas = [d for d in comparison.deltas if (d.base_model, d.new_model) == (b, n)]
        parts.append(f"<details><summary>{_e(_pair(b, n))}: {len(deltas)} metrics</summary>"
                     + _table(_DELTA_HEADER, _delta_rows(deltas, models=False)) + "</details>")
    return "".join(parts)


def _curves(comparison: Comparison) -> str:
    runs = {"base": _analysis(comparison.base), "new": _analysis(comparison.new)}
    new = runs["new"]
    chosen = [(b, n) for n in (chosen_models(new) if new is not None else []) for b, m in comparison.pairs if m == n]
    parts = _ratio_curves(runs, chosen) if all(a is not None and a.methods for a in runs.values()) else []
    parts += _evidence_curves(comparison, chosen)
    if not parts:
        return ""
    return ('<p class="note">The report\'s curves with both runs on the same axes: dashed (squares, bar outlines) the '
            "base run, solid (circles, filled bars) the new run. Metric curves start at each run's reference model "
            "(0%); the ε curves show, per method, the model at the new run's clean-accuracy prune potential and its "
            f"pair in the base run; the reliability diagrams show every compared pair, the OOD ROC curves too when "
            f"there are at most {_ROC_PAIRS} (else the pairs of the ε curves).</p>"
            + "".join(parts))


def _ratio_curves(runs: Mapping[str, Analysis], chosen: Sequence[tuple[str, str]]) -> list[str]:
    """Metric vs prune ratio, severity curves and the ε curves of both runs (of the ``chosen`` pairs)."""
    families: dict[str, list[str]] = {}
    for analysis in runs.values():
        for family, keys in _panels(analysis).items():
            families[family] = list(dict.fromkeys(families.get(family, []) + keys))[:3]
    parts = [f"<h3>{_e(FAMILIES.get(family, family))} vs prune ratio</h3>"
             + _figure(plots.overlay_lines({k: {run: _ratio_lines(a, k) for run, a in runs.items()} for k in keys},
                                           xlabel="prune ratio (%)"), f"{family}: both runs")
             for family, keys in families.items()]
    severity = {run: severity_panels(a) for run, a in runs.items()}
    if any(severity.values()):
        panels = {m: {run: p[m] for run, p in severity.items() if m in p} for m in runs["new"].methods}
        parts.append("<h3>Severity curves (mean over corruptions)</h3>"
                     + _figure(plots.overlay_lines(panels, xlabel="severity", ylabel="accuracy"),
                               "severity curves: both runs"))
    for title, key_of, xlabel in (("Adversarial accuracy vs ε", attack_curve_point, "ε"),
                                  ("Accuracy vs noise ε", noise_curve_point, "noise ε")):
        panels = _eps_overlay(runs, chosen, key_of)
        if panels:
            parts.append(f"<h3>{title}</h3>" + _figure(plots.overlay_lines(panels, xlabel=xlabel, ylabel="accuracy"),
                                                       f"{title}: both runs"))
    return parts


def _evidence_curves(comparison: Comparison, chosen: Sequence[tuple[str, str]]) -> list[str]:
    """Per compared pair the reliability diagrams of both runs, per OOD set their ROC curves (max softmax
    probability; of the ``chosen`` pairs when there are more than :data:`_ROC_PAIRS`), from the records'
    details; a pair that one run has no details for gets a note instead."""
    base, new, pairs = comparison.base.evidence, comparison.new.evidence, comparison.pairs
    roc_pairs = pairs if len(pairs) <= _ROC_PAIRS else (chosen or pairs[:_ROC_PAIRS])
    parts: list[str] = []
    lacking: dict[str, list[tuple[str, str, str]]] = {}
    both, lacking["reliability"] = _both_runs(pairs, base.reliability, new.reliability)
    if both:
        parts.append("<h3>Reliability diagrams (clean test set)</h3>"
                     + _figure(plots.reliability_diagrams(both["new"], base=both["base"]),
                               "reliability diagrams: both runs"))
    rocs: dict[str, dict[str, dict[str, Any]]] = {"base": {}, "new": {}}
    for ood_set in dict.fromkeys([*new.roc, *base.roc]):
        both, lacking[f"ROC on {ood_set}"] = _both_runs(roc_pairs, base.roc.get(ood_set, {}),
                                                        new.roc.get(ood_set, {}))
        for run, curves in both.items():
            rocs[run][ood_set] = curves
    if rocs["new"]:
        parts.append("<h3>OOD detection ROC (max softmax probability)</h3>"
                     + _figure(plots.roc_curves(rocs["new"], base=rocs["base"]), "OOD ROC curves: both runs"))
    notes = [f"{what}: {', '.join(f'{_pair(b, n)} (none in {side})' for b, n, side in missing)}"
             for what, missing in lacking.items() if missing]
    if notes:
        parts.append(f'<p class="note">No figure where one run recorded no details for a pair (e.g. calibration '
                     f"off in that run): {_e('; '.join(notes))}.</p>")
    return parts


def _both_runs(pairs: Sequence[tuple[str, str]], base: Mapping[str, Any],
               new: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str, str]]]:
    """({"base": pair label → base[its base model], "new": … → new[its new model]} for the pairs both runs have,
    [(base id, new id, which run lacks it)] for the others); nothing lacks when neither run has any."""
    if not (base or new):
        return {}, []
    have = [(b, n) for b, n in pairs if b in base and n in new]
    both = {"base": {_pair(b, n): base[b] for b, n in have}, "new": {_pair(b, n): new[n] for b, n in have}}
    missing = [(b, n, "the base run" if n in new else "the new run" if b in base else "either run")
               for b, n in pairs if (b, n) not in have]
    return (both if have else {}), missing


def _ratio_lines(analysis: Analysis, key: str) -> dict[str, dict[float, float]]:
    """method → {prune ratio in %: value}, starting at the reference model (0%)."""
    return {method: {0.0: c.dense, **{100 * p.ratio: p.value for p in c.points}}
            for method, c in analysis.curves.get(key, {}).items()}


def _eps_overlay(runs: Mapping[str, Analysis], chosen: Sequence[tuple[str, str]],
                 key_of: Any) -> dict[str, dict[str, dict[str, dict[float, float]]]]:
    """panel title → run → model (the new run's id) → {ε: accuracy} for the chosen pairs."""
    sides = {"base": _eps_panels(runs["base"], [b for b, _ in chosen], key_of),
             "new": _eps_panels(runs["new"], [n for _, n in chosen], key_of)}
    label = dict(chosen)
    return {title: {"base": {label[b]: v for b, v in sides["base"].get(title, {}).items()},
                    "new": dict(sides["new"][title])}
            for title in sides["new"] if title in sides["base"]}


def _analysis(side: RunSide) -> Analysis | None:
    try:
        return analyse(side.summary)
    except RobustEvalError:  # a summary without its baseline model has no curves to draw
        return None


def _setup(comparison: Comparison) -> str:
    c = comparison
    changes = _table(["config key", "base", "new"], [[_e(k), _e(_value(a)), _e(_value(b))]
                                                     for k, a, b in c.config_changes], cls="text kv")
    out = ('<p class="note">A change caused by the setup is not a regression of the model: these differ between '
           "the runs (highlighted), besides the models.</p><h3>Config changes</h3>"
           + (changes if c.config_changes else '<p class="note">None: both runs used the same config.</p>'))
    rows = [[_e(w), *(((_e(_value(v)), "warn") if a != b else _e(_value(v))) for v in (a, b))] for w, a, b in c.setup]
    models = [[_e(_pair(b, n)), _e(_value(x)), _e(_value(y)), "–" if not (x and y) else "same file" if x == y else "changed"]
              for b, n, x, y in c.model_digests() if x or y]  # model files (built members have none)
    out += "<h3>Data, seed, device, precision, versions</h3>" + _table(["", "base", "new"], rows, cls="text kv")
    if models:
        out += "<h3>Compared model files</h3>" + _table(["model", "base sha256", "new sha256", ""], models, cls="text")
    return out


def _pair(base: str, new: str) -> str:
    return new if base == new else f"{base} → {new}"


def _value(value: Any) -> str:
    return "(absent)" if value is None else json.dumps(value) if isinstance(value, (list, Mapping)) else str(value)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _signed(value: float) -> str:
    return f"{value:+.4g}"


def _ci(ci: tuple[float, float] | None) -> str:
    return "–" if ci is None else f"[{ci[0]:+.4g}, {ci[1]:+.4g}]"
