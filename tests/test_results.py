"""The run directory keeps its promises: torn lines are cut on resume, one writer at a time (a lock),
never over a user's files, and a run with a missing (model, condition) is never passed as complete."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robusteval.analysis import write_summary
from robusteval.cli import main
from robusteval.config import AuditConfig
from robusteval.errors import RobustEvalError
from robusteval.gate import evaluate_gate, parse_rules
from robusteval.models.archs import build_arch
from robusteval.results import LOCK_NAME, RunDir, cut_torn_tail

CONFIG = """\
data: {source: bundled, train: null, subset: 100, batch_size: 50}
pruning: {methods: [magnitude], ratios: [0.5, 0.9], finetune: {epochs: 0}, bn_recalibration: false,
          measure_latency: false}
evaluate: {calibration: {}, agreement: true, noise: {eps: [0.1], subset: 50}}
"""
GATE = "rules:\n  agreement/top1: {min: 0.5}\n"  # magnitude@0.9 (the last model) agrees on 40%: fails


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    torch.save(build_arch("lenet_300_100", 10).state_dict(), d / "model.pt")
    (d / "config.yaml").write_text(CONFIG)
    (d / "gate.yaml").write_text(GATE)
    return {"model": d / "model.pt", "config": d / "config.yaml", "gate": d / "gate.yaml"}


def _audit(inputs: dict[str, Path], out: Path, *extra: str) -> int:
    return main(["audit", str(inputs["model"]), "--arch", "lenet_300_100", "--config", str(inputs["config"]),
                 "--out", str(out), "--quiet", "--no-report", *extra])


def _summary(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    for entry in summary["models"]:
        entry.pop("prune_seconds", None)  # wall-clock time, the only field a rerun may change
    return summary


def _error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def whole(inputs, tmp_path_factory) -> Path:
    """An uninterrupted audit: the reference every resumed run must equal."""
    out = tmp_path_factory.mktemp("whole") / "run"
    assert _audit(inputs, out) == 0
    return out


def _tear(path: Path, keep: int) -> None:
    """What a crash mid-append leaves: the first ``keep`` lines, then half of the next one."""
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:keep]) + lines[keep][: len(lines[keep]) // 2])


def test_torn_last_lines_are_cut_on_resume_and_nothing_is_lost(inputs, whole, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(whole, out)
    (out / "summary.json").unlink()
    n_records = len((out / "records.jsonl").read_bytes().splitlines())
    _tear(out / "records.jsonl", n_records - 2)  # the second-to-last record was being written
    _tear(out / "models.jsonl", 2)  # so was the last model's entry
    code = _audit(inputs, out, "--gate", str(inputs["gate"]))
    assert code == 1, capsys.readouterr().err  # the failing model did not disappear: the gate still fails
    assert _summary(out) == _summary(whole)
    assert all(line.endswith(b"\n") for line in (out / "records.jsonl").read_bytes().splitlines(keepends=True))


def test_cut_torn_tail_keeps_complete_lines(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    assert cut_torn_tail(path) == 5
    assert path.read_bytes() == b'{"a":1}\n{"b":2}\n'
    assert cut_torn_tail(path) == 0
    path.write_bytes(b'{"no newline at all"')
    cut_torn_tail(path)
    assert path.read_bytes() == b""


def test_summary_of_a_run_with_a_missing_result_says_so_and_the_gate_refuses(whole, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(whole, out)
    lines = (out / "records.jsonl").read_text().splitlines(keepends=True)
    (out / "records.jsonl").write_text("".join(line for line in lines if '"model":"magnitude@0.9"' not in line
                                               or '"condition":"clean"' not in line))
    config = AuditConfig()
    summary = write_summary(RunDir(out), digest=config.digest(), baseline=config.analysis.baseline, seconds=None,
                            plan=([m.id for m in RunDir(out).models()], ["clean", "noise/0.1"]))
    assert summary["complete"] is False
    assert summary["missing"] == [{"model": "magnitude@0.9", "condition": "clean"}]
    with pytest.raises(RobustEvalError, match="incomplete.*'magnitude@0.9' on condition 'clean'"):
        evaluate_gate(summary, parse_rules({"rules": {"clean/accuracy": {"min": 0.0}}}))
    gate = tmp_path / "gate.yaml"
    gate.write_text("rules:\n  clean/accuracy: {min: 0.0}\n")
    assert main(["gate", str(out), "--gate", str(gate)]) == 2
    assert "rerun the audit" in _error_line(capsys)
    assert main(["report", str(out), "--quiet"]) == 0
    assert "warning: the run is incomplete" in capsys.readouterr().err
    assert 'class="incomplete"' in (out / "report.html").read_text()


def test_a_second_audit_on_the_same_directory_is_refused_naming_the_holder(inputs, tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from robusteval.results import RunDir\n"
         f"with RunDir({str(out)!r}).writing():\n    print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _audit(inputs, out) == 2
        line = _error_line(capsys)
        assert str(out) in line and f"pid {holder.pid} on host {socket.gethostname()}" in line and "started" in line
        assert not (out / "manifest.json").exists()
    finally:
        holder.communicate("")
    assert _audit(inputs, out) == 0  # released when the holder ended


def test_a_lock_left_by_a_dead_process_is_taken_over(inputs, whole, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(whole, out)
    (out / LOCK_NAME).write_text(json.dumps({"pid": 2 ** 22 + 1, "host": socket.gethostname(),
                                             "started": "2026-01-01T00:00:00+00:00"}))
    (out / "summary.json").unlink()
    assert _audit(inputs, out) == 0
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert _summary(out) == _summary(whole)


def test_a_foreign_non_empty_directory_is_refused_and_left_untouched(inputs, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    files = {"report.html": "<p>my report</p>", "summary.json": '{"mine": true}', "summary.csv": "a,b\n"}
    for name, text in files.items():
        (out / name).write_text(text)
    assert _audit(inputs, out) == 2
    line = _error_line(capsys)
    assert str(out) in line and "not a robusteval run" in line
    assert {p.name: p.read_text() for p in out.iterdir()} == files


@pytest.mark.parametrize("kind", ["file", "under a file", "unwritable"])
def test_an_unusable_out_is_bad_input_naming_the_path(inputs, tmp_path, capsys, kind):
    target = tmp_path / "taken"
    target.write_text("not a directory")
    out = {"file": target, "under a file": target / "run", "unwritable": Path("/proc/robusteval-run")}[kind]
    if kind == "unwritable" and not Path("/proc/self").exists():
        pytest.skip("needs /proc (a file system nobody, not even root, can write)")
    assert _audit(inputs, out) == 2
    line = _error_line(capsys)
    assert line.startswith("robusteval: error:") and str(out) in line
    assert target.read_text() == "not a directory"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores file permissions")
def test_a_read_only_out_is_bad_input(inputs, tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert _audit(inputs, out) == 2
        assert str(out) in _error_line(capsys)
    finally:
        out.chmod(0o755)


def test_a_failed_audit_leaves_no_empty_run_directory(tmp_path, capsys):
    out = tmp_path / "new"
    assert main(["evaluate", str(tmp_path / "absent.pt"), "--arch", "lenet_300_100", "--out", str(out),
                 "--quiet"]) == 2
    assert "does not exist" in _error_line(capsys)
    assert not out.exists()


def test_reading_a_run_directory_creates_nothing(tmp_path):
    RunDir(tmp_path / "absent").records()
    assert not (tmp_path / "absent").exists()


def test_a_run_stopped_by_bad_input_before_any_result_can_be_rerun_with_a_fixed_config(inputs, whole, tmp_path,
                                                                                       capsys):
    out = tmp_path / "run"
    bad = ["--train-data", f"npz:{tmp_path / 'absent.npz'}", "--finetune-epochs", "0.1"]
    assert _audit(inputs, out, *bad) == 2  # the training data is read after the manifest is written
    assert "absent.npz does not exist" in _error_line(capsys)
    assert _audit(inputs, out) == 0
    assert _summary(out) == _summary(whole)


def test_existing_run_dir_must_be_a_directory(tmp_path):
    assert RunDir.existing(tmp_path).path == tmp_path
    (tmp_path / "file").write_text("x")
    for path in (tmp_path / "file", str(tmp_path / "missing") + "/"):
        with pytest.raises(RobustEvalError, match=r"^expected a run directory, got '.*' \(not a directory\)$"):
            RunDir.existing(path)


def test_only_the_run_directory_names_its_files():
    """One home per file name: RunDir names every file of a run directory but the engine's (engine/store.py)."""
    package = Path(__file__).resolve().parents[1] / "robusteval"
    names = re.compile(r"""["'](records\.jsonl|models\.jsonl|manifest\.json|summary\.json|samples\.npz|report\.html"""
                       r"""|analysis\.json|summary\.csv|run\.lock)["']""")
    found = [str(p.relative_to(package)) for p in package.rglob("*.py")
             if p != package / "results.py" and names.search(p.read_text())]
    assert found == []
