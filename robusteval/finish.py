"""What follows a finished run, for the CLI and the Python API alike: the results line, report.html with
the verdict table printed, then the gate (JUnit file, Markdown summary). Reads the run directory only:
importing this module imports neither torch nor the report's and gate's dependencies."""
from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from robusteval.escaping import visible

if TYPE_CHECKING:
    from robusteval.gate import GateResult, Rule


@dataclass(frozen=True)
class Finish:
    """The tail of an audit: ``report`` (write report.html), ``rules`` (gate the run; None: no gate) and
    ``junit`` (where the gate's JUnit XML goes)."""

    report: bool = False
    rules: tuple[Rule, ...] | None = None
    junit: str | Path | None = None

    @classmethod
    def of(cls, report: bool, gate: str | Path | Sequence[Rule] | None, junit: str | Path | None) -> Finish:
        """``gate``: a rules YAML file, a preset name (``gate``) or rules; a file is read now, so that a bad
        one fails before any work."""
        from robusteval.gate import load_rules

        rules = load_rules(gate) if isinstance(gate, (str, Path)) else gate
        return cls(report, None if rules is None else tuple(rules), junit)

    def apply(self, run_dir: Path, tolerance: float, tolerances: dict[str, float]) -> GateResult | None:
        """Print where the results are, write the report (prune potentials within ``tolerance``, or a metric's
        own in ``tolerances``), then gate: the gate's result (None without rules), failed or not. Without a
        report or a gate there is no tail, and nothing is printed."""
        if self.report or self.rules is not None:
            announce(run_dir)
        if self.report:
            report_with_verdict(run_dir, tolerance, tolerances)
        return None if self.rules is None else run_gate(run_dir, self.rules, self.junit)


def announce(run_dir: Path) -> None:
    """Say where the results are (the first line of the tail)."""
    from robusteval.results import RunDir

    print(f"results: {visible(RunDir(run_dir).summary_path)}")


def report_with_verdict(run_dir: Path, tolerance: float, tolerances: dict[str, float]) -> Path:
    """report.html, with the verdict table and where the report is printed; a warning when the run is incomplete."""
    from robusteval.analysis import format_verdict_table, verdict_lines
    from robusteval.report.html import build_report
    from robusteval.results import RunDir, incomplete_message

    path, analysis = build_report(run_dir, tolerance=tolerance, tolerances=tolerances)
    if analysis.methods:
        print("\nPrune potential (largest ratio within tolerance of dense), by metric family:")
        print("\n".join(map(visible, format_verdict_table(analysis).splitlines())))
        for line in verdict_lines(analysis):
            print(f"- {visible(line)}")
    print(f"\nreport: {visible(path)}")
    if problem := incomplete_message(RunDir(run_dir).read_summary()):
        print(f"robusteval: warning: {visible(problem)}", file=sys.stderr)
    return path


def run_gate(run_dir: Path, rules: Sequence[Rule], junit: str | Path | None,
             reference: str | None = None) -> GateResult:
    """Gate the run against ``reference`` (default: its baseline), write ``junit``, print the summary; the
    result says whether it passed (:meth:`GateResult.raise_on_failure` raises what the CLI exits 1 on)."""
    from robusteval.gate import evaluate_gate, publish
    from robusteval.results import RunDir

    result = evaluate_gate(RunDir(run_dir).read_summary(), rules, reference=reference)
    publish(result, junit, fail=False)
    return result
