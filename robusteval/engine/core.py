"""The audit engine: every batch of a condition is made once and fed to every model; then the attacks.

Work is cut into shards (a few batches of one condition). Each model's logits for a shard
are saved atomically under ``shards/``; when every shard of a condition is done, the
evaluators run, one record per (model, condition) is appended, and the shards are deleted.
A run killed at any moment loses at most the shard in flight; a rerun skips what is done.
The attack stage (:func:`run_attacks`) gives each model the same sample to attack. The engine
is the only writer of records (:func:`_write`): evaluators return results, never records. Which
logits an evaluator reads besides the model's own (``needs``) decides what is computed and loaded;
where the work runs is an :class:`~robusteval.engine.executor.Executor`; file names: :mod:`.store`.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm import tqdm

from robusteval.conditions import Condition, transfer_condition
from robusteval.device import autocast, free_cached_memory, is_out_of_memory, model_device, pinned, to_device
from robusteval.engine import store
from robusteval.errors import RobustEvalError, warn
from robusteval.escaping import visible
from robusteval.evaluators.accuracy import per_sample_correct
from robusteval.evaluators.adversarial import AdversarialEvaluator, AttackInputs, craft_transfer, plan
from robusteval.evaluators.base import CLEAN_LOGITS, DENSE_LOGITS, Evaluator, Outputs, Result, evaluators_for
from robusteval.files import write_atomic
from robusteval.metrics import metric_key
from robusteval.models.wrap import has_gradients, run_batch
from robusteval.pruning import build_family
from robusteval.records import DENSE_ID, Record
from robusteval.results import RunDir, encode_bits, encode_ints

if TYPE_CHECKING:
    from robusteval.data.arrays import LabeledArrays
    from robusteval.engine.executor import Executor
    from robusteval.evaluators.adversarial import AdversarialSettings
    from robusteval.evaluators.settings import EvaluateSettings
    from robusteval.pruning import FamilyMember, PruneSettings

WHITE_BOX_SKIPPED = ("white-box attacks skipped: the model runs in onnxruntime, which gives no gradients; its "
                     "adversarial numbers are the transfer attacks crafted on the torch reference (--reference)")


@dataclass(frozen=True)
class ModelEntry:
    """One model of the family as the engine sees it."""

    id: str
    module: nn.Module


@dataclass(frozen=True)
class EngineSettings:
    """Batching (``batch_size`` images per forward pass, ``shard_size`` per saved shard), progress bars,
    the provenance every record carries (config digest, seed, device, precision), and how forward
    passes run: ``precision`` (autocast, see :mod:`robusteval.device`), ``channels_last`` inputs."""

    batch_size: int
    shard_size: int
    progress: bool = True
    provenance: tuple[tuple[str, Any], ...] = ()
    precision: str = "fp32"
    channels_last: bool = False


Job = tuple[Condition, list[ModelEntry]]
"""One condition and the models to run on it."""


class LocalExecutor:
    """The :class:`~robusteval.engine.executor.Executor` of this process (the default): one job after the other."""

    def build_family(self, dense: nn.Module, *, settings: PruneSettings, example_input: torch.Tensor,
                     train_data: LabeledArrays | None, run: RunDir, progress: bool) -> Iterator[FamilyMember]:
        yield from build_family(dense, settings=settings, example_input=example_input, train_data=train_data,
                                out_dir=store.models_dir(run), progress=progress)

    def compute(self, jobs: list[Job], run: RunDir, settings: EngineSettings, bar: tqdm) -> Iterator[None]:
        for condition, forward in jobs:
            compute_shards(condition, forward, run, settings, bar)
            yield

    def attack(self, models: list[ModelEntry], x: torch.Tensor, y: torch.Tensor, adversarial: AdversarialSettings,
               bar: tqdm) -> Iterator[tuple[Result, float]]:
        for m in models:
            bar.set_postfix_str(visible(m.id), refresh=False)
            yield attack_model(m.module, x, y, adversarial, attacked=lambda _: bar.update())


def attack_model(module: nn.Module, x: torch.Tensor, y: torch.Tensor, adversarial: AdversarialSettings,
                 attacked: Callable[[str], None] | None = None) -> tuple[Result, float]:
    """One model's adversarial result on the sample, and the seconds it took (``attacked``: see
    :class:`AdversarialEvaluator`)."""
    start = time.perf_counter()
    result = AdversarialEvaluator(adversarial, attacked)(AttackInputs(module, x, y))
    return result, time.perf_counter() - start


IN_PROCESS = LocalExecutor()
"""The default executor (it holds no state)."""


def run_conditions(models: Sequence[ModelEntry], conditions: Sequence[Condition], run: RunDir,
                   evaluate: EvaluateSettings, settings: EngineSettings, executor: Executor = IN_PROCESS) -> None:
    """Evaluate every model on every condition with the evaluators ``evaluate`` switches on, skipping
    (model, condition) pairs already recorded. Conditions are recorded in order, whoever computes them."""
    by_id = {m.id: m for m in models}
    if DENSE_ID not in by_id:
        raise ValueError("the family must contain the dense model")
    done = run.done()
    plan = [(c, [m for m in models if (m.id, c.key) not in done]) for c in conditions]
    plan = [(c, todo) for c, todo in plan if todo]
    jobs = [(c, _forward_set(c, todo, by_id, evaluate)) for c, todo in plan]
    total = sum(len(c) * len(forward) for c, forward in jobs)
    with tqdm(total=total, unit="img", disable=not settings.progress, desc="evaluating", smoothing=0.05) as bar:
        for (condition, todo), _ in zip(plan, executor.compute(jobs, run, settings, bar)):
            _record(condition, todo, run, evaluate, settings)
            shutil.rmtree(store.shard_dir(run, condition), ignore_errors=True)


def _forward_set(condition: Condition, todo: list[ModelEntry], by_id: dict[str, ModelEntry],
                 evaluate: EvaluateSettings) -> list[ModelEntry]:
    """Models to run: those without a record, plus dense when an evaluator of a pruned one needs its logits."""
    needs_dense = _needed(condition, evaluate, DENSE_LOGITS) and any(m.id != DENSE_ID for m in todo)
    if needs_dense and all(m.id != DENSE_ID for m in todo):
        return [by_id[DENSE_ID], *todo]
    return list(todo)


def _needed(condition: Condition, evaluate: EvaluateSettings, what: str) -> bool:
    """Whether an evaluator switched on for ``condition`` reads ``what`` (its ``needs``)."""
    return any(what in e.needs for e in evaluators_for(condition.family, evaluate))


def shard_count(condition: Condition, settings: EngineSettings) -> int:
    return len(_batches(len(condition), settings))


def shard_plan(condition: Condition, forward: list[ModelEntry], run: RunDir,
               settings: EngineSettings) -> list[tuple[int, int, list[ModelEntry]]]:
    """(shard index, its number of images, the models of ``forward`` that have not saved it) per shard."""
    return [(k, shard[-1][1] - shard[0][0],
             [m for m in forward if not store.shard_path(run, condition, m.id, k).is_file()])
            for k, shard in enumerate(_batches(len(condition), settings))]


def _batches(n: int, settings: EngineSettings) -> list[list[tuple[int, int, int]]]:
    """Shards as lists of (start, stop, batch index); batch i always covers the same samples."""
    bs = settings.batch_size
    per_shard = max(1, settings.shard_size // bs)
    batches = [(i * bs, min(n, (i + 1) * bs), i) for i in range((n + bs - 1) // bs)]
    return [batches[i:i + per_shard] for i in range(0, len(batches), per_shard)]


def compute_shards(condition: Condition, forward: list[ModelEntry], run: RunDir, settings: EngineSettings,
                   bar: tqdm | None = None, only: Sequence[int] | None = None) -> None:
    """Save each model's logits on every shard of ``condition`` (or the shards ``only``) not saved yet."""
    shards = _batches(len(condition), settings)
    bar = bar if bar is not None else tqdm(disable=True)
    work = []
    for k, n, pending in shard_plan(condition, forward, run, settings):
        if only is not None and k not in only:
            continue
        bar.update(n * (len(forward) - len(pending)))
        work += [(k, b, pending) for b in shards[k]] if pending else []
    bar.set_postfix_str(visible(condition.key), refresh=False)
    partial: dict[str, list[torch.Tensor]] = {}
    halved: set[str] = set()
    devices = {model_device(m.module) for m in forward}
    made_on = next(iter(devices)) if len(devices) == 1 else torch.device("cpu")
    pin = any(d.type == "cuda" for d in devices) and made_on.type == "cpu"
    for (k, (start, stop, index), pending), x in zip(work, _prefetch(condition, work, made_on, pin)):
        on_device: dict[torch.device, torch.Tensor] = {}
        with torch.inference_mode():
            for m in pending:
                device = model_device(m.module)
                if device not in on_device:
                    on_device[device] = to_device(x, device, channels_last=settings.channels_last)
                with autocast(device, settings.precision):
                    logits = _forward(m, on_device[device], condition, halved)
                partial.setdefault(m.id, []).append(condition.restrict(logits.float().cpu()))
        bar.update((stop - start) * len(pending))
        if index == shards[k][-1][2]:  # last batch of the shard: persist it
            for m in pending:
                store.save_logits(store.shard_path(run, condition, m.id, k), torch.cat(partial.pop(m.id)))


