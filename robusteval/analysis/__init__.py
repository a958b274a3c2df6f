"""Analysis of a finished run: derived metrics, drops vs the baseline, prune potential, intervals, verdict.

``derive`` computes every derived metric (stored in ``summary.json``); ``drops`` turns a summary
into an :class:`Analysis`; ``potential`` holds potentials and bootstrap intervals; ``verdict``
says it in words. Metric directions come from the run (:mod:`robusteval.declarations`); nothing here
imports torch.
"""
from robusteval.analysis.class_impact import class_metrics, disparate_impact
from robusteval.analysis.derive import corruption_summary, derive, noise_summary
from robusteval.analysis.drops import (
    BASELINES,
    DEFAULT_TOLERANCE,
    analyse,
    analyse_run,
    baseline_id,
    check_tolerances,
    tolerance_for,
)
from robusteval.analysis.forgetting import Forgetting, analyse_forgetting, find_pies
from robusteval.analysis.model import Analysis, Evidence
from robusteval.analysis.summary import write_summary
from robusteval.analysis.potential import (
    Curve,
    Point,
    bootstrap_difference_ci,
    bootstrap_mean_ci,
    mean_halfwidth,
    potential_interval,
    prune_potential,
)
from robusteval.analysis.verdict import format_amount, format_drop, format_verdict_table, pct, verdict_lines
from robusteval.metrics import FAMILIES
from robusteval.records import CONTROL_ID

__all__ = ["BASELINES", "CONTROL_ID", "DEFAULT_TOLERANCE", "FAMILIES", "Analysis", "Curve",
           "Evidence", "Forgetting", "Point", "analyse", "analyse_forgetting", "analyse_run",
           "baseline_id", "bootstrap_difference_ci", "bootstrap_mean_ci", "check_tolerances", "class_metrics", "corruption_summary", "derive",
           "disparate_impact", "find_pies", "format_amount", "format_drop", "format_verdict_table",
           "mean_halfwidth", "noise_summary", "pct", "potential_interval", "prune_potential",
           "tolerance_for", "verdict_lines", "write_summary"]
