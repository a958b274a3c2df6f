"""Analysis of a finished run: drops vs dense, prune potential, excess error, bootstrap intervals.

Everything here reads ``summary.json`` (and, for confidence intervals, the per-sample
correctness in ``records.jsonl``); nothing loads a model.

Definitions (all direction-aware through :func:`lower_is_better`):

* **drop** of a metric = how much worse the pruned model is than the dense one, in the metric's
  own unit: ``dense - value`` when higher is better, ``value - dense`` when lower is better.
  A negative drop is an improvement.
* **within tolerance**: ``drop <= δ`` (δ per metric, :func:`tolerance_for`); NaN never is.
* **prune potential** (Liebenwein et al., "Lost in Pruning", MLSys 2021): the largest tested
  prune ratio ``r`` of a method such that the metric is within tolerance at *every* tested
  ratio ``<= r``. On a non-monotone curve (fails at 70%, recovers at 90%) the potential stops
  before the first failure (here: the ratio below 70%); a ratio that was not evaluated for a
  metric is skipped. ``0.0`` when even the smallest tested ratio fails.
* **first out**: the smallest tested ratio that leaves tolerance (None when none does).
* **excess error** (Hendrycks & Dietterich 2019, as used by Hooker et al. 2019): drop on a
  shifted condition minus drop on clean data, in accuracy units.
* **bootstrap CI** of an accuracy drop: the paired percentile bootstrap (Efron & Tibshirani
  1993) over test samples of ``dense_correct - pruned_correct``; a drop is *within noise* when
  its 95% interval contains 0.
"""
from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robusteval.errors import RobustEvalError
from robusteval.potential import (  # re-exported: the analysis API
    Curve,
    Point,
    bootstrap_mean_ci,
    drop,
    lower_is_better,
    mean_halfwidth,
    potential_interval,
    prune_potential,
)
from robusteval.results import RunDir, decode_bits

__all__ = ["Analysis", "Curve", "Point", "analyse", "analyse_run", "baseline_id", "bootstrap_mean_ci", "drop", "format_drop",
           "format_verdict_table", "lower_is_better", "mean_halfwidth", "pct", "potential_interval", "prune_potential",
           "tolerance_for", "verdict_lines"]

DEFAULT_TOLERANCE = 0.005
CONTROL_ID = "dense+ft"
"""Id (and method) of the control member: the dense model given the pruned members' recovery budget."""
SCRATCH_SUFFIX = "+scratch"
"""Method suffix of the pruned architectures re-initialised and trained from scratch (Crowley et al. 2018)."""
BASELINES = ("auto", "dense", CONTROL_ID)
"""``analysis.baseline``: what drops are measured against; ``auto`` is the control when the run has one."""

#: metric family → human label; the order is the verdict table's column order.
FAMILIES: dict[str, str] = {
    "clean": "clean accuracy",
    "corruption": "corruption accuracy",
    "noise": "noise accuracy",
    "adversarial": "adversarial accuracy",
    "calibration": "calibration (ECE)",
    "ood": "OOD detection (AUROC)",
    "agreement": "agreement with dense",
}
NUMBER = r"[0-9][0-9.eE+-]*"  # a severity or ε path component (``noise/auc/...`` is not one)
NOISE_ACCURACY = re.compile(rf"^noise/(?P<eps>{NUMBER})/accuracy$")
CORRUPTION_ACCURACY = re.compile(rf"^corruption/(?P<name>[^/]+)/(?P<severity>{NUMBER})/accuracy$")
_ADV_ACCURACY = re.compile(rf"^adversarial/(?P<attack>[^/]+)/(?P<eps>{NUMBER})/accuracy$")
_ATTACK_PREFERENCE = ("autoattack", "linf_pgd", "apgd_ce", "apgd_t", "fgsm", "l2_pgd")


