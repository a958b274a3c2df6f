"""Devices and precision (issue 12): device specs, bf16 autocast, out-of-memory halving, channels-last."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from robusteval.api import audit
from robusteval.cli import main
from robusteval.conditions import Condition
from robusteval.config import AuditConfig, DataSettings, EvaluateSettings, ModelSettings, config_from_dict
from robusteval.data.arrays import LabeledArrays
from robusteval.device import check_autocast, resolve_device, to_device
from robusteval.engine import EngineSettings, ModelEntry, run_conditions
from robusteval.errors import RobustEvalError
from robusteval.models.archs import build_arch
from robusteval.models.bundled import BUNDLED_ARCH, BUNDLED_MODEL
from robusteval.records import Record
from robusteval.report import write_report
from robusteval.results import RunDir

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def _config(**top) -> AuditConfig:
    return AuditConfig(data=DataSettings(subset=100, batch_size=50), model=ModelSettings(arch=BUNDLED_ARCH),
                       evaluate=EvaluateSettings(calibration=None, agreement=False), **top)


# --- device specs -----------------------------------------------------------------------------------------------

def test_auto_prefers_cuda_then_mps_then_cpu():
    expected = "cuda" if HAS_CUDA else "mps" if HAS_MPS else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it_names_what_is_available():
    with pytest.raises(RobustEvalError, match=r"'cuda' is not available on this machine \(available: cpu"):
        resolve_device("cuda")


def test_a_cuda_index_beyond_the_count_and_bad_specs_are_refused():
    with pytest.raises(RobustEvalError, match="'cuda:99' is not available"):
        resolve_device("cuda:99")
    for spec in ("gpu", "cuda:x", "cpu:0", "", "mps:1"):
        with pytest.raises(RobustEvalError, match="device must be one of auto, cpu, cuda, cuda:N, mps"):
            resolve_device(spec)


def test_config_validates_device_and_precision_and_keeps_auto():
    assert AuditConfig().device == "auto" and AuditConfig().precision == "fp32" and not AuditConfig().channels_last
    with pytest.raises(RobustEvalError, match="device must be one of"):
        config_from_dict({"device": "gpu"})
    with pytest.raises(RobustEvalError, match="precision must be one of fp32, bf16, fp16, got 'fp8'"):
        config_from_dict({"precision": "fp8"})
    with pytest.raises(RobustEvalError, match="channels_last"):
        config_from_dict({"channels_last": "yes"})


def test_fp16_and_bf16_autocast_are_accepted_on_cpu():
    """torch 2.x autocasts both on CPU, so neither is refused there."""
    for precision in ("fp32", "bf16", "fp16"):
        check_autocast(torch.device("cpu"), precision)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_a_precision_torch_cannot_autocast_is_refused():
    """torch warns and disables autocast for a dtype (or device) it cannot autocast: refused in one line."""
    with pytest.raises(RobustEvalError, match="precision bf16 is not supported on cuda .*; use fp32"):
        check_autocast(torch.device("cuda"), "bf16")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_cli_device_cuda_without_cuda_is_exit_2_with_one_line(tmp_path, capsys):
    code = main(["evaluate", str(BUNDLED_MODEL), "--arch", BUNDLED_ARCH, "--subset", "20", "--device", "cuda",
                 "--out", str(tmp_path / "o"), "--quiet", "--no-report"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "available: cpu" in err[0], err


def test_cli_bad_precision_names_the_flag(tmp_path, capsys):
    code = main(["evaluate", str(BUNDLED_MODEL), "--arch", BUNDLED_ARCH, "--precision", "fp8",
                 "--out", str(tmp_path / "o"), "--quiet", "--no-report"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--precision fp8" in err[0] and "fp32, bf16, fp16" in err[0], err


# --- precision ----------------------------------------------------------------------------------------------------

def test_bf16_audit_is_close_to_fp32_and_says_so(tmp_path):
    fp32 = audit(BUNDLED_MODEL, config=_config(), out=tmp_path / "fp32", progress=False)
    bf16 = audit(BUNDLED_MODEL, config=_config(precision="bf16"), out=tmp_path / "bf16", progress=False)
    a, b = fp32.metrics()["clean/accuracy"], bf16.metrics()["clean/accuracy"]
    assert abs(a - b) <= 0.02, (a, b)
    manifest = json.loads((bf16.path / "manifest.json").read_text())
    resolved = str(resolve_device("auto"))  # cpu here, cuda on a GPU machine
    assert manifest["precision"] == "bf16" and manifest["device"] == resolved and manifest["config"]["device"] == "auto"
    provenance = RunDir(bf16.path).records()[0].provenance  # provenance is written into each record
    assert provenance["device"] == resolved and provenance["precision"] == "bf16"
    assert "forward passes in bf16 autocast; attacks and pruning scores in fp32" in write_report(bf16.path).read_text()
    assert "autocast" not in write_report(fp32.path).read_text()


def test_the_digest_does_not_depend_on_the_device():
    """A run started with --device cuda resumes on a CPU machine (test_a_run_made_on_cuda_resumes_...)."""
    assert _config().digest() == _config(device="cpu").digest() == _config(device="cuda:1").digest()
    assert _config().digest() != _config(precision="bf16").digest()


# --- memory -------------------------------------------------------------------------------------------------------

class OutOfMemoryAbove(nn.Module):
    """A linear model that raises torch's out-of-memory error on batches larger than ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8 * 8 * 3, 4)
        self.limit = limit
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        if len(x) > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (simulated, batch {len(x)})")
        return self.fc(x.flatten(1))


