"""Drops vs the baseline, prune potential, excess error and bootstrap intervals of a finished run.

Everything here reads ``summary.json`` (and, for confidence intervals and the report's evidence,
``records.jsonl``); nothing loads a model.

Definitions (all direction-aware through the run's metric declarations, :mod:`robusteval.declarations`):

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

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robusteval.analysis.derive import family_means
from robusteval.analysis.forgetting import Member, analyse_forgetting
from robusteval.analysis.model import Analysis, Evidence
from robusteval.analysis import potential
from robusteval.analysis.potential import Curve, Point, potential_interval, prune_potential
from robusteval.declarations import METRICS, Declarations
from robusteval.errors import RobustEvalError
from robusteval.card import MemberCard, dense_id, member_with_role, reference_ids, summary_cards
from robusteval.metrics import FAMILIES, attack_point, corruption_point, key_matches, noise_point, reference_value
from robusteval.records import CONTROL_ID, Record, as_records
from robusteval.results import RunDir, decode_bits, incomplete_message
from robusteval.samples import Samples, read_samples

DEFAULT_TOLERANCE = 0.005
BASELINES = ("auto", "dense", CONTROL_ID)
"""``analysis.baseline``: what drops are measured against; ``auto`` is the control when the run has one."""
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
        if key_matches(key, pattern) and (best is None or len(pattern) > best[0]):
            best = (len(pattern), float(tol))
    return default if best is None else best[1]


def check_tolerances(tolerance: float, tolerances: Mapping[str, float] | None) -> None:
    """Tolerances must be finite, non-negative numbers."""
    for name, tol in [("tolerance", tolerance), *((f"tolerance for {k!r}", v) for k, v in (tolerances or {}).items())]:
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
            raise RobustEvalError(f"{name}: expected a finite number >= 0, got {tol!r}")


def analyse(summary: Mapping[str, Any], records: Iterable[Record | Mapping[str, Any]] = (), *,
            tolerance: float = DEFAULT_TOLERANCE, tolerances: Mapping[str, float] | None = None,
            confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0,
            samples: Samples | None = None) -> Analysis:
    """Analyse a run's ``summary`` (and its ``records`` for bootstrap CIs of accuracy drops; with the run's
    ``samples``, also what pruning forgets: :mod:`robusteval.analysis.forgetting`)."""
    check_tolerances(tolerance, tolerances)
    declarations = Declarations.of_summary(summary).extended(METRICS["derived"])  # _values adds family means
    records = as_records(records)
    dense = summary.get("dense")
    baseline = summary.get("baseline") or dense  # the reference of every drop
    entries = summary.get("models") or []
    for which, mid in (("dense model", dense), ("baseline", baseline)):
        if not any(m.get("id") == mid for m in entries):
            raise RobustEvalError(f"summary: expected the {which} {mid!r} among its models, "
                                  f"got {[m.get('id') for m in entries]}")
    models = summary_cards(summary)
    values = {m["id"]: _values(m.get("metrics") or {}) for m in entries}
    references = reference_ids(models)
    pruned = [m for m in models if m.id not in references]
    stats = _Bootstrap(per_sample_correctness(records), baseline, confidence, n_resamples, seed)
    curves: dict[str, dict[str, Curve]] = {}
    for key in sorted({k for m in pruned for k in values[m.id] if declarations.has_direction(k)}):
        ref = reference_value(key, values[baseline])
        if ref is not None:
            tol = tolerance_for(key, default=tolerance, tolerances=tolerances)
            for method in dict.fromkeys(m.method for m in pruned):
                members = sorted((m for m in pruned if m.method == method and key in values[m.id]),
                                 key=lambda m: m.ratio)
                if members:
                    curves.setdefault(key, {})[method] = _curve(key, method, ref, tol, members, values, stats,
                                                                declarations)
    families = {f: k for f, k in headline_metrics(values[baseline]).items() if k in curves}
    forgetting = None if samples is None else analyse_forgetting(
        records, samples, [Member.of(m) for m in models], baseline, references, seed=seed)
    return Analysis(baseline, float(tolerance), dict(tolerances or {}), models, values, curves, families,
                    _excess_error(values, values[baseline], pruned), dense, references,
                    Evidence.from_records(records), incomplete_message(summary), summary.get("config"), forgetting)


class _Bootstrap:
    """Paired bootstrap intervals from per-sample correctness (where the records carry it)."""

    def __init__(self, paired: dict[str, dict[str, np.ndarray]], dense: str, confidence: float,
                 n_resamples: int, seed: int) -> None:
        self.paired, self.dense = paired, dense
        self.options = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}

    def drop_ci(self, key: str, model: str) -> tuple[float, float] | None:
        by_model = self.paired.get(key, {})
        if self.dense not in by_model or model not in by_model or len(by_model[self.dense]) != len(by_model[model]):
            return None
        diff = by_model[self.dense].astype(float) - by_model[model].astype(float)
        return potential.bootstrap_mean_ci(diff, **self.options)

    def dense_halfwidth(self, key: str) -> float | None:
        reference = self.paired.get(key, {}).get(self.dense)
        return None if reference is None else potential.mean_halfwidth(reference.astype(float), **self.options)


def _curve(key: str, method: str, ref: float, tol: float, members: Sequence[MemberCard],
           values: Mapping[str, Mapping[str, float]], stats: _Bootstrap, declarations: Declarations) -> Curve:
    points = []
    for m in members:
        d = declarations.drop(key, ref, values[m.id][key])
        points.append(Point(m.id, m.ratio, values[m.id][key], d, bool(d <= tol + 1e-12), stats.drop_ci(key, m.id)))
    pot, first = prune_potential((p.ratio, p.within_tolerance) for p in points)
    return Curve(key, method, ref, tol, tuple(points), pot, first, declarations.lower_is_better(key),
                 potential_interval(points, tol), stats.dense_halfwidth(key))


def baseline_id(choice: str, cards: Iterable[MemberCard]) -> str:
    """The model drops are measured against, by the members' roles: the control when the run has one and
    ``choice`` (``analysis.baseline``) is ``auto`` or the control, else the dense model."""
    if choice not in BASELINES:
        raise RobustEvalError(f"analysis baseline must be one of {', '.join(BASELINES)}, got {choice!r}")
    cards = list(cards)
    control = member_with_role(cards, "control")
    if choice == CONTROL_ID and control is None:
        raise RobustEvalError(f"analysis baseline {CONTROL_ID!r} needs recovery fine-tuning (pruning.finetune.epochs "
                              "> 0 and training data); this run has no control member")
    return control if choice != "dense" and control is not None else dense_id(cards)


def analyse_run(run_dir: str | Path, *, tolerance: float = DEFAULT_TOLERANCE,
                tolerances: Mapping[str, float] | None = None) -> Analysis:
    """:func:`analyse` on a run directory's summary.json and records.jsonl."""
    run = RunDir.existing(run_dir)
    return analyse(run.read_summary(), run.records(), tolerance=tolerance, tolerances=tolerances,
                   samples=read_samples(run.path))