def tolerance_for(key: str, *, default: float = DEFAULT_TOLERANCE,
                  tolerances: Mapping[str, float] | None = None) -> float:
    """δ for ``key``: an exact key wins, else the longest matching prefix (``"calibration/"``
    or ``"calibration"`` matches ``calibration/ece``) or glob (``"ood/*/fpr95_*"``), else ``default``."""
    if not tolerances:
        return default
    if key in tolerances:
        return float(tolerances[key])
    best: tuple[int, float] | None = None
    for pattern, tol in tolerances.items():
        if key.startswith(pattern.rstrip("/") + "/") or fnmatch.fnmatchcase(key, pattern):
            if best is None or len(pattern) > best[0]:
                best = (len(pattern), float(tol))
    return default if best is None else best[1]


def check_tolerances(tolerance: float, tolerances: Mapping[str, float] | None) -> None:
    """Tolerances must be finite, non-negative numbers."""
    for name, tol in [("tolerance", tolerance), *((f"tolerance for {k!r}", v) for k, v in (tolerances or {}).items())]:
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
            raise RobustEvalError(f"{name}: expected a finite number >= 0, got {tol!r}")


@dataclass(frozen=True)
class ModelInfo:
    id: str
    method: str
    ratio: float


@dataclass
class Analysis:
    """Everything the report, the verdict and ``analysis.json`` need."""

    dense: str
    tolerance: float
    tolerances: dict[str, float]
    models: list[ModelInfo]
    values: dict[str, dict[str, float]]  # model id → metric key → value (incl. derived means)
    curves: dict[str, dict[str, Curve]]  # metric key → method → curve
    families: dict[str, str]  # family → headline metric key (present families only)
    excess: dict[str, dict[str, float]] = field(default_factory=dict)  # model → key → excess error
    untouched: str = ""  # the dense model as given ("dense"); ``dense`` is the baseline drops are against
    references: tuple[str, ...] = ()  # ids that are baselines, not pruned models (dense, dense+ft)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(m.method for m in self.models if not self.is_reference(m.id)))

    def ratios(self, method: str) -> list[float]:
        return sorted({m.ratio for m in self.models if m.method == method and not self.is_reference(m.id)})

    def is_reference(self, model_id: str) -> bool:
        return model_id == self.dense or model_id in self.references

    def baseline_note(self) -> str:
        """Which model drops are measured against, in words."""
        if self.dense == CONTROL_ID:
            return (f"drops are measured against {CONTROL_ID}: the dense model fine-tuned with the pruned models' "
                    f"recovery budget (the untouched dense model {self.untouched} is shown beside it)")
        control = " (the control dense+ft, fine-tuned like the pruned models, is shown beside it)" \
            if CONTROL_ID in self.references else ""
        return f"drops are measured against the untouched dense model {self.dense}{control}"

    def family_curve(self, family: str, method: str) -> Curve | None:
        key = self.families.get(family)
        return None if key is None else self.curves.get(key, {}).get(method)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (NaN → null) for ``analysis.json``."""
        metrics = {}
        for key, by_method in self.curves.items():
            first = next(iter(by_method.values()))
            metrics[key] = {
                "lower_is_better": lower_is_better(key), "tolerance": first.tolerance, "dense": first.dense,
                "methods": {m: {"prune_potential": c.prune_potential, "first_out": c.first_out,
                                "prune_potential_interval": list(c.interval) if c.interval else None,
                                "dense_ci_halfwidth": c.dense_halfwidth,
                                "points": [{"model": p.model, "ratio": p.ratio, "value": p.value, "drop": p.drop,
                                            "within_tolerance": p.within_tolerance,
                                            "ci": list(p.ci) if p.ci else None, "within_noise": p.within_noise}
                                           for p in c.points]}
                            for m, c in by_method.items()},
            }
        return _nan_to_none({
            "dense": self.dense, "baseline": self.dense, "untouched_dense": self.untouched,
            "baseline_note": self.baseline_note(), "tolerance": self.tolerance, "tolerances": self.tolerances,
            "families": self.families,
            "models": [{"id": m.id, "method": m.method, "ratio": m.ratio} for m in self.models],
            "prune_potential": {m: {f: c.prune_potential for f in self.families
                                    if (c := self.family_curve(f, m)) is not None} for m in self.methods},
            "metrics": metrics, "excess_error": self.excess,
        })


def analyse(summary: Mapping[str, Any], records: Iterable[Mapping[str, Any]] = (), *,
            tolerance: float = DEFAULT_TOLERANCE, tolerances: Mapping[str, float] | None = None,
            confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> Analysis:
    """Analyse a run's ``summary`` (and its ``records`` for bootstrap CIs of accuracy drops)."""
    check_tolerances(tolerance, tolerances)
    untouched = summary.get("dense")
    dense_id = summary.get("baseline") or untouched  # the reference of every drop
    entries = summary.get("models") or []
    for which, mid in (("dense model", untouched), ("baseline", dense_id)):
        if not any(m.get("id") == mid for m in entries):
            raise RobustEvalError(f"summary: expected the {which} {mid!r} among its models, "
                                  f"got {[m.get('id') for m in entries]}")
    models = [ModelInfo(m["id"], m.get("method") or m["id"], _ratio(m)) for m in entries]
    values = {m["id"]: _with_derived(m.get("metrics") or {}) for m in entries}
    dense_values = values[dense_id]
    references = tuple(m.id for m in models if m.id in (untouched, dense_id) or m.method == CONTROL_ID)
    pruned = [m for m in models if m.id not in references]
    paired = _paired_correctness(records)
    keys = sorted({k for m in pruned for k in values[m.id]})
    curves: dict[str, dict[str, Curve]] = {}
    for key in keys:
        ref = _dense_value(key, dense_values)
        if ref is None:
            continue
        tol = tolerance_for(key, default=tolerance, tolerances=tolerances)
        for method in dict.fromkeys(m.method for m in pruned):
            points = []
            for m in sorted((m for m in pruned if m.method == method and key in values[m.id]), key=lambda m: m.ratio):
                value = values[m.id][key]
                d = drop(key, ref, value)
                diff = _paired_diff(paired, key, dense_id, m.id)
                ci = None if diff is None else bootstrap_mean_ci(diff, confidence=confidence,
                                                                 n_resamples=n_resamples, seed=seed)
                points.append(Point(m.id, m.ratio, value, d, bool(d <= tol + 1e-12), ci))
            if points:
                pot, first = prune_potential((p.ratio, p.within_tolerance) for p in points)
                reference = paired.get(key, {}).get(dense_id)
                halfwidth = None if reference is None else mean_halfwidth(
                    reference.astype(float), confidence=confidence, n_resamples=n_resamples, seed=seed)
                curves.setdefault(key, {})[method] = Curve(key, method, ref, tol, tuple(points), pot, first,
                                                           potential_interval(points, tol), halfwidth)
    families = {f: k for f, k in _headlines(dense_values).items() if k in curves}
    return Analysis(dense_id, float(tolerance), dict(tolerances or {}), models, values, curves, families,
                    _excess_error(values, dense_values, pruned), untouched, references)


