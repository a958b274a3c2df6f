"""The files the engine writes in a run directory, and their names (the only place they are built).

    shards/<condition>/<model>.<k>.npy   logits of shard k of the condition in flight (deleted once recorded)
    logits/<model>.clean.npy             each model's clean logits, the in-distribution side of OOD detection
    transfer.pt                          the transfer examples crafted on dense (reused when a run resumes)
    models/<id>.pt2, models/<id>.json    the saved family (:func:`robusteval.pruning.save_member`), reloaded
                                         on resume and shipped to Ray workers as files; the names inside
                                         models/ are :func:`robusteval.pruning.member.member_path`'s

What :class:`robusteval.results.RunDir` owns (records, models.jsonl, manifest, summary, lock) is named there.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robusteval.conditions import Condition
from robusteval.errors import RobustEvalError
from robusteval.files import write_atomic
from robusteval.pruning.member import saved_member
from robusteval.results import RunDir


def shard_dir(run: RunDir, condition: Condition) -> Path:
    return run.path / "shards" / condition.key.replace("/", "__")


def shard_path(run: RunDir, condition: Condition, model_id: str, k: int) -> Path:
    return shard_dir(run, condition) / f"{_safe(model_id)}.{k:05d}.npy"


def has_shards(run: RunDir, condition: Condition, model_id: str) -> bool:
    return shard_path(run, condition, model_id, 0).is_file()


def load_logits(run: RunDir, condition: Condition, model_id: str, n_shards: int) -> torch.Tensor:
    return torch.cat([torch.from_numpy(np.load(shard_path(run, condition, model_id, k))) for k in range(n_shards)])


def save_logits(path: Path, logits: torch.Tensor) -> None:
    write_atomic(path, lambda f: np.save(f, logits.numpy()))


def clean_path(run: RunDir, model_id: str) -> Path:
    return run.path / "logits" / f"{_safe(model_id)}.clean.npy"


def clean_logits(run: RunDir, model_id: str) -> torch.Tensor:
    path = clean_path(run, model_id)
    if not path.is_file():
        raise RobustEvalError(f"clean logits of {model_id} are missing in {path.parent}; OOD needs the clean condition")
    return torch.from_numpy(np.load(path))


def transfer_path(run: RunDir) -> Path:
    return run.path / "transfer.pt"


def models_dir(run: RunDir) -> Path:
    """Where the family is saved (``out_dir`` of :func:`robusteval.pruning.build_family`)."""
    return run.path / "models"


def member_archive(run: RunDir, model_id: str) -> Path | None:
    """The saved member's archive (with its ``.json`` card), None when it is not saved complete."""
    return saved_member(models_dir(run), model_id)


def _safe(model_id: str) -> str:
    return model_id.replace("/", "_").replace("@", "_at_")
