"""Decode image trees (``root/<class>/<image>``) into cached uint8 arrays.

``load_imagefolder`` labels sorted folder names 0..k-1; ``load_tree`` takes an explicit
folder → label mapping (ImageNet's synset index, ImageNet-V2's numbered folders, …) and an
optional ImageNet evaluation crop. With ``subset`` only the chosen images are decoded.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from robusteval.data.arrays import LabeledArrays, stratified_indices
from robusteval.data.cache import cache_dir, load_npz, save_npz
from robusteval.errors import RobustEvalError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff"}


def existing_dir(root: str | os.PathLike[str], what: str = "image folder") -> Path:
    root = Path(root)
    if not root.is_dir():
        raise RobustEvalError(f"{what} {root} does not exist")
    return root


def class_folders(root: Path) -> list[str]:
    """Sorted names of the sub-folders of ``root`` (one per class)."""
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not folders:
        raise RobustEvalError(f"image folder {root} has no class sub-folders (expected {root}/<class>/<image>)")
    return folders


def load_imagefolder(root: str | os.PathLike[str], size: int | None = None, *, subset: int | None = None,
                     seed: int = 0) -> LabeledArrays:
    """Every image under ``root/<class>/`` as RGB (resized to ``size`` if given); classes are the sorted
    folder names."""
    root = existing_dir(root)
    classes = class_folders(root)
    return load_tree(root, {c: i for i, c in enumerate(classes)}, tuple(classes), size=size, subset=subset,
                     seed=seed)


def load_tree(root: Path, labels: Mapping[str, int], classes: tuple[str, ...], *, size: int | None = None,
              crop: int | None = None, subset: int | None = None, seed: int = 0, name: str | None = None,
              logit_indices: tuple[int, ...] | None = None, logit_space: int | None = None) -> LabeledArrays:
    """Images of the folders ``root/<folder>/`` labelled ``labels[folder]``.

    Decoded arrays are cached, keyed by the file list, sizes, modification times and options,
    so a second run does not decode again. ``crop`` applies the standard ImageNet evaluation
    transform (shorter side to ``crop * 256 / 224``, then a centre ``crop``).
    """
    files: list[tuple[Path, int]] = []
    for folder, label in sorted(labels.items()):
        if (root / folder).is_dir():
            files += [(p, label) for p in sorted((root / folder).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise RobustEvalError(f"image folder {root} contains no images")
    if subset is not None:
        chosen = stratified_indices(np.array([y for _, y in files]), len(classes), subset, seed, str(root))
        files = [files[i] for i in chosen]
    key = hashlib.sha256(f"{root.resolve()}:{size}:{crop}".encode())
    for p, label in files:
        st = p.stat()
        key.update(f"{p.relative_to(root)}:{label}:{st.st_size}:{st.st_mtime_ns}".encode())
    cache = cache_dir() / f"imagefolder-{key.hexdigest()[:24]}.npz"
    arrays = load_npz(cache)
    if arrays is None:
        arrays = {"x": _decode_all(root, [p for p, _ in files], size, crop),
                  "y": np.array([label for _, label in files], dtype=np.int64)}
        save_npz(cache, **arrays)
    return LabeledArrays(arrays["x"], arrays["y"], classes, name or root.name, logit_indices, logit_space)


def _decode_all(root: Path, paths: list[Path], size: int | None, crop: int | None) -> np.ndarray:
    decoded = [_decode(p, size, crop) for p in paths]
    odd = next((i for i, a in enumerate(decoded) if a.shape != decoded[0].shape), None)
    if odd is not None:
        raise RobustEvalError(
            f"images in {root} differ in size: {paths[0]} is {_hw(decoded[0])}, {paths[odd]} is "
            f"{_hw(decoded[odd])}; expected one size (resize them first)"
        )
    return np.stack(decoded)


def _hw(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def _decode(path: Path, size: int | None, crop: int | None = None) -> np.ndarray:
    """One image as uint8 RGB; PIL's decompression-bomb warning counts as an error here."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img = img.convert("RGB")
                if crop is not None:
                    img = imagenet_crop(img, crop)
                elif size is not None and img.size != (size, size):
                    img = img.resize((size, size), Image.BILINEAR)
                return np.asarray(img, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RobustEvalError(f"image {path} is too large to decode safely ({exc}); "
                              "resize it or remove it from the folder") from exc
    except OSError as exc:
        raise RobustEvalError(f"cannot decode image {path}: {exc}") from exc


def imagenet_crop(img: Image.Image, crop: int = 224) -> Image.Image:
    """torchvision's ImageNet evaluation transform: ``Resize(crop * 256 // 224)`` then ``CenterCrop(crop)``."""
    from torchvision import transforms

    return transforms.CenterCrop(crop)(transforms.Resize(crop * 256 // 224)(img))