def _data(n: int = 60) -> LabeledArrays:
    rng = np.random.default_rng(0)
    return LabeledArrays(rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), rng.integers(0, 4, n),
                         ("a", "b", "c", "d"))


def _records(model: nn.Module, out, evaluate: EvaluateSettings) -> list[Record]:
    settings = EngineSettings(batch_size=20, shard_size=40, progress=False)
    run_conditions([ModelEntry("dense", model)], [Condition("clean", "clean", _data())], RunDir(out), evaluate,
                   settings)
    return RunDir(out).records()


def test_out_of_memory_batches_are_retried_in_halves_with_the_same_results(tmp_path, capsys):
    evaluate = EvaluateSettings(calibration=None, agreement=False)
    plain = _records(OutOfMemoryAbove(10**6), tmp_path / "plain", evaluate)
    capsys.readouterr()
    model = OutOfMemoryAbove(6)
    halved = _records(model, tmp_path / "halved", evaluate)
    err = capsys.readouterr().err.strip().splitlines()
    assert [r.metrics for r in halved] == [r.metrics for r in plain]
    assert [r.correct for r in halved] == [r.correct for r in plain]
    assert model.sizes[:7] == [20, 10, 5, 5, 10, 5, 5]  # 20 → 10 (too big) → 5 + 5, twice
    assert len(err) == 1 and "ran out of device memory on a batch of 20; retrying in halves" in err[0], err


def test_out_of_memory_on_a_single_input_is_a_one_line_error(tmp_path):
    with pytest.raises(RobustEvalError, match="runs out of device memory on a single input of clean"):
        _records(OutOfMemoryAbove(0), tmp_path, EvaluateSettings(calibration=None, agreement=False))


# --- memory format and devices ------------------------------------------------------------------------------------

def test_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    model, x = build_arch(BUNDLED_ARCH, 10).eval(), torch.rand(8, 3, 32, 32)
    with torch.inference_mode():
        expected = model(x)
        nhwc = model.to(memory_format=torch.channels_last)
        got = nhwc(to_device(x, torch.device("cpu"), channels_last=True))
    assert to_device(x, torch.device("cpu"), channels_last=True).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_a_channels_last_audit_matches_the_default(tmp_path):
    default = audit(BUNDLED_MODEL, config=_config(), out=tmp_path / "a", progress=False)
    nhwc = audit(BUNDLED_MODEL, config=_config(channels_last=True), out=tmp_path / "b", progress=False)
    assert nhwc.metrics()["clean/accuracy"] == default.metrics()["clean/accuracy"]


