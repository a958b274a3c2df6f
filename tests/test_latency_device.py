"""Latency is measured on the model's device and the run says which: CPU here, CUDA where there is one."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robusteval.device import model_device
from robusteval.pruning.stats import latency_ms, model_info

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10)).eval()


class Parameterless(nn.Module):
    """Stands for an ONNX session: a forward pass, no parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10]


def test_the_device_is_the_first_parameters_and_cpu_without_any() -> None:
    assert model_device(_net()) == torch.device("cpu")
    assert model_device(Parameterless()) == torch.device("cpu")


def test_cpu_latency_is_recorded_as_measured_on_the_cpu() -> None:
    x = torch.rand(2, 3, 8, 8)
    info = model_info(_net(), x, dense=_net(), latency_repeats=3)
    assert info["latency_device"] == "cpu"
    assert set(info["latency_ms"]) == {"batch_1", "batch_128"} and min(info["latency_ms"].values()) > 0
    assert "latency_device" not in model_info(_net(), x, measure_latency=False)
    assert model_info(Parameterless(), x, latency_repeats=2)["latency_device"] == "cpu"


@CUDA
def test_cuda_latency_is_timed_on_the_gpu_with_a_cpu_example_input() -> None:
    model, dense = _net().cuda(), _net().cuda()
    info = model_info(model, torch.rand(2, 3, 8, 8), dense=dense, latency_repeats=3)
    assert info["latency_device"].startswith("cuda")
    assert info["macs"] > 0 and min(info["latency_ms"].values()) > 0
    for key in ("batch_1", "batch_128"):
        low, high = info["latency_iqr_ms"][key]
        assert 0 < low <= info["latency_ms"][key] <= high
    assert next(model.parameters()).is_cuda  # timed on copies: the model stays where it was


@CUDA
def test_cuda_timing_waits_for_the_kernels() -> None:
    """A pass that queues much more GPU work takes measurably longer: the events bracket the kernels."""
    small, large = (nn.Linear(n, n).cuda().eval() for n in (64, 4096))
    fast = latency_ms(small, torch.rand(1, 64), repeats=3)["latency_ms"]["batch_128"]
    slow = latency_ms(nn.Sequential(*[large] * 20), torch.rand(1, 4096), repeats=3)["latency_ms"]["batch_128"]
    assert slow > fast


def test_the_models_table_names_the_latency_device(tmp_path) -> None:
    from robusteval.report import write_report
    from robusteval.results import RunDir, build_summary

    run = RunDir(tmp_path / "run")
    run.add_record({"model": "dense", "condition": "clean", "n": 10, "metrics": {"clean/accuracy": 0.9}})
    timing = {"latency_ms": {"batch_1": 1.0, "batch_128": 9.0}, "speedup_basis": "the reference"}
    run.add_model({"id": "dense", "method": "dense", "target_ratio": 0.0, "latency_device": "cuda:0", **timing})
    run.write_summary(build_summary("dense", run.models(), run.records(), {"complete": True, "missing": []}))
    text = write_report(run.path).read_text(encoding="utf-8")
    assert "<th>latency b=1 (ms, cuda:0)</th>" in text and "<th>latency b=128 (ms, cuda:0)</th>" in text
    assert "between CUDA events" in text
