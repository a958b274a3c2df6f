"""The CI gate: budgets on metrics of pruned models vs their dense reference → pass/fail, JUnit, Markdown.

A rules file is YAML with one top-level key::

    rules:
      clean/accuracy: {max_drop: 0.005}          # dense - value <= 0.005 (direction-aware)
      corruption/mean_accuracy: {max_relative_drop: 0.03}
      calibration/ece: {max_increase: 0.02, max: 0.08}

Budgets, per metric (several may be combined; each is one check):

* ``max_drop``: the drop vs the reference, direction-aware (the direction the run's ``summary.json``
  declares for the metric), in the metric's own unit (accuracies are fractions in [0, 1]);
* ``max_relative_drop``: that drop divided by ``|reference|``;
* ``max_increase``: ``value - reference`` (literal; meant for lower-is-better metrics);
* ``min`` / ``max``: absolute bounds on the value.

The size and speed of each model are gated as values (``min``/``max`` only): ``size/params``,
``size/macs``, ``size/params_reduction``, ``size/macs_reduction`` (1 - model / reference) and
``speedup/batch_1``, ``speedup/batch_128`` (the speed-up the models table states), e.g.
``size/params_reduction: {min: 0.3}`` or ``speedup/batch_1: {min: 1.2}``.

A metric missing for a model, or NaN, fails its check: the gate never passes silently.

Across releases (``robusteval compare BASE NEW --gate``, ``robusteval gate NEW --baseline-run BASE``),
:func:`evaluate_comparison_gate` applies the same rules to every compared pair of models, the base
run's model being the reference of the new run's.
"""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robusteval.analysis.candidate import size_phrase
from robusteval.analysis.compare import Comparison
from robusteval.card import MemberCard, candidate_ids, summary_cards
from robusteval.declarations import Declarations
from robusteval.metrics import reference_value
from robusteval.errors import GateFailed, RobustEvalError
from robusteval.escaping import markdown_cell, markdown_code, workflow_data, workflow_property, xml_text
from robusteval.files import read_yaml_file
from robusteval.presets import resolve
from robusteval.registry import unknown_name_message
from robusteval.files import write_atomic
from robusteval.results import incomplete_message

BUDGETS = ("max_drop", "max_relative_drop", "max_increase", "min", "max")
_NEEDS_REFERENCE = {"max_drop", "max_relative_drop", "max_increase"}
_SIZE = {"size/params": "params", "size/macs": "macs", "size/params_reduction": "params_reduction",
         "size/macs_reduction": "macs_reduction"}
_COST_PREFIXES = ("size/", "speedup/")
_DROPS = {"max_drop", "max_relative_drop"}  # budgets that need a better direction


@dataclass(frozen=True)
class Rule:
    """One budget on one metric."""

    metric: str
    budget: str
    limit: float

    @property
    def name(self) -> str:
        return f"{self.metric} {self.budget} {self.limit:g}"


@dataclass(frozen=True)
class Check:
    """One rule applied to one model."""

    model: str
    rule: Rule
    passed: bool
    message: str
    value: float | None = None
    reference: float | None = None


@dataclass(frozen=True)
class GateResult:
    reference: str
    checks: tuple[Check, ...]
    sizes: Mapping[str, str] = field(default_factory=dict)  # model → its size and speed-up in words

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def raise_on_failure(self) -> None:
        """Raise :class:`GateFailed` (the CLI's exit 1) when a check failed."""
        if not self.passed:
            raise GateFailed(f"{len(self.failures)} of {len(self.checks)} checks exceeded their budget")


def load_rules(path: str | Path) -> list[Rule]:
    """Read and validate a rules YAML file (see the module docstring), or a preset by name (``gate``)."""
    path = resolve(path, "gate file")
    data = read_yaml_file(path, "gate file")
    return parse_rules(data, source=str(path))


def parse_rules(data: Any, *, source: str = "gate rules") -> list[Rule]:
    """Validate a parsed ``{"rules": {metric: {budget: number}}}`` mapping into rules."""
    if not isinstance(data, Mapping) or set(data) != {"rules"}:
        got = sorted(map(str, data)) if isinstance(data, Mapping) else type(data).__name__
        raise RobustEvalError(f"{source}: expected a mapping with the single top-level key 'rules', got {got}")
    rules_map = data["rules"]
    if not isinstance(rules_map, Mapping) or not rules_map:
        raise RobustEvalError(f"{source}: expected 'rules' to be a non-empty mapping of metric key → budget, "
                              f"got {rules_map!r}")
    rules = []
    for metric, budget in rules_map.items():
        where = f"{source}: rule {metric!r}"
        if not isinstance(metric, str) or not metric:
            raise RobustEvalError(f"{where}: expected a metric key such as 'clean/accuracy'")
        if not isinstance(budget, Mapping) or not budget:
            raise RobustEvalError(f"{where}: expected a mapping like {{max_drop: 0.005}}, got {budget!r}")
        for kind, limit in budget.items():
            if kind not in BUDGETS:
                raise RobustEvalError(f"{where}: {unknown_name_message('budget', str(kind), BUDGETS)}")
            if metric.startswith(_COST_PREFIXES) and kind not in ("min", "max"):
                raise RobustEvalError(f"{where}: size and speed-up are bounded with min or max, not {kind}")
            if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not math.isfinite(limit):
                raise RobustEvalError(f"{where}: expected a finite number for {kind}, got {limit!r}")
            rules.append(Rule(metric, kind, float(limit)))
    return rules


