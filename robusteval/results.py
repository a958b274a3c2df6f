"""The run directory: append-only records, a manifest, the members' cards and summary.json.

Layout of a run directory; :class:`RunDir` names every file but the engine's, which
:mod:`robusteval.engine.store` names::

    manifest.json        config, seeds, versions, sha256 of model and data (rewritten atomically)
    models.jsonl         one line per model of the family: its card (robusteval.card: id, role, method, costs, ...)
    records.jsonl        one line per (model, condition): a Record (metrics and per-sample correctness)
    summary.json         the contract: schema_version, dense id, models with their metrics, the metrics'
                         declarations (direction, unit, label; schema 1 lacked them: filled on reading)
    run.lock             held (flock) by the process writing the run: pid, host, start time
    -- the engine's (robusteval.engine.store) --
    shards/              partial logits of the condition in flight (deleted when its record lands)
    logits/              each model's clean logits (<id>.clean.npy), the in-distribution side of OOD
    transfer.pt          transfer examples crafted on dense, reused on resume
    models/              the saved family: <id>.pt2 (torch.export) with its <id>.json card
    -- kept for the report (robusteval.samples) and written by it (robusteval.report.html) --
    samples.npz          labels and thumbnails for per-class figures
    report.html          the report; analysis.json and summary.csv beside it

Lines are appended with a single ``write`` and fsync. A line cut short by a crash is ignored on
reading and cut off when the run is opened for writing again, so a killed run loses at most the
work in flight and a rerun never appends onto a fragment.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from robusteval.card import MemberCard, as_cards
from robusteval.declarations import BUILTIN, summary_keys
from robusteval.errors import RobustEvalError
from robusteval.files import write_json_atomic
from robusteval.records import Record, as_records

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the run directory is not locked
    fcntl = None  # type: ignore[assignment]

SCHEMA_VERSION = 2
LOCK_NAME = "run.lock"


def append_jsonl(path: Path, item: dict[str, Any]) -> None:
    """Append one JSON line in a single write, then fsync."""
    line = json.dumps(item, separators=(",", ":"), allow_nan=True) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
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


def cut_torn_tail(path: Path) -> int:
    """Truncate ``path`` after its last newline (a line torn by a crash mid-append); bytes removed."""
    if not path.is_file():
        return 0
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            chunk = f.read(end - start)
            if (cut := chunk.rfind(b"\n")) >= 0:
                end = start + cut + 1
                break
            end = start
        if end < size:
            f.truncate(end)
            os.fsync(f.fileno())
        return size - end


def encode_bits(flags: np.ndarray) -> str:
    """Pack a boolean vector into base64 text (per-sample correctness in records)."""
    return base64.b64encode(np.packbits(np.asarray(flags, dtype=bool)).tobytes()).decode("ascii")


def decode_bits(text: str, n: int) -> np.ndarray:
    """Inverse of :func:`encode_bits` for a vector of length ``n``."""
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n].astype(bool)


def encode_ints(values: np.ndarray) -> str:
    """Pack integers (per-sample predictions or labels) as base64 text of zlib-compressed int32."""
    return base64.b64encode(zlib.compress(np.asarray(values, dtype="<i4").tobytes(), 9)).decode("ascii")


def decode_ints(text: str, n: int) -> np.ndarray:
    """Inverse of :func:`encode_ints`; a payload that does not hold ``n`` integers is an error."""
    try:
        out = np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<i4").astype(np.int64)
    except (ValueError, zlib.error) as exc:
        raise RobustEvalError(f"expected {n} packed integers, got an unreadable payload ({exc})") from None
    if len(out) != n:
        raise RobustEvalError(f"expected {n} packed integers, got {len(out)}")
    return out


class RunDir:
    """Reads and writes one run directory. Constructing one touches nothing on disk; writers
    enter :meth:`writing` first."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @classmethod
    def existing(cls, path: str | os.PathLike[str]) -> RunDir:
        """The run directory at ``path``, which must be an existing directory (for reading)."""
        if not Path(path).is_dir():
            raise RobustEvalError(f"expected a run directory, got {os.fspath(path)!r} (not a directory)")
        return cls(path)

    @property
    def records_path(self) -> Path:
        return self.path / "records.jsonl"

    @property
    def models_path(self) -> Path:
        return self.path / "models.jsonl"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def samples_path(self) -> Path:
        """Labels and thumbnails for the per-class figures (:mod:`robusteval.samples`)."""
        return self.path / "samples.npz"

    @property
    def report_path(self) -> Path:
        return self.path / "report.html"

    @property
    def analysis_path(self) -> Path:
        """The report's analysis as JSON, beside report.html."""
        return self.path / "analysis.json"

    @property
    def summary_csv_path(self) -> Path:
        """One row per (metric, method) of the report's analysis, beside report.html."""
        return self.path / "summary.csv"

    def locked(self) -> AbstractContextManager[None]:
        """Hold the directory's lock (see :func:`_locked`)."""
        return _locked(self.path / LOCK_NAME)

    @contextmanager
    def writing(self) -> Iterator[RunDir]:
        """Create (or check) the directory, hold its lock, and cut lines torn by an earlier crash."""
        created = not self.path.exists()
        self._prepare()
        try:
            with self.locked():
                for path in (self.records_path, self.models_path):
                    try:
                        cut_torn_tail(path)
                    except OSError as exc:
                        raise RobustEvalError(f"cannot repair {path}: {exc.strerror or exc}") from exc
                for tmp in self.path.rglob(".*.tmp"):  # left by a crash inside write_atomic
                    tmp.unlink(missing_ok=True)
                yield self
        except BaseException:
            if created and [p.name for p in self.path.iterdir()] == [LOCK_NAME]:  # failed before writing
                shutil.rmtree(self.path, ignore_errors=True)
            raise

    def _prepare(self) -> None:
        """The directory must be new, empty or an earlier run: never write over a user's files."""
        if self.path.exists() and not self.path.is_dir():
            raise RobustEvalError(f"run directory {self.path} exists and is not a directory")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            foreign = sorted(p.name for p in self.path.iterdir() if p.name != LOCK_NAME)
        except OSError as exc:
            raise RobustEvalError(f"cannot create run directory {self.path}: {exc.strerror or exc}") from exc
        if foreign and not self.is_run():
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise RobustEvalError(f"run directory {self.path} is not empty and is not a robusteval run "
                                  f"(no manifest.json; holds {shown}); choose a new or empty directory")

    def is_run(self) -> bool:
        """Whether the directory holds a robusteval manifest."""
        try:
            manifest = self.read_manifest()
        except RobustEvalError:
            return False
        return manifest is not None and "config_digest" in manifest

    def records(self) -> list[Record]:
        """All complete records; for a repeated (model, condition) the last one wins."""
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for rec in read_jsonl(self.records_path):
            latest[(rec["model"], rec["condition"])] = rec
        return as_records(latest.values())

    def done(self) -> set[tuple[str, str]]:
        """(model id, condition) pairs that already have a record."""
        return {(r["model"], r["condition"]) for r in read_jsonl(self.records_path)}

    def add_record(self, record: dict[str, Any]) -> None:
        append_jsonl(self.records_path, record)

    def models(self) -> list[MemberCard]:
        """Member cards in the order first written; a later line for the same id updates it."""
        entries: dict[str, dict[str, Any]] = {}
        for item in read_jsonl(self.models_path):
            entries.setdefault(item["id"], {}).update(item)
        return as_cards(entries.values())

    def add_model(self, card: MemberCard | Mapping[str, Any]) -> None:
        """Append a member's card (or a models.jsonl line)."""
        append_jsonl(self.models_path, card.to_json() if isinstance(card, MemberCard) else dict(card))

    def read_manifest(self) -> dict[str, Any] | None:
        path = self.manifest_path
        if not path.is_file():
            return None
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RobustEvalError(f"{path} is not a readable JSON manifest: {exc}") from exc
        if not isinstance(manifest, dict):
            raise RobustEvalError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json_atomic(self.manifest_path, manifest)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.summary_path, summary)

    def read_summary(self) -> dict[str, Any]:
        path = self.summary_path
        if not path.is_file():
            raise RobustEvalError(f"{self.path} is not a finished run: summary.json is missing")
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RobustEvalError(f"{path} is not valid JSON: {exc}") from exc
        if isinstance(summary, dict) and summary.get("schema_version") == 1:
            return migrate_summary(summary, path)
        if not isinstance(summary, dict) or summary.get("schema_version") != SCHEMA_VERSION:
            got = summary.get("schema_version") if isinstance(summary, dict) else type(summary).__name__
            raise RobustEvalError(f"{path}: expected schema_version {SCHEMA_VERSION}, got {got!r}")
        return summary


