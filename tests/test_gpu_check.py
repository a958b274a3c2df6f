"""scripts/gpu_check.sh's dry run, and scripts/compare_runs.py (issue 27), which it runs on a CUDA run and a CPU
run of one audit."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from compare_runs import compare  # noqa: E402


def _run(path: Path, records: list[dict]) -> Path:
    path.mkdir()
    (path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _record(model: str, condition: str, family: str, n: int, **metrics: float) -> dict:
    return {"model": model, "condition": condition, "family": family, "n": n, "metrics": metrics}


def test_differences_are_summarised_per_family_against_one_image(tmp_path):
    a = _run(tmp_path / "a", [_record("dense", "clean", "clean", 100, **{"clean/accuracy": 0.90}),
                              _record("dense", "noise/0.1", "noise", 50, **{"noise/0.1/accuracy": 0.50,
                                                                            "noise/0.1/ece": math.nan}),
                              _record("m@0.5", "clean", "clean", 100, **{"clean/accuracy": 0.80})])
    b = _run(tmp_path / "b", [_record("dense", "clean", "clean", 100, **{"clean/accuracy": 0.92}),
                              _record("dense", "noise/0.1", "noise", 50, **{"noise/0.1/accuracy": 0.51,
                                                                            "noise/0.1/ece": math.nan})])
    result = compare(a, b)
    clean, noise = result["families"]["clean"], result["families"]["noise"]
    assert clean["metrics"] == 1 and math.isclose(clean["max_abs_diff"], 0.02) and clean["beyond_one_image"] == 1
    assert clean["at"] == "dense clean/accuracy"
    assert noise["metrics"] == 2 and math.isclose(noise["max_abs_diff"], 0.01) and noise["beyond_one_image"] == 0
    assert result["only_in_one"] == ["m@0.5 clean"]


def test_the_gpu_check_runs_every_step_on_cpu_with_dry_run(tmp_path):
    """``scripts/gpu_check.sh --dry-run``: set-up, device tests, bench_device.py A-E and the run comparison
    at tiny sizes on the CPU (about 25 s on a quiet 2-core machine), each step recorded as ok."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(["bash", str(root / "scripts" / "gpu_check.sh"), "--dry-run", str(tmp_path)],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=900)
    summary = (tmp_path / "summary.md").read_text()
    assert done.returncode == 0, summary
    rows = [line for line in summary.splitlines() if line.startswith("| ") and " s / " in line]
    assert [row.split("|")[1:3] for row in rows] == [[" setup ", " ok "], [" tests ", " ok "], [" bench ", " ok "],
                                                     [" compare ", " ok "]]
    assert "TF32 after importing robusteval: cudnn False matmul False" in summary