def _values(metrics: Mapping[str, float | None]) -> dict[str, float]:
    """A model's metrics as floats (null → NaN), with the family means a summary of an older run lacks."""
    out = {k: float(v) if v is not None else math.nan for k, v in metrics.items()}
    return out | family_means(out)


def headline_metrics(dense: Mapping[str, float]) -> dict[str, str]:
    """family → headline metric key (see FAMILIES); noise: the noise-curve area (Liebenwein et al. 2021)
    when stored, else the mean over ε; adversarial: the strongest attack at its smallest ε."""
    noise = "noise/auc/accuracy" if "noise/auc/accuracy" in dense else "noise/mean_accuracy"
    heads = {"clean": "clean/accuracy", "corruption": "corruption/mean_accuracy", "noise": noise,
             "calibration": "calibration/ece", "ood": "ood/mean_auroc_msp", "agreement": "agreement/top1"}
    adversarial = [(p.attack, p.eps, k) for k in dense if (p := attack_point(k)) and not p.transfer
                   and p.attack in _ATTACK_PREFERENCE]
    if adversarial:
        heads["adversarial"] = min(adversarial, key=lambda a: (_ATTACK_PREFERENCE.index(a[0]), a[1]))[2]
    return {f: heads[f] for f in FAMILIES if f in heads}


def _excess_error(values: Mapping[str, Mapping[str, float]], dense: Mapping[str, float],
                  pruned: Sequence[MemberCard]) -> dict[str, dict[str, float]]:
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


def per_sample_correctness(records: Iterable[Record | Mapping[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    """accuracy metric key → model → per-sample correctness, from records that carry it."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for rec in as_records(records):
        if not rec.correct or not rec.n:
            continue
        keys = [k for k in rec.metrics if k.endswith("/accuracy")]
        key = f"{rec.condition}/accuracy"
        if key not in keys:
            if len(keys) != 1:
                continue  # several accuracies (e.g. all attacks): correctness is ambiguous
            key = keys[0]
        out.setdefault(key, {})[rec.model] = decode_bits(rec.correct, rec.n)
    for mean_key, member in (("corruption/mean_accuracy", lambda k: corruption_point(k) is not None),
                             ("noise/mean_accuracy", lambda k: (p := noise_point(k)) is not None
                              and p[1] == "accuracy")):
        parts = [v for k, v in out.items() if member(k)]
        common = set.intersection(*(set(p) for p in parts)) if parts else set()
        for model in common:
            if len({len(p[model]) for p in parts}) == 1:
                out.setdefault(mean_key, {})[model] = np.mean([p[model] for p in parts], axis=0)
    return out
