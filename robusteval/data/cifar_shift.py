"""CIFAR-10 natural-shift test sets in their published on-disk formats (labels in CIFAR-10's order).

- CIFAR-10.1 (Recht et al. 2018): ``cifar10.1_v6_data.npy`` (uint8 NHWC) and ``cifar10.1_v6_labels.npy``;
  v4 likewise. ``cifar10.1:PATH`` takes the folder (v6 when present, else v4) or the ``_data.npy`` file.
- CIFAR-10.2 (Lu et al. 2020): ``cifar102_test.npz`` / ``cifar102_train.npz`` with ``images``, ``labels``;
  ``cifar10.2:PATH`` takes the file or the folder holding ``cifar102_test.npz``.
- CINIC-10 (Darlow et al. 2018): PNG folders ``<split>/<class>/``; ``cinic10:PATH`` takes the
  data set root (its ``test`` split) or a split folder.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from robusteval.data.arrays import LabeledArrays
from robusteval.data.cifar_c import CIFAR10_CLASSES
from robusteval.data.imagefolder import class_folders, existing_dir, load_tree
from robusteval.errors import RobustEvalError, expected

CIFAR101_VERSIONS = ("v6", "v4")


def load_cifar101(path: str | Path) -> LabeledArrays:
    """CIFAR-10.1 images and labels from the two ``.npy`` files of one version."""
    path = Path(path)
    if path.is_dir():
        found = [p for v in CIFAR101_VERSIONS if (p := path / f"cifar10.1_{v}_data.npy").is_file()]
        if not found:
            raise RobustEvalError(f"CIFAR-10.1: {path} holds no cifar10.1_v6_data.npy or cifar10.1_v4_data.npy")
        path = found[0]
    if not path.name.endswith("_data.npy") or not path.is_file():
        raise RobustEvalError("CIFAR-10.1: " + expected("a folder or cifar10.1_<version>_data.npy", str(path)))
    labels_path = path.with_name(path.name.replace("_data.npy", "_labels.npy"))
    if not labels_path.is_file():
        raise RobustEvalError(f"CIFAR-10.1: labels file {labels_path} does not exist")
    x, y = _read_npy(path), _read_npy(labels_path)
    return _cifar_arrays(x, y, path, path.name.removesuffix("_data.npy"))


def load_cifar102(path: str | Path) -> LabeledArrays:
    """CIFAR-10.2 images and labels from ``cifar102_test.npz`` (or the train file)."""
    path = Path(path)
    if path.is_dir():
        path = path / "cifar102_test.npz"
    if not path.is_file():
        raise RobustEvalError(f"CIFAR-10.2 file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "images" not in data.files or "labels" not in data.files:
                raise RobustEvalError(f"{path}: expected arrays 'images' and 'labels', got {sorted(data.files)}")
            x, y = data["images"], data["labels"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise RobustEvalError(f"{path} is not a readable CIFAR-10.2 .npz file: {type(exc).__name__}") from exc
    return _cifar_arrays(x, y, path, f"cifar10.2-{path.stem.removeprefix('cifar102_')}")


def load_cinic10(path: str | Path, *, subset: int | None = None, seed: int = 0) -> LabeledArrays:
    """CINIC-10 PNG folders; the data set root means its ``test`` split."""
    root = existing_dir(path, "CINIC-10 folder")
    if (root / "test").is_dir():
        root = root / "test"
    folders = class_folders(root)
    if tuple(folders) != CIFAR10_CLASSES:
        raise RobustEvalError(f"CINIC-10: {root} " + expected(f"the class folders {', '.join(CIFAR10_CLASSES)}",
                                                              ", ".join(folders)))
    return load_tree(root, {c: i for i, c in enumerate(CIFAR10_CLASSES)}, CIFAR10_CLASSES, subset=subset, seed=seed,
                     name=f"cinic10-{root.name}")


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise RobustEvalError(f"{path} is not a readable .npy file: {type(exc).__name__}: {str(exc)[:120]}") from exc


def _cifar_arrays(x: np.ndarray, y: np.ndarray, path: Path, name: str) -> LabeledArrays:
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
        raise RobustEvalError(f"{path}: " + expected("uint8 images (N, 32, 32, 3)", f"{x.dtype} {x.shape}"))
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise RobustEvalError(f"{path}: " + expected("integer labels (N,)", f"{y.dtype} {y.shape}"))
    return LabeledArrays(x, y.astype(np.int64), CIFAR10_CLASSES, name)
