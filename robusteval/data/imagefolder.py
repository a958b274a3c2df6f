"""Decode an ``ImageFolder`` tree (``root/<class>/<image>``) into cached uint8 arrays."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from robusteval.data.arrays import LabeledArrays
from robusteval.data.cache import cache_dir, load_npz, save_npz
from robusteval.errors import RobustEvalError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff"}


def load_imagefolder(root: str | os.PathLike[str], size: int | None = None) -> LabeledArrays:
    """Load every image under ``root/<class>/`` as RGB, resized to ``size`` if given.

    Decoded arrays are cached, keyed by the file list, sizes and modification times,
    so a second run does not decode again.
    """
    root = Path(root)
    if not root.is_dir():
        raise RobustEvalError(f"image folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise RobustEvalError(f"image folder {root} has no class sub-folders (expected {root}/<class>/<image>)")
    files: list[tuple[Path, int]] = []
    for label, cls in enumerate(classes):
        files += [(p, label) for p in sorted((root / cls).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise RobustEvalError(f"image folder {root} contains no images")
    key = hashlib.sha256(f"{root.resolve()}:{size}".encode())
    for p, _ in files:
        st = p.stat()
        key.update(f"{p.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    cache = cache_dir() / f"imagefolder-{key.hexdigest()[:24]}.npz"
    cached = load_npz(cache)
    if cached is not None:
        return LabeledArrays(cached["x"], cached["y"], tuple(classes), root.name)
    decoded = [_decode(p, size) for p, _ in files]
    odd = next((i for i, a in enumerate(decoded) if a.shape != decoded[0].shape), None)
    if odd is not None:
        raise RobustEvalError(
            f"images in {root} differ in size: {files[0][0]} is {_hw(decoded[0])}, {files[odd][0]} is "
            f"{_hw(decoded[odd])}; expected one size (resize them first)"
        )
    x = np.stack(decoded)
    y = np.array([label for _, label in files], dtype=np.int64)
    save_npz(cache, x=x, y=y)
    return LabeledArrays(x, y, tuple(classes), root.name)


def _hw(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def _decode(path: Path, size: int | None) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except OSError as exc:
        raise RobustEvalError(f"cannot decode image {path}: {exc}") from exc
