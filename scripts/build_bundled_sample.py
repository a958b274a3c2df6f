"""Build ``robusteval/assets/cifar10_sample.npz`` from the shared CIFAR-10 (JPEG q75) copy.

    python scripts/build_bundled_sample.py --data ../shared/data/cifar10-jpeg.tar.gz

Keeps the original JPEG bytes (the copy is JPEG already, so nothing is re-encoded) of a
class-balanced, seeded selection: 2,000 test images and 5,000 training images.
"""
from __future__ import annotations

import argparse
import tarfile
from pathlib import Path

import numpy as np

from robusteval.data.bundled import BUNDLED_PATH, CLASSES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/cifar10-jpeg.tar.gz")
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--train", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    with tarfile.open(args.data) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
    files: dict[tuple[str, int], list[str]] = {}
    for member in members:
        parts = Path(member.name).parts
        if len(parts) >= 3 and parts[-2] in CLASSES:
            files.setdefault((parts[-3], CLASSES.index(parts[-2])), []).append(member.name)
    chosen: dict[str, tuple[str, int]] = {}
    for (split, label), names in sorted(files.items()):
        total = args.test if split == "test" else args.train
        for i in rng.choice(len(names), total // len(CLASSES), replace=False):
            chosen[sorted(names)[i]] = (split, label)
    blobs: dict[str, bytes] = {}
    with tarfile.open(args.data, "r|gz") as stream:  # one sequential pass: gzip cannot seek cheaply
        for member in stream:
            if member.name in chosen:
                blobs[member.name] = stream.extractfile(member).read()
    arrays = {}
    for split in ("test", "train"):
        names = sorted((n for n, (s, _) in chosen.items() if s == split), key=lambda n: (chosen[n][1], n))
        lengths = np.array([len(blobs[n]) for n in names], dtype=np.int64)
        arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(blobs[n] for n in names), dtype=np.uint8)
        arrays[f"{split}_offsets"] = np.concatenate([[0], np.cumsum(lengths)])
        arrays[f"{split}_labels"] = np.array([chosen[n][1] for n in names], dtype=np.uint8)
    BUNDLED_PATH.parent.mkdir(exist_ok=True)
    np.savez(BUNDLED_PATH, **arrays)
    print(f"wrote {BUNDLED_PATH} ({BUNDLED_PATH.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
