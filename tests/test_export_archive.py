"""torch.export archives: a crafted .pt2 runs no code unless trusted; broken archives fail in one line, quietly."""
from __future__ import annotations

import io
import json
import logging
import pathlib
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from robusteval.cli import main
from robusteval.errors import RobustEvalError
from robusteval.models import export_archive
from robusteval.models.loading import load_model


class _WritesFile:
    """Unpickling this runs ``pathlib.Path(target).write_text('pwned')``."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (pathlib.Path.write_text, (pathlib.Path(self.target), "pwned"))


def _torch_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10)).eval()


@pytest.fixture()
def valid(model: nn.Module, tmp_path: Path) -> Path:
    path = tmp_path / "valid.pt2"
    torch.export.save(torch.export.export(model, (torch.rand(2, 3, 8, 8),)), path)
    return path


def _rewrite(src: Path, dst: Path, edit: Callable[[dict[str, bytes], str], None]) -> Path:
    """Copy the archive at ``src`` to ``dst`` with ``edit(members, root)`` applied to its members."""
    with zipfile.ZipFile(src) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    root = next(iter(members)).split("/", 1)[0] + "/"
    edit(members, root)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return dst


def _pickled_weight(target: Path) -> Callable[[dict[str, bytes], str], None]:
    def edit(members: dict[str, bytes], root: str) -> None:
        name = root + "data/weights/model_weights_config.json"
        config = json.loads(members[name])
        fqn, meta = next(iter(config["config"].items()))
        meta["use_pickle"] = True
        members[root + "data/weights/" + meta["path_name"]] = _torch_pickle(_WritesFile(target))
        members[name] = json.dumps(config).encode()
    return edit


def _legacy_weights(target: Path) -> Callable[[dict[str, bytes], str], None]:
    def edit(members: dict[str, bytes], root: str) -> None:
        members[root + "data/weights/model.pt"] = _torch_pickle({"w": _WritesFile(target)})
    return edit


def _sample_inputs(target: Path) -> Callable[[dict[str, bytes], str], None]:
    def edit(members: dict[str, bytes], root: str) -> None:
        members[root + "data/sample_inputs/model.pt"] = _torch_pickle(((_WritesFile(target),), {}))
    return edit


def _opaque_constant(target: Path) -> Callable[[dict[str, bytes], str], None]:
    def edit(members: dict[str, bytes], root: str) -> None:
        name = root + "data/constants/model_constants_config.json"
        config = json.loads(members[name])
        config.setdefault("config", {})["evil"] = {"path_name": "opaque_obj_0", "is_param": False,
                                                   "use_pickle": True, "tensor_meta": None}
        members[name] = json.dumps(config).encode()
        members[root + "data/constants/opaque_obj_0"] = pickle.dumps(_WritesFile(target))
    return edit


ATTACKS = {"pickled_weight": _pickled_weight, "legacy_weights": _legacy_weights,
           "sample_inputs": _sample_inputs, "opaque_constant": _opaque_constant}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_crafted_archive_runs_nothing_without_trust(attack: str, valid: Path, tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    evil = _rewrite(valid, tmp_path / "evil.pt2", ATTACKS[attack](target))
    try:  # the payload is live: torch.export.load itself runs it
        torch.export.load(str(evil))
    except Exception:
        pass
    assert target.exists(), "the crafted archive should run code under a plain torch.export.load"
    target.unlink()
    with pytest.raises(RobustEvalError) as exc:
        load_model(evil)
    message = str(exc.value)
    assert "\n" not in message and "--trust-pickle" in message and str(evil) in message
    assert not target.exists()


@pytest.mark.parametrize("attack", ["pickled_weight", "legacy_weights", "sample_inputs"])
def test_weights_only_guard_holds_when_inspection_misses(
    attack: str, valid: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every torch.load inside the load is forced to weights_only, so a missed member still runs nothing."""
    target = tmp_path / "pwned"
    evil = _rewrite(valid, tmp_path / "evil.pt2", ATTACKS[attack](target))
    monkeypatch.setattr(export_archive, "unsafe_members", lambda path: [])
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # a user's setting must not reopen the hole
    with pytest.raises(RobustEvalError) as exc:
        load_model(evil)
    assert "\n" not in str(exc.value)
    assert not target.exists()


def test_native_code_members_are_refused(valid: Path, tmp_path: Path) -> None:
    def edit(members: dict[str, bytes], root: str) -> None:
        members[root + "data/aotinductor/model/model.so"] = b"\x7fELF not really"
    evil = _rewrite(valid, tmp_path / "aoti.pt2", edit)
    with pytest.raises(RobustEvalError, match="compiled code"):
        load_model(evil)


def test_trusted_archive_with_pickled_sample_inputs_loads(model: nn.Module, valid: Path, tmp_path: Path) -> None:
    """--trust-pickle is the user's explicit decision: the archive then loads as torch.export.load would."""
    def edit(members: dict[str, bytes], root: str) -> None:
        members[root + "data/sample_inputs/model.pt"] = _torch_pickle(((pathlib.PurePosixPath("x"),), {}))
    odd = _rewrite(valid, tmp_path / "odd.pt2", edit)
    with pytest.raises(RobustEvalError, match="pickle"):
        load_model(odd)
    x = torch.rand(2, 3, 8, 8)
    with torch.inference_mode():
        torch.testing.assert_close(load_model(odd, trust_pickle=True)(x), model(x), atol=1e-6, rtol=0)


def test_clean_archive_has_no_unsafe_members(valid: Path) -> None:
    assert export_archive.unsafe_members(valid) == []


def test_cli_refuses_crafted_archive_with_exit_2(valid: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "pwned"
    evil = _rewrite(valid, tmp_path / "evil.pt2", _sample_inputs(target))
    code = main(["evaluate", str(evil), "--data", "bundled", "--subset", "20", "--out", str(tmp_path / "run"),
                 "--quiet", "--no-report"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--trust-pickle" in err[0], err
    assert not target.exists()
    assert not (tmp_path / "run" / "summary.json").exists()


def test_broken_archive_fails_in_one_line_without_torch_log(
    tmp_path: Path, capfd: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "broken.pt2"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("broken/archive_format", "pt2")
    with caplog.at_level(logging.DEBUG), pytest.raises(RobustEvalError) as exc:
        load_model(path)
    message = str(exc.value)
    assert "\n" not in message and str(path) in message
    assert "warnings above" not in message and "version" in message  # the cause torch only logged
    assert not [r for r in caplog.records if r.name.startswith(("torch.export", "torch._export"))]
    assert capfd.readouterr().err == ""