def baseline_id(choice: str, model_ids: Sequence[str], dense: str) -> str:
    """The model drops are measured against: ``auto`` picks the control when the run has one."""
    if choice not in BASELINES:
        raise RobustEvalError(f"analysis baseline must be one of {', '.join(BASELINES)}, got {choice!r}")
    if choice == CONTROL_ID and CONTROL_ID not in model_ids:
        raise RobustEvalError(f"analysis baseline {CONTROL_ID!r} needs recovery fine-tuning (pruning.finetune.epochs "
                              "> 0 and training data); this run has no control member")
    return CONTROL_ID if choice != "dense" and CONTROL_ID in model_ids else dense


def analyse_run(run_dir: str | Path, *, tolerance: float = DEFAULT_TOLERANCE,
                tolerances: Mapping[str, float] | None = None) -> Analysis:
    """:func:`analyse` on a run directory's summary.json and records.jsonl."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RobustEvalError(f"expected a run directory, got {str(path)!r} (not a directory)")
    run = RunDir(path)
    return analyse(run.read_summary(), run.records(), tolerance=tolerance, tolerances=tolerances)


def _ratio(entry: Mapping[str, Any]) -> float:
    ratio = entry.get("target_ratio")
    return float(entry.get("sparsity") or 0.0) if ratio is None else float(ratio)


def _with_derived(metrics: Mapping[str, float]) -> dict[str, float]:
    """The model's metrics plus family means the run did not store (noise, OOD AUROC)."""
    out = {k: float(v) if v is not None else math.nan for k, v in metrics.items()}
    for derived, pattern in (("noise/mean_accuracy", NOISE_ACCURACY),
                             ("ood/mean_auroc_msp", re.compile(r"^ood/[^/]+/auroc_msp$"))):
        parts = [v for k, v in out.items() if pattern.match(k)]
        if parts and derived not in out:
            out[derived] = float(np.mean(parts))
    return out


