"""The member card: one typed description of a family member, from pruning to report and gate.

A :class:`MemberCard` is built once where a member is made (:mod:`robusteval.pruning.family`,
:mod:`robusteval.pruning.given`), written as a line of ``models.jsonl`` (:meth:`MemberCard.to_json`,
the keys of earlier versions plus ``role``), copied into ``summary.json`` and read back by
:meth:`MemberCard.from_json` (:func:`summary_cards` for a summary), which also reads lines written
before roles existed. Which members are references (the dense model, the control) and which are
candidates is decided here, by role, and nowhere else.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from robusteval.errors import RobustEvalError
from robusteval.records import CONTROL_ID, DENSE_ID, SCRATCH_SUFFIX

ROLES = ("dense", "control", "scratch", "pruned", "given")
"""dense: the model as given; control: the dense model with the pruned members' recovery budget;
scratch: a pruned architecture trained from scratch; pruned: pruned here; given: pruned elsewhere
(``audit --reference``)."""
GIVEN = "given"
"""Method (and role) of a model pruned elsewhere and audited against its dense reference."""
REFERENCE_ROLES = frozenset({"dense", "control"})
CANDIDATE_ROLES = frozenset({"pruned", "given"})
BUILT_ROLES = frozenset({"control", "scratch", "pruned"})


@dataclass(frozen=True)
class Costs:
    """What a member costs (:func:`robusteval.pruning.stats.model_info`): size, MACs, sparsity and,
    when timed, latency per batch key with the speed-up the report states. None: not measured."""

    sparsity: float | None = None
    params: int | None = None
    nonzero_params: int | None = None
    macs: int | None = None
    macs_effective: float | None = None
    layer_sparsity: Mapping[str, float] | None = None
    collapsed_layers: tuple[str, ...] | None = None
    params_reduction: float | None = None
    macs_reduction: float | None = None
    latency_ms: Mapping[str, float] | None = None
    latency_iqr_ms: Mapping[str, list[float]] | None = None
    latency_runs: Mapping[str, int] | None = None
    dense_latency_ms: Mapping[str, float] | None = None
    dense_latency_iqr_ms: Mapping[str, list[float]] | None = None
    speedup_measured: Mapping[str, float] | None = None
    speedup_iqr: Mapping[str, list[float]] | None = None
    latency_device: str | None = None
    sparse_runtime: bool | None = None
    speedup: Mapping[str, float] | None = None
    speedup_basis: str | None = None

    stated: frozenset[str] = field(default=frozenset(), compare=False)
    """Keys the measurement stated even as None (e.g. ``macs`` of an ONNX graph with unknown ops): written back."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Costs:
        """The cost keys of ``data`` (a ``model_info`` dict or a models.jsonl line); other keys are ignored."""
        values = {k: data[k] for k in COST_KEYS if data.get(k) is not None}
        if "collapsed_layers" in values:
            values["collapsed_layers"] = tuple(values["collapsed_layers"])
        return cls(**values, stated=frozenset(k for k in COST_KEYS if k in data))

    def to_json(self) -> dict[str, Any]:
        """The costs under their models.jsonl keys: every measured one, and those stated unknown (null)."""
        out = {k: getattr(self, k) for k in COST_KEYS if getattr(self, k) is not None or k in self.stated}
        if "collapsed_layers" in out:
            out["collapsed_layers"] = list(out["collapsed_layers"])
        return out


COST_KEYS = tuple(f.name for f in dataclasses.fields(Costs) if f.name != "stated")


