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


# --- fault injection: SIGKILL at points spread over pruning, evaluation, attacks and report writing ---------------

FAULT_CONFIG = """\
data: {source: bundled, train: null, subset: 300, batch_size: 25, shard_size: 50}
pruning: {methods: [magnitude], ratios: [0.5, 0.9], finetune: {epochs: 0}, bn_recalibration: false,
          measure_latency: false}
evaluate:
  calibration: {}
  agreement: true
  corruption: {corruptions: [gaussian_noise, fog, contrast], severities: [1, 3], subset: 150}
  noise: {eps: [0.1], subset: 150}
  adversarial: {sample_size: 100, batch_size: 50, linf_eps: [0.002, 0.0039216, 0.008], l2_eps: [],
                attacks: [fgsm, linf_pgd], pgd_steps: 40, autoattack_eps: [], min_norm: [linf], min_norm_steps: 50,
                transfer: [fgsm], large_eps: null}
"""


def _cli_child(argv: list[str], log: str) -> None:
    """A forkserver child: the CLI with its output (progress included) in ``log``; exits with its code."""
    sys.stdout = sys.stderr = open(log, "w", buffering=1)
    torch.set_num_threads(1)
    from robusteval.cli import main

    sys.exit(main(argv))


@pytest.fixture(scope="module")
def forkserver():
    """Children forked from a server that imported robusteval once: each audit starts in milliseconds,
    so kill points are cheap, and each is still a separate process killed with a real SIGKILL."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["robusteval.cli", "robusteval.api", "robusteval.report.html", "robusteval.gate"])
    warm = ctx.Process(target=time.sleep, args=(0,))  # start the server (the imports) before any timing
    warm.start()
    warm.join(300)
    return ctx


def _comparable(path: Path) -> dict:
    """summary.json without wall-clock timings (``prune_seconds``): everything else must be identical."""
    summary = json.loads(path.read_text())
    for entry in summary["models"]:
        entry.pop("prune_seconds", None)
    return summary


#: stage → what the audit prints when it enters it (progress bars, the attack loop, the summary line)
STAGES = {"pruning": "pruning", "evaluation": "evaluating", "attacks": "adversarial: attacking",
          "report": "results: "}


def _stage(log: Path) -> str | None:
    """The stage the audit writing ``log`` is in: the one whose marker it printed last."""
    text = log.read_text(errors="replace") if log.exists() else ""
    found = [(text.rfind(marker), stage) for stage, marker in STAGES.items() if marker in text]
    return max(found)[1] if found else None


def _fault_injection(tmp_path: Path, ctx, per_stage: int, seed: int) -> dict[str, int]:
    """SIGKILL audits ``per_stage`` times in each stage, at a random time after the process entered it
    (read from its own output). Kills chain on one run directory (each rerun resumes the killed one)
    and move through the stages in order. Whenever a rerun finishes, its summary.json must equal an
    uninterrupted run's, and the next kill starts a fresh directory."""
    import itertools
    import random

    torch.manual_seed(0)
    model, config, gate = tmp_path / "model.pt", tmp_path / "config.yaml", tmp_path / "gate.yaml"
    torch.save(build_arch("lenet_300_100", 10).state_dict(), model)
    config.write_text(FAULT_CONFIG)
    gate.write_text("rules:\n  clean/accuracy: {min: 0.0}\n")
    logs = (tmp_path / f"run{i}.log" for i in itertools.count())

    def run(out: Path, target: str | None = None, wait: float = 0.0) -> tuple[str | None, dict[str, float]]:
        """Audit into ``out``, killed ``wait`` s after it enters stage ``target``: (the stage it was killed in,
        or None when it finished first; when it entered each stage). A finished run is checked."""
        log = next(logs)
        argv = ["audit", str(model), "--arch", "lenet_300_100", "--config", str(config), "--out", str(out),
                "--gate", str(gate), "--junit", str(out / "junit.xml")]
        proc = ctx.Process(target=_cli_child, args=(argv, str(log)))
        proc.start()
        began: dict[str, float] = {}
        while proc.is_alive():
            if (stage := _stage(log)) is not None:
                began.setdefault(stage, time.perf_counter())
            entered = [t for s, t in began.items() if target and STAGES_ORDER.index(s) >= STAGES_ORDER.index(target)]
            if entered and time.perf_counter() - min(entered) >= wait:
                os.kill(proc.pid, signal.SIGKILL)
                proc.join()
                return _stage(log), began
            time.sleep(0.005)
        proc.join()
        began["end"] = time.perf_counter()
        assert proc.exitcode == 0, f"the audit in {out.name} exited {proc.exitcode}: {log.read_text()[-500:]}"
        assert (out / "report.html").is_file() and (out / "junit.xml").is_file()
        assert _comparable(out / "summary.json") == _comparable(tmp_path / "whole" / "summary.json"), out.name
        return None, began

    run(tmp_path / "whole")
    _, began = run(tmp_path / "timeline")
    stamps = [began.get(s) for s in (*STAGES_ORDER, "end")]
    duration = {s: max(0.02, next(t for t in stamps[k + 1:] if t) - stamps[k]) if stamps[k] else 0.02
                for k, s in enumerate(STAGES_ORDER)}

    rng, hits, chain = random.Random(seed), dict.fromkeys(STAGES_ORDER, 0), 0
    for stage in STAGES_ORDER:
        for j in range(per_stage):
            wait = duration[stage] * (j + rng.random()) / per_stage
            landed, _ = run(tmp_path / f"chain{chain}", stage, wait)
            if landed is None:  # it finished (and matched) before the kill: kill a fresh one instead
                chain += 1
                landed, _ = run(tmp_path / f"chain{chain}", stage, wait)
            if landed is not None:
                hits[landed] += 1
            if landed is not None and STAGES_ORDER.index(landed) > STAGES_ORDER.index(stage):
                run(tmp_path / f"chain{chain}")  # past the target stage: finish (and check) it, start afresh
                chain += 1
    run(tmp_path / f"chain{chain}")
    print(f"fault injection: {sum(hits.values())} SIGKILL points over {chain + 1} run directories, by the stage "
          f"the process was in: {hits}; stage durations (s): { {s: round(d, 2) for s, d in duration.items()} }")
    return hits


STAGES_ORDER = tuple(STAGES)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_at_24_points_across_every_stage_loses_nothing(tmp_path, forkserver):
    hits = _fault_injection(tmp_path, forkserver, per_stage=6, seed=1)
    assert sum(hits.values()) >= 20
    assert all(hits.values()), hits


@pytest.mark.integration
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_at_60_points_loses_nothing(tmp_path, forkserver):
    hits = _fault_injection(tmp_path, forkserver, per_stage=15, seed=2)
    assert sum(hits.values()) >= 50