def _forward(m: ModelEntry, x: torch.Tensor, condition: Condition, halved: set[str]) -> torch.Tensor:
    """``m``'s logits on ``x``; a batch that runs out of device memory is retried in halves (the same
    logits: every sample's forward pass is independent in eval mode), said once per condition."""
    try:
        return run_batch(m.module, x, f"model {m.id!r}")
    except Exception as exc:  # torch's out-of-memory error (CUDA), a RuntimeError on MPS
        if not is_out_of_memory(exc):
            raise
        if len(x) == 1:
            raise RobustEvalError(f"model {m.id!r} runs out of device memory on a single input of "
                                  f"{condition.key}") from None
    free_cached_memory()
    if condition.key not in halved:
        halved.add(condition.key)
        warn(f"{condition.key}: model {m.id!r} ran out of device memory on a batch of {len(x)}; retrying in halves "
             "(a smaller --batch-size avoids the retries)")
    half = len(x) // 2
    return torch.cat([_forward(m, x[:half], condition, halved), _forward(m, x[half:], condition, halved)])


def _prefetch(condition: Condition, work: list, device: torch.device, pin: bool) -> Iterator[torch.Tensor]:
    """Make the next batch's inputs in a worker thread while models run on the current one: on
    ``device`` when every model is on that one accelerator, else on CPU (in page-locked memory
    when ``pin``, so the copy to a CUDA device is asynchronous). On MPS, in this thread, one batch
    after the other: MPS work from two threads at once can abort the process (pytorch#197805)."""
    if not work:
        return

    def make(start: int, stop: int, index: int) -> torch.Tensor:
        return pinned(condition.inputs(start, stop, index, device), pin)

    if device.type == "mps":
        yield from (make(*w[1]) for w in work)
        return

    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(make, *work[0][1])
        for j in range(len(work)):
            x = future.result()
            if j + 1 < len(work):
                future = pool.submit(make, *work[j + 1][1])
            yield x