@dataclass(frozen=True)
class MemberCard:
    """One model of the family: its ``role`` (:data:`ROLES`), pruning ``method`` and target ``ratio``,
    ``costs``, ``recovery`` (fine-tuning steps, BatchNorm re-calibration, ...) and ``warnings``; for
    members pruned here also ``structured``, the method's ``citation``, the ``schedule`` and
    ``prune_seconds``; ``input_shape`` of a saved member; ``extra``: keys of a newer version, kept."""

    id: str
    role: str
    method: str
    ratio: float
    costs: Costs = field(default_factory=Costs)
    recovery: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    structured: bool | None = None
    citation: str | None = None
    schedule: str | None = None
    prune_seconds: float | None = None
    input_shape: tuple[int, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise RobustEvalError(f"model {self.id!r}: expected a role among {', '.join(ROLES)}, got {self.role!r}")

    @property
    def is_reference(self) -> bool:
        """An unpruned model (the dense one or its control): drops are measured against one of them."""
        return self.role in REFERENCE_ROLES

    @property
    def built_here(self) -> bool:
        """Made by the pruning stage (pruned, control, scratch): its recovery is the run's to report."""
        return self.role in BUILT_ROLES

    @property
    def is_candidate(self) -> bool:
        """A pruned model under audit (pruned here or given); references and from-scratch baselines are not."""
        return self.role in CANDIDATE_ROLES

    def replace(self, **changes: Any) -> MemberCard:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The models.jsonl line: the keys of earlier versions (``target_ratio``, costs flat, ``reference``
        for the citation) plus ``role``."""
        out: dict[str, Any] = {"id": self.id, "role": self.role, "method": self.method, "target_ratio": self.ratio}
        out.update(self.costs.to_json())
        for key, value in (("structured", self.structured), ("reference", self.citation),
                           ("schedule", self.schedule), ("prune_seconds", self.prune_seconds)):
            if value is not None:
                out[key] = value
        out.update(warnings=list(self.warnings), recovery=dict(self.recovery))
        if self.input_shape is not None:
            out["input_shape"] = list(self.input_shape)
        return out | {k: v for k, v in self.extra.items() if k not in out}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MemberCard:
        """A models.jsonl line or summary entry (its ``metrics`` are not part of the card); a line written
        before roles existed gets the role its method implies (:func:`role_of`). A hand-made entry may lack
        any key but the method or the id."""
        model_id = str(data.get("id") or "")
        method = str(data.get("method") or model_id)
        ratio = data.get("target_ratio")
        shape = data.get("input_shape")
        known = {"id", "role", "method", "target_ratio", "structured", "reference", "schedule", "prune_seconds",
                 "warnings", "recovery", "input_shape", "metrics", *COST_KEYS}
        return cls(model_id, str(data.get("role") or role_of(model_id, method)), method,
                   float(data.get("sparsity") or 0.0) if ratio is None else float(ratio),
                   Costs.from_json(data), dict(data.get("recovery") or {}), tuple(data.get("warnings") or ()),
                   data.get("structured"), data.get("reference"), data.get("schedule"), data.get("prune_seconds"),
                   None if shape is None else tuple(shape), {k: v for k, v in data.items() if k not in known})


def role_of(model_id: str, method: str) -> str:
    """The role a member of an older run had, from its id and method."""
    if model_id == DENSE_ID or method == DENSE_ID:
        return "dense"
    if method == CONTROL_ID:
        return "control"
    if method.endswith(SCRATCH_SUFFIX):
        return "scratch"
    return GIVEN if method == GIVEN else "pruned"


def as_cards(entries: Iterable[MemberCard | Mapping[str, Any]]) -> list[MemberCard]:
    """Cards from cards or their JSON (models.jsonl lines, summary entries)."""
    return [e if isinstance(e, MemberCard) else MemberCard.from_json(e) for e in entries]


def summary_cards(summary: Mapping[str, Any]) -> list[MemberCard]:
    """The cards of a summary's models, where the models it names ``dense`` and ``baseline`` are references
    whatever their lines say (a hand-made summary's or an old run's line may carry no role, and an id and method
    that do not tell it): the dense one has role dense, a baseline other than it role control."""
    roles = {summary.get("baseline"): "control", summary.get("dense"): "dense"}
    return [c.replace(role=roles[c.id]) if c.id in roles and not c.is_reference else c
            for c in as_cards(summary.get("models") or [])]


def member_with_role(cards: Iterable[MemberCard], role: str) -> str | None:
    """The id of the first member with ``role`` (e.g. the control), None when there is none."""
    return next((c.id for c in cards if c.role == role), None)


def dense_id(cards: Iterable[MemberCard]) -> str:
    """The id of the dense model: the member with role dense (:data:`DENSE_ID` while none is registered)."""
    return member_with_role(cards, "dense") or DENSE_ID


def reference_ids(cards: Iterable[MemberCard]) -> tuple[str, ...]:
    """Ids of the unpruned references (the dense model, the control), in order."""
    return tuple(c.id for c in cards if c.is_reference)


def candidate_ids(cards: Iterable[MemberCard]) -> tuple[str, ...]:
    """Ids of the pruned models under audit (not the references, not the from-scratch baselines), in order."""
    return tuple(c.id for c in cards if c.is_candidate)
