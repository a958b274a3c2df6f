"""The CIFAR-10 sample shipped inside the package, so the demo works offline.

2,000 test and 5,000 training images, class-balanced, from the CIFAR-10 (JPEG q75) copy;
stored as their original JPEG bytes and decoded once into the array cache.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from robusteval.data.arrays import LabeledArrays
from robusteval.data.cache import cache_dir, load_npz, save_npz
from robusteval.errors import RobustEvalError

BUNDLED_PATH = Path(__file__).resolve().parents[1] / "assets" / "cifar10_sample.npz"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = ("test", "train")


def load_bundled(split: str = "test") -> LabeledArrays:
    """The bundled sample's ``split`` ("test" or "train") as decoded uint8 arrays."""
    if split not in SPLITS:
        raise RobustEvalError(f"bundled data: expected split 'test' or 'train', got {split!r}")
    if not BUNDLED_PATH.is_file():
        raise RobustEvalError(f"the bundled sample {BUNDLED_PATH} is missing; reinstall robusteval")
    digest = hashlib.sha256(BUNDLED_PATH.read_bytes()).hexdigest()[:16]
    cache = cache_dir() / f"bundled-{split}-{digest}.npz"
    cached = load_npz(cache)
    if cached is None:
        with np.load(BUNDLED_PATH) as data:
            blob, offsets, labels = data[f"{split}_jpeg"], data[f"{split}_offsets"], data[f"{split}_labels"]
        images = [np.asarray(Image.open(io.BytesIO(blob[a:b].tobytes())).convert("RGB"))
                  for a, b in zip(offsets[:-1], offsets[1:])]
        cached = {"x": np.stack(images), "y": labels.astype(np.int64)}
        save_npz(cache, **cached)
    return LabeledArrays(cached["x"], cached["y"], CLASSES, f"bundled-{split}")