def _check(rule: Rule, model: str, metrics: Mapping[str, Any], reference: Mapping[str, Any],
           reference_id: str, declarations: Declarations) -> Check:
    value = metrics.get(rule.metric)
    if value is None:
        return Check(model, rule, False, f"{rule.metric} is missing for model {model!r}")
    value = float(value)
    if math.isnan(value):
        return Check(model, rule, False, f"{rule.metric} is NaN for model {model!r}")
    ref = reference_value(rule.metric, reference)
    if rule.budget in _NEEDS_REFERENCE:
        if ref is None or math.isnan(float(ref)):
            state = "missing" if ref is None else "NaN"
            return Check(model, rule, False, f"{rule.metric} is {state} for reference model {reference_id!r}", value)
        ref = float(ref)
    if rule.budget == "min":
        observed, ok, what = value, value >= rule.limit, "value"
    elif rule.budget == "max":
        observed, ok, what = value, value <= rule.limit, "value"
    elif rule.budget == "max_increase":
        observed = value - ref
        ok, what = observed <= rule.limit, "increase"
    else:
        observed = declarations.drop(rule.metric, ref, value)
        what = "drop"
        if rule.budget == "max_relative_drop":
            observed = observed / abs(ref) if ref else (math.inf if observed > 0 else 0.0)
            what = "relative drop"
        ok = observed <= rule.limit
    bound = ">=" if rule.budget == "min" else "<="
    verdict = "within" if ok else "exceeds"
    message = f"{model}: {rule.metric} {what} {observed:.4g} {verdict} budget {rule.budget} ({bound} {rule.limit:g})"
    if what != "value":
        message += f"; value {value:.4g}, reference {ref:.4g}"
    return Check(model, rule, bool(ok), message, value, ref)


def evaluate_gate(summary: Mapping[str, Any], rules: Sequence[Rule], *, reference: str | None = None,
                  models: Sequence[str] | None = None) -> GateResult:
    """Check every rule on every pruned model (or on ``models``) of a run's summary.

    The reference defaults to the run's baseline, the one the report measures drops against
    (``dense+ft`` when recovery fine-tunes, see ``analysis.baseline``). Only candidates are checked, by role
    (:func:`robusteval.card.candidate_ids`): not the untouched dense model, the control, the from-scratch
    baselines, nor a model chosen as the ``reference``.
    """
    if problem := incomplete_message(summary):
        raise RobustEvalError(f"cannot gate: {problem}")
    cards = {c.id: c for c in summary_cards(summary)}
    entries = {m["id"]: {**(m.get("metrics") or {}), **_costs(cards[m["id"]])} for m in summary.get("models", [])}
    reference = reference or summary.get("baseline") or summary.get("dense")
    if reference not in entries:
        raise RobustEvalError(unknown_name_message("reference model", str(reference), entries))
    for model in models or ():
        if model not in entries:
            raise RobustEvalError(unknown_name_message("model", model, entries))
    chosen = list(models) if models else [m for m in candidate_ids(cards.values()) if m != reference] or [reference]
    declarations = Declarations.of_summary(summary)
    for rule in rules:
        spec = declarations.find(rule.metric)  # None: the run lacks the metric, so its checks fail as missing
        if rule.budget in _DROPS and spec is not None and spec.higher_is_better is None:
            raise RobustEvalError(f"gate rule {rule.metric}: {rule.budget} needs a metric with a better direction, and "
                                  f"{rule.metric.rsplit('/', 1)[-1]} has none (neither higher nor lower is better); "
                                  "bound it with min, max or max_increase")
    relative = [r.name for r in rules if r.budget in _NEEDS_REFERENCE]
    if chosen == [reference] and relative:
        raise RobustEvalError(f"the run has only the model {reference!r}, so budget {relative[0]!r} has no reference "
                              "to compare with; gate a single model with min/max budgets")
    checks = tuple(_check(r, m, entries[m], entries[reference], reference, declarations)
                   for m in chosen for r in rules)
    sizes = {m: text for m in chosen if m != reference and (text := size_phrase(cards[m].costs))}
    return GateResult(reference, checks, sizes)


