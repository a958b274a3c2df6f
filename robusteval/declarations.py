"""Metric declarations as data: per metric name, its better direction, unit and label.

The built-in table (:data:`METRICS`, by producer) is plain data with no dependencies, in the style of
torchmetrics' ``higher_is_better`` class attribute: each evaluator's ``declares`` refers to its row
(``declares = METRICS["calibration"]``), and the derivations of :mod:`robusteval.analysis.derive`
have theirs. A name ending in ``*`` covers every name with that prefix (``fpr95_*`` → ``fpr95_msp``).
A declaration may be family-qualified (``family="corruption"``: it covers ``corruption/…/mce`` only) where
two producers use one name for different things (``corruption/mce``, a ratio of errors, and
``calibration/mce``, a fraction); a key finds the most specific one: family and name, then name. One name
has one better direction in every family.

The summary writer stores the declarations of every metric a run holds in ``summary.json``
(``declarations``: name → ``{higher_is_better, unit, label}``, plus ``families``: family → ``{unit, label}``
for the family-qualified ones); analysis, report and gate read them back from the run as a
:class:`Declarations` object. A metric nobody declared is an error, never "higher is better".
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from robusteval.errors import RobustEvalError
from robusteval.metrics import family_of


@dataclass(frozen=True)
class Metric:
    """One metric name as its producer declares it; ``higher_is_better`` None: no better direction
    (mean confidence, a fitted temperature); ``family``: the one metric family it covers (None: every one)."""

    name: str
    higher_is_better: bool | None
    unit: str = "fraction"
    label: str = ""
    family: str | None = None

    @property
    def qualified(self) -> str:
        """``family/name`` for a family-qualified declaration, else the name."""
        return f"{self.family}/{self.name}" if self.family else self.name

    def covers(self, name: str) -> bool:
        return name.startswith(self.name[:-1]) if self.name.endswith("*") else name == self.name

    def to_json(self) -> dict[str, Any]:
        return {"higher_is_better": self.higher_is_better, "unit": self.unit, "label": self.label}


METRICS: dict[str, tuple[Metric, ...]] = {
    "accuracy": (Metric("accuracy", True, label="top-1 accuracy"), Metric("top5", True, label="top-5 accuracy"),
                 Metric("loss", False, "nats", "cross-entropy"), Metric("error", False, label="top-1 error")),
    "calibration": (Metric("ece", False, label="expected calibration error"),
                    Metric("aece", False, label="adaptive ECE"),
                    Metric("mce", False, label="maximum calibration error", family="calibration"),
                    Metric("classwise_ece", False), Metric("nll", False, "nats", "negative log-likelihood"),
                    Metric("brier", False, "", "Brier score"), Metric("confidence", None, label="mean confidence"),
                    Metric("confidence_gap", None, label="confidence − accuracy"),
                    Metric("abs_confidence_gap", False, label="|confidence − accuracy|"),
                    Metric("temperature", None, ""), Metric("ece_after_ts", False),
                    Metric("nll_after_ts", False, "nats")),
    "agreement": (Metric("top1", True, label="top-1 agreement with dense"),
                  Metric("kl", False, "nats", "KL(dense || pruned)"),
                  Metric("l2", False, "", "L2 distance of the softmax vectors"),
                  Metric("linf", False, "", "L∞ distance of the softmax vectors"),
                  Metric("dense_correct_pruned_wrong", False, label="samples dense gets right and pruned wrong"),
                  Metric("dense_wrong_pruned_correct", True, label="samples dense gets wrong and pruned right"),
                  Metric("dense_correct_pruned_wrong_count", False, "samples"),
                  Metric("dense_wrong_pruned_correct_count", True, "samples")),
    "ood": (Metric("auroc_*", True, label="OOD detection AUROC"), Metric("aupr_in_*", True),
            Metric("aupr_out_*", True), Metric("fpr95_*", False, label="FPR at 95% TPR")),
    "adversarial": (Metric("clean_accuracy", True, label="clean accuracy of the attacked sample"),
                    Metric("accuracy", True, label="robust accuracy", family="adversarial"),
                    Metric("median", True, "perturbation norm", "median minimal adversarial perturbation")),
    "derived": (Metric("mean_accuracy", True, label="mean accuracy"), Metric("ce", False, "ratio", "corruption error"),
                Metric("relative_ce", False, "ratio", "relative corruption error"),
                Metric("mce", False, "ratio", "mean corruption error", "corruption"),
                Metric("relative_mce", False, "ratio", "relative mean corruption error"),
                Metric("mce_all", False, "ratio", "mean corruption error, every corruption run"),
                Metric("relative_mce_all", False, "ratio", "relative mean corruption error, every corruption run"),
                Metric("mce_corruptions", True, "count", "corruptions in the mCE"),
                Metric("mean_auroc_*", True, label="mean OOD detection AUROC"),
                Metric("worst_class_accuracy", True, label="worst per-class accuracy"),
                Metric("max_class_drop", False, label="largest per-class accuracy drop vs the baseline")),
}
"""The built-in declarations, by producer: the evaluators (``declares``) and the derivations."""


def drop(reference: float, value: float, *, lower_is_better: bool) -> float:
    """How much worse ``value`` is than ``reference`` (negative: better) for a metric of that direction."""
    return value - reference if lower_is_better else reference - value


def _name(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def _family(key: str) -> str | None:
    return family_of(key) if "/" in key else None


class Declarations:
    """Metric declarations; a lookup takes a metric key and finds the declaration of its family and last
    component, else of the last component alone (each: the exact name first, else the longest covering
    ``*`` prefix)."""

    def __init__(self, metrics: Iterable[Metric] = ()) -> None:
        self._by_name: dict[str, Metric] = {}  # by qualified name; where two declare one, the first is kept
        first: dict[str, Metric] = {}
        for metric in metrics:
            if first.setdefault(metric.name, metric).higher_is_better != metric.higher_is_better:
                raise ValueError(f"metric {metric.name!r} is declared both higher- and lower-is-better")
            self._by_name.setdefault(metric.qualified, metric)

    def extended(self, metrics: Iterable[Metric]) -> Declarations:
        """These declarations and ``metrics`` (a name declared with opposite directions is a ValueError)."""
        return Declarations([*self._by_name.values(), *metrics])

    def find(self, key: str) -> Metric | None:
        """The most specific declaration covering ``key``, None when there is none."""
        name, family = _name(key), _family(key)
        for scope in ((family, None) if family else (None,)):
            exact = self._by_name.get(f"{scope}/{name}" if scope else name)
            if exact is not None:
                return exact
            covering = [m for m in self._by_name.values()
                        if m.family == scope and m.name.endswith("*") and m.covers(name)]
            if covering:
                return max(covering, key=lambda m: len(m.name))
        return None

    def spec(self, key: str) -> Metric:
        """The declaration covering ``key``; an undeclared metric is bad input (one line naming it)."""
        found = self.find(key)
        if found is None:
            raise RobustEvalError(f"metric {key!r} is not declared: no evaluator or derivation declares "
                                  f"{_name(key)!r}, so its better direction is unknown")
        return found

    def has_direction(self, key: str) -> bool:
        """False for metrics declared without a better direction: no drop, prune potential or drop budget."""
        return self.spec(key).higher_is_better is not None

    def lower_is_better(self, key: str) -> bool:
        """The one direction rule: True for error-like metrics (ECE, NLL, loss, FPR@95, KL, ...)."""
        return self.spec(key).higher_is_better is False

    def drop(self, key: str, reference: float, value: float) -> float:
        """How much worse ``value`` is than ``reference`` for metric ``key`` (negative: better)."""
        return drop(reference, value, lower_is_better=self.lower_is_better(key))

    def resolved(self, keys: Iterable[str]) -> Declarations:
        """The declarations of exactly the names of ``keys`` (``*`` prefixes made concrete), family-qualified
        where the declaration found is."""
        specs: dict[str, Metric] = {}
        for key in keys:
            found = self.spec(key)
            concrete = Metric(_name(key), found.higher_is_better, found.unit, found.label, found.family)
            specs[concrete.qualified] = concrete
        return Declarations(specs[name] for name in sorted(specs))

    def to_json(self) -> dict[str, dict[str, Any]]:
        """Name → declaration; a family-qualified one under its name's ``families`` (family → unit, label),
        the name's own fields from its unqualified declaration, else from its first family's."""
        out: dict[str, dict[str, Any]] = {}
        for metric in sorted(self._by_name.values(), key=lambda m: (m.name, m.family is not None, m.family or "")):
            entry = out.setdefault(metric.name, metric.to_json())
            if metric.family:
                entry.setdefault("families", {})[metric.family] = {"unit": metric.unit, "label": metric.label}
        return out

    @classmethod
    def from_json(cls, data: Any) -> Declarations:
        """Declarations as ``summary.json`` stores them; a malformed entry is one line of bad input."""
        if not isinstance(data, Mapping):
            raise RobustEvalError(f"summary declarations: expected a mapping name → declaration, got {data!r}")
        out = []
        for name, item in data.items():
            direction = item.get("higher_is_better", "") if isinstance(item, Mapping) else ""
            if direction not in (True, False, None):
                raise RobustEvalError(f"summary declaration of {name!r}: expected higher_is_better true, false or "
                                      f"null, got {item!r}")
            families = item.get("families", {})
            if not isinstance(families, Mapping) or not all(isinstance(f, Mapping) for f in families.values()):
                raise RobustEvalError(f"summary declaration of {name!r}: expected families, a mapping family → "
                                      f"{{unit, label}}, got {families!r}")
            out.append(Metric(str(name), direction, str(item.get("unit", "")), str(item.get("label", ""))))
            out += [Metric(str(name), direction, str(f.get("unit", "")), str(f.get("label", "")), str(family))
                    for family, f in families.items()]
        return cls(out)

    @classmethod
    def of_summary(cls, summary: Mapping[str, Any]) -> Declarations:
        """The declarations a summary carries; one without them (written before they were stored, or made by
        hand) gets the built-in ones. Every metric the summary holds must be declared."""
        keys = summary_keys(summary)
        if "declarations" not in summary:
            return BUILTIN.resolved(keys)
        declarations = cls.from_json(summary["declarations"])
        for key in keys:
            declarations.spec(key)
        return declarations


def summary_keys(summary: Mapping[str, Any]) -> set[str]:
    """Every metric key any model of ``summary`` holds."""
    return {k for m in summary.get("models") or [] for k in (m.get("metrics") or {})}


BUILTIN = Declarations(m for row in METRICS.values() for m in row)
"""Every built-in declaration (two producers of one name qualify theirs by family: ``calibration/mce``,
``corruption/mce``)."""
