"""Data sources: npz, imagefolder (+ decoded cache), bundled sample, torchvision on-disk layouts, subsets."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets
from PIL import Image

import robusteval.data.imagefolder as imagefolder
from robusteval.data.sources import load_source, torchvision_root
from robusteval.errors import RobustEvalError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _one_line(exc: pytest.ExceptionInfo[RobustEvalError]) -> str:
    text = str(exc.value)
    assert text and "\n" not in text, f"expected a one-line message, got {text!r}"
    return text


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh decoded-array cache for this test only."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("ROBUSTEVAL_CACHE", str(folder))
    return folder


# --- npz -------------------------------------------------------------------------------------------------


def _npz(tmp_path: Path, **arrays: np.ndarray) -> str:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_uint8_nhwc(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 5, 7, 3), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    data = load_source(_npz(tmp_path, x=x, y=y, classes=np.array(["cat", "dog", "eel"])))
    assert data.image_shape == (3, 5, 7) and data.classes == ("cat", "dog", "eel") and len(data) == 6
    images = data.images(slice(None))
    assert images.dtype == torch.float32 and images.shape == (6, 3, 5, 7)
    torch.testing.assert_close(images, torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255, atol=0, rtol=0)
    assert data.labels(slice(None)).tolist() == y.tolist()


def test_npz_float_nchw(tmp_path: Path) -> None:
    x = np.random.default_rng(1).random((4, 3, 6, 6)).astype(np.float32)
    data = load_source(_npz(tmp_path, x=x, y=np.array([3, 0, 1, 2])))
    assert data.classes == ("0", "1", "2", "3") and data.image_shape == (3, 6, 6)
    torch.testing.assert_close(data.images(slice(None)), torch.from_numpy(x), atol=0, rtol=0)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"y": np.zeros(3, np.int64)}, "expected arrays 'x' and 'y', got \\['y'\\]"),
        ({"x": np.zeros((3, 4, 4, 3), np.uint8)}, "expected arrays 'x' and 'y'"),
        ({"x": np.full((3, 3, 4, 4), 1.5, np.float32), "y": np.zeros(3, np.int64)}, r"must lie in \[0, 1\]"),
        ({"x": np.full((3, 3, 4, 4), -0.1, np.float32), "y": np.zeros(3, np.int64)}, r"must lie in \[0, 1\]"),
        ({"x": np.full((3, 3, 4, 4), np.nan, np.float32), "y": np.zeros(3, np.int64)}, "NaN or infinite"),
        ({"x": np.full((3, 4, 4, 3), 0.5, np.float32), "y": np.zeros(3, np.int64)}, "float images must be NCHW"),
        ({"x": np.zeros((3, 4, 4, 3), np.uint8), "y": np.array([0.0, 1.5, 2.0])}, "labels 'y' must be integers"),
        ({"x": np.zeros((3, 4, 4, 3), np.uint8), "y": np.array([0, -1, 2])}, r"labels must lie in \[0, 2\]"),
        ({"x": np.zeros((3, 4, 4, 3), np.uint8), "y": np.array([0, 1, 2]), "classes": np.array(["a", "b"])},
         r"data.npz: labels must lie in \[0, 1\], got 2 at index 2"),
        ({"x": np.zeros((3, 4, 4, 3), np.uint8), "y": np.array([0, 10**7, 2])},
         r"data.npz: label 10000000 at index 1 implies more than 100,000 classes"),
        ({"x": np.zeros((0, 4, 4, 3), np.uint8), "y": np.zeros(0, np.int64)}, r"data.npz: 'x' holds no images"),
        ({"x": np.zeros((2, 4, 4, 3), np.uint8), "y": np.zeros(2, np.int64), "classes": np.array("cat")},
         r"'classes' must be a non-empty 1-D array of names, got shape \(\)"),
        ({"x": np.zeros((3, 4, 4, 3), np.uint8), "y": np.array([0, 1])}, "3 images but 2 labels"),
        ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.array([0, 1, 2])}, "expected images of 4 dimensions"),
    ],
    ids=["no_x", "no_y", "above_1", "below_0", "nan", "float_nhwc", "float_labels", "negative_label",
         "label_beyond_classes", "stray_label", "no_images", "0d_classes", "length_mismatch", "3d"],
)
def test_npz_errors(arrays: dict[str, np.ndarray], match: str, tmp_path: Path) -> None:
    with pytest.raises(RobustEvalError, match=match) as exc:
        load_source(_npz(tmp_path, **arrays))
    _one_line(exc)


def test_npz_missing_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(RobustEvalError, match="does not exist"):
        load_source(f"npz:{tmp_path / 'nope.npz'}")
    bad = tmp_path / "bad.npz"
    for content in (b"", b"PK\x03\x04 not really a zip", b"garbage bytes" * 10):
        bad.write_bytes(content)
        with pytest.raises(RobustEvalError, match="not a readable .npz") as exc:
            load_source(f"npz:{bad}")
        _one_line(exc)
    with pytest.raises(RobustEvalError, match="expected npz:PATH"):
        load_source("npz:")


# --- imagefolder --------------------------------------------------------------------------------------------


def _write_tree(root: Path, per_class: dict[str, int], size: int = 6, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """PNG images with random pixels under root/<class>/; returns the pixels per class in file order."""
    rng = np.random.default_rng(seed)
    pixels: dict[str, list[np.ndarray]] = {}
    for cls, count in per_class.items():
        (root / cls).mkdir(parents=True)
        pixels[cls] = []
        for i in range(count):
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / cls / f"img{i:02d}.png")
            pixels[cls].append(image)
    return pixels


def test_imagefolder_labels_and_exact_pixels(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "tree"
    pixels = _write_tree(root, {"zebra": 2, "apple": 3, "mango": 1})
    (root / "apple" / "notes.txt").write_text("not an image")
    gray = np.arange(36, dtype=np.uint8).reshape(6, 6) * 7
    Image.fromarray(gray, mode="L").save(root / "mango" / "img99.png")
    data = load_source(f"imagefolder:{root}")
    assert data.classes == ("apple", "mango", "zebra")  # sorted folder names
    assert data.y.tolist() == [0, 0, 0, 1, 1, 2, 2]
    expected = [*pixels["apple"], pixels["mango"][0], np.repeat(gray[..., None], 3, axis=2), *pixels["zebra"]]
    np.testing.assert_array_equal(data.x, np.stack(expected))
    assert data.image_shape == (3, 6, 6)


def test_imagefolder_second_load_uses_cache(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "tree"
    _write_tree(root, {"a": 2, "b": 2})
    first = load_source(f"imagefolder:{root}")

    def no_decoding(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("decoded again although the cache is valid")

    with monkeypatch.context() as m:
        m.setattr(imagefolder, "_decode", no_decoding)
        second = load_source(f"imagefolder:{root}")
    np.testing.assert_array_equal(second.x, first.x)
    np.testing.assert_array_equal(second.y, first.y)
    assert second.classes == first.classes

    changed = np.full((6, 6, 3), 7, np.uint8)  # an edited image invalidates the cache
    Image.fromarray(changed).save(root / "b" / "img01.png")
    stat = (root / "b" / "img01.png").stat()
    os.utime(root / "b" / "img01.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    np.testing.assert_array_equal(load_source(f"imagefolder:{root}").x[3], changed)


def test_imagefolder_same_layout_elsewhere_is_not_confused(tmp_path: Path, cache: Path) -> None:
    """Two trees with identical file names, sizes and times but different pixels have separate caches."""
    one, two = tmp_path / "one", tmp_path / "two"
    _write_tree(one, {"a": 1}, seed=1)
    _write_tree(two, {"a": 1}, seed=2)
    for path in (one, two):
        os.utime(path / "a" / "img00.png", ns=(0, 0))
    if (one / "a" / "img00.png").stat().st_size != (two / "a" / "img00.png").stat().st_size:
        pytest.skip("PNG sizes differ, the trees are told apart anyway")
    x_one, x_two = load_source(f"imagefolder:{one}").x, load_source(f"imagefolder:{two}").x
    np.testing.assert_array_equal(x_one[0], np.asarray(Image.open(one / "a" / "img00.png")))
    np.testing.assert_array_equal(x_two[0], np.asarray(Image.open(two / "a" / "img00.png")))


def test_imagefolder_subset_decodes_only_the_sample(tmp_path: Path, cache: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "tree"
    _write_tree(root, {"a": 5, "b": 3, "c": 4})
    full = load_source(f"imagefolder:{root}").stratified(7, seed=2)
    decoded: list[Path] = []
    original = imagefolder._decode
    monkeypatch.setattr(imagefolder, "_decode", lambda p, *a: decoded.append(p) or original(p, *a))
    sample = load_source(f"imagefolder:{root}", subset=7, seed=2, download=False)
    assert len(decoded) == 7 and len(sample) == 7
    np.testing.assert_array_equal(sample.x, full.x)
    np.testing.assert_array_equal(sample.y, full.y)


def test_imagefolder_errors(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(RobustEvalError, match="does not exist") as exc:
        load_source(f"imagefolder:{tmp_path / 'missing'}")
    _one_line(exc)

    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(flat / "x.png")
    with pytest.raises(RobustEvalError, match="no class sub-folders") as exc:
        load_source(f"imagefolder:{flat}")
    _one_line(exc)

    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "a" / "readme.txt").write_text("no images here")
    with pytest.raises(RobustEvalError, match="contains no images"):
        load_source(f"imagefolder:{empty}")

    broken = tmp_path / "broken"
    _write_tree(broken, {"a": 1})
    (broken / "a" / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(RobustEvalError, match="cannot decode image .*bad.png") as exc:
        load_source(f"imagefolder:{broken}")
    _one_line(exc)

    mixed = tmp_path / "mixed"
    _write_tree(mixed, {"a": 1}, size=6)
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(mixed / "a" / "other.png")
    with pytest.raises(RobustEvalError, match="differ in size: .* is 6x6, .*other.png is 8x9") as exc:
        load_source(f"imagefolder:{mixed}")
    _one_line(exc)


# --- bundled sample, subsets, specs ---------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "size"), [("bundled", 2000), ("bundled:test", 2000), ("bundled:train", 5000)])
def test_bundled_sample(spec: str, size: int) -> None:
    data = load_source(spec)
    assert len(data) == size and data.image_shape == (3, 32, 32) and data.classes == CIFAR10_CLASSES
    assert np.bincount(data.y, minlength=10).tolist() == [size // 10] * 10
    images = data.images(slice(0, 8))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0 and float(images.std()) > 0.1


def test_bundled_splits_are_disjoint() -> None:
    test, train = load_source("bundled:test").x, load_source("bundled:train").x
    test_keys = {row.tobytes() for row in test.reshape(len(test), -1)}
    assert not any(row.tobytes() in test_keys for row in train.reshape(len(train), -1))


def test_stratified_subset_balanced_and_seeded() -> None:
    full = load_source("bundled")
    a = load_source("bundled", subset=100, seed=3)
    assert len(a) == 100 and np.bincount(a.y, minlength=10).tolist() == [10] * 10
    b = load_source("bundled", subset=100, seed=3)
    np.testing.assert_array_equal(a.x, b.x)
    c = load_source("bundled", subset=100, seed=4)
    assert not np.array_equal(a.x, c.x)
    full_rows = {row.tobytes() for row in full.x.reshape(len(full), -1)}
    assert all(row.tobytes() in full_rows for row in a.x.reshape(len(a), -1))
    odd = load_source("bundled", subset=25, seed=0)
    counts = np.bincount(odd.y, minlength=10)
    assert counts.sum() == 25 and counts.max() - counts.min() <= 1
    assert len(load_source("bundled", subset=10**6)) == len(full)  # a subset larger than the data is all of it


def test_stratified_subset_of_imbalanced_data(tmp_path: Path) -> None:
    y = np.array([0] * 2 + [1] * 10 + [2] * 5)
    data = load_source(_npz(tmp_path, x=np.zeros((len(y), 2, 2, 3), np.uint8), y=y), subset=9, seed=0)
    assert np.bincount(data.y).tolist() == [2, 4, 3]  # a class runs out, the others share the rest
    with pytest.raises(RobustEvalError, match="subset size must be positive"):
        load_source(_npz(tmp_path, x=np.zeros((len(y), 2, 2, 3), np.uint8), y=y), subset=0)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("cifar11", "unknown data source kind 'cifar11' \\(did you mean 'cifar10'\\?\\)"),
        ("bundeled:train", "did you mean 'bundled'"),
        ("bundled:val", "expected split 'test' or 'train', got 'val'"),
        ("cifar10:validation", "expected split 'test' or 'train'"),
        ("imagefolder:", "expected imagefolder:PATH"),
    ],
)
def test_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(RobustEvalError, match=match) as exc:
        load_source(spec, download=False)
    _one_line(exc)


# --- torchvision data sets, offline ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["cifar10", "cifar100:train", "svhn"])
def test_torchvision_offline_without_files_names_the_folder(spec: str, cache: Path) -> None:
    name = spec.split(":")[0]
    with pytest.raises(RobustEvalError) as exc:
        load_source(spec, download=False)
    message = _one_line(exc)
    assert str(torchvision_root(name)) in message and str(cache) in message and "offline" in message


def _write_cifar_batches(folder: Path, batches: dict[str, int], label_key: str, classes: int, seed: int = 0
                         ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Pickled batches in torchvision's on-disk CIFAR layout; returns (data (N, 3072), labels) per file."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    written = {}
    for name, n in batches.items():
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name.encode(), "data": data, label_key: labels}, f)
        written[name] = (data, np.asarray(labels))
    return written


def test_cifar10_read_from_torchvision_layout(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _skip_md5_checks(monkeypatch)
    folder = torchvision_root("cifar10") / "cifar-10-batches-py"
    written = _write_cifar_batches(folder, {"test_batch": 12, **{f"data_batch_{i}": 3 for i in range(1, 6)}},
                                   "labels", 10)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR10_CLASSES), "num_vis": 3072}, f)

    test = load_source("cifar10", download=False)
    data, labels = written["test_batch"]
    assert test.classes == CIFAR10_CLASSES and len(test) == 12 and test.image_shape == (3, 32, 32)
    np.testing.assert_array_equal(test.x, data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(test.y, labels)
    torch.testing.assert_close(test.images(slice(None)), torch.from_numpy(data.reshape(-1, 3, 32, 32)).float() / 255)

    train = load_source("cifar10:train", download=False)
    parts = [written[f"data_batch_{i}"] for i in range(1, 6)]
    train_data = np.concatenate([d for d, _ in parts])
    np.testing.assert_array_equal(train.x, train_data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(train.y, np.concatenate([l for _, l in parts]))


def test_cifar100_read_from_torchvision_layout(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _skip_md5_checks(monkeypatch)
    folder = torchvision_root("cifar100") / "cifar-100-python"
    written = _write_cifar_batches(folder, {"test": 7}, "fine_labels", 100)
    names = [f"class{i:03d}" for i in range(100)]
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": names, "coarse_label_names": names[:20]}, f)
    test = load_source("cifar100", download=False)
    data, labels = written["test"]
    assert test.classes == tuple(names)
    np.testing.assert_array_equal(test.x, data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(test.y, labels)


def _skip_md5_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision checks the md5 sums of the real files; these tests write small stand-ins."""
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
