"""The evaluator contract: the engine hands logits in, evaluators hand flat metrics out.

Evaluators never load models or make inputs. The engine runs every model of the family on
the same inputs of a condition and calls ``update`` with what it computed; ``compute``
returns ``{name: value}`` with names relative to the evaluator (the engine prefixes them,
e.g. ``ece`` on the clean condition becomes ``calibration/ece``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch


@dataclass(frozen=True)
class Outputs:
    """One model's outputs on (part of) one condition.

    ``labels`` are -1 where unknown (out-of-distribution inputs). ``dense`` holds the dense
    model's logits on the same inputs (None when this model is the dense one); ``clean``
    holds this model's logits on the clean in-distribution data (set for OOD conditions).
    """

    logits: torch.Tensor
    labels: torch.Tensor
    dense: torch.Tensor | None = None
    clean: torch.Tensor | None = None


class Evaluator(ABC):
    """Accumulates one model's outputs on one condition, then computes metrics once.

    Subclasses write ``metrics``; ``update``/``compute`` are the engine's interface.
    """

    name: ClassVar[str]

    def __init__(self) -> None:
        self._parts: list[Outputs] = []

    def update(self, outputs: Outputs) -> None:
        self._parts.append(outputs)

    def compute(self) -> dict[str, float]:
        return self.metrics(self._whole())

    def compute_details(self) -> dict[str, Any]:
        """Non-scalar, JSON-able results (curves, histograms) kept in the record for the report."""
        return self.details(self._whole())

    def _whole(self) -> Outputs:
        if not self._parts:
            raise ValueError(f"{self.name}: compute() called before any update()")
        if len(self._parts) > 1:
            self._parts = [concat_outputs(self._parts)]
        return self._parts[0]

    @abstractmethod
    def metrics(self, outputs: Outputs) -> dict[str, float]:
        """Metrics of one model on one whole condition."""

    def details(self, outputs: Outputs) -> dict[str, Any]:
        """Override to keep curves or bins; none by default."""
        return {}


def concat_outputs(parts: list[Outputs]) -> Outputs:
    """Concatenate batches of outputs along the sample dimension."""

    def cat(name: str) -> torch.Tensor | None:
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else torch.cat(values)

    first_clean = parts[0].clean  # the clean reference is the whole set, not per batch
    return Outputs(cat("logits"), cat("labels"), cat("dense"), first_clean)  # type: ignore[arg-type]
