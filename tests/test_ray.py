"""The Ray engine (issue 13): same results as the local engine, worker and driver faults, resume across engines."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from robusteval.api import audit
from robusteval.cli import main
from robusteval.config import config_from_dict
from robusteval.data.arrays import LabeledArrays
from robusteval.engine.executor import EngineConfig
from robusteval.engine.ray import RayExecutor, Worker, check_device
from robusteval.errors import RobustEvalError
from robusteval.models.bundled import BUNDLED_ARCH, BUNDLED_MODEL
from robusteval.models.loading import load_model
from robusteval.pruning import FinetuneSettings, PruneSettings, build_family
from robusteval.results import RunDir

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'robusteval[ray]')")
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers do not import the tests

ADVERSARIAL = {"sample_size": 20, "batch_size": 20, "linf_eps": [0.0039216], "l2_eps": [], "attacks": ["fgsm"],
               "autoattack_eps": [], "min_norm": [], "transfer": ["fgsm"], "large_eps": None}
CONFIG = {  # on CPU where a GPU machine would resolve device: auto to CUDA (Ray workers compared to 1e-6)
    "device": "cpu",
    "data": {"source": "bundled", "subset": 60, "batch_size": 20, "shard_size": 20},
    "model": {"arch": BUNDLED_ARCH},
    "pruning": {"methods": ["magnitude", "l1_filter"], "ratios": [0.5], "finetune": {"epochs": 0.02},
                "measure_latency": False, "scratch_baseline": True},
    "evaluate": {"calibration": {}, "agreement": True,
                 "corruption": {"corruptions": ["gaussian_noise", "fog"], "severities": [2], "subset": 40},
                 "noise": {"eps": [0.1], "subset": 40}, "ood": {"sets": ["blobs", "uniform_noise"], "subset": 40},
                 "adversarial": ADVERSARIAL},
}
FAMILIES = ("clean/", "corruption/", "noise/", "ood/", "calibration/", "agreement/", "adversarial/")


def _config(engine: str, data: dict = CONFIG):
    return config_from_dict({"device": "cpu", **data, "engine": {"kind": engine}})


def _metrics(run: Path) -> dict[str, dict[str, float]]:
    return {m["id"]: m["metrics"] for m in json.loads((run / "summary.json").read_text())["models"]}


def _assert_same(a: Path, b: Path) -> None:
    ma, mb = _metrics(a), _metrics(b)
    assert ma.keys() == mb.keys()
    for model in ma:
        assert ma[model].keys() == mb[model].keys(), model
        for key, value in ma[model].items():
            assert mb[model][key] == pytest.approx(value, abs=1e-6, nan_ok=True), (model, key)


@pytest.fixture(scope="module")
def cluster():
    # one GPU as far as Ray knows (none on a CPU machine), for the tests of GPU task placement
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """The same small audit with every evaluator family, once per engine."""
    root = tmp_path_factory.mktemp("engines")
    for engine in ("local", "ray"):
        audit(BUNDLED_MODEL, config=_config(engine), out=root / engine, progress=False)
    return root


def test_ray_gives_the_local_engines_results_on_every_family(runs):
    metrics = _metrics(runs / "ray")
    assert {"dense", "dense+ft", "magnitude@0.5", "l1_filter@0.5", "l1_filter+scratch@0.5"} <= set(metrics)
    assert all(any(k.startswith(f) for k in metrics["magnitude@0.5"]) for f in FAMILIES)
    _assert_same(runs / "local", runs / "ray")
    assert json.loads((runs / "ray" / "manifest.json").read_text())["engine"] == "ray"


@pytest.mark.parametrize("first, then", [("ray", "local"), ("local", "ray")])
def test_a_run_resumes_on_the_other_engine(runs, tmp_path, first, then):
    out = tmp_path / "run"
    shutil.copytree(runs / first, out)
    lines = (out / "records.jsonl").read_text().splitlines(keepends=True)
    (out / "records.jsonl").write_text("".join(lines[: len(lines) // 2]))
    (out / "summary.json").unlink()
    for suffix in (".pt2", ".json"):  # a member the other engine rebuilds
        (out / "models" / f"magnitude@0.5{suffix}").unlink()
    audit(BUNDLED_MODEL, config=_config(then), out=out, progress=False)
    _assert_same(runs / first, out)
    assert json.loads((out / "manifest.json").read_text())["resumed"] is True


class KilledOnce(nn.Module):
    """The bundled model; the first forward pass in a process other than the driver SIGKILLs that worker."""

    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.net, self.marker, self.driver = load_model(BUNDLED_MODEL, arch=BUNDLED_ARCH), str(marker), os.getpid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if os.getpid() != self.driver and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return self.net(x)


def test_a_worker_killed_mid_task_is_retried_with_identical_results(cluster, tmp_path):
    data = {"data": {"source": "bundled", "subset": 80, "batch_size": 20, "shard_size": 20},
            "evaluate": {"calibration": {}, "agreement": False, "noise": {"eps": [0.1, 0.2], "subset": 40}}}
    marker = tmp_path / "killed.pid"
    audit(KilledOnce(marker), config=_config("ray", data), out=tmp_path / "ray", progress=False)
    assert marker.is_file(), "no worker was killed"
    audit(KilledOnce(marker), config=_config("local", data), out=tmp_path / "local", progress=False)
    _assert_same(tmp_path / "local", tmp_path / "ray")


def _cli(config: Path, out: Path, engine: str) -> list[str]:
    return [sys.executable, "-m", "robusteval.cli", "audit", str(BUNDLED_MODEL), "--config", str(config),
            "--out", str(out), "--engine", engine, "--quiet", "--no-report"]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_a_driver_killed_with_sigkill_resumes(runs, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "run"
    proc = subprocess.Popen(_cli(config, out, "ray"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (out / "records.jsonl").is_file():
        time.sleep(0.05)
    assert proc.poll() is None, f"the audit ended before it could be killed: {proc.stderr.read()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists()
    done = subprocess.run(_cli(config, out, "ray"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    _assert_same(runs / "local", out)


def test_engine_settings_are_validated_and_left_out_of_the_digest():
    assert _config("ray").digest() == _config("local").digest()
    with pytest.raises(RobustEvalError, match="engine kind must be one of local, ray"):
        EngineConfig(kind="spark")
    with pytest.raises(RobustEvalError, match="cpus_per_worker > 0"):
        EngineConfig(kind="ray", cpus_per_worker=0)


def test_asking_for_more_cpus_than_the_cluster_has_is_a_one_line_error(cluster, tmp_path, capsys):
    code = main(["evaluate", str(BUNDLED_MODEL), "--arch", BUNDLED_ARCH, "--subset", "20", "--engine", "ray",
                 "--device", "cpu", "--config", _engine_yaml(tmp_path, cpus_per_worker=64), "--out",
                 str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "asks for 64 CPUs but the Ray cluster has" in err and len(err.splitlines()) == 1


def test_gpus_for_workers_of_a_cpu_run_are_a_one_line_error(tmp_path, capsys):
    code = main(["evaluate", str(BUNDLED_MODEL), "--arch", BUNDLED_ARCH, "--subset", "20", "--engine", "ray",
                 "--device", "cpu", "--config", _engine_yaml(tmp_path, gpus_per_worker=1), "--out",
                 str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "gpus_per_worker is 1 but the run's device is cpu" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run" / "records.jsonl").exists()


def test_workers_run_where_the_records_say():
    """``--device cuda`` with CPU workers (gpus_per_worker: 0), or GPU workers for a CPU run, is refused."""
    with pytest.raises(RobustEvalError, match="--device cuda with Ray needs gpus_per_worker > 0"):
        check_device(EngineConfig(kind="ray"), torch.device("cuda"))
    with pytest.raises(RobustEvalError, match="gpus_per_worker is 0.5 but the run's device is mps"):
        check_device(EngineConfig(kind="ray", gpus_per_worker=0.5), torch.device("mps"))
    check_device(EngineConfig(kind="ray", gpus_per_worker=0.25), torch.device("cuda:1"))
    check_device(EngineConfig(kind="ray"), torch.device("cpu"))


def _probe(worker: Worker) -> tuple[int, str, bool, bool]:
    from torch.backends import cuda, cudnn  # imported here: cloudpickle cannot ship torch's backend modules

    device = worker.start()
    return os.getpid(), str(device), cudnn.allow_tf32, cuda.matmul.allow_tf32


@pytest.mark.parametrize("device, gpus", [("cpu", 0), ("cuda", 1)])
def test_a_worker_runs_on_the_runs_device_with_tf32_off_and_a_gpu_task_gets_its_own_process(cluster, tmp_path,
                                                                                             device, gpus):
    """Read back from Ray tasks (a fresh worker has torch's default, cuDNN TF32 on; the cluster's one GPU is
    Ray's bookkeeping on a CPU machine, so ``cuda`` is only named, not used)."""
    executor = RayExecutor(EngineConfig(kind="ray", gpus_per_worker=gpus), RunDir(tmp_path), ray, torch.device(device))
    task = executor.remote(_probe)
    first, second = (ray.get(task.remote(executor._worker)) for _ in range(2))
    assert first[1:] == second[1:] == (device, False, False)
    if gpus:  # Ray's max_calls=1 for GPU tasks: a worker never keeps a GPU (or models) Ray gave to another task
        assert first[0] != second[0]


def _tiny_family(tmp_path: Path) -> tuple[RayExecutor, dict]:
    """A Ray executor on the run ``tmp_path`` and what a small family (control, structured method with its
    from-scratch baseline, unstructured method) is built from."""
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    x = np.random.default_rng(1).integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)
    settings = PruneSettings(methods=("l1_filter", "magnitude"), ratios=(0.5,), measure_latency=False, bn_batches=2,
                             finetune=FinetuneSettings(epochs=1, batch_size=16), scratch_baseline=True)
    train = LabeledArrays(x, (np.arange(32) % 4).astype(np.int64), ("a", "b", "c", "d"))
    executor = RayExecutor(EngineConfig(kind="ray"), RunDir(tmp_path), ray, torch.device("cpu"))
    return executor, dict(dense=dense, settings=settings, example_input=torch.rand(1, 3, 8, 8), train_data=train)


