"""The evaluator contract: every evaluator receives its inputs and returns a :class:`Result`.

``Evaluator.__call__`` is the one entry point (a template method in the spirit of foolbox's final
``__call__`` around ``run``): it runs the evaluator and checks that each metric it returns is one it
declared (``declares``: built-in evaluators name their row of :data:`robusteval.declarations.METRICS`;
a direction that contradicts a built-in declaration or another evaluator's is an error when the class is
defined). Metric
names are relative to the evaluator; the engine alone turns results into records and keys
(``ece`` on the clean condition becomes ``calibration/ece``). Evaluators never load models, make
inputs or write records.

Two kinds exist: :class:`LogitEvaluator` reads the logits the engine computed on a condition
(:class:`Outputs`, accumulated with ``update`` when fed in batches); the adversarial evaluator
receives the model and the images to attack.
"""
from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar, final

import torch

from robusteval.declarations import BUILTIN, Declarations, Metric
from robusteval.registry import Registry

In = TypeVar("In")
DEFAULT_BATCH_SIZE = 250
"""Images per forward pass unless the run sets ``data.batch_size``."""
DENSE_LOGITS = "dense_logits"
"""A need (:attr:`LogitEvaluator.needs`): the dense model's logits on the same inputs (``Outputs.dense``)."""
CLEAN_LOGITS = "clean_logits"
"""A need: this model's logits on the clean data (``Outputs.clean``)."""


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


@dataclass
class Result:
    """What an evaluator hands back: flat metrics (relative names), JSON-able details, warnings."""

    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class Evaluator(ABC, Generic[In]):
    """Computes one model's metrics on one condition's inputs; subclasses implement :meth:`run`."""

    name: ClassVar[str]
    declares: ClassVar[tuple[Metric, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _check_declares(cls)  # a contradiction is a ValueError here, not in a finished run
        _DEFINED[_class_id(cls)] = cls

    @final
    def __call__(self, inputs: In) -> Result:
        result = self.run(inputs)
        for key, value in result.metrics.items():
            name = key.rsplit("/", 1)[-1]
            if not any(m.covers(name) for m in self.declares):
                raise TypeError(f"{type(self).__name__} returned {key!r}, a metric it does not declare")
            result.metrics[key] = float(value)
        return result

    @abstractmethod
    def run(self, inputs: In) -> Result:
        """The metrics of one model on one whole condition."""


_DEFINED: weakref.WeakValueDictionary[str, type[Evaluator]] = weakref.WeakValueDictionary()
"""Every evaluator class defined and alive, by module and qualified name (a redefinition replaces its class)."""


def _class_id(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _check_declares(cls: type[Evaluator]) -> None:
    """A ValueError when ``cls`` declares a metric with the opposite direction of a built-in declaration or
    of another evaluator class's."""
    BUILTIN.extended(cls.declares)
    for other in list(_DEFINED.values()):
        if _class_id(other) != _class_id(cls):
            try:
                Declarations(other.declares).extended(cls.declares)
            except ValueError as e:
                raise ValueError(f"{cls.__qualname__}: {e} (by {other.__qualname__} too)") from None


def evaluator_declarations() -> Declarations:
    """The built-in declarations and those of every evaluator class defined (a user's own included): what
    the summary writer stores for the metrics a run holds."""
    return BUILTIN.extended(m for cls in list(_DEFINED.values()) for m in cls.declares)


class LogitEvaluator(Evaluator[Outputs]):
    """An evaluator of logits; ``update``/``compute`` accumulate batches for callers that stream.
    ``needs``: the logits it reads besides the model's own (:data:`DENSE_LOGITS`, :data:`CLEAN_LOGITS`),
    which the engine computes and passes only when an evaluator switched on for the condition needs them."""

    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        self._parts: list[Outputs] = []

    def run(self, inputs: Outputs) -> Result:
        return Result(self.metrics(inputs), self.details(inputs))

    def update(self, outputs: Outputs) -> None:
        self._parts.append(outputs)

    def compute(self) -> dict[str, float]:
        return self(self._whole()).metrics

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


@dataclass(frozen=True)
class Use:
    """Where a logit evaluator runs: on conditions of ``families``, made by ``make`` from the
    ``evaluate`` settings section (None: switched off there)."""

    families: tuple[str, ...]
    make: Callable[[Any], LogitEvaluator | None]


LOGIT_EVALUATORS: Registry[Use] = Registry("evaluator")
"""Filled beside each evaluator's definition; :func:`evaluators_for` asks it."""


def evaluators_for(family: str, settings: Any) -> list[LogitEvaluator]:
    """Fresh evaluators for one model on a condition of ``family`` (``settings``: the evaluate section)."""
    made = (LOGIT_EVALUATORS.get(name).make(settings) for name in LOGIT_EVALUATORS
            if family in LOGIT_EVALUATORS.get(name).families)
    return [e for e in made if e is not None]


def concat_outputs(parts: list[Outputs]) -> Outputs:
    """Concatenate batches of outputs along the sample dimension."""

    def cat(name: str) -> torch.Tensor | None:
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else torch.cat(values)

    first_clean = parts[0].clean  # the clean reference is the whole set, not per batch
    return Outputs(cat("logits"), cat("labels"), cat("dense"), first_clean)  # type: ignore[arg-type]
