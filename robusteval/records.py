"""The record contract: one :class:`Record` per (model, condition), the ids of the baseline members.

Evaluators return an :class:`robusteval.evaluators.base.Result`; the engine alone turns results
into records (``Record.to_json`` is the line in ``records.jsonl``).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DENSE_ID = "dense"
"""Id of the dense model as given."""
CONTROL_ID = "dense+ft"
"""Id (and method) of the control member: the dense model given the pruned members' recovery budget."""
SCRATCH_SUFFIX = "+scratch"
"""Method suffix of the pruned architectures re-initialised and trained from scratch (Crowley et al. 2018)."""


@dataclass(frozen=True)
class Record:
    """One model's metrics on one condition: flat ``metrics`` keyed by the metric contract
    (:mod:`robusteval.metrics`), JSON-able ``details`` per evaluator, ``warnings`` (e.g. failed
    attack checks), how the inputs were made (``note``, ``meta``), per-sample top-1 correctness
    (``correct``, packed bits), on the clean data the top-1 predictions (``predicted``) and ``provenance`` (config digest, seed, device, precision)."""

    model: str
    condition: str
    family: str
    n: int
    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    note: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)
    correct: str | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    predicted: str | None = None  # per-sample top-1 predictions on the clean data (packed ints)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "condition": self.condition, "family": self.family, "n": self.n,
                               "metrics": {k: float(v) for k, v in self.metrics.items()}, "details": self.details,
                               "warnings": list(self.warnings), "note": self.note, "meta": dict(self.meta)}
        if self.correct is not None:
            out["correct"] = self.correct
        if self.predicted is not None:
            out["predicted"] = self.predicted
        return out | dict(self.provenance) | {"seconds": round(self.seconds, 4)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        """A line of ``records.jsonl``: the keys :meth:`to_json` writes; every other key is provenance.
        Keys a hand-made record may lack read as empty (``model``/``family`` "", ``n`` 0, no metrics)."""
        known = {"model", "condition", "family", "n", "metrics", "details", "warnings", "note", "meta", "correct",
                 "predicted", "seconds"}
        return cls(str(data.get("model") or ""), str(data.get("condition") or ""), str(data.get("family") or ""),
                   int(data.get("n") or 0),
                   dict(data.get("metrics") or {}), dict(data.get("details") or {}), tuple(data.get("warnings") or ()),
                   str(data.get("note") or ""), dict(data.get("meta") or {}), data.get("correct"),
                   {k: v for k, v in data.items() if k not in known}, float(data.get("seconds") or 0.0),
                   data.get("predicted"))


def as_records(items: Iterable[Record | Mapping[str, Any]]) -> list[Record]:
    """Records from records or their JSON lines."""
    return [r if isinstance(r, Record) else Record.from_json(r) for r in items]
