"""ImageNet-family folders in their published layouts, labelled in the 1,000-class ImageNet order.

The class index is the sorted list of the 1,000 ILSVRC-2012 synset ids (``n01440764`` … =
0 …), the order of torchvision's ``ImageFolder`` on the full validation set and of every
torchvision/timm ImageNet model; it ships as ``assets/imagenet_wnids.txt``. A folder holding
only some synsets keeps each one's full-order index.

- ``imagenet:ROOT`` — validation images ``ROOT/<wnid>/*.JPEG``;
- ``imagenet-v2:ROOT`` — ImageNet-V2 (Recht et al. 2019), ``ROOT/<0..999>/*.jpeg`` named by class index;
- ``imagenet-r:ROOT`` / ``imagenet-a:ROOT`` — ImageNet-R (Hendrycks et al. 2021) and ImageNet-A
  (Hendrycks et al. 2021), ``ROOT/<wnid>/`` for 200 synsets each; labels index the sorted 200 and a
  model's 1,000 logits are restricted to those 200 columns before any metric, as in the official
  evaluation code (``output[:, mask]``);
- ImageNet-C (Hendrycks & Dietterich 2019), ``<corruption>/<severity>/<wnid>/*.JPEG``, images
  already 224x224 (read as they are, like robustbench does).

The others get the standard evaluation crop (shorter side 256, centre 224x224).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from robusteval.data.arrays import LabeledArrays
from robusteval.data.imagefolder import class_folders, existing_dir, load_tree
from robusteval.errors import RobustEvalError
from robusteval.validate import SEVERITIES

ASSETS = Path(__file__).resolve().parents[1] / "assets"
CROP = 224
SUBSETS = {"imagenet-r": "imagenet_r_wnids.txt", "imagenet-a": "imagenet_a_wnids.txt"}


@lru_cache(maxsize=None)
def wnids(asset: str = "imagenet_wnids.txt") -> tuple[str, ...]:
    """The synset ids listed in an asset file (the 1,000 ImageNet classes by default), in order."""
    return tuple((ASSETS / asset).read_text().split())


def load_imagenet(root: str | Path, *, subset: int | None = None, seed: int = 0, crop: int | None = CROP,
                  name: str | None = None) -> LabeledArrays:
    """``ROOT/<wnid>/`` folders labelled by each synset's index in the 1,000-class order."""
    root = existing_dir(root)
    index = {w: i for i, w in enumerate(wnids())}
    _check_folders(root, index, "an ImageNet synset id (n01440764 …)")
    return load_tree(root, index, wnids(), crop=crop, subset=subset, seed=seed, name=name)


def load_imagenet_v2(root: str | Path, *, subset: int | None = None, seed: int = 0) -> LabeledArrays:
    """ImageNet-V2: folders ``0`` … ``999`` hold the images of that class index."""
    root = existing_dir(root)
    index = {str(i): i for i in range(len(wnids()))}
    _check_folders(root, index, "a class index 0..999")
    return load_tree(root, index, wnids(), crop=CROP, subset=subset, seed=seed, name=f"imagenet-v2/{root.name}")


def load_imagenet_subset(kind: str, root: str | Path, *, subset: int | None = None, seed: int = 0) -> LabeledArrays:
    """ImageNet-R or ImageNet-A: 200 synsets, labels 0..199, logits restricted to their 1,000-class columns."""
    root = existing_dir(root)
    chosen = wnids(SUBSETS[kind])
    full = {w: i for i, w in enumerate(wnids())}
    _check_folders(root, {w: 0 for w in chosen}, f"one of the 200 {kind} synset ids")
    return load_tree(root, {w: i for i, w in enumerate(chosen)}, chosen, crop=CROP, subset=subset, seed=seed,
                     name=kind, logit_indices=tuple(full[w] for w in chosen), logit_space=len(full))


def load_imagenet_c(root: str | Path, corruption: str, severity: int, *, subset: int | None = None,
                    seed: int = 0) -> LabeledArrays:
    """ImageNet-C images of one corruption and severity: ``ROOT/<corruption>/<severity>/<wnid>/``."""
    folder = Path(root) / corruption / str(severity)
    if not folder.is_dir():
        known = ", ".join(imagenet_c_corruptions(Path(root))) if Path(root).is_dir() else "none"
        raise RobustEvalError(f"ImageNet-C: folder {folder} does not exist (corruptions found: {known or 'none'})")
    return load_imagenet(folder, subset=subset, seed=seed, crop=None, name=f"imagenet-c/{corruption}/{severity}")


def imagenet_c_corruptions(root: Path) -> list[str]:
    """Corruptions under an ImageNet-C folder: sub-folders with at least one severity folder 1..5."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any((p / str(s)).is_dir() for s in SEVERITIES))


def _check_folders(root: Path, known: dict[str, int], what: str) -> None:
    """Every class folder must be a known name: a misnamed folder is an error, never silently dropped."""
    unknown = [f for f in class_folders(root) if f not in known]
    if unknown:
        raise RobustEvalError(f"{root}: folder {unknown[0]!r} is not {what} ({len(unknown)} such folders); "
                              "expected the published layout")
