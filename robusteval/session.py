"""One run of ``audit`` or ``prune`` as one object: what every stage reads (the run directory, the config,
the device, the executor), built once by :mod:`robusteval.api`; and the process settings a run changes,
given back when it returns or raises (:func:`torch_settings`)."""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from robusteval.config import AuditConfig
from robusteval.engine.core import LocalExecutor
from robusteval.results import RunDir

if TYPE_CHECKING:
    from robusteval.engine.executor import Executor


@dataclass(frozen=True)
class Session:
    """What the stages of a run share; nothing changes it (a stage that needs more takes it as an argument).
    ``digest``: ``config.digest()``, computed once; ``executor``: where the work runs, this process until
    the run's executor (Ray workers, say) starts, after every input has been read."""

    run: RunDir
    config: AuditConfig
    device: torch.device
    digest: str
    progress: bool = True
    command: tuple[str, ...] = ()
    started: float = field(default_factory=time.time)
    executor: Executor = field(default_factory=LocalExecutor)


@contextmanager
def torch_settings(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``threads`` (None: left as they are) for the duration; on return or raise the
    caller's threads come back, and so do TF32 flags (``resolve_device`` switches TF32 off on CUDA)."""
    saved = (torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        if threads:
            torch.set_num_threads(threads)
        yield
    finally:
        if torch.get_num_threads() != saved[0]:
            torch.set_num_threads(saved[0])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[1:]
