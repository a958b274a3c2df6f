"""The audit engine: every batch of a condition is made once and fed to every model.

Work is cut into shards (a few batches of one condition). Each model's logits for a shard
are saved atomically under ``shards/``; when every shard of a condition is done, the
evaluators run, one record per (model, condition) is appended, and the shards are deleted.
A run killed at any moment loses at most the shard in flight; a rerun skips what is done.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from robusteval.conditions import Condition, evaluators_for, metric_key
from robusteval.errors import RobustEvalError
from robusteval.escaping import visible
from robusteval.evaluators.accuracy import per_sample_correct
from robusteval.evaluators.base import Outputs
from robusteval.models.wrap import run_batch
from robusteval.results import RunDir, encode_bits, write_atomic

if TYPE_CHECKING:
    from robusteval.config import AuditConfig

DENSE_ID = "dense"


@dataclass(frozen=True)
class ModelEntry:
    """One model of the family as the engine sees it."""

    id: str
    module: nn.Module


@dataclass(frozen=True)
class EngineSettings:
    batch_size: int = 250
    shard_size: int = 1000
    progress: bool = True
    provenance: tuple[tuple[str, Any], ...] = ()


def run_conditions(models: Sequence[ModelEntry], conditions: Sequence[Condition], run: RunDir,
                   config: AuditConfig, settings: EngineSettings) -> None:
    """Evaluate every model on every condition, skipping (model, condition) pairs already recorded."""
    by_id = {m.id: m for m in models}
    if DENSE_ID not in by_id:
        raise ValueError("the family must contain the dense model")
    done = run.done()
    plan = [(c, [m for m in models if (m.id, c.key) not in done]) for c in conditions]
    plan = [(c, todo) for c, todo in plan if todo]
    total = sum(len(c) * len(_forward_set(c, todo, by_id, config)) for c, todo in plan)
    with tqdm(total=total, unit="img", disable=not settings.progress, desc="evaluating", smoothing=0.05) as bar:
        for condition, todo in plan:
            forward = _forward_set(condition, todo, by_id, config)
            _compute_shards(condition, forward, run, settings, bar)
            _record(condition, todo, by_id, run, config, settings)
            shutil.rmtree(_shard_dir(run, condition), ignore_errors=True)


def _forward_set(condition: Condition, todo: list[ModelEntry], by_id: dict[str, ModelEntry],
                 config: AuditConfig) -> list[ModelEntry]:
    """Models to run: those without a record, plus dense when pruned ones need its logits."""
    needs_dense = config.evaluate.agreement and condition.family != "ood" and any(m.id != DENSE_ID for m in todo)
    if needs_dense and all(m.id != DENSE_ID for m in todo):
        return [by_id[DENSE_ID], *todo]
    return list(todo)


def _batches(n: int, settings: EngineSettings) -> list[list[tuple[int, int, int]]]:
    """Shards as lists of (start, stop, batch index); batch i always covers the same samples."""
    bs = settings.batch_size
    per_shard = max(1, settings.shard_size // bs)
    batches = [(i * bs, min(n, (i + 1) * bs), i) for i in range((n + bs - 1) // bs)]
    return [batches[i:i + per_shard] for i in range(0, len(batches), per_shard)]


def _compute_shards(condition: Condition, forward: list[ModelEntry], run: RunDir,
                    settings: EngineSettings, bar: tqdm) -> None:
    shards = _batches(len(condition), settings)
    work = []
    for k, shard in enumerate(shards):
        pending = [m for m in forward if not _shard_path(run, condition, m.id, k).is_file()]
        n = shard[-1][1] - shard[0][0]
        bar.update(n * (len(forward) - len(pending)))
        work += [(k, b, pending) for b in shard] if pending else []
    bar.set_postfix_str(visible(condition.key), refresh=False)
    partial: dict[str, list[torch.Tensor]] = {}
    for (k, (start, stop, index), pending), x in zip(work, _prefetch(condition, work)):
        with torch.inference_mode():
            for m in pending:
                partial.setdefault(m.id, []).append(condition.restrict(run_batch(m.module, x, f"model {m.id!r}").float()))
        bar.update((stop - start) * len(pending))
        if index == shards[k][-1][2]:  # last batch of the shard: persist it
            for m in pending:
                _save_shard(_shard_path(run, condition, m.id, k), torch.cat(partial.pop(m.id)))


def _prefetch(condition: Condition, work: list) -> Iterator[torch.Tensor]:
    """Make the next batch's inputs in a worker thread while models run on the current one."""
    if not work:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(condition.inputs, work[0][1][0], work[0][1][1], work[0][1][2])
        for j in range(len(work)):
            x = future.result()
            if j + 1 < len(work):
                _, (s, e, i), _ = work[j + 1]
                future = pool.submit(condition.inputs, s, e, i)
            yield x