def _record(condition: Condition, todo: list[ModelEntry], run: RunDir, evaluate: EvaluateSettings,
            settings: EngineSettings) -> None:
    labels = condition.labels(0, len(condition))
    n_shards = shard_count(condition, settings)
    wants_dense = _needed(condition, evaluate, DENSE_LOGITS) and store.has_shards(run, condition, DENSE_ID)
    dense = store.load_logits(run, condition, DENSE_ID, n_shards) if wants_dense else None
    wants_clean = _needed(condition, evaluate, CLEAN_LOGITS)
    for m in todo:
        start = time.perf_counter()
        logits = store.load_logits(run, condition, m.id, n_shards)
        if not torch.isfinite(logits).all():
            raise RobustEvalError(f"model {m.id} produced NaN or infinite logits on condition {condition.key}")
        clean = store.clean_logits(run, m.id) if wants_clean else None
        outputs = Outputs(logits, labels, None if m.id == DENSE_ID else dense, clean)
        evaluated = [(e, e(outputs)) for e in evaluators_for(condition.family, evaluate)]
        correct = encode_bits(per_sample_correct(logits, labels)) if condition.labelled else None
        predicted = None
        if condition.key == "clean":
            store.save_logits(store.clean_path(run, m.id), logits)
            predicted = encode_ints(logits.argmax(dim=1).numpy())
        record = _as_record(m.id, (condition.key, condition.family), len(labels), evaluated, condition=condition,
                            correct=correct, provenance=dict(settings.provenance), seconds=time.perf_counter() - start)
        _write(run, dataclasses.replace(record, predicted=predicted))