def _dense_value(key: str, dense: Mapping[str, float]) -> float | None:
    """The dense reference of ``key``; agreement metrics of dense-vs-dense are the identity."""
    if key in dense:
        return dense[key]
    if key.startswith("agreement/"):
        return 1.0 if key.endswith("top1") else 0.0
    return None


def _headlines(dense: Mapping[str, float]) -> dict[str, str]:
    """family → headline metric key (see FAMILIES); noise: the noise-curve area (Liebenwein et al. 2021)
    when stored, else the mean over ε; adversarial: the strongest attack at its smallest ε."""
    noise = "noise/auc/accuracy" if "noise/auc/accuracy" in dense else "noise/mean_accuracy"
    heads = {"clean": "clean/accuracy", "corruption": "corruption/mean_accuracy", "noise": noise,
             "calibration": "calibration/ece", "ood": "ood/mean_auroc_msp", "agreement": "agreement/top1"}
    adversarial = [(m["attack"], float(m["eps"]), k) for k in dense if (m := _ADV_ACCURACY.match(k))
                   and m["attack"] in _ATTACK_PREFERENCE]
    if adversarial:
        heads["adversarial"] = min(adversarial, key=lambda a: (_ATTACK_PREFERENCE.index(a[0]), a[1]))[2]
    return {f: heads[f] for f in FAMILIES if f in heads}


def _excess_error(values: Mapping[str, Mapping[str, float]], dense: Mapping[str, float],
                  pruned: Sequence[ModelInfo]) -> dict[str, dict[str, float]]:
    if "clean/accuracy" not in dense:
        return {}
    out: dict[str, dict[str, float]] = {}
    for m in pruned:
        vals = values[m.id]
        if "clean/accuracy" not in vals:
            continue
        clean_drop = dense["clean/accuracy"] - vals["clean/accuracy"]
        out[m.id] = {k: (dense[k] - v) - clean_drop for k, v in vals.items()
                     if k.endswith("accuracy") and k in dense and not k.startswith(("clean/", "agreement/"))}
    return out


