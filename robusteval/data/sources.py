"""Data sources by spec: ``bundled[:train]``, ``cifar10[:train]``, ``cifar100[:train]``,
``svhn[:train]``, ``imagefolder:PATH``, ``npz:PATH``. Each yields :class:`LabeledArrays`
(images become float NCHW in [0, 1] on access)."""
from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from robusteval.data.arrays import LabeledArrays
from robusteval.data.bundled import load_bundled
from robusteval.data.cache import cache_dir
from robusteval.data.imagefolder import load_imagefolder
from robusteval.errors import RobustEvalError
from robusteval.registry import unknown_name_message

TORCHVISION_SETS = ("cifar10", "cifar100", "svhn")
SPLITS = ("test", "train")
PATH_KINDS = ("imagefolder", "npz")


def load_source(spec: str, *, subset: int | None = None, seed: int = 0, download: bool = True) -> LabeledArrays:
    """Load the data named by ``spec``; ``subset`` picks a seeded class-balanced sample."""
    kind, arg = parse_spec(spec)
    if kind in PATH_KINDS:
        data = load_imagefolder(arg) if kind == "imagefolder" else load_npz_source(Path(arg))
    else:
        loaders: dict[str, Callable[[], LabeledArrays]] = {
            "bundled": lambda: load_bundled(arg),
            **{name: (lambda n=name: load_torchvision(n, arg, download=download)) for name in TORCHVISION_SETS},
        }
        data = loaders[kind]()
    return data.stratified(subset, seed)


def parse_spec(spec: str) -> tuple[str, str]:
    """(kind, PATH or split) of a data source spec, checked without reading any data."""
    kind, _, arg = spec.partition(":")
    if kind in PATH_KINDS:
        if not arg:
            raise RobustEvalError(f"data source {spec!r}: expected {kind}:PATH")
        return kind, arg
    if kind not in ("bundled", *TORCHVISION_SETS):
        known = ["bundled", *TORCHVISION_SETS, *PATH_KINDS]
        raise RobustEvalError(unknown_name_message("data source kind", kind, known))
    split = arg or "test"
    if split not in SPLITS:
        raise RobustEvalError(f"data source {spec!r}: expected split 'test' or 'train', got {split!r}")
    return kind, split


def load_npz_source(path: Path) -> LabeledArrays:
    """An ``.npz`` with ``x`` (uint8 NHWC or float NCHW in [0, 1]), ``y`` and optional ``classes``."""
    if not path.is_file():
        raise RobustEvalError(f"npz data file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # empty, garbage, or a broken zip
        raise RobustEvalError(f"{path} is not a readable .npz file (expected numpy.savez output): "
                              f"{type(exc).__name__}: {str(exc).strip()[:160]}") from exc
    if "x" not in arrays or "y" not in arrays:
        raise RobustEvalError(f"{path}: expected arrays 'x' and 'y', got {sorted(arrays)}")
    x, y = arrays["x"], arrays["y"]
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
        if x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
            raise RobustEvalError(f"{path}: float images must be NCHW, got shape {x.shape}")
        if np.isfinite(x).all() and (x.min() < 0 or x.max() > 1):
            raise RobustEvalError(f"{path}: float images must lie in [0, 1], got [{x.min():.3g}, {x.max():.3g}]")
    if not np.issubdtype(y.dtype, np.integer):
        raise RobustEvalError(f"{path}: labels 'y' must be integers, got {y.dtype}")
    y = y.astype(np.int64).reshape(-1)
    if "classes" in arrays:
        classes = tuple(str(c) for c in arrays["classes"])
    else:
        classes = tuple(str(i) for i in range(int(y.max()) + 1 if len(y) else 0))
    return LabeledArrays(x, y, classes, path.stem)


def torchvision_root(name: str) -> Path:
    """Where torchvision data sets are downloaded to and looked for."""
    return cache_dir() / "datasets" / name


def load_torchvision(name: str, split: str, *, download: bool = True) -> LabeledArrays:
    """CIFAR-10, CIFAR-100 or SVHN through torchvision, downloaded into the cache when online."""
    import torchvision.datasets as tvd

    root = torchvision_root(name)
    train = split == "train"
    try:
        if name == "svhn":
            ds = tvd.SVHN(str(root), split=split, download=download)
            x = np.ascontiguousarray(ds.data.transpose(0, 2, 3, 1))
            labels, classes = np.asarray(ds.labels), tuple(str(i) for i in range(10))
        else:
            ds = (tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100)(str(root), train=train, download=download)
            x, labels, classes = np.asarray(ds.data), np.asarray(ds.targets), tuple(ds.classes)
    except (RuntimeError, OSError) as exc:  # missing or corrupt files, or no network for the download
        raise RobustEvalError(
            f"{name} ({split}) is not available offline and could not be downloaded: put torchvision's "
            f"{name} files into {root} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
        ) from exc
    return LabeledArrays(x.astype(np.uint8), labels.astype(np.int64), classes, f"{name}-{split}")