def _costs(card: MemberCard) -> dict[str, Any]:
    """A member's size and stated speed-ups under the gate's ``size/`` and ``speedup/`` names."""
    return {**{name: getattr(card.costs, key) for name, key in _SIZE.items()},
            **{f"speedup/{key}": value for key, value in (card.costs.speedup or {}).items()}}


def evaluate_comparison_gate(comparison: Comparison, rules: Sequence[Rule]) -> GateResult:
    """Every rule on every compared pair, the base run's model as the reference of the new run's.

    A rule on a metric that only one run has (among the compared models), or neither, is bad input:
    the budget could not be checked. A pair whose two models both lack the metric (e.g. agreement of
    the dense model with itself) is not checked; one that lacks it on one side fails, as in :func:`evaluate_gate`.
    """
    base, new = comparison.base, comparison.new
    for rule in rules:
        has = [comparison.has_metric(side, rule.metric) for side in (base, new)]
        if not all(has):
            where = (f"only the {'base' if has[0] else 'new'} run {base.path if has[0] else new.path} has it"
                     if any(has) else f"neither run has it ({base.path}, {new.path})")
            raise RobustEvalError(f"gate rule on {rule.metric!r}: cannot compare the runs on this metric, {where}")
    checks = []
    for b, n in comparison.pairs:
        before, after = base.metrics(b), new.metrics(n)
        label = n if b == n else f"{n} (vs {b})"
        checks += [_check(r, label, after, before, b, new.declarations)
                   for r in rules if r.metric in before or r.metric in after]
    return GateResult(f"each pair's model in the base run {base.path}", tuple(checks))


def publish(result: GateResult, junit: str | Path | None, *, fail: bool = True) -> None:
    """Write the JUnit file, print the Markdown summary (and, on GitHub Actions, the annotations);
    raise :class:`GateFailed` (exit 1) when a check failed, unless ``fail`` is False."""
    if junit:
        write_junit(result, junit)
    print(markdown_summary(result))
    if os.environ.get("GITHUB_ACTIONS") == "true":
        print("\n".join(github_annotations(result)))
    if fail:
        result.raise_on_failure()


def write_junit(result: GateResult, path: str | Path) -> Path:
    """JUnit XML: one testsuite per model, one testcase per rule, a <failure> for each failed check."""
    root = ET.Element("testsuites", name="robusteval gate", tests=str(len(result.checks)),
                      failures=str(len(result.failures)))
    for model in dict.fromkeys(c.model for c in result.checks):
        checks = [c for c in result.checks if c.model == model]
        suite = ET.SubElement(root, "testsuite", name=xml_text(f"robusteval gate: {model}"), tests=str(len(checks)),
                              failures=str(sum(not c.passed for c in checks)), errors="0", skipped="0")
        for c in checks:
            case = ET.SubElement(suite, "testcase", classname=xml_text(f"robusteval.gate.{model}"),
                                 name=xml_text(c.rule.name))
            message = xml_text(c.message)
            if not c.passed:
                ET.SubElement(case, "failure", message=message, type="GateFailed").text = message
            else:
                ET.SubElement(case, "system-out").text = message
    path = Path(path)
    try:
        write_atomic(path, lambda f: ET.ElementTree(root).write(f, encoding="utf-8", xml_declaration=True))
    except OSError as exc:
        raise RobustEvalError(f"cannot write the JUnit file {path}: {exc.strerror or exc}") from exc
    return path


def markdown_summary(result: GateResult) -> str:
    """A Markdown table for a pull-request comment."""
    n, bad = len(result.checks), len(result.failures)
    title = "passed" if result.passed else f"FAILED ({bad} of {n} checks)"
    lines = [f"### {'✅' if result.passed else '❌'} robusteval gate {title}", "",
             f"Reference model: {markdown_code(result.reference)}", "",
             *(f"Size of {markdown_code(m)}: {markdown_cell(text)}\n" for m, text in result.sizes.items()),
             "| model | metric | budget | reference | value | result |", "|---|---|---|---|---|---|"]
    for c in result.checks:
        cells = [markdown_code(c.model), markdown_code(c.rule.metric), f"{c.rule.budget} {c.rule.limit:g}",
                 _fmt(c.reference), _fmt(c.value),
                 "pass" if c.passed else f"**FAIL**: {c.message.removeprefix(f'{c.model}: ')}"]
        lines.append("| " + " | ".join(markdown_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def github_annotations(result: GateResult) -> list[str]:
    """``::error`` workflow commands for GitHub Actions, one per failed check."""
    return [f"::error title={workflow_property(f'robusteval gate: {c.rule.name}')}::{workflow_data(c.message)}"
            for c in result.failures]


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"
