"""Frost's reference photographs: downloaded once into the cache (checked by SHA-256) and used; offline,
the procedural textures. The "remote" is a local folder in the repository's layout: nothing downloads."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robusteval import audit, load_config
from robusteval.conditions import build_conditions, frost_source
from robusteval.data.arrays import LabeledArrays
from robusteval.data import frost_photos
from robusteval.data.corruptions import condition_seed, corrupt
from robusteval.data.corruptions.weather import FROST_FILES
from robusteval.errors import RobustEvalError
from robusteval.evaluators.settings import CorruptionSettings, EvaluateSettings
from robusteval.models.bundled import BUNDLED_ARCH, BUNDLED_MODEL


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """A local copy of ``ImageNet-C/create_c/`` with checksums of its own, served in place of the network."""
    folder = tmp_path / "hendrycks-robustness" / "ImageNet-C" / "create_c"
    folder.mkdir(parents=True)
    g = np.random.default_rng(0)
    for name in frost_photos.FROST_SHA256:
        Image.fromarray(g.integers(0, 256, (200, 210, 3), dtype=np.uint8)).save(folder / name)
        monkeypatch.setitem(frost_photos.FROST_SHA256, name, hashlib.sha256((folder / name).read_bytes()).hexdigest())
    requested: list[str] = []

    def urlopen(url: str, timeout: float) -> io.BytesIO:
        requested.append(url)
        prefix = f"https://raw.githubusercontent.com/hendrycks/robustness/{frost_photos.FROST_COMMIT}/"
        assert url.startswith(prefix) and timeout > 0
        return io.BytesIO((tmp_path / "hendrycks-robustness" / url[len(prefix):]).read_bytes())

    monkeypatch.setattr(frost_photos.urllib.request, "urlopen", urlopen)
    monkeypatch.delenv("ROBUSTEVAL_OFFLINE")
    monkeypatch.setenv("ROBUSTEVAL_CACHE", str(tmp_path / "cache"))
    return {"requested": requested}


def test_the_five_reference_files_are_named() -> None:
    assert tuple(frost_photos.FROST_SHA256) == FROST_FILES[:5]
    assert all(len(h) == 64 for h in frost_photos.FROST_SHA256.values())


def test_downloaded_once_into_the_cache(remote, tmp_path: Path) -> None:
    folder = frost_photos.reference_frost_photos(download=True)
    assert folder == tmp_path / "cache" / "frost" and len(remote["requested"]) == 5
    assert sorted(p.name for p in folder.iterdir()) == sorted(frost_photos.FROST_SHA256)
    assert frost_photos.reference_frost_photos(download=True) == folder and len(remote["requested"]) == 5


def test_offline_or_no_download_falls_back(remote, monkeypatch: pytest.MonkeyPatch) -> None:
    assert frost_photos.reference_frost_photos(download=False) is None
    monkeypatch.setenv("ROBUSTEVAL_OFFLINE", "1")
    assert frost_photos.reference_frost_photos(download=True) is None
    assert remote["requested"] == []


def test_a_failed_or_corrupt_download_warns_and_keeps_nothing(remote, monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setitem(frost_photos.FROST_SHA256, "frost3.png", "0" * 64)
    assert frost_photos.reference_frost_photos(download=True) is None
    assert "could not be downloaded" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "frost" / "frost3.png").exists()

    def unreachable(url: str, timeout: float) -> io.BytesIO:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(frost_photos.urllib.request, "urlopen", unreachable)
    assert frost_photos.reference_frost_photos(download=True) is None
    assert "no network" in capsys.readouterr().err


def test_frost_conditions_use_the_downloaded_photographs(remote, tmp_path: Path) -> None:
    x = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    data = LabeledArrays(x, np.arange(4) % 2, ("a", "b"), "t")
    ev = EvaluateSettings(clean=False, agreement=False, calibration=None,
                          corruption=CorruptionSettings(corruptions=("frost",), severities=(5,), subset=None))
    (frost,) = build_conditions(ev, data, seed=0)[1:]
    folder = str(tmp_path / "cache" / "frost")
    assert "the reference's frost photographs" in frost.note and folder in frost.note
    expected = corrupt(data.images(slice(0, 4)), "frost", 5, seed=condition_seed("frost", 5, 0, 0), frost_dir=folder)
    torch.testing.assert_close(frost.inputs(0, 4, 0), expected, atol=0, rtol=0)
    (offline,) = build_conditions(ev, data, seed=0, download=False)[1:]  # cached now: used without a download
    assert offline.note == frost.note


def test_a_resumed_run_keeps_the_frost_it_began_with(remote, tmp_path: Path) -> None:
    """Every model of a run sees the same frost: photographs that arrive mid-run are not used by a resumed
    run that began with the procedural textures, and a run made with them cannot resume without them."""
    x = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    data = LabeledArrays(x, np.arange(4) % 2, ("a", "b"), "t")
    ev = EvaluateSettings(clean=False, agreement=False, calibration=None,
                          corruption=CorruptionSettings(corruptions=("frost",), severities=(5,), subset=None))
    began = build_conditions(ev, data, seed=0, download=False)
    assert frost_source(began) == "procedural"
    assert frost_source(build_conditions(ev, data, seed=0)) == "photographs"  # downloaded now
    resumed = build_conditions(ev, data, seed=0, frost="procedural")
    assert frost_source(resumed) == "procedural" and resumed[1].note == began[1].note
    torch.testing.assert_close(resumed[1].inputs(0, 4, 0), began[1].inputs(0, 4, 0), atol=0, rtol=0)
    for name in frost_photos.FROST_SHA256:
        (tmp_path / "cache" / "frost" / name).unlink()
    with pytest.raises(RobustEvalError, match="no longer in the cache"):
        build_conditions(ev, data, seed=0, download=False, frost="photographs")


def test_the_manifest_records_the_frost_of_a_run(tmp_path: Path) -> None:
    config = load_config("smoke")
    config = config.replace(evaluate=dataclasses.replace(config.evaluate, corruption=CorruptionSettings(
        corruptions=("frost",), severities=(1,), subset=20)), pruning=None,
        model=dataclasses.replace(config.model, arch=BUNDLED_ARCH))
    audit(BUNDLED_MODEL, config=config, out=tmp_path / "run", progress=False)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["frost"] == "procedural"  # the tests run offline (conftest: ROBUSTEVAL_OFFLINE=1)
