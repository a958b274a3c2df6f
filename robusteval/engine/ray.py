"""Scale-out with Ray (``engine: {kind: ray}``): shards, family members and attacks as Ray tasks.

The driver plans exactly as the local engine and stays the only writer of records; a task
computes one shard of one condition on every model that still needs it (each input batch is
made once per task) and saves the same atomic shard files, builds one group of the family
(:func:`robusteval.pruning.family.build_group`) into the run directory (from which the driver
loads it), or attacks one model.
The run directory must be on a filesystem every node sees at the same path.

A model travels once: a saved family member as its archive in the run directory, any other
model through Ray's object store; each worker process keeps what it has loaded. A worker that
dies is retried by Ray (``RETRIES``); as every write is atomic, a retry gives the same files.

Workers run on the run's device kind (:func:`check_device`): CPU, MPS, or with ``--device cuda`` the GPU
Ray assigns them; a GPU task's worker process serves that one task (Ray's ``max_calls=1`` for GPU tasks,
which ``.options`` would not apply), so it never keeps a GPU Ray has given to another task, nor its models.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from robusteval.conditions import Condition
from robusteval.data.arrays import LabeledArrays
from robusteval.device import exact_fp32, model_device
from robusteval.engine import store
from robusteval.engine.core import EngineSettings, Job, ModelEntry, attack_model, compute_shards, shard_plan
from robusteval.engine.executor import EngineConfig
from robusteval.errors import RobustEvalError, describe
from robusteval.escaping import visible
from robusteval.evaluators.adversarial import AdversarialSettings, plan
from robusteval.evaluators.base import Result
from robusteval.pruning import FamilyMember, PruneSettings, load_member
from robusteval.pruning.family import build_group, family_groups, member_id
from robusteval.results import RunDir

RETRIES = 3
"""Times Ray reruns a task whose worker died."""
RAY_MISSING = "--engine ray needs Ray, which is not installed: pip install 'robusteval[ray]'"

Shipped = tuple[str, Any]
"""How a model reaches workers: ("file", archive path) or ("object", [object ref])."""


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RobustEvalError(RAY_MISSING) from None
    return ray


def check_available(config: EngineConfig, device: torch.device) -> None:
    """A one-line error now, before anything is written, when ``kind: ray`` has no Ray to use or its
    workers could not run on ``device`` (:func:`check_device`)."""
    if config.kind == "ray":
        _ray()
        check_device(config, device)


def check_device(config: EngineConfig, device: torch.device) -> None:
    """Workers run where the run's records say: ``--device cuda`` needs GPUs from Ray (``gpus_per_worker`` > 0),
    and GPUs from Ray need ``--device cuda``."""
    if device.type == "cuda" and not config.gpus_per_worker > 0:
        raise RobustEvalError(f"engine: --device {device} with Ray needs gpus_per_worker > 0 (e.g. 1, or 0.25 to "
                              "share a GPU between 4 tasks); with 0 the workers would run on CPU")
    if device.type != "cuda" and config.gpus_per_worker > 0:
        raise RobustEvalError(f"engine: gpus_per_worker is {config.gpus_per_worker:g} but the run's device is "
                              f"{device}; use --device cuda (the driver needs a GPU too), or gpus_per_worker: 0")


@contextmanager
def ray_executor(config: EngineConfig, run: RunDir, device: torch.device) -> Iterator[RayExecutor]:
    """Join the cluster at ``address`` / ``RAY_ADDRESS`` or start a local Ray instance (shut down after),
    or use the one this process already runs; workers run on ``device``'s kind."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        address = config.address or os.environ.get("RAY_ADDRESS") or None
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError, ... by version
            where = f" at {address}" if address else ""
            raise RobustEvalError(f"cannot start or join Ray{where}: {describe(exc)}") from None
    try:
        yield RayExecutor(config, run, ray, device)
    finally:
        if started:
            ray.shutdown()