@pytest.mark.parametrize("device", ["cpu", "cuda", "mps"])
def test_a_tiny_audit_runs_on_each_device(device, tmp_path):
    if device == "cuda" and not HAS_CUDA:
        pytest.skip("no CUDA device on this machine")
    if device == "mps" and not HAS_MPS:
        pytest.skip("no MPS device on this machine")
    config = _config(device=device).replace(data=DataSettings(subset=20, batch_size=10))
    run = audit(BUNDLED_MODEL, config=config, out=tmp_path / device, progress=False)
    assert 0.0 <= run.metrics()["clean/accuracy"] <= 1.0
    assert json.loads((run.path / "manifest.json").read_text())["device"].startswith(device)


def test_inputs_made_on_a_given_cpu_device_are_the_default_inputs():
    data = LabeledArrays(np.random.default_rng(0).random((8, 3, 32, 32), dtype=np.float32), np.zeros(8, np.int64),
                         tuple("abcdefghij"), "synthetic")
    condition = Condition("noise/0.1", "noise", data, lambda x, i: (x + 0.01 * i).clamp(0, 1))
    assert torch.equal(condition.inputs(2, 6, 3, torch.device("cpu")), condition.inputs(2, 6, 3))


ACCELERATORS = [pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device on this machine")),
                pytest.param("mps", marks=pytest.mark.skipif(not HAS_MPS, reason="no MPS device on this machine"))]


def _every_family(device: str) -> AuditConfig:
    from robusteval.config import CorruptionSettings, NoiseSettings, OODConfig, PruneSettings

    evaluate = EvaluateSettings(corruption=CorruptionSettings(corruptions=("gaussian_noise", "fog", "jpeg_compression",
                                                                           "glass_blur"), severities=(2, 5), subset=40),
                                noise=NoiseSettings(eps=(0.0, 0.1), subset=40), ood=OODConfig(subset=40))
    return AuditConfig(data=DataSettings(subset=40, batch_size=20), model=ModelSettings(arch=BUNDLED_ARCH),
                       evaluate=evaluate, pruning=PruneSettings(methods=("magnitude",), ratios=(0.5,)), device=device)


@pytest.mark.parametrize("device", ACCELERATORS)
def test_an_audit_on_an_accelerator_matches_cpu(device, tmp_path):
    """Corrupted, noisy and OOD inputs are made on the device from the same seeded draws: accuracies
    agree with CPU within one image per condition."""
    on_device = audit(BUNDLED_MODEL, config=_every_family(device), out=tmp_path / device, progress=False)
    on_cpu = audit(BUNDLED_MODEL, config=_every_family("cpu"), out=tmp_path / "cpu", progress=False)
    accuracies = [k for k in on_cpu.metrics() if k.endswith("/accuracy")]
    assert len(accuracies) > 10
    for key in accuracies:
        assert abs(on_device.metrics()[key] - on_cpu.metrics()[key]) <= 1 / 40 + 1e-9, key


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device on this machine")
@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_a_run_made_on_cuda_resumes_on_a_machine_without_it(tmp_path, device):
    """``device: auto`` (or ``cuda``: the device is not in the config digest) on CUDA, then the same run
    directory on CPU (CUDA hidden, ``--device cpu``): the saved members reload on CPU, nothing is
    recomputed, the summary is the same."""
    import os
    import subprocess
    import sys

    import yaml

    first = audit(BUNDLED_MODEL, config=_every_family(device), out=tmp_path / "run", progress=False)
    records = (tmp_path / "run" / "records.jsonl").read_text()
    (tmp_path / "run" / "summary.json").unlink()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(_every_family(device).to_dict()))))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-m", "robusteval.cli", "audit", str(BUNDLED_MODEL), "--config",
                           str(tmp_path / "config.yaml"), "--out", str(tmp_path / "run"), "--device", "cpu",
                           "--quiet", "--no-report"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "records.jsonl").read_text() == records
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["models"] == first.summary["models"]