def _record(condition: Condition, todo: list[ModelEntry], by_id: dict[str, ModelEntry], run: RunDir,
            config: AuditConfig, settings: EngineSettings) -> None:
    labels = condition.labels(0, len(condition))
    n_shards = len(_batches(len(condition), settings))
    dense = _load_logits(run, condition, DENSE_ID, n_shards) if _has_shards(run, condition, DENSE_ID) else None
    for m in todo:
        start = time.perf_counter()
        logits = _load_logits(run, condition, m.id, n_shards)
        if not torch.isfinite(logits).all():
            raise RobustEvalError(f"model {m.id} produced NaN or infinite logits on condition {condition.key}")
        clean = _clean_logits(run, m.id) if condition.family == "ood" else None
        outputs = Outputs(logits, labels, None if m.id == DENSE_ID else dense, clean)
        metrics: dict[str, float] = {}
        details: dict[str, Any] = {}
        for evaluator in evaluators_for(condition, config):
            evaluator.update(outputs)
            metrics.update({metric_key(evaluator.name, condition, k): float(v)
                            for k, v in evaluator.compute().items()})
            if extra := evaluator.compute_details():
                details[evaluator.name] = extra
        record: dict[str, Any] = {"model": m.id, "condition": condition.key, "family": condition.family,
                                  "n": len(labels), "metrics": metrics, "details": details,
                                  "note": condition.note, "meta": condition.meta}
        if condition.labelled:
            record["correct"] = encode_bits(per_sample_correct(logits, labels))
        if condition.key == "clean":
            _save_shard(_clean_path(run, m.id), logits)
        record.update(dict(settings.provenance))
        record["seconds"] = round(time.perf_counter() - start, 4)
        run.add_record(record)


def _shard_dir(run: RunDir, condition: Condition) -> Path:
    return run.shard_dir / condition.key.replace("/", "__")


def _shard_path(run: RunDir, condition: Condition, model_id: str, k: int) -> Path:
    return _shard_dir(run, condition) / f"{_safe(model_id)}.{k:05d}.npy"


def _has_shards(run: RunDir, condition: Condition, model_id: str) -> bool:
    return _shard_path(run, condition, model_id, 0).is_file()


def _clean_path(run: RunDir, model_id: str) -> Path:
    return run.path / "logits" / f"{_safe(model_id)}.clean.npy"


def _clean_logits(run: RunDir, model_id: str) -> torch.Tensor:
    path = _clean_path(run, model_id)
    if not path.is_file():
        raise RobustEvalError(f"clean logits of {model_id} are missing in {path.parent}; OOD needs the clean condition")
    return torch.from_numpy(np.load(path))


def _load_logits(run: RunDir, condition: Condition, model_id: str, n_shards: int) -> torch.Tensor:
    return torch.cat([torch.from_numpy(np.load(_shard_path(run, condition, model_id, k))) for k in range(n_shards)])


def _save_shard(path: Path, logits: torch.Tensor) -> None:
    write_atomic(path, lambda f: np.save(f, logits.numpy()))


def _safe(model_id: str) -> str:
    return model_id.replace("/", "_").replace("@", "_at_")
