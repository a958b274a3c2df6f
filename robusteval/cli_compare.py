"""The ``compare`` command (two run directories, release to release) and ``gate --baseline-run``."""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robusteval.errors import RobustEvalError, warn
from robusteval.escaping import visible


def add_compare_command(sub: Any, common: argparse.ArgumentParser, epilog: str) -> None:
    """Add ``robusteval compare BASE_RUN NEW_RUN`` to the subcommands ``sub``."""
    p = sub.add_parser("compare", parents=[common], help="compare two run directories (release to release): deltas "
                       "with bootstrap intervals, what else differs, optional gate", epilog=epilog,
                       description="Compare NEW_RUN with BASE_RUN (e.g. the previous release's): every metric of "
                       "every model matched by id (or --pair), with 95% bootstrap intervals of accuracy changes "
                       "(paired when both runs used the same data, seed and subset); writes comparison.html, "
                       "comparison.json and comparison.md. Reads the run directories only (no models).")
    p.add_argument("base_run", metavar="BASE_RUN", help="the reference run directory (e.g. the last release's)")
    p.add_argument("new_run", metavar="NEW_RUN", help="the run directory to check")
    p.add_argument("--out", help="folder for comparison.html/.json/.md (default: NEW_RUN/comparison)")
    p.add_argument("--gate", help="gate rules YAML (as for robusteval gate), the base run's model as the reference; "
                   "exit 1 when a budget is exceeded")
    p.add_argument("--junit", help="write the gate's JUnit XML here")
    p.add_argument("--pair", action="append", default=[], metavar="BASE_ID=NEW_ID",
                   help="compare model BASE_ID of BASE_RUN with NEW_ID of NEW_RUN (repeatable); replaces matching "
                   "by id, e.g. the shipped model of the last release with this release's")
    p.set_defaults(func=_cmd_compare)


def parse_pairs(texts: Sequence[str]) -> list[tuple[str, str]] | None:
    """``["old=new", ...]`` → ``[("old", "new"), ...]`` (None when none is given)."""
    pairs = []
    for text in texts:
        base, sep, new = text.partition("=")
        if not sep or not base or not new:
            raise RobustEvalError(f"--pair {text!r}: expected BASE_ID=NEW_ID, e.g. --pair model-v1=model-v2")
        pairs.append((base, new))
    return pairs or None


def _cmd_compare(args: argparse.Namespace, command: list[str]) -> int:
    from robusteval.analysis.compare import compare_runs
    from robusteval.gate import evaluate_comparison_gate, load_rules, publish
    from robusteval.report.comparison import markdown_comparison, write_comparison

    rules = load_rules(args.gate) if args.gate else None  # a bad rules file fails before any work
    pairs = parse_pairs(args.pair)
    comparison = compare_runs(args.base_run, args.new_run, pairs=pairs)
    result = evaluate_comparison_gate(comparison, rules) if rules is not None else None
    page = write_comparison(comparison, Path(args.out) if args.out else Path(args.new_run) / "comparison", gate=result)
    for line in comparison.warnings:
        warn(visible(line))
    print(markdown_comparison(comparison))
    print(f"comparison: {visible(page)}")
    if result is not None:
        publish(result, args.junit)
    return 0


def gate_against_run(args: argparse.Namespace) -> int:
    """``robusteval gate NEW_RUN --baseline-run BASE_RUN``: the gate of ``compare --gate`` without the page."""
    from robusteval.analysis.compare import compare_runs
    from robusteval.gate import evaluate_comparison_gate, load_rules, publish

    if args.reference:
        raise RobustEvalError("--reference and --baseline-run exclude each other: against a baseline run each model "
                              "is gated against the model of the same id there (robusteval compare --pair matches "
                              "models of other ids)")
    rules = load_rules(args.gate)
    comparison = compare_runs(args.baseline_run, args.run_dir)
    for line in comparison.warnings:
        warn(visible(line))
    publish(evaluate_comparison_gate(comparison, rules), args.junit)
    return 0
