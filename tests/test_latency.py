"""Latency and speed-up: paired alternating timing, spread, and 1.0x for masked models, under load."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from robusteval.pruning import PruneSettings, prune_model
from robusteval.pruning.settings import FinetuneSettings
from robusteval.pruning.stats import latency_ms, speedup_claims

CALLS: list[str] = []


class Tagged(nn.Module):
    """Records its tag on every forward pass (a module-level list survives deepcopy)."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag
        self.layer = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CALLS.append(self.tag)
        return self.layer(x)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 10)).eval()


def test_dense_and_member_are_timed_in_alternating_pairs() -> None:
    CALLS.clear()
    out = latency_ms(Tagged("member"), torch.rand(1, 4), repeats=4, dense=Tagged("dense"))
    pairs = ["member", "dense", "dense", "member"] * 2
    assert CALLS == ["member", "dense"] + pairs + pairs  # warm-ups on CPU before the first batch size only
    assert set(out) == {"latency_ms", "latency_iqr_ms", "latency_runs", "dense_latency_ms", "dense_latency_iqr_ms",
                        "speedup_measured", "speedup_iqr"}
    for key in ("batch_1", "batch_128"):
        low, high = out["latency_iqr_ms"][key]
        assert 0 < low <= out["latency_ms"][key] <= high


def test_speedup_claims_flag_a_spread_wider_than_the_effect() -> None:
    timing = {"speedup_measured": {"batch_1": 1.3, "batch_128": 2.0},
              "speedup_iqr": {"batch_1": [0.8, 1.9], "batch_128": [1.9, 2.1]}}
    speedup, warnings = speedup_claims(timing, same_kernels=False)
    assert speedup == {"batch_1": 1.3, "batch_128": 2.0}
    assert len(warnings) == 1 and "batch 1" in warnings[0] and "spread exceeds the effect" in warnings[0]
    assert speedup_claims(timing, same_kernels=True) == ({"batch_1": 1.0, "batch_128": 1.0}, [])


@pytest.fixture()
def loaded_cpu():
    """A busy-loop process competing for the CPU while the test measures."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield busy
    finally:
        busy.kill()
        busy.wait()


def test_masked_model_is_1x_on_a_loaded_cpu(loaded_cpu) -> None:
    settings = PruneSettings(measure_latency=True, latency_repeats=9, finetune=FinetuneSettings(epochs=0))
    member = prune_model(_net(), "magnitude", 0.8, settings=settings, example_input=torch.rand(2, 3, 16, 16),
                         train_data=None)
    assert loaded_cpu.poll() is None  # the load ran throughout
    info = member.info
    assert info["speedup"] == {"batch_1": 1.0, "batch_128": 1.0}
    assert info["sparse_runtime"] is False and info["speedup_basis"].startswith("dense kernels")
    # same kernels, timed in alternating pairs: the measured ratio stays near 1 despite the load
    for key, ratio in info["speedup_measured"].items():
        assert 0.5 < ratio < 2.0, (key, ratio, info["speedup_iqr"][key])
    assert not any("latency" in w for w in info["warnings"])


def test_structured_member_states_its_measured_speedup() -> None:
    settings = PruneSettings(measure_latency=True, latency_repeats=3, finetune=FinetuneSettings(epochs=0))
    member = prune_model(_net(), "l1_filter", 0.5, settings=settings, example_input=torch.rand(2, 3, 16, 16),
                         train_data=None)
    assert member.info["speedup"] == member.info["speedup_measured"]
    assert member.info["speedup_basis"].startswith("measured")
