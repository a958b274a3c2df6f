"""The run directory: append-only records, a manifest, per-model info and summary.json.

Layout of a run directory::

    manifest.json        config, seeds, versions, sha256 of model and data (rewritten atomically)
    models.jsonl         one line per model of the family: id, method, target_ratio, sizes, ...
    records.jsonl        one line per (model, condition): metrics and per-sample correctness
    shards/              partial logits of the condition in flight (deleted when its record lands)
    summary.json         the contract: schema_version, dense id, models with their metrics

Lines are appended with a single ``write`` and fsync; a line cut short by a crash is ignored
on reading, so a killed run loses at most the work in flight.
"""
from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` via a temporary file and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False, allow_nan=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_jsonl(path: Path, item: dict[str, Any]) -> None:
    """Append one JSON line in a single write, then fsync."""
    line = json.dumps(item, separators=(",", ":"), allow_nan=True) + "\n"
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Complete lines of ``path``; a torn last line (crash mid-write) is skipped."""
    if not path.is_file():
        return
    with open(path) as f:
        for line in f:
            if not line.endswith("\n"):
                return
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def encode_bits(flags: np.ndarray) -> str:
    """Pack a boolean vector into base64 text (per-sample correctness in records)."""
    return base64.b64encode(np.packbits(np.asarray(flags, dtype=bool)).tobytes()).decode("ascii")


def decode_bits(text: str, n: int) -> np.ndarray:
    """Inverse of :func:`encode_bits` for a vector of length ``n``."""
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n].astype(bool)


class RunDir:
    """Reads and writes one run directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def records_path(self) -> Path:
        return self.path / "records.jsonl"

    @property
    def models_path(self) -> Path:
        return self.path / "models.jsonl"

    @property
    def shard_dir(self) -> Path:
        return self.path / "shards"

    def records(self) -> list[dict[str, Any]]:
        """All complete records; for a repeated (model, condition) the last one wins."""
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for rec in read_jsonl(self.records_path):
            latest[(rec["model"], rec["condition"])] = rec
        return list(latest.values())

    def done(self) -> set[tuple[str, str]]:
        """(model id, condition) pairs that already have a record."""
        return {(r["model"], r["condition"]) for r in read_jsonl(self.records_path)}

    def add_record(self, record: dict[str, Any]) -> None:
        append_jsonl(self.records_path, record)

    def models(self) -> list[dict[str, Any]]:
        """Model entries in the order first written; a later line for the same id updates it."""
        entries: dict[str, dict[str, Any]] = {}
        for item in read_jsonl(self.models_path):
            entries.setdefault(item["id"], {}).update(item)
        return list(entries.values())

    def add_model(self, entry: dict[str, Any]) -> None:
        append_jsonl(self.models_path, entry)

    def read_manifest(self) -> dict[str, Any] | None:
        path = self.path / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json_atomic(self.path / "manifest.json", manifest)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.path / "summary.json", summary)

    def read_summary(self) -> dict[str, Any]:
        from robusteval.errors import RobustEvalError

        path = self.path / "summary.json"
        if not path.is_file():
            raise RobustEvalError(f"{self.path} is not a finished run: summary.json is missing")
        try:
            summary = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise RobustEvalError(f"{path} is not valid JSON: {exc}") from exc
        if summary.get("schema_version") != SCHEMA_VERSION:
            raise RobustEvalError(
                f"{path}: expected schema_version {SCHEMA_VERSION}, got {summary.get('schema_version')!r}"
            )
        return summary


def build_summary(dense_id: str, models: Iterable[dict[str, Any]], records: Iterable[dict[str, Any]],
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """summary.json from model entries and records: every record's metrics merged per model."""
    metrics: dict[str, dict[str, float]] = {}
    for rec in records:
        metrics.setdefault(rec["model"], {}).update(rec["metrics"])
    entries = []
    for m in models:
        entry = dict(m)
        entry["metrics"] = dict(sorted(metrics.get(m["id"], {}).items()))
        entries.append(entry)
    return {"schema_version": SCHEMA_VERSION, "dense": dense_id, **(extra or {}), "models": entries}
