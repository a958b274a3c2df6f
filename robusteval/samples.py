"""``samples.npz`` in a run directory: what per-class figures and pictures need, kept at evaluation time.

The report rebuilds from the run alone, so the run keeps, beside the records: the class names, the
labels of every clean and corruption condition (records hold only per-sample correctness), small
thumbnails of the gallery's images (the clean inputs pruning forgets, chosen when evaluation ends)
and one image at each severity of every corruption. Thumbnails are uint8 RGB of at most
:data:`THUMBNAIL_PX` pixels a side (made by :func:`robusteval.analysis.exemplars.thumbnails`); at most
:data:`GALLERY_SIZE` gallery images are kept. Reading and writing need NumPy only.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robusteval.errors import RobustEvalError
from robusteval.files import write_atomic
from robusteval.results import RunDir

THUMBNAIL_PX = 64
"""Largest side of a stored thumbnail: larger images are area-averaged down, smaller ones kept."""
GALLERY_SIZE = 32
"""Most gallery images a run keeps (and the report shows)."""


@dataclass(frozen=True)
class Samples:
    """Class names, labels per condition key, gallery thumbnails (with their clean indices) and the
    corruption strips (corruption → thumbnails at ``severities``)."""

    classes: tuple[str, ...]
    labels: dict[str, np.ndarray]
    gallery_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    gallery: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1, 3), dtype=np.uint8))
    strips: dict[str, np.ndarray] = field(default_factory=dict)
    severities: tuple[int, ...] = ()

    def thumbnail(self, index: int) -> np.ndarray | None:
        """The gallery thumbnail of clean sample ``index``, None when the run kept none."""
        where = np.flatnonzero(self.gallery_index == index)
        return self.gallery[where[0]] if len(where) else None


def write_samples(run_path: Path, samples: Samples) -> None:
    """Write ``samples.npz`` atomically."""
    keys = sorted(samples.labels)
    names = sorted(samples.strips)
    arrays = {"classes": np.array(samples.classes, dtype=str), "label_conditions": np.array(keys, dtype=str),
              "gallery_index": np.asarray(samples.gallery_index, dtype=np.int64), "gallery": samples.gallery,
              "strip_names": np.array(names, dtype=str), "severities": np.array(samples.severities, dtype=np.int64)}
    arrays |= {f"labels_{i}": np.asarray(samples.labels[k], dtype=np.int64) for i, k in enumerate(keys)}
    arrays |= {f"strip_{i}": samples.strips[n] for i, n in enumerate(names)}
    write_atomic(RunDir(run_path).samples_path, lambda f: np.savez_compressed(f, **arrays))


def read_samples(run_path: Path) -> Samples | None:
    """The run's samples (None for a run written before they were kept); never unpickles."""
    path = RunDir(run_path).samples_path
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = [str(k) for k in z["label_conditions"]]
            names = [str(n) for n in z["strip_names"]]
            return Samples(tuple(str(c) for c in z["classes"]), {k: z[f"labels_{i}"] for i, k in enumerate(keys)},
                           z["gallery_index"], z["gallery"], {n: z[f"strip_{i}"] for i, n in enumerate(names)},
                           tuple(int(s) for s in z["severities"]))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise RobustEvalError(f"{path} is not a readable samples file: {exc}") from None