def migrate_summary(summary: dict[str, Any], path: Path) -> dict[str, Any]:
    """A schema-1 summary (before declarations were stored) as schema 2: its metrics' declarations from the
    built-in table; a metric the table does not declare is one line of bad input."""
    try:
        declarations = BUILTIN.resolved(summary_keys(summary))
    except RobustEvalError as exc:
        raise RobustEvalError(f"{path} (schema_version 1, written before metric declarations were stored): "
                              f"{exc}") from None
    return summary | {"schema_version": SCHEMA_VERSION, "declarations": declarations.to_json()}


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (released by the kernel if the process dies, so a
    lock left by a killed run is simply taken over); a second holder gets a one-line error."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RobustEvalError(f"cannot write to run directory {path.parent}: {exc.strerror or exc}") from exc
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RobustEvalError(f"run directory {path.parent} is in use by {_holder(fd)}; wait for it "
                                      "to finish or choose another directory") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """'pid 12 on host h (started 2026-01-01T00:00:00+00:00)' from the lock file, as far as it says."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {int(info['pid'])} on host {info['host']} (started {info['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another robusteval process"


def missing_results(planned_models: Iterable[str], planned_conditions: Iterable[str],
                    done: set[tuple[str, str]]) -> list[dict[str, str]]:
    """The planned (model, condition) pairs without a record."""
    conditions = list(planned_conditions)
    return [{"model": m, "condition": c} for m in planned_models for c in conditions if (m, c) not in done]


def incomplete_message(summary: Mapping[str, Any]) -> str | None:
    """None for a complete run, else one line saying what is missing and how to finish it."""
    missing = summary.get("missing") or []
    if not missing:
        return None
    first = missing[0] if isinstance(missing, list) and isinstance(missing[0], Mapping) else {}
    return (f"the run is incomplete: {len(missing)} planned result(s) are missing (e.g. model "
            f"{first.get('model')!r} on condition {first.get('condition')!r}); rerun the audit on the same "
            "directory to compute them")


def build_summary(dense_id: str, models: Iterable[MemberCard | Mapping[str, Any]],
                  records: Iterable[Record | Mapping[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """summary.json from member cards and records: each model's card with every record's metrics merged."""
    metrics: dict[str, dict[str, float]] = {}
    for rec in as_records(records):
        metrics.setdefault(rec.model, {}).update(rec.metrics)
    entries = []
    for card in as_cards(models):
        entry = card.to_json()
        entry["metrics"] = dict(sorted(metrics.get(card.id, {}).items()))
        entries.append(entry)
    return {"schema_version": SCHEMA_VERSION, "dense": dense_id, **(extra or {}), "models": entries}
