"""Data as users bring it, through the real CLI: npz files without class names, stray labels,
decompression bombs; each bad input is one line and exit 2, before any model is built."""
from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import robusteval.api
from robusteval.cli import main
from robusteval.data.sources import load_source
from robusteval.models.bundled import BUNDLED_MODEL


def _stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.fixture
def npz_without_names(tmp_path: Path) -> Path:
    """The bundled test images as a user's own npz: ``x`` and ``y`` only, no ``classes``."""
    data = load_source("bundled")
    path = tmp_path / "my_cifar.npz"
    np.savez(path, x=data.x, y=data.y)
    return path


def test_quick_preset_runs_on_an_npz_without_class_names(npz_without_names: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 10: the quick preset trains on bundled:train (CIFAR-10 names) and evaluates an npz named
    0..9; classes match by count and image size, the differing names are a warning naming both."""
    out = tmp_path / "run"
    code = main(["audit", str(BUNDLED_MODEL), "--arch", "cifar_resnet20", "--data", f"npz:{npz_without_names}",
                 "--config", "quick", "--subset", "40", "--methods", "magnitude", "--ratios", "0.5",
                 "--finetune-epochs", "0", "--quiet", "--no-report", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    warning = [line for line in err.splitlines() if line.startswith("robusteval: warning:")]
    assert len(warning) == 1 and "[airplane, automobile, bird" in warning[0] and "[0, 1, 2, 3" in warning[0]
    summary = json.loads((out / "summary.json").read_text())
    assert [m["id"] for m in summary["models"]] == ["dense", "magnitude@0.5"]
    dense = summary["models"][0]["metrics"]
    assert dense["clean/accuracy"] > 0.5 and "corruption/mean_accuracy" in dense and "ood/blobs/auroc_msp" in dense


def test_training_data_of_another_class_count_is_an_error_naming_both(npz_without_names: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    seven = tmp_path / "seven.npz"
    np.savez(seven, x=np.zeros((14, 32, 32, 3), np.uint8), y=np.arange(14) % 7)
    code = main(["audit", str(BUNDLED_MODEL), "--arch", "cifar_resnet20", "--data", f"npz:{npz_without_names}",
                 "--train-data", f"npz:{seven}", "--config", "quick", "--methods", "magnitude", "--ratios", "0.5",
                 "--subset", "20", "--quiet", "--no-report", "--out", str(tmp_path / "run")])
    assert code == 2
    (line,) = _stderr_lines(capsys)
    assert "(7 classes, images (3, 32, 32)) does not match the evaluation data (10 classes" in line


def test_stray_label_fails_before_any_model_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A label of 10^7 once built a 10-million-class probe model (4 GB, 27 s) before failing."""
    y = np.arange(20) % 10
    y[13] = 10**7
    path = tmp_path / "stray.npz"
    np.savez(path, x=np.zeros((20, 32, 32, 3), np.uint8), y=y)

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded although the data is bad")

    monkeypatch.setattr(robusteval.api, "load_model", no_model)
    start = time.perf_counter()
    code = main(["evaluate", str(BUNDLED_MODEL), "--arch", "cifar_resnet20", "--data", f"npz:{path}", "--quiet",
                 "--out", str(tmp_path / "run")])
    seconds = time.perf_counter() - start
    assert code == 2, capsys.readouterr().err
    (line,) = _stderr_lines(capsys)
    assert str(path) in line and "label 10000000 at index 13" in line
    assert seconds < 20, f"took {seconds:.1f} s"  # generous: only guards against building the huge model


@pytest.mark.parametrize(("arrays", "message"), [
    ({"x": np.zeros((0, 32, 32, 3), np.uint8), "y": np.zeros(0, np.int64)}, "'x' holds no images"),
    ({"x": np.zeros((4, 32, 32, 3), np.uint8), "y": np.zeros(4, np.int64), "classes": np.array("cat")},
     "'classes' must be a non-empty 1-D array"),
], ids=["no_images", "0d_classes"])
def test_degenerate_npz_is_exit_2(arrays: dict[str, np.ndarray], message: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 14: an npz with 0 images or a 0-d ``classes`` array was exit 3."""
    path = tmp_path / "odd.npz"
    np.savez(path, **arrays)
    code = main(["evaluate", str(BUNDLED_MODEL), "--arch", "cifar_resnet20", "--data", f"npz:{path}", "--quiet",
                 "--out", str(tmp_path / "run")])
    assert code == 2
    (line,) = _stderr_lines(capsys)
    assert line.startswith("robusteval: error: ") and str(path) in line and message in line


def huge_png(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares ``width`` x ``height`` (with a valid CRC) and whose data is tiny."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("limit", [None, 10**8], ids=["error", "warning"])
def test_decompression_bomb_in_an_image_folder_is_exit_2(limit: int | None, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """30000x30000 = 9e8 pixels: above twice PIL's limit it raises DecompressionBombError (was exit 3); between
    the limit and twice it only warns (lowered limit here), which counts as the same error."""
    if limit is not None:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit * 5)
    root = tmp_path / "tree"
    (root / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "cat" / "fine.png")
    huge_png(root / "cat" / "huge.png", 30000, 30000)
    code = main(["evaluate", str(BUNDLED_MODEL), "--arch", "cifar_resnet20", "--data", f"imagefolder:{root}",
                 "--quiet", "--out", str(tmp_path / "run")])
    assert code == 2
    (line,) = _stderr_lines(capsys)
    assert line.startswith("robusteval: error: image ") and str(root / "cat" / "huge.png") in line
    assert "too large to decode safely" in line and "900000000 pixels" in line


@pytest.mark.parametrize(("spec", "message"), [
    ("foo:bar", "unknown data source kind 'foo'; known: bundled, cifar10"),
    ("imagenet_r:/data", "unknown data source kind 'imagenet_r' (did you mean 'imagenet-r'?)"),
    ("cinic:/data", "did you mean 'cinic10'?"),
    ("cifar10-c:/data:fog", "expected cifar10-c:ROOT:CORRUPTION:SEVERITY"),
    ("imagenet-v2:", "expected imagenet-v2:PATH"),
])
def test_unknown_or_malformed_kinds(spec: str, message: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 14: ``--data foo:bar`` talked about splits; the kind is checked first, with a suggestion."""
    code = main(["evaluate", str(BUNDLED_MODEL), "--arch", "cifar_resnet20", "--data", spec, "--quiet",
                 "--out", str(tmp_path / "run")])
    assert code == 2
    (line,) = _stderr_lines(capsys)
    assert message in line
