"""Precomputed CIFAR-10-C / CIFAR-100-C / ImageNet-C files (Hendrycks & Dietterich 2019) in robustbench's layout.

``<root>/CIFAR-10-C/<corruption>.npy`` holds uint8 NHWC images of all five severities
stacked (rows ``(s-1)*10000 : s*10000`` for severity s) and ``labels.npy`` the uint8 labels
(the test labels repeated per severity); CIFAR-100-C likewise. Rows are read through
robustbench's own loader when robustbench imports, else with the same slicing in NumPy.
Folders and files are checked first, so robustbench never tries to download. ImageNet-C is
``<root>/ImageNet-C/<corruption>/<severity>/<wnid>/*.JPEG`` (:mod:`robusteval.data.imagenet`).
``root`` may also be the data set's folder itself.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from robusteval import validate
from robusteval.compat import import_robustbench
from robusteval.data.arrays import LabeledArrays
from robusteval.data.imagenet import imagenet_c_corruptions, load_imagenet_c, wnids
from robusteval.errors import RobustEvalError, expected

ROWS_PER_SEVERITY = 10_000

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = tuple(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can
    castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin
    elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster
    man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck
    pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk
    skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger
    tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
)
DATASETS = {"cifar10": ("CIFAR-10-C", CIFAR10_CLASSES), "cifar100": ("CIFAR-100-C", CIFAR100_CLASSES),
            "imagenet": ("ImageNet-C", wnids())}


def corruption_dataset(num_classes: int) -> str:
    """The corruption data set whose files fit evaluation data of ``num_classes`` classes."""
    for dataset, (folder, classes) in DATASETS.items():
        if len(classes) == num_classes:
            return dataset
    sizes = ", ".join(f"{len(c)} ({f})" for f, c in DATASETS.values())
    raise RobustEvalError(f"corruption files exist for data of {sizes} classes; the evaluation data has {num_classes}")


def _folder(root: Path, dataset: str) -> Path:
    if dataset not in DATASETS:
        raise RobustEvalError("corruption files: " + expected(f"dataset one of {', '.join(DATASETS)}", dataset))
    name = DATASETS[dataset][0]
    folder = Path(root) / name
    if not folder.is_dir() and Path(root).name == name:
        folder = Path(root)
    if not folder.is_dir():
        raise RobustEvalError(f"{dataset} corruption files: folder {folder} does not exist")
    return folder


def available_corruption_files(root: Path, dataset: str = "cifar10") -> list[str]:
    """Names of the corruptions stored under ``<root>/<CIFAR-10-C|CIFAR-100-C|ImageNet-C>``."""
    folder = _folder(root, dataset)
    if dataset == "imagenet":
        return imagenet_c_corruptions(folder)
    return sorted(p.stem for p in folder.glob("*.npy") if p.stem != "labels")


def load_corruption_files(root: Path, corruption: str, severity: int, *, dataset: str = "cifar10",
                          subset: int | None = None, seed: int = 0) -> LabeledArrays:
    """The precomputed test images of ``corruption`` at ``severity`` (uint8 NHWC) with labels (10,000 for
    CIFAR, the ImageNet-C folder's images for ImageNet, of which only a ``subset`` is decoded)."""
    folder = _folder(root, dataset)
    validate.severity(f"{dataset} corruption files", severity)
    if dataset == "imagenet":
        return load_imagenet_c(folder, corruption, severity, subset=subset, seed=seed)
    labels_path, images_path = folder / "labels.npy", folder / f"{corruption}.npy"
    if not labels_path.is_file():
        raise RobustEvalError(f"{dataset} corruption files: labels file {labels_path} does not exist")
    if not images_path.is_file():
        known = ", ".join(available_corruption_files(root, dataset)) or "none"
        raise RobustEvalError(f"{dataset} corruption files: {images_path} does not exist (found: {known})")
    stored = np.load(images_path, mmap_mode="r")
    if stored.ndim != 4 or stored.dtype != np.uint8 or len(stored) < severity * ROWS_PER_SEVERITY:
        raise RobustEvalError(
            f"{images_path}: " + expected(f"uint8 images (N, H, W, C) with N >= {severity * ROWS_PER_SEVERITY}",
                                          f"{stored.dtype} {stored.shape}")
        )
    try:
        images, labels = _read_with_robustbench(folder.parent, corruption, severity, dataset)
    except RobustEvalError:
        images, labels = _read_with_numpy(stored, np.load(labels_path), severity)
    name = f"{dataset}-c/{corruption}/{severity}"
    return LabeledArrays(images, labels, DATASETS[dataset][1], name)


def _read_with_robustbench(root: Path, corruption: str, severity: int, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """robustbench's ``load_corruptions_cifar``, converted back to uint8 NHWC (exact: it divides by 255)."""
    import_robustbench()
    from robustbench.data import load_corruptions_cifar
    from robustbench.model_zoo.enums import BenchmarkDataset

    x, y = load_corruptions_cifar(
        BenchmarkDataset(dataset), ROWS_PER_SEVERITY, severity, str(root), [corruption], shuffle=False
    )
    images = (x * 255).round().byte().permute(0, 2, 3, 1).numpy()
    return np.ascontiguousarray(images), y.numpy().astype(np.int64)


def _read_with_numpy(stored: np.ndarray, labels: np.ndarray, severity: int) -> tuple[np.ndarray, np.ndarray]:
    """The same rows as robustbench: the severity's block of images, the first block of labels."""
    rows = slice((severity - 1) * ROWS_PER_SEVERITY, severity * ROWS_PER_SEVERITY)
    return np.array(stored[rows]), labels[:ROWS_PER_SEVERITY].astype(np.int64)
