"""torch.export archives (.pt2) loaded without running code from the file.

``torch.export.load`` unpickles parts of an archive with the full unpickler: weights or constants
marked ``use_pickle``, custom and opaque objects, legacy ``<model>.pt`` weight/constant files and
the sample inputs (``deserialize_torch_artifact`` falls back to ``weights_only=False``), and it
runs AOTInductor shared libraries. A crafted archive can therefore execute arbitrary code while
loading normally. Before loading, every member that would be unpickled must load with PyTorch's
weights-only unpickler and nothing may need the full unpickler or native code; otherwise the
archive is refused unless the caller trusts it. The load itself then runs with
``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` set, so a member this inspection missed still cannot import code.
"""
from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from robusteval.errors import RobustEvalError

# torch/csrc/export/pt2_archive_constants.h
_NATIVE_DIRS = ("data/aotinductor/", "data/executorch/", "data/mtia")
_WEIGHTS_CONFIG = "data/weights/{}_weights_config.json"
_CONSTANTS_CONFIG = "data/constants/{}_constants_config.json"
_UNPICKLED_PREFIXES = ("custom_obj_", "opaque_obj_")
_EXTRA_DIR = "extra/"  # read as text only
_LOGGERS = ("torch.export", "torch._export")

UNSAFE_ARCHIVE = (
    "{path} is a torch.export archive whose {what} would be unpickled or run as native code when "
    "loaded, so it is refused; pass --trust-pickle only if you trust its source"
)


def unsafe_members(path: Path) -> list[str]:
    """What in the archive at ``path`` torch.export.load would unpickle with code or run natively."""
    try:
        with zipfile.ZipFile(path) as archive:
            return _scan(archive)
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:  # ValueError covers bad JSON
        raise RobustEvalError(f"{path} is not a readable torch.export archive: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from exc


def _scan(archive: zipfile.ZipFile) -> list[str]:
    found = []
    for name in archive.namelist():
        inner = name.split("/", 1)[1] if "/" in name else name
        if inner.startswith(_NATIVE_DIRS):
            found.append(f"compiled code {name!r}")
        elif name.endswith(".pt") and not inner.startswith(_EXTRA_DIR) and not _weights_only(archive.read(name)):
            found.append(f"pickle {name!r}")
        elif inner.startswith("models/") and inner.endswith(".json"):
            root = name[: len(name) - len(inner)]
            model = inner[len("models/"):-len(".json")]
            found += _pickled_payloads(archive, root + _WEIGHTS_CONFIG.format(model), "weight")
            found += _pickled_payloads(archive, root + _CONSTANTS_CONFIG.format(model), "constant")
    return found


def _pickled_payloads(archive: zipfile.ZipFile, config_name: str, kind: str) -> list[str]:
    if config_name not in archive.namelist():
        return []
    config = json.loads(archive.read(config_name)).get("config", {})
    return [f"{kind} {fqn!r}" for fqn, meta in config.items()
            if meta.get("use_pickle") or str(meta.get("path_name", "")).startswith(_UNPICKLED_PREFIXES)]


def _weights_only(data: bytes) -> bool:
    """True when PyTorch's weights-only unpickler reads ``data`` (tensors and plain containers only)."""
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # any failure here would make torch retry with the full unpickler
        return False
    return True


def load_program(path: Path, *, trust_pickle: bool) -> torch.export.ExportedProgram:
    """``torch.export.load(path)`` after checking it runs no code (unless trusted).

    torch logs a failed deserialisation with a traceback and then raises a generic error that
    points at "the warnings above"; the log is captured instead and its cause is the one-line error.
    """
    if not trust_pickle:
        unsafe = unsafe_members(path)
        if unsafe:
            listed = ", ".join(unsafe[:3]) + (f" and {len(unsafe) - 3} more" if len(unsafe) > 3 else "")
            raise RobustEvalError(UNSAFE_ARCHIVE.format(path=path, what=listed))
    with _captured_torch_logs() as records, _weights_only_loads(not trust_pickle):
        try:
            return torch.export.load(str(path))
        except Exception as exc:  # corrupt archives raise many different types
            causes = [r.exc_info[1] for r in records if r.exc_info and r.exc_info[1] is not None]
            cause = causes[0] if causes else exc
            first = str(cause).split("  (Could this error message be improved?")[0].strip().splitlines()
            raise RobustEvalError(f"{path} is not a readable torch.export archive: {type(cause).__name__}: "
                                  f"{first[0][:200] if first else ''}") from exc


@contextmanager
def _weights_only_loads(enabled: bool) -> Iterator[None]:
    """Force every ``torch.load`` inside the block to ``weights_only=True`` (torch reads these per call)."""
    wanted = {"TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": None} if enabled else {}
    saved = {key: os.environ.get(key) for key in wanted}
    _set_env(wanted)
    try:
        yield
    finally:
        _set_env(saved)


def _set_env(values: dict[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def _captured_torch_logs() -> Iterator[list[logging.LogRecord]]:
    """Route torch.export's log records (tracebacks included) to a list instead of the terminal.

    torch attaches handlers to some of these loggers itself, so every existing logger under them
    gets the collector as its only handler for the duration (records are never formatted: one of
    torch's fallback warnings has a format string its arguments do not fill).
    """
    collector = _Collect()
    names = [n for n in logging.root.manager.loggerDict if n.startswith(tuple(f"{p}." for p in _LOGGERS))]
    loggers = [logging.getLogger(n) for n in (*_LOGGERS, *names)]
    saved = [(logger.handlers, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.handlers, logger.propagate = [collector], False
    try:
        yield collector.records
    finally:
        for logger, (handlers, propagate) in zip(loggers, saved):
            logger.handlers, logger.propagate = handlers, propagate
