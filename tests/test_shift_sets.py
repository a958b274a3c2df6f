"""CIFAR natural-shift sets in their published layouts (CIFAR-10.1, CIFAR-10.2, CINIC-10) and
CIFAR-100-C, read from tiny copies and used as ``evaluate.shift`` / corruption files."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torchvision
from PIL import Image

from robusteval import load_config
from robusteval.conditions import build_conditions
from robusteval.config import CorruptionSettings
from robusteval.data.cifar_c import CIFAR10_CLASSES, CIFAR100_CLASSES, ROWS_PER_SEVERITY
from robusteval.data.sources import load_source
from robusteval.errors import RobustEvalError


def _images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


@pytest.mark.parametrize("version", ["v6", "v4"])
def test_cifar10_1_files(version: str, tmp_path: Path) -> None:
    x, y = _images(12)
    np.save(tmp_path / f"cifar10.1_{version}_data.npy", x)
    np.save(tmp_path / f"cifar10.1_{version}_labels.npy", y)
    for spec in (f"cifar10.1:{tmp_path}", f"cifar10.1:{tmp_path / f'cifar10.1_{version}_data.npy'}"):
        data = load_source(spec)
        assert data.classes == CIFAR10_CLASSES and data.name == f"cifar10.1_{version}"
        np.testing.assert_array_equal(data.x, x)
        np.testing.assert_array_equal(data.y, y)


def test_cifar10_1_prefers_v6_and_names_missing_files(tmp_path: Path) -> None:
    for version, seed in (("v4", 1), ("v6", 2)):
        x, y = _images(4, seed)
        np.save(tmp_path / f"cifar10.1_{version}_data.npy", x)
        np.save(tmp_path / f"cifar10.1_{version}_labels.npy", y)
    np.testing.assert_array_equal(load_source(f"cifar10.1:{tmp_path}").x, _images(4, 2)[0])
    (tmp_path / "cifar10.1_v6_labels.npy").unlink()
    with pytest.raises(RobustEvalError, match="labels file .*cifar10.1_v6_labels.npy does not exist"):
        load_source(f"cifar10.1:{tmp_path}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RobustEvalError, match="holds no cifar10.1_v6_data.npy"):
        load_source(f"cifar10.1:{tmp_path / 'empty'}")


def test_cifar10_2_npz(tmp_path: Path) -> None:
    x, y = _images(9)
    np.savez(tmp_path / "cifar102_test.npz", images=x, labels=y)
    for spec in (f"cifar10.2:{tmp_path}", f"cifar10.2:{tmp_path / 'cifar102_test.npz'}"):
        data = load_source(spec)
        assert data.classes == CIFAR10_CLASSES and data.name == "cifar10.2-test"
        np.testing.assert_array_equal(data.x, x)
        np.testing.assert_array_equal(data.y, y)
    np.savez(tmp_path / "wrong.npz", x=x, y=y)
    with pytest.raises(RobustEvalError, match=r"expected arrays 'images' and 'labels', got \['x', 'y'\]"):
        load_source(f"cifar10.2:{tmp_path / 'wrong.npz'}")
    np.savez(tmp_path / "small.npz", images=x[:, :8, :8], labels=y)
    with pytest.raises(RobustEvalError, match=r"expected uint8 images \(N, 32, 32, 3\)"):
        load_source(f"cifar10.2:{tmp_path / 'small.npz'}")


def test_cinic10_folders_match_torchvision_imagefolder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in CIFAR10_CLASSES:
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(2):
                image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(image).save(tmp_path / split / cls / f"cifar10-test-{i}.png")
    data = load_source(f"cinic10:{tmp_path}")
    reference = torchvision.datasets.ImageFolder(str(tmp_path / "test"))
    assert data.classes == tuple(reference.classes) == CIFAR10_CLASSES and data.name == "cinic10-test"
    np.testing.assert_array_equal(data.y, [label for _, label in reference.samples])
    np.testing.assert_array_equal(data.x, np.stack([np.asarray(reference[i][0]) for i in range(len(reference))]))
    assert len(load_source(f"cinic10:{tmp_path / 'train'}", subset=10)) == 10
    (tmp_path / "test" / "unicorn").mkdir()
    with pytest.raises(RobustEvalError, match="expected the class folders airplane, .*, got .*unicorn"):
        load_source(f"cinic10:{tmp_path}")


def test_shift_sets_as_conditions_of_cifar10_data(tmp_path: Path) -> None:
    x, y = _images(20)
    np.save(tmp_path / "cifar10.1_v6_data.npy", x)
    np.save(tmp_path / "cifar10.1_v6_labels.npy", y)
    np.savez(tmp_path / "cifar102_test.npz", images=x[:10], labels=y[:10])
    config = load_config("clean")
    shift = {"c101": f"cifar10.1:{tmp_path}", "c102": f"cifar10.2:{tmp_path}"}
    config = config.replace(evaluate=dataclasses.replace(config.evaluate, shift=shift))
    conditions = build_conditions(config.evaluate, load_source("bundled", subset=20), seed=config.data.seed,
                                  subset=config.data.subset)
    assert [(c.key, c.family, len(c)) for c in conditions[1:]] == [("shift/c101", "shift", 20),
                                                                   ("shift/c102", "shift", 10)]


def test_cifar100_c_as_source_and_as_corruption_files(tmp_path: Path) -> None:
    folder = tmp_path / "CIFAR-100-C"
    folder.mkdir()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 100, ROWS_PER_SEVERITY)
    np.save(folder / "labels.npy", np.tile(labels, 5).astype(np.uint8))
    images = rng.integers(0, 256, (5 * ROWS_PER_SEVERITY, 2, 2, 3), dtype=np.uint8)
    np.save(folder / "fog.npy", images)
    data = load_source(f"cifar100-c:{tmp_path}:fog:4")
    assert data.classes == CIFAR100_CLASSES and data.name == "cifar100-c/fog/4"
    np.testing.assert_array_equal(data.x, images[3 * ROWS_PER_SEVERITY:4 * ROWS_PER_SEVERITY])
    np.testing.assert_array_equal(data.y, labels)
    np.testing.assert_array_equal(load_source(f"cifar100-c:{folder}:fog:4").x, data.x)  # the folder itself

    clean = load_source(f"cifar100-c:{tmp_path}:fog:1", subset=200)  # 100-class evaluation data
    settings = CorruptionSettings(corruptions=("fog",), severities=(2,), subset=100, files=str(tmp_path))
    config = load_config("clean")
    config = config.replace(evaluate=dataclasses.replace(config.evaluate, corruption=settings))
    (fog,) = build_conditions(config.evaluate, clean, seed=config.data.seed)[1:]
    assert fog.meta["source"] == "files" and fog.data.classes == CIFAR100_CLASSES and len(fog) == 100
    bad = load_source("bundled", subset=20)
    with pytest.raises(RobustEvalError, match="corruption files exist for data of 10 .*, 100 .*, 1000 .* classes; "
                                              "the evaluation data has 7"):
        build_conditions(config.evaluate, dataclasses.replace(bad, y=bad.y % 7, classes=bad.classes[:7]), seed=0)