class RayExecutor:
    """The :class:`~robusteval.engine.executor.Executor` on Ray workers."""

    def __init__(self, config: EngineConfig, run: RunDir, ray: Any, device: torch.device) -> None:
        self.config, self.run, self.ray = config, run, ray
        check_device(config, device)
        self._check_resources()
        self._shard, self._build, self._attack = (self.remote(f) for f in (_shard_task, _build_task, _attack_task))
        self._worker = Worker(max(1, int(config.cpus_per_worker)), device.type)
        self._objects: dict[int, Any] = {}  # id() of a put object -> its ref, so each travels once

    def remote(self, function: Any) -> Any:
        """``function`` as a Ray task with this engine's resources; on GPUs, one task per worker process."""
        gpu = self.config.gpus_per_worker > 0
        remote = self.ray.remote(max_calls=1)(function) if gpu else self.ray.remote(function)
        return remote.options(num_cpus=self.config.cpus_per_worker, num_gpus=self.config.gpus_per_worker,
                              max_retries=RETRIES)

    def _check_resources(self) -> None:
        have = self.ray.cluster_resources()
        for name, want in (("CPU", self.config.cpus_per_worker), ("GPU", self.config.gpus_per_worker)):
            if want > have.get(name, 0):
                raise RobustEvalError(f"engine: a task asks for {want:g} {name}s but the Ray cluster has "
                                      f"{have.get(name, 0):g}; lower {name.lower()}s_per_worker")

    def _put(self, value: Any) -> Any:
        """``value``'s object ref (a module's CPU copy), put once; ``value`` stays referenced, so its id stays unique."""
        if id(value) not in self._objects:
            shipped = _on_cpu(value) if isinstance(value, nn.Module) else value
            self._objects[id(value)] = (value, self.ray.put(shipped))
        return self._objects[id(value)][1]

    def _ship(self, entry: ModelEntry) -> Shipped:
        archive = store.member_archive(self.run, entry.id)
        if archive is not None:
            return "file", str(archive)
        return "object", [self._put(entry.module)]

    def compute(self, jobs: list[Job], run: RunDir, settings: EngineSettings, bar: tqdm) -> Iterator[None]:
        submitted = []
        for condition, forward in jobs:
            detached, arrays = self._detach(condition)
            tasks = []
            for k, n, pending in shard_plan(condition, forward, run, settings):
                bar.update(n * (len(forward) - len(pending)))
                if pending:
                    models = [(m.id, self._ship(m)) for m in pending]
                    ref = self._shard.remote(detached, arrays, models, k, str(run.path), settings, self._worker)
                    tasks.append((ref, n * len(pending), condition.key))
            submitted.append(tasks)
        for tasks in submitted:
            self._wait(tasks, bar)
            yield

    def _detach(self, condition: Condition) -> tuple[Condition, dict[str, Any]]:
        """The condition without its arrays, and the arrays' object refs (shared by the conditions that share them)."""
        fields = {f: getattr(condition, f) for f in ("data", "space") if getattr(condition, f) is not None}
        return dataclasses.replace(condition, **dict.fromkeys(fields)), {f: self._put(a) for f, a in fields.items()}

    def _wait(self, tasks: list[tuple[Any, int, str]], bar: tqdm) -> None:
        left = {ref: (n, what) for ref, n, what in tasks}
        while left:
            done, _ = self.ray.wait(list(left), num_returns=1)
            n, what = left.pop(done[0])
            self._get(done[0], what)
            bar.update(n)
            bar.set_postfix_str(visible(what), refresh=False)

    def _get(self, ref: Any, what: str) -> Any:
        """A task's value; its failure as a one-line error (a worker that died every retry included)."""
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            if isinstance(cause, RobustEvalError):
                raise RobustEvalError(str(cause)) from None
            raise RobustEvalError(f"a Ray task ({what}) failed: {describe(cause)}") from None
        except ray.exceptions.RayError as exc:
            raise RobustEvalError(f"a Ray task ({what}) failed after {RETRIES} retries: "
                                  f"{describe(exc).splitlines()[0]}") from None

    def attack(self, models: list[ModelEntry], x: torch.Tensor, y: torch.Tensor, adversarial: AdversarialSettings,
               bar: tqdm) -> Iterator[tuple[Result, float]]:
        """Every model attacked by a task; ``bar`` advances by a model's attacks when its task is done."""
        refs = [self._attack.remote(self._ship(m), x, y, adversarial, self._worker) for m in models]
        for m, ref in zip(models, refs):
            bar.set_postfix_str(f"{visible(m.id)} (Ray)", refresh=False)
            result = self._get(ref, f"attacking {m.id}")
            bar.update(len(plan(adversarial)))
            yield result

    def build_family(self, dense: nn.Module, *, settings: PruneSettings, example_input: torch.Tensor,
                     train_data: LabeledArrays | None, run: RunDir, progress: bool) -> Iterator[FamilyMember]:
        """Build every group of the family but the dense one on workers into the run directory, then yield the
        family in the order of :func:`robusteval.pruning.build_family`: the dense member built (or reused) here,
        then each member as a worker saved it."""
        out_dir = store.models_dir(run)
        dense_group, *groups = family_groups(settings, train_data)
        dense_ref, train_ref = self._put(dense), None if train_data is None else self._put(train_data)
        tasks = [(self._build.remote(dense_ref, g, settings, example_input.cpu(), train_ref, str(out_dir),
                                     self._worker), 1, member_id(*g[0])) for g in groups]
        with tqdm(total=len(tasks), desc="pruning (ray)", disable=not progress) as bar:
            self._wait(tasks, bar)
        yield from build_group(dense, dense_group, settings=settings, example_input=example_input,
                               train_data=train_data, out_dir=out_dir)
        for mid in (member_id(*entry) for group in groups for entry in group):
            archive = store.member_archive(run, mid)
            if archive is None:
                raise RobustEvalError(f"family member {mid}: a Ray worker built it but its archive is missing in "
                                      f"{out_dir} (the run directory must be on a filesystem every node sees)")
            yield load_member(archive, model_device(dense))


