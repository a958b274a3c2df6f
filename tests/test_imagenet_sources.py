"""ImageNet-family folders: the synset order and class index, ImageNet-V2, ImageNet-R/A (200 classes
mapped to the 1,000 logits, evaluated as the official code does) and ImageNet-C folders."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from robusteval import audit, load_config
from robusteval.conditions import build_conditions
from robusteval.config import CorruptionSettings
from robusteval.data.imagenet import SUBSETS, wnids
from robusteval.data.sources import load_source
from robusteval.errors import RobustEvalError

TRANSFORM = torchvision.transforms.Compose([torchvision.transforms.Resize(256), torchvision.transforms.CenterCrop(224)])


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates the files without importing the package
    if spec is None or spec.origin is None:
        pytest.skip(f"{package} is not installed")
    return Path(spec.origin).parent.joinpath(*parts)


def test_class_index_is_robustbench_and_timm_order() -> None:
    order = wnids()
    assert len(order) == len(set(order)) == 1000 and list(order) == sorted(order)
    assert order[:2] == ("n01440764", "n01443537") and order[-1] == "n15075141"  # tench, goldfish, toilet tissue
    robustbench = json.loads(_package_file("robustbench", "helper_files", "imagenet_class_to_id_map.json").read_text())
    assert robustbench == {w: i for i, w in enumerate(order)}


@pytest.mark.parametrize("kind", sorted(SUBSETS))
def test_subset_lists_match_timm(kind: str) -> None:
    chosen = wnids(SUBSETS[kind])
    assert len(chosen) == len(set(chosen)) == 200 and list(chosen) == sorted(chosen) and set(chosen) <= set(wnids())
    assert chosen[0] == {"imagenet-r": "n01443537", "imagenet-a": "n01498041"}[kind]  # goldfish / stingray
    info = _package_file("timm", "data", "_info")
    letter = kind[-1]
    assert chosen == tuple((info / f"imagenet_{letter}_synsets.txt").read_text().split())
    indices = [int(i) for i in (info / f"imagenet_{letter}_indices.txt").read_text().split()]
    assert [wnids().index(w) for w in chosen] == indices


def _tree(root: Path, folders: dict[str, list[tuple[int, int]]], seed: int = 0) -> None:
    """PNG images of the given (width, height) sizes under root/<folder>/."""
    rng = np.random.default_rng(seed)
    for folder, sizes in folders.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i, (w, h) in enumerate(sizes):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / folder / f"im{i}.png")


def _reference(root: Path, class_to_idx: dict[str, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's ImageFolder with the ImageNet evaluation transform (the reference loader)."""
    folder = torchvision.datasets.ImageFolder(str(root), transform=TRANSFORM)
    if class_to_idx is not None:
        folder.samples = [(p, class_to_idx[Path(p).parent.name]) for p, _ in folder.samples]
    pairs = [folder[i] for i in range(len(folder))]
    return np.stack([np.asarray(img) for img, _ in pairs]), np.array([label for _, label in pairs])


def test_imagenet_folder_keeps_the_full_class_index(tmp_path: Path) -> None:
    root = tmp_path / "val"
    _tree(root, {"n01440764": [(300, 260), (260, 300)], "n01443537": [(256, 256)], "n15075141": [(500, 375)]})
    data = load_source(f"imagenet:{root}")
    assert data.num_classes == 1000 and data.classes == wnids() and data.image_shape == (3, 224, 224)
    x, y = _reference(root, {w: i for i, w in enumerate(wnids())})
    assert sorted(data.y.tolist()) == [0, 0, 1, 999]
    order = np.lexsort((np.arange(len(y)), y))
    np.testing.assert_array_equal(data.x, x[order])
    np.testing.assert_array_equal(data.y, y[order])
    (root / "cats").mkdir()
    with pytest.raises(RobustEvalError, match="folder 'cats' is not an ImageNet synset id"):
        load_source(f"imagenet:{root}")


def test_imagenet_v2_numbered_folders(tmp_path: Path) -> None:
    v2, named = tmp_path / "v2", tmp_path / "named"
    _tree(v2, {"0": [(320, 240)], "999": [(240, 320)], "7": [(256, 300)]})
    for folder in v2.iterdir():
        target = named / wnids()[int(folder.name)]
        target.mkdir(parents=True)
        for image in folder.iterdir():
            (target / image.name).write_bytes(image.read_bytes())
    data, same = load_source(f"imagenet-v2:{v2}"), load_source(f"imagenet:{named}")
    assert sorted(data.y.tolist()) == [0, 7, 999]
    by_label = {int(label): row for label, row in zip(same.y, same.x)}
    for label, row in zip(data.y, data.x):
        np.testing.assert_array_equal(row, by_label[int(label)])
    (v2 / "1000").mkdir()
    with pytest.raises(RobustEvalError, match="folder '1000' is not a class index 0..999"):
        load_source(f"imagenet-v2:{v2}")


class PixelClassifier(nn.Module):
    """1,000 logits from the mean grey level: column j peaks at level j % 200 + 1, and every column outside
    the data's 200 classes gets +5, so only logits restricted to those 200 columns predict well."""

    def __init__(self, columns: list[int]) -> None:
        super().__init__()
        centres = torch.tensor([float(j % 200 + 1) for j in range(1000)])
        centres[torch.tensor(columns)] = torch.arange(1, 201, dtype=torch.float32)
        bonus = torch.full((1000,), 5.0)
        bonus[torch.tensor(columns)] = 0.0
        self.register_buffer("centres", centres)
        self.register_buffer("bonus", bonus)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = x.mean(dim=(1, 2, 3)) * 255
        return -0.02 * (level[:, None] - self.centres) ** 2 + self.bonus


