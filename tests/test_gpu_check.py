"""scripts/compare_runs.py (issue 27), which scripts/gpu_check.sh runs on a CUDA run and a CPU run of one audit."""
from __future__ import annotations

import json
import math
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