def _on_cpu(module: nn.Module) -> nn.Module:
    return module if model_device(module).type == "cpu" else copy.deepcopy(module).cpu()


# --- on the workers ------------------------------------------------------------------------------------------------

_LOADED: dict[str, Any] = {}
"""What this worker process has loaded: models (on its device) and arrays, by archive path or object ref."""


@dataclass(frozen=True)
class Worker:
    """How a task sets up its worker: ``threads`` torch threads, on the run's ``device`` kind."""

    threads: int
    device: str

    def start(self) -> torch.device:
        """Threads, TF32 off, and the device to use: the run's kind (``cuda``: the GPU Ray assigned)."""
        torch.set_num_threads(self.threads)
        exact_fp32()
        if self.device == "cuda" and not _ray().get_gpu_ids():
            raise RobustEvalError("a Ray task for --device cuda got no GPU from Ray (gpus_per_worker > 0 is needed)")
        return torch.device(self.device)


def _model(shipped: Shipped, device: torch.device) -> nn.Module:
    kind, where = shipped
    key = where if kind == "file" else where[0].hex()
    if key not in _LOADED:
        module = load_member(Path(where), device).model if kind == "file" else _ray().get(where[0])
        _LOADED[key] = module.to(device).eval()
    return _LOADED[key]


def _arrays(ref: Any) -> LabeledArrays:
    key = ref.hex()
    if key not in _LOADED:
        _LOADED[key] = _ray().get(ref)
    return _LOADED[key]


def _shard_task(condition: Condition, arrays: dict[str, Any], models: Sequence[tuple[str, Shipped]], k: int,
                run_path: str, settings: EngineSettings, worker: Worker) -> None:
    device = worker.start()
    condition = dataclasses.replace(condition, **{f: _arrays(ref) for f, ref in arrays.items()})
    entries = [ModelEntry(mid, _model(shipped, device)) for mid, shipped in models]
    compute_shards(condition, entries, RunDir(run_path), settings, only=[k])


def _build_task(dense: nn.Module, group: list[tuple[str, float]], settings: PruneSettings,
                example_input: torch.Tensor, train_data: LabeledArrays | None, out_dir: str, worker: Worker) -> None:
    device = worker.start()
    build_group(dense.to(device).eval(), group, settings=settings, example_input=example_input.to(device),
                train_data=train_data, out_dir=Path(out_dir))


def _attack_task(shipped: Shipped, x: torch.Tensor, y: torch.Tensor, adversarial: AdversarialSettings,
                 worker: Worker) -> tuple[Result, float]:
    return attack_model(_model(shipped, worker.start()), x, y, adversarial)
