"""SIGKILL an audit mid-run, rerun it: the final summary equals an uninterrupted run's."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from robusteval.models.archs import build_arch


def _command(model: Path, config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "robusteval.cli", "evaluate", str(model), "--arch", "cifar_resnet20",
            "--config", str(config), "--subset", "400", "--out", str(out), "--quiet", "--no-report", "--threads", "1"]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_then_rerun_equals_uninterrupted(tmp_path):
    torch.manual_seed(0)
    model = tmp_path / "model.pt"
    torch.save(build_arch("cifar_resnet20", 10).state_dict(), model)
    config = tmp_path / "config.yaml"
    config.write_text("data: {source: bundled, batch_size: 25, shard_size: 50}\n"
                      "evaluate: {calibration: {}, agreement: false, noise: {eps: [0.1, 0.2], subset: 200}}\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_command(model, config, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(list((killed / "shards").glob("*/*.npy"))) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the audit ended before it could be killed: {proc.stderr.read()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists()

    done = subprocess.run(_command(model, config, killed), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    whole = tmp_path / "whole"
    ref = subprocess.run(_command(model, config, whole), env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr

    assert json.loads((killed / "summary.json").read_text()) == json.loads((whole / "summary.json").read_text())
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["resumed"] is True