def _grey_tree(root: Path, chosen: tuple[str, ...]) -> None:
    """One image per class of the full 200-class layout, grey level = class position + 1 (some off by 3)."""
    for i, wnid in enumerate(chosen):
        (root / wnid).mkdir(parents=True)
        level = i + 1 + (3 if i % 5 == 0 else 0)
        Image.fromarray(np.full((20, 24, 3), level, np.uint8)).save(root / wnid / "im.png")


def _official(model: nn.Module, root: Path, kind: str) -> tuple[float, float]:
    """Hendrycks' ImageNet-R/A evaluation: ImageFolder over the 200 folders, ``output[:, mask]``, argmax."""
    mask = [w in set(wnids(SUBSETS[kind])) for w in wnids()]
    x, y = _reference(root)
    with torch.no_grad():
        logits = model(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255)[:, mask]
    target = torch.from_numpy(y)
    correct = int((logits.argmax(1) == target).sum())
    return correct / len(target), nn.functional.cross_entropy(logits, target).item()


def _config(source: str, **evaluate: object):
    config = load_config("clean")
    return config.replace(data=dataclasses.replace(config.data, source=source, batch_size=64),
                          evaluate=dataclasses.replace(config.evaluate, **evaluate))


@pytest.mark.parametrize("kind", ["imagenet-r", "imagenet-a"])
def test_subset_evaluated_on_its_200_columns_like_the_official_code(kind: str, tmp_path: Path) -> None:
    root = tmp_path / kind
    chosen = wnids(SUBSETS[kind])
    _grey_tree(root, chosen)
    data = load_source(f"{kind}:{root}")
    assert data.num_classes == 200 and data.num_logits == 1000 and data.y.tolist() == list(range(200))
    columns = [wnids().index(w) for w in chosen]
    assert data.logit_indices == tuple(columns)
    model = PixelClassifier(columns)
    accuracy, nll = _official(model, root, kind)
    assert 0.7 < accuracy < 0.9  # the off-by-3 images are wrong, the others right

    run = audit(model, config=_config(f"{kind}:{root}"), out=tmp_path / "run", progress=False)
    metrics = run.metrics("dense")
    assert metrics["clean/accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert metrics["calibration/nll"] == pytest.approx(nll, rel=1e-5)

    val = tmp_path / "val"  # the same set as a shift condition of 1,000-class ImageNet data
    _tree(val, {"n01440764": [(256, 256)], chosen[0]: [(256, 256)]})
    shifted = audit(model, config=_config(f"imagenet:{val}", shift={"r": f"{kind}:{root}"}), out=tmp_path / "run2",
                    progress=False).metrics("dense")
    assert shifted["shift/r/accuracy"] == pytest.approx(accuracy, abs=1e-9)


def test_subset_source_refuses_attacks_and_training(tmp_path: Path) -> None:
    """Attacks and fine-tuning read raw logits against the labels, so a class subset cannot feed them."""
    root = tmp_path / "r"
    _grey_tree(root, wnids(SUBSETS["imagenet-r"])[:2])
    quick = load_config("quick")
    config = _config(f"imagenet-r:{root}", adversarial=quick.evaluate.adversarial)
    with pytest.raises(RobustEvalError, match="200-class subset of 1000 classes: adversarial attacks need"):
        audit(nn.Identity(), config=config, out=tmp_path / "run", progress=False)
    val = tmp_path / "val"
    _tree(val, {"n01440764": [(256, 256)]})
    config = _config(f"imagenet:{val}").replace(pruning=quick.pruning)
    config = config.replace(data=dataclasses.replace(config.data, train=f"imagenet-r:{root}"))
    with pytest.raises(RobustEvalError, match="training data 'imagenet-r:.*' is a class subset \\(200 of 1000"):
        audit(PixelClassifier(list(range(200))), config=config, out=tmp_path / "run2", progress=False)


def test_imagenet_c_folders_as_source_and_as_corruption_files(tmp_path: Path) -> None:
    root = tmp_path / "data"
    folder = root / "ImageNet-C"
    _tree(folder / "fog" / "3", {"n01440764": [(224, 224)], "n15075141": [(224, 224), (224, 224)]}, seed=1)
    _tree(folder / "snow" / "1", {"n01443537": [(224, 224)]}, seed=2)
    data = load_source(f"imagenet-c:{root}:fog:3")
    assert data.name == "imagenet-c/fog/3" and data.y.tolist() == [0, 999, 999]
    stored = [np.asarray(Image.open(folder / "fog" / "3" / w / f"im{i}.png"))
              for w, i in (("n01440764", 0), ("n15075141", 0), ("n15075141", 1))]
    np.testing.assert_array_equal(data.x, np.stack(stored))  # read as stored: no resize, no crop
    np.testing.assert_array_equal(load_source(f"imagenet-c:{folder}:fog:3").x, data.x)  # the folder itself works too
    with pytest.raises(RobustEvalError, match=r"fog/5 does not exist \(corruptions found: fog, snow\)"):
        load_source(f"imagenet-c:{root}:fog:5")

    clean = load_source(f"imagenet:{folder / 'snow' / '1'}")
    settings = CorruptionSettings(corruptions=("fog", "contrast"), severities=(3,), subset=None, files=str(root))
    fog, contrast = build_conditions(_config("bundled", corruption=settings).evaluate, clean, seed=0)[1:]
    assert fog.meta["source"] == "files" and fog.data.y.tolist() == [0, 999, 999]
    assert contrast.meta["source"] == "generated"  # not on disk: made on the fly
    partial = dataclasses.replace(settings, corruptions=("snow",))  # on disk, but not at severity 3: never made up
    with pytest.raises(RobustEvalError, match="snow/3 does not exist"):
        build_conditions(_config("bundled", corruption=partial).evaluate, clean, seed=0)
