"""Precomputed CIFAR-10-C / CIFAR-100-C files: same tensors as robustbench's loader, clear errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robusteval.compat import import_robustbench
from robusteval.data import cifar_c
from robusteval.data.cifar_c import (
    CIFAR100_CLASSES,
    ROWS_PER_SEVERITY,
    available_corruption_files,
    load_corruption_files,
)
from robusteval.errors import RobustEvalError

ROWS = 5 * ROWS_PER_SEVERITY  # robustbench slices 10,000 rows per severity; tiny 2x2 images keep files small


def fake_folder(
    root: Path, folder: str = "CIFAR-10-C", classes: int = 10, names: tuple[str, ...] = ("fog", "snow")
) -> None:
    rng = np.random.default_rng(0)
    (root / folder).mkdir(parents=True)
    np.save(root / folder / "labels.npy", np.tile(rng.integers(0, classes, ROWS_PER_SEVERITY), 5).astype(np.uint8))
    for name in names:
        np.save(root / folder / f"{name}.npy", rng.integers(0, 256, (ROWS, 2, 2, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def robustbench_data():
    import_robustbench()
    from robustbench.data import load_corruptions_cifar
    from robustbench.model_zoo.enums import BenchmarkDataset

    return load_corruptions_cifar, BenchmarkDataset


@pytest.mark.parametrize("severity", [1, 4])
def test_same_tensors_as_robustbench(tmp_path: Path, robustbench_data, severity: int) -> None:
    load_corruptions_cifar, BenchmarkDataset = robustbench_data
    fake_folder(tmp_path)
    data = load_corruption_files(tmp_path, "snow", severity)
    x, y = load_corruptions_cifar(BenchmarkDataset.cifar_10, ROWS_PER_SEVERITY, severity, str(tmp_path), ["snow"])
    assert data.x.dtype == np.uint8 and data.x.shape == (ROWS_PER_SEVERITY, 2, 2, 3)
    assert torch.equal(data.images(slice(None)), x)
    assert torch.equal(data.labels(slice(None)), y.long())
    stored = np.load(tmp_path / "CIFAR-10-C" / "snow.npy")
    np.testing.assert_array_equal(data.x, stored[(severity - 1) * ROWS_PER_SEVERITY : severity * ROWS_PER_SEVERITY])


def test_numpy_fallback_reads_the_same_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_folder(tmp_path)
    with_robustbench = load_corruption_files(tmp_path, "fog", 2)

    def unavailable(*args: object) -> None:
        raise RobustEvalError("cannot import robustbench")

    monkeypatch.setattr(cifar_c, "_read_with_robustbench", unavailable)
    fallback = load_corruption_files(tmp_path, "fog", 2)
    np.testing.assert_array_equal(fallback.x, with_robustbench.x)
    np.testing.assert_array_equal(fallback.y, with_robustbench.y)
    assert fallback.name == "cifar10-c/fog/2"


def test_cifar100_layout(tmp_path: Path) -> None:
    fake_folder(tmp_path, "CIFAR-100-C", classes=100, names=("contrast",))
    data = load_corruption_files(tmp_path, "contrast", 5, dataset="cifar100")
    assert data.num_classes == 100 == len(set(CIFAR100_CLASSES))
    assert available_corruption_files(tmp_path, "cifar100") == ["contrast"]


def test_available_files(tmp_path: Path) -> None:
    fake_folder(tmp_path)
    assert available_corruption_files(tmp_path) == ["fog", "snow"]


def test_errors_name_the_expected_path(tmp_path: Path) -> None:
    with pytest.raises(RobustEvalError, match=f"folder {tmp_path / 'CIFAR-10-C'} does not exist"):
        load_corruption_files(tmp_path, "fog", 1)
    with pytest.raises(RobustEvalError, match="dataset one of cifar10, cifar100, imagenet"):
        load_corruption_files(tmp_path, "fog", 1, dataset="mnist")
    fake_folder(tmp_path)
    with pytest.raises(RobustEvalError, match=r"frost.npy does not exist \(found: fog, snow\)"):
        load_corruption_files(tmp_path, "frost", 1)
    with pytest.raises(RobustEvalError, match="severity in 1..5"):
        load_corruption_files(tmp_path, "fog", 6)
    np.save(tmp_path / "CIFAR-10-C" / "short.npy", np.zeros((ROWS_PER_SEVERITY, 2, 2, 3), np.uint8))
    with pytest.raises(RobustEvalError, match="N >= 20000"):
        load_corruption_files(tmp_path, "short", 2)
    (tmp_path / "CIFAR-10-C" / "labels.npy").unlink()
    with pytest.raises(RobustEvalError, match="labels.npy does not exist"):
        load_corruption_files(tmp_path, "fog", 1)
