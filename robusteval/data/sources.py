"""Data sources by spec ``KIND[:ARG]``; each yields :class:`LabeledArrays` (images become float NCHW
in [0, 1] on access). Kinds and their arguments are listed in ``SOURCES`` (README, "Data")."""
from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robusteval.data.arrays import LabeledArrays, check_labels
from robusteval.data.bundled import load_bundled
from robusteval.data.cache import cache_dir
from robusteval.data.cifar_c import load_corruption_files
from robusteval.data.cifar_shift import load_cifar101, load_cifar102, load_cinic10
from robusteval.data.imagefolder import load_imagefolder
from robusteval.data.imagenet import load_imagenet, load_imagenet_subset, load_imagenet_v2
from robusteval.errors import RobustEvalError
from robusteval.registry import Registry
from robusteval.validate import SEVERITIES

TORCHVISION_SETS = ("cifar10", "cifar100", "svhn")
SPLIT_SOURCES = ("bundled", *TORCHVISION_SETS)  # kinds whose argument is a split, so ``train: auto`` works
SPLITS = ("test", "train")
MAX_INFERRED_CLASSES = 100_000  # an npz without ``classes`` whose labels go beyond this is refused


@dataclass(frozen=True)
class _Request:
    spec: str
    arg: str
    subset: int | None
    seed: int
    download: bool


Loader = Callable[[_Request], LabeledArrays]
SOURCES: Registry[Loader] = Registry("data source kind")


def load_source(spec: str, *, subset: int | None = None, seed: int = 0, download: bool = True) -> LabeledArrays:
    """Load the data named by ``spec``; ``subset`` picks a seeded class-balanced sample."""
    kind, _, arg = spec.partition(":")
    loader = SOURCES.get(kind)
    return loader(_Request(spec, arg, subset, seed, download)).stratified(subset, seed)


def parse_spec(spec: str) -> tuple[str, str]:
    """(kind, argument) of a data source spec, checked without reading any data."""
    kind, _, arg = spec.partition(":")
    SOURCES.get(kind)  # an unknown kind: did you mean
    request = _Request(spec, arg, None, 0, False)
    if kind in SPLIT_SOURCES:
        return kind, _split(request)
    if kind.endswith("-c"):
        _corruption_args(request)
    else:
        _path(request)
    return kind, arg


def _split(req: _Request) -> str:
    split = req.arg or "test"
    if split not in SPLITS:
        raise RobustEvalError(f"data source {req.spec!r}: expected split 'test' or 'train', got {split!r}")
    return split


def _path(req: _Request, form: str = "PATH") -> str:
    if not req.arg:
        raise RobustEvalError(f"data source {req.spec!r}: expected {req.spec.partition(':')[0]}:{form}")
    return req.arg


def _corruption_args(req: _Request) -> tuple[Path, str, int]:
    """``ROOT:CORRUPTION:SEVERITY`` (split from the right, so ROOT may hold colons)."""
    parts = _path(req, "ROOT:CORRUPTION:SEVERITY").rsplit(":", 2)
    if len(parts) != 3 or not parts[2].isdigit() or int(parts[2]) not in SEVERITIES:
        kind = req.spec.partition(":")[0]
        raise RobustEvalError(f"data source {req.spec!r}: expected {kind}:ROOT:CORRUPTION:SEVERITY (severity 1..5)")
    return Path(parts[0]), parts[1], int(parts[2])


SOURCES.add("bundled", lambda r: load_bundled(_split(r)))
for _name in TORCHVISION_SETS:
    SOURCES.add(_name, lambda r, n=_name: load_torchvision(n, _split(r), download=r.download))
SOURCES.add("imagefolder", lambda r: load_imagefolder(_path(r), subset=r.subset, seed=r.seed))
SOURCES.add("npz", lambda r: load_npz_source(Path(_path(r))))
SOURCES.add("imagenet", lambda r: load_imagenet(_path(r), subset=r.subset, seed=r.seed))
SOURCES.add("imagenet-v2", lambda r: load_imagenet_v2(_path(r), subset=r.subset, seed=r.seed))
for _name in ("imagenet-r", "imagenet-a"):
    SOURCES.add(_name, lambda r, n=_name: load_imagenet_subset(n, _path(r), subset=r.subset, seed=r.seed))
SOURCES.add("cifar10.1", lambda r: load_cifar101(_path(r)))
SOURCES.add("cifar10.2", lambda r: load_cifar102(_path(r)))
SOURCES.add("cinic10", lambda r: load_cinic10(_path(r), subset=r.subset, seed=r.seed))
for _name, _dataset in (("cifar10-c", "cifar10"), ("cifar100-c", "cifar100"), ("imagenet-c", "imagenet")):
    SOURCES.add(_name, lambda r, d=_dataset: load_corruption_files(*_corruption_args(r), dataset=d))


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
    if x.ndim == 0 or len(x) == 0:
        raise RobustEvalError(f"{path}: 'x' holds no images (shape {x.shape})")
    if x.dtype != np.uint8:
        x = _float_images(x, path)
    if not np.issubdtype(y.dtype, np.integer):
        raise RobustEvalError(f"{path}: labels 'y' must be integers, got {y.dtype}")
    y = y.astype(np.int64).reshape(-1)
    classes = _npz_classes(arrays, y, path)
    check_labels(y, len(classes), str(path))
    return LabeledArrays(x, y, classes, path.stem)


def _float_images(x: np.ndarray, path: Path) -> np.ndarray:
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise RobustEvalError(f"{path}: images 'x' must be uint8 or float, got {x.dtype}")
    x = x.astype(np.float32)
    if x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        raise RobustEvalError(f"{path}: float images must be NCHW, got shape {x.shape}")
    if np.isfinite(x).all() and (x.min() < 0 or x.max() > 1):
        raise RobustEvalError(f"{path}: float images must lie in [0, 1], got [{x.min():.3g}, {x.max():.3g}]")
    return x


def _npz_classes(arrays: dict[str, np.ndarray], y: np.ndarray, path: Path) -> tuple[str, ...]:
    """Names from ``classes`` (a 1-D array), else ``0 … max(y)``; a stray huge label is refused here,
    before anything sized by the class count (a model head) is built."""
    if "classes" in arrays:
        names = arrays["classes"]
        if names.ndim != 1 or not len(names):
            raise RobustEvalError(f"{path}: 'classes' must be a non-empty 1-D array of names, got shape {names.shape}")
        return tuple(str(c) for c in names)
    if len(y) and y.max() >= MAX_INFERRED_CLASSES:
        i = int(np.argmax(y))
        raise RobustEvalError(f"{path}: label {int(y[i])} at index {i} implies more than {MAX_INFERRED_CLASSES:,} "
                              "classes; fix the label or add a 'classes' array naming every class")
    return tuple(str(i) for i in range(int(y.max()) + 1 if len(y) else 0))


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
