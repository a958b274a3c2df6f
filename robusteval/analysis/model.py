"""The analysis of a run as one typed object: what the report renders and ``analysis.json`` holds."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from robusteval.analysis.forgetting import Forgetting
from robusteval.analysis.potential import Curve
from robusteval.card import MemberCard, member_with_role
from robusteval.records import Record, as_records


@dataclass
class Evidence:
    """What the records hold beyond numbers, for the report: per-model reliability bins on the clean
    data, OOD ROC curves (set → model → MSP curve), how each condition's inputs were made
    (family → name → note) and every record's warnings as (model, condition, text)."""

    reliability: dict[str, dict[str, Any]] = field(default_factory=dict)
    roc: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, dict[str, str]] = field(default_factory=dict)
    warnings: list[tuple[str, str, str]] = field(default_factory=list)

    @classmethod
    def from_records(cls, records: list[Record | Mapping[str, Any]]) -> Evidence:
        out = cls()
        for r in as_records(records):
            if r.condition == "clean" and "reliability" in r.details.get("calibration", {}):
                out.reliability[r.model] = r.details["calibration"]["reliability"]
            by_score = r.details.get("ood", {}).get("roc", {})
            if r.condition.startswith("ood/") and "msp" in by_score:
                out.roc.setdefault(r.condition[4:], {})[r.model] = by_score["msp"]
            if r.note:
                name = r.meta.get("corruption") or r.condition
                out.notes.setdefault(r.family, {}).setdefault(str(name), r.note)
            out.warnings += [(r.model, r.condition, w) for w in r.warnings]
        return out


@dataclass
class Analysis:
    """Everything the report, the verdict and ``analysis.json`` need."""

    baseline: str  # the model drops are measured against (the dense model or its control)
    tolerance: float
    tolerances: dict[str, float]
    models: list[MemberCard]  # with the roles :func:`robusteval.card.summary_cards` gives: the baseline is a reference
    values: dict[str, dict[str, float]]  # model id → metric key → value (incl. derived means)
    curves: dict[str, dict[str, Curve]]  # metric key → method → curve
    families: dict[str, str]  # family → headline metric key (present families only)
    excess: dict[str, dict[str, float]] = field(default_factory=dict)  # model → key → excess error
    dense: str = ""  # the dense model as given ("dense"); ``baseline`` is the model drops are against
    references: tuple[str, ...] = ()  # ids that are references, not pruned models (dense, dense+ft)
    evidence: Evidence = field(default_factory=Evidence)
    incomplete: str | None = None  # what the run is missing, in one line (None when complete)
    config: Mapping[str, Any] | None = None  # the summary's config, when it records one
    forgetting: Forgetting | None = None  # per-class impact, PIEs and gallery (runs that keep samples.npz)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(m.method for m in self.models if not m.is_reference))

    def ratios(self, method: str) -> list[float]:
        return sorted({m.ratio for m in self.models if m.method == method and not m.is_reference})

    def baseline_note(self) -> str:
        """Which model drops are measured against, in words (the control is the member with that role)."""
        control = member_with_role(self.models, "control")
        if self.baseline == control:
            return (f"drops are measured against {control}: the dense model fine-tuned with the pruned models' "
                    f"recovery budget (the untouched dense model {self.dense} is shown beside it)")
        beside = "" if control is None else \
            f" (the control {control}, fine-tuned like the pruned models, is shown beside it)"
        return f"drops are measured against the untouched dense model {self.baseline}{beside}"

    def family_curve(self, family: str, method: str) -> Curve | None:
        key = self.families.get(family)
        return None if key is None else self.curves.get(key, {}).get(method)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (NaN → null) for ``analysis.json``."""
        metrics = {}
        for key, by_method in self.curves.items():
            first = next(iter(by_method.values()))
            metrics[key] = {"lower_is_better": first.lower_is_better, "tolerance": first.tolerance,
                            "dense": first.dense, "methods": {m: _curve_json(c) for m, c in by_method.items()}}
        return _nan_to_none({
            "dense": self.baseline, "baseline": self.baseline, "untouched_dense": self.dense,
            "baseline_note": self.baseline_note(), "tolerance": self.tolerance, "tolerances": self.tolerances,
            "families": self.families,
            "models": [{"id": m.id, "method": m.method, "ratio": m.ratio} for m in self.models],
            "prune_potential": {m: {f: c.prune_potential for f in self.families
                                    if (c := self.family_curve(f, m)) is not None} for m in self.methods},
            "metrics": metrics, "excess_error": self.excess,
            "forgetting": self.forgetting.to_json() if self.forgetting is not None else None,
        })


def _curve_json(c: Curve) -> dict[str, Any]:
    return {"prune_potential": c.prune_potential, "first_out": c.first_out,
            "prune_potential_interval": list(c.interval) if c.interval else None,
            "dense_ci_halfwidth": c.dense_halfwidth,
            "points": [{"model": p.model, "ratio": p.ratio, "value": p.value, "drop": p.drop,
                        "within_tolerance": p.within_tolerance, "ci": list(p.ci) if p.ci else None,
                        "within_noise": p.within_noise} for p in c.points]}


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj
