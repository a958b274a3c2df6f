"""The executor seam: where the family is built, shards computed and models attacked, and its settings.

Two executors exist: :class:`robusteval.engine.core.LocalExecutor` (this process, the default) and
:class:`robusteval.engine.ray.RayExecutor` (Ray workers). Both write the same files; the engine alone
records. Importing this module imports neither torch nor Ray.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from robusteval.errors import RobustEvalError

if TYPE_CHECKING:
    import torch
    from torch import nn
    from tqdm import tqdm

    from robusteval.data.arrays import LabeledArrays
    from robusteval.engine.core import EngineSettings, Job, ModelEntry
    from robusteval.evaluators.adversarial import AdversarialSettings
    from robusteval.evaluators.base import Result
    from robusteval.pruning import FamilyMember, PruneSettings
    from robusteval.results import RunDir

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class EngineConfig:
    """``kind``: ``local`` (this process) or ``ray``; ``address``: the Ray cluster to join (default:
    ``RAY_ADDRESS``, else a local instance); resources per task, whose CPU share sets its torch threads."""

    kind: str = "local"
    address: str | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ENGINES:
            raise RobustEvalError(f"engine kind must be one of {', '.join(ENGINES)}, got {self.kind!r}")
        if not self.cpus_per_worker > 0 or self.gpus_per_worker < 0:
            raise RobustEvalError(f"engine: expected cpus_per_worker > 0 and gpus_per_worker >= 0, got "
                                  f"{self.cpus_per_worker} and {self.gpus_per_worker}")


class Executor(Protocol):
    """Where the work runs. The engine plans and records; an executor builds, computes and attacks."""

    def build_family(self, dense: nn.Module, *, settings: PruneSettings, example_input: torch.Tensor,
                     train_data: LabeledArrays | None, run: RunDir, progress: bool) -> Iterator[FamilyMember]:
        """The family of :func:`robusteval.pruning.build_family`, in its order, saved in the run directory."""

    def compute(self, jobs: list[Job], run: RunDir, settings: EngineSettings, bar: tqdm) -> Iterator[None]:
        """Compute every shard of each job, yielding once per job, in order, when its shards are saved."""

    def attack(self, models: list[ModelEntry], x: torch.Tensor, y: torch.Tensor, adversarial: AdversarialSettings,
               bar: tqdm) -> Iterator[tuple[Result, float]]:
        """The adversarial result and seconds of each model, in order; ``bar`` counts attacks done."""
