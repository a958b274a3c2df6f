"""The cache folder for decoded arrays and downloads, with atomic writes."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from robusteval.files import write_atomic


def cache_dir() -> Path:
    """``$ROBUSTEVAL_CACHE``, else ``$XDG_CACHE_HOME/robusteval``, else ``~/.cache/robusteval``."""
    env = os.environ.get("ROBUSTEVAL_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robusteval"
    base.mkdir(parents=True, exist_ok=True)
    return base


def load_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays in ``path``, or None when it is missing or unreadable (a stale cache is rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile):
        return None


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` atomically (see :func:`robusteval.files.write_atomic`)."""
    write_atomic(path, lambda f: np.savez(f, **arrays))