def _paired_correctness(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    """accuracy metric key → model → per-sample correctness, from records that carry it."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for rec in records:
        if not rec.get("correct") or not rec.get("n"):
            continue
        keys = [k for k in rec.get("metrics", {}) if k.endswith("/accuracy")]
        key = f"{rec['condition']}/accuracy"
        if key not in keys:
            if len(keys) != 1:
                continue  # several accuracies (e.g. all attacks): correctness is ambiguous
            key = keys[0]
        out.setdefault(key, {})[rec["model"]] = decode_bits(rec["correct"], int(rec["n"]))
    for mean_key, pattern in (("corruption/mean_accuracy", CORRUPTION_ACCURACY),
                              ("noise/mean_accuracy", NOISE_ACCURACY)):
        parts = [v for k, v in out.items() if pattern.match(k)]
        common = set.intersection(*(set(p) for p in parts)) if parts else set()
        for model in common:
            if len({len(p[model]) for p in parts}) == 1:
                out.setdefault(mean_key, {})[model] = np.mean([p[model] for p in parts], axis=0)
    return out


def _paired_diff(paired: Mapping[str, Mapping[str, np.ndarray]], key: str, dense: str,
                 model: str) -> np.ndarray | None:
    """Per-sample ``dense - model`` correctness for ``key`` when both are known on the same samples."""
    by_model = paired.get(key, {})
    if dense not in by_model or model not in by_model or len(by_model[dense]) != len(by_model[model]):
        return None
    return by_model[dense].astype(float) - by_model[model].astype(float)


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def pct(ratio: float) -> str:
    """A prune ratio as a percentage: 0.9 → '90%', 0.875 → '87.5%'."""
    return f"{100 * ratio:.4g}%"


def format_drop(key: str, d: float) -> str:
    """A drop in words: accuracy-like metrics in points, error-like metrics as an increase."""
    return f"{key.rsplit('/', 1)[-1]} {d:+.3g}" if lower_is_better(key) else f"{100 * d:.1f} points lower"


def _point_note(curve: Curve, ratio: float) -> str:
    point = curve.point_at(ratio)
    if point is None or not math.isfinite(point.drop):
        return " (value missing or NaN)"
    note = format_drop(curve.metric, point.drop)
    if point.ci is not None:
        lo, hi = (100 * c for c in point.ci)
        note += f"; 95% CI of the drop {lo:.1f} to {hi:.1f}" + (", within noise" if point.within_noise else "")
    return f" ({note})"


def verdict_lines(analysis: Analysis) -> list[str]:
    """One sentence per method naming its most fragile metric family, e.g. 'synflow keeps clean
    accuracy up to 90% but corruption accuracy leaves tolerance at 70% (3.1 points lower; ...)'."""
    lines = []
    for method in analysis.methods:
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
    return lines + _resolution_lines(analysis)


def _potential_range(curve: Curve) -> str:
    """'40% [20%–60%]': the strict potential and its range (see :mod:`robusteval.potential`)."""
    if curve.interval is None:
        return pct(curve.prune_potential)
    return f"{pct(curve.prune_potential)}[{pct(curve.interval[0])}–{pct(curve.interval[1])}]"


def _resolution_lines(analysis: Analysis) -> list[str]:
    """One line per family whose test set cannot resolve δ: the baseline's own 95% CI is wider than ±δ."""
    lines = []
    for family, key in analysis.families.items():
        curve = next(iter(analysis.curves[key].values()))
        if curve.dense_halfwidth is not None and curve.dense_halfwidth > curve.tolerance:
            lines.append(f"The test set is too small to resolve δ = {format_amount(key, curve.tolerance)} on "
                         f"{FAMILIES[family]}: the baseline's own 95% interval is ±"
                         f"{format_amount(key, curve.dense_halfwidth)}, so drops below that are noise; "
                         "read the potentials' ranges, or evaluate on more images.")
    return lines


def format_amount(key: str, amount: float) -> str:
    """An amount in the metric's unit: accuracy-like metrics in points, others as numbers."""
    return f"{amount:.3g}" if lower_is_better(key) else f"{100 * amount:.2g} points"


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
    lines.append(f"cells: prune potential = largest ratio with every ratio up to it within δ of {analysis.dense} "
                 f"(δ = {analysis.tolerance:g} unless set per metric); [range] where the drops' 95% intervals "
                 f"allow it; {analysis.baseline_note()}")
    return "\n".join(lines)
