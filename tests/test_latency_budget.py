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


# --- proportionate to the audit: pruning.latency_share of the images it evaluates ---------------------------------

def test_a_small_audit_times_batch_1_only_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats.copy, "deepcopy", lambda m: m)
    model, dense = _Slow(0.0), _Slow(0.0)
    out = stats.latency_ms(model, X, repeats=11, dense=dense, budget_s=None, share=0.1, evaluated=500)
    # 10% of 500 images: 50 passes at batch 1 (one is the warm-up), none at batch 128 (0.39 of a pass)
    assert out["latency_runs"] == {"batch_1": 11} and set(out["speedup_measured"]) == {"batch_1"}
    assert model.calls == dense.calls == 1 + 11
    info = stats.model_info(nn.Sequential(nn.Flatten(), nn.Linear(48, 10)), X, dense=nn.Sequential(
        nn.Flatten(), nn.Linear(48, 10)), latency_repeats=3, latency_share=0.1, evaluated=500)
    assert set(info["latency_ms"]) == set(info["speedup"]) == {"batch_1"}
    (untimed,) = [w for w in info["latency_warnings"] if "not timed" in w]
    assert untimed.startswith("latency batch 128: not timed") and "latency_share (0.1) of the 500 images" in untimed


def test_the_pairs_grow_with_the_images_evaluated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats.copy, "deepcopy", lambda m: m)
    runs = [stats.latency_ms(_Slow(0.0), X, repeats=11, dense=_Slow(0.0), share=0.1, evaluated=n)["latency_runs"]
            for n in (20, 1280, 3000, 100_000)]
    assert runs == [{"batch_1": 1}, {"batch_1": 11, "batch_128": 1}, {"batch_1": 11, "batch_128": 2},
                    {"batch_1": 11, "batch_128": 11}]
    # a GPU's warm-up passes count against the share; batch 1 is always timed once
    assert stats.affordable_runs(128, stats.CUDA_WARMUP, 11, 0.1, 5120) == 1
    assert stats.affordable_runs(128, stats.CUDA_WARMUP, 11, 0.1, 3840) == 0
    assert stats.affordable_runs(1, stats.CUDA_WARMUP, 11, 0.1, 10) == 1
    assert stats.affordable_runs(128, 0, 11, None, 10) == stats.affordable_runs(128, 0, 11, 0.1, None) == 11


def test_the_share_is_a_validated_setting_and_the_audit_sets_its_images() -> None:
    settings = PruneSettings()
    assert settings.latency_share == 0.1 and settings.evaluated_images is None
    assert settings.latency_options() == {"measure_latency": True, "latency_repeats": 11, "latency_budget_s": 1.0,
                                          "latency_share": 0.1, "evaluated": None}
    assert PruneSettings(latency_share=None).latency_share is None
    for bad in ({"latency_share": 0}, {"latency_share": "all"}, {"evaluated_images": 0}):
        with pytest.raises(RobustEvalError, match=next(iter(bad))):
            PruneSettings(**bad)


def test_an_audit_on_few_images_skips_batch_128_for_the_candidate_and_its_reference(tmp_path) -> None:
    from robusteval import audit
    from robusteval.config import AuditConfig, DataSettings
    from robusteval.evaluators.settings import EvaluateSettings

    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    candidate = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    config = AuditConfig(data=DataSettings(source="bundled", subset=40), device="cpu",
                         evaluate=EvaluateSettings(calibration=None, agreement=False),
                         pruning=PruneSettings(latency_budget_s=None))  # pairs counted by the share alone
    run = audit(candidate.eval(), reference=dense.eval(), config=config, out=tmp_path / "run", progress=False)
    parent, given = run.summary["models"]
    # 40 clean images: 10% is 4 passes at batch 1 (one is the warm-up), none at batch 128
    assert given["latency_runs"] == parent["latency_runs"] == {"batch_1": 3}
    assert set(given["speedup"]) == {"batch_1"} and "batch_128" not in parent["latency_ms"]
    assert any(w.startswith("latency batch 128: not timed") and "of the 40 images" in w for w in given["warnings"])