def test_a_ray_built_family_comes_in_the_local_order_with_the_cards_the_local_engine_reads(cluster, tmp_path):
    executor, family = _tiny_family(tmp_path)
    built = list(executor.build_family(**family, run=RunDir(tmp_path), progress=False))
    ids = ["dense", "dense+ft", "l1_filter@0.5", "l1_filter+scratch@0.5", "magnitude@0.5"]
    assert [m.id for m in built] == ids
    local = list(build_family(**family, out_dir=tmp_path / "models", progress=False))  # reuses every archive
    assert [m.card for m in built] == [m.card for m in local]


def _saves_nothing(*args) -> None:
    """A build task whose worker saves no archive (as one whose run directory is not the driver's)."""


def test_a_member_a_worker_did_not_save_is_a_one_line_error_never_rebuilt_by_the_driver(cluster, tmp_path):
    executor, family = _tiny_family(tmp_path)
    executor._build = executor.remote(_saves_nothing)
    members = executor.build_family(**family, run=RunDir(tmp_path), progress=False)
    assert next(members).id == "dense"
    with pytest.raises(RobustEvalError, match=r"^family member dense\+ft: a Ray worker built it but its archive is "
                                              "missing"):
        next(members)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["dense.json", "dense.pt2"]


def _engine_yaml(tmp_path: Path, **engine) -> str:
    path = tmp_path / "engine.yaml"
    path.write_text(yaml.safe_dump({"engine": engine}))
    return str(path)


def test_without_ray_installed_the_engine_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees when it is not installed
    code = main(["evaluate", str(BUNDLED_MODEL), "--arch", BUNDLED_ARCH, "--subset", "20", "--engine", "ray",
                 "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "pip install 'robusteval[ray]'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run" / "records.jsonl").exists()
