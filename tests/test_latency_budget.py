"""Latency timing bounded by a time budget per model, keeping the paired, alternating design."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robusteval.errors import RobustEvalError
from robusteval.pruning import PruneSettings, stats


class _Slow(nn.Module):
    """A forward pass of at least ``seconds`` (so the budget's arithmetic does not depend on the machine)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        deadline = stats.time.perf_counter() + self.seconds
        while stats.time.perf_counter() < deadline:
            pass
        return x.flatten(1)[:, :10]


X = torch.rand(2, 3, 4, 4)


def test_the_budget_bounds_the_runs_and_keeps_the_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(stats.copy, "deepcopy", lambda m: m)  # count the calls on these very modules
    model, dense = _Slow(0.01), _Slow(0.01)
    original = stats._timed
    monkeypatch.setattr(stats, "_timed", lambda m, x: calls.append(id(m)) or original(m, x))
    out = stats.latency_ms(model, X, repeats=50, dense=dense, budget_s=0.1)
    runs = out["latency_runs"]
    # 0.05 s per batch size at >= 0.02 s per pair: 3 pairs (the third crosses the budget), never all 50
    assert all(2 <= n <= 3 for n in runs.values()), runs
    assert len(calls) == 2 * sum(runs.values()) and calls[:4] == [id(model), id(dense), id(dense), id(model)]
    assert set(out["dense_latency_iqr_ms"]) == set(out["speedup_measured"]) == {"batch_1", "batch_128"}
    assert model.calls == dense.calls == sum(runs.values()) + 1  # one warm-up pass each, before batch 1 only


def test_without_a_budget_every_repeat_runs() -> None:
    out = stats.latency_ms(_Slow(0.0), X, repeats=7, budget_s=None)
    assert out["latency_runs"] == {"batch_1": 7, "batch_128": 7}
    assert stats.latency_ms(_Slow(0.0), X, repeats=7, budget_s=1e-9)["latency_runs"] == {"batch_1": 1, "batch_128": 1}


def test_the_budget_is_a_validated_setting() -> None:
    assert PruneSettings().latency_budget_s == 1.0 and PruneSettings(latency_budget_s=None).latency_budget_s is None
    with pytest.raises(RobustEvalError, match="latency_budget_s"):
        PruneSettings(latency_budget_s=0)


def test_too_few_pairs_for_an_interval_are_flagged() -> None:
    timing = {"speedup_measured": {"batch_1": 1.5, "batch_128": 1.4}, "speedup_iqr": {"batch_1": [1.5, 1.5],
              "batch_128": [1.3, 1.5]}, "latency_runs": {"batch_1": 1, "batch_128": 5}}
    speedup, warnings = stats.speedup_claims(timing, same_kernels=False)
    assert speedup == {"batch_1": 1.5, "batch_128": 1.4}
    assert len(warnings) == 1 and "from 1 pair(s) of runs" in warnings[0] and "latency_budget_s" in warnings[0]