def _as_record(model: str, where: tuple[str, str], n: int, evaluated: Sequence[tuple[Evaluator, Any]], *,
               provenance: dict[str, Any], seconds: float, condition: Condition | None = None,
               correct: str | None = None) -> Record:
    """One record from every evaluator's result on ``where`` (condition key, family): keys by the metric
    contract, details under each evaluator's name, warnings in order."""
    key, family = where
    metrics = {metric_key(e.name, key, family, k): v for e, r in evaluated for k, v in r.metrics.items()}
    details = {e.name: r.details for e, r in evaluated if r.details}
    warnings = tuple(w for _, r in evaluated for w in r.warnings)
    note, meta = (condition.note, condition.meta) if condition is not None else ("", {})
    return Record(model, key, family, n, metrics, details, warnings, note, meta, correct, provenance, seconds)


def _write(run: RunDir, record: Record) -> None:
    """The one place records are written."""
    run.add_record(record.to_json())


def transfer_conditions(run: RunDir, dense: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        classes: tuple[str, ...], settings: AdversarialSettings) -> list[Condition]:
    """Transfer examples crafted once on dense (cached in the run directory for reruns), fed to every model."""
    path = store.transfer_path(run)
    if path.is_file():
        crafted = torch.load(path, weights_only=True)
    else:
        crafted = {"y": y, "x": craft_transfer(dense, x, y, settings=settings)}
        write_atomic(path, lambda f: torch.save(crafted, f))
    return [transfer_condition(f"adversarial/transfer/{key}", x_adv, crafted["y"], classes)
            for key, x_adv in crafted["x"].items()]


def run_attacks(models: Sequence[ModelEntry], x: torch.Tensor, y: torch.Tensor, run: RunDir,
                adversarial: AdversarialSettings, settings: EngineSettings, executor: Executor = IN_PROCESS) -> None:
    """The attack stage: every model without an ``adversarial`` record is attacked on the same sample,
    with a progress bar over (model, attack) pairs. A model without gradients (onnxruntime) gets a
    record with no metrics and the reason as a warning.
    """
    where = ("adversarial", "adversarial")
    provenance = dict(settings.provenance) | {"seed": adversarial.seed}
    done = run.done()
    todo = [m for m in models if (m.id, "adversarial") not in done]
    attacked = [m for m in todo if has_gradients(m.module)]
    evaluator = AdversarialEvaluator(adversarial)
    with tqdm(total=len(attacked) * len(plan(adversarial)), unit="attack", desc="adversarial: attacking",
              disable=not settings.progress, smoothing=0.05) as bar:
        results = executor.attack(attacked, x, y, adversarial, bar)
        for m in todo:
            if not has_gradients(m.module):
                skipped = [(evaluator, Result({}, warnings=[WHITE_BOX_SKIPPED]))]
                _write(run, _as_record(m.id, where, 0, skipped, provenance=provenance, seconds=0.0))
                continue
            result, seconds = next(results)
            _write(run, _as_record(m.id, where, len(y), [(evaluator, result)], provenance=provenance, seconds=seconds))

