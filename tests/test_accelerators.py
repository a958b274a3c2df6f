"""Accelerator paths checked on CPU (issue 27): MPS's missing float64 and its threads, out-of-memory errors of
MPS and torch 2.4, TF32 off in every entry point, MPS latency synchronized. MPS tensors and device errors are
simulated; the same paths on a real GPU run in tests/test_device.py (skipped without one)."""
from __future__ import annotations

import copy
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robusteval import device as device_module
from robusteval.conditions import Condition
from robusteval.data.arrays import LabeledArrays
from robusteval.engine.core import EngineSettings, ModelEntry, _prefetch, run_conditions
from robusteval.evaluators import attack_kinds
from robusteval.evaluators.adversarial import AdversarialSettings
from robusteval.evaluators.settings import EvaluateSettings
from robusteval.pruning import coreset, stats
from robusteval.pruning.masks import masks_from_scores
from robusteval.pruning.structured import ChannelGroup
from robusteval.records import Record
from robusteval.results import RunDir

ROOT = Path(__file__).resolve().parents[1]
MPS_FLOAT64 = "Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't support float64"


class OnMPS(torch.Tensor):
    """A CPU tensor that fails as an MPS tensor does on float64 (torch's own message); ``.cpu()`` leaves MPS."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        out = super().__torch_function__(func, types, args, kwargs or {})
        if func is torch.Tensor.cpu:
            with torch._C.DisableTorchFunctionSubclass():
                return out.as_subclass(torch.Tensor)
        leaves = out if isinstance(out, (tuple, list)) else [out]
        if any(isinstance(t, OnMPS) and t.dtype == torch.float64 for t in leaves):
            raise TypeError(MPS_FLOAT64)
        return out


def on_mps(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().as_subclass(OnMPS)


def test_the_simulated_mps_tensor_refuses_float64_like_mps():
    with pytest.raises(TypeError, match="MPS framework doesn't support float64"):
        on_mps(torch.ones(3)).double()
    assert on_mps(torch.ones(3)).cpu().double().dtype == torch.float64


# --- 1. MPS has no float64 ------------------------------------------------------------------------------------------

def test_masks_from_mps_scores_are_ranked_on_cpu_and_equal_the_cpu_masks():
    scores = {"a": torch.randn(4, 5, generator=torch.Generator().manual_seed(0)), "b": torch.arange(12.0)}
    for scope in ("global", "layer"):
        expected = masks_from_scores(scores, 0.5, scope=scope)
        got = masks_from_scores({k: on_mps(v) for k, v in scores.items()}, 0.5, scope=scope)
        assert all(torch.equal(got[k], expected[k]) for k in scores), scope


def test_coreset_importance_of_mps_weights_equals_the_cpu_importance(monkeypatch):
    torch.manual_seed(0)
    producer, consumer = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 5, 3)
    group = ChannelGroup("conv", producer, None, [(consumer, [0, 1, 2, 3], [0, 1, 2, 3])])
    ctx = type("Ctx", (), {"settings": type("S", (), {"coreset_max_dim": 64})()})()
    expected = coreset.coreset_importance(group, ctx)
    weight, bound = consumer.weight.detach(), coreset.activation_bound(group)
    del consumer.weight
    consumer.weight = on_mps(weight)
    monkeypatch.setattr(coreset, "activation_bound", lambda g: on_mps(bound))
    assert torch.equal(coreset.coreset_importance(group, ctx), expected)


def test_minimal_norms_from_an_mps_attack_are_summarised_on_cpu(monkeypatch):
    monkeypatch.setattr(attack_kinds.LinfFMN, "__call__", lambda *a, **k: on_mps(torch.tensor([0.25, 0.5])))
    correct = torch.tensor([True, False, True])
    settings = AdversarialSettings(batch_size=2)
    outcome = attack_kinds.LinfFMN.configured(settings).outcome(
        nn.Identity(), attack_kinds.Sample(torch.zeros(3, 3), torch.zeros(3), correct, 2))
    median, summary = outcome.metrics["min_norm/linf/median"], outcome.details["min_norm"]["linf"]
    assert median == 0.25 and summary


# --- 2. MPS from one thread -----------------------------------------------------------------------------------------

class _Recorded:
    """A condition whose inputs say which thread made them."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def inputs(self, start: int, stop: int, index: int, device: torch.device) -> torch.Tensor:
        self.threads.append(threading.get_ident())
        return torch.zeros(stop - start, 3)


def test_inputs_for_mps_are_made_in_the_calling_thread_and_for_cpu_in_the_prefetch_thread():
    work = [(0, (0, 2, 0), []), (0, (2, 4, 1), [])]
    for device, same in (("mps", True), ("cpu", False)):
        condition = _Recorded()
        assert [len(x) for x in _prefetch(condition, work, torch.device(device), False)] == [2, 2]
        assert all((t == threading.get_ident()) == same for t in condition.threads), device


# --- 5 and 7. out of memory: MPS's RuntimeError, torch 2.4's torch.cuda.OutOfMemoryError -----------------------------

class RaisesAbove(nn.Module):
    """A linear model that raises ``error`` on batches larger than ``limit``."""

    def __init__(self, limit: int, error: type[BaseException], message: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc, self.limit, self.error, self.message = nn.Linear(8 * 8 * 3, 4), limit, error, message
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        if len(x) > self.limit:
            raise self.error(self.message)
        return self.fc(x.flatten(1))


def _records(model: nn.Module, out: Path) -> list[Record]:
    rng = np.random.default_rng(0)
    data = LabeledArrays(rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8), rng.integers(0, 4, 40),
                         ("a", "b", "c", "d"))
    run_conditions([ModelEntry("dense", model)], [Condition("clean", "clean", data)], RunDir(out),
                   EvaluateSettings(calibration=None, agreement=False),
                   EngineSettings(batch_size=20, shard_size=40, progress=False))
    return RunDir(out).records()


def test_mps_out_of_memory_is_retried_in_halves_and_empties_the_mps_cache(tmp_path, monkeypatch):
    emptied = []
    monkeypatch.setattr(device_module, "_mps", lambda: True)
    monkeypatch.setattr(torch.mps, "empty_cache", lambda: emptied.append(1))
    plain = _records(RaisesAbove(10**6, RuntimeError, ""), tmp_path / "plain")
    message = "MPS backend out of memory (MPS allocated: 17.5 GB, other allocations: 1.2 GB, max allowed: 18.1 GB)"
    model = RaisesAbove(10, RuntimeError, message)
    assert [r.metrics for r in _records(model, tmp_path / "mps")] == [r.metrics for r in plain]
    assert model.sizes[:3] == [20, 10, 10] and emptied


def test_other_runtime_errors_are_not_taken_for_out_of_memory(tmp_path):
    from robusteval.errors import RobustEvalError

    with pytest.raises(RobustEvalError, match="failed on a batch of 20 inputs.*shape mismatch"):
        _records(RaisesAbove(10, RuntimeError, "shape mismatch"), tmp_path)


def test_on_torch_2_4_the_cuda_out_of_memory_error_is_retried_in_halves(tmp_path, monkeypatch):
    """torch 2.4 has no ``torch.OutOfMemoryError``, only ``torch.cuda.OutOfMemoryError``."""
    monkeypatch.delattr(torch, "OutOfMemoryError")
    model = RaisesAbove(10, torch.cuda.OutOfMemoryError, "CUDA out of memory (simulated)")
    assert len(_records(model, tmp_path)) == 1 and model.sizes[:3] == [20, 10, 10]


# --- 4. TF32 off wherever robusteval is used -----------------------------------------------------------------------

@pytest.mark.parametrize("entry", ["robusteval.data.corruptions", "robusteval.models.loading",
                                   "robusteval.pruning", "robusteval.evaluators.adversarial"])
def test_importing_any_entry_point_switches_tf32_off(entry):
    """A fresh process (as a Ray worker, or a script calling ``corrupt`` before any ``audit``): torch's cuDNN default
    is TF32 on."""
    code = (f"import torch; assert torch.backends.cudnn.allow_tf32; import {entry}; "
            "print(torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


# --- 8. MPS latency: the work, not its dispatch ---------------------------------------------------------------------

def test_each_timed_pass_is_synchronized_on_its_device(monkeypatch):
    calls = []
    monkeypatch.setattr(stats, "synchronize", lambda device: calls.append(device.type))
    stats._timed(nn.Identity(), torch.zeros(1, 3))
    assert calls == ["cpu", "cpu"]


def test_synchronize_waits_for_mps_and_not_for_cpu(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append("mps"))
    device_module.synchronize(torch.device("cpu"))
    device_module.synchronize(torch.device("mps"))
    assert calls == ["mps"]


# --- draws that must not depend on the device or on what ran before ------------------------------------------------

def test_fine_tuning_seeds_the_models_own_draws_and_restores_the_callers_rng():
    """Dropout draws from the global (device) RNG: seeded by ``seed``, whatever ran before."""
    from robusteval.pruning.recovery import finetune
    from robusteval.pruning.settings import FinetuneSettings

    rng = np.random.default_rng(0)
    data = LabeledArrays(rng.integers(0, 256, (32, 4, 4, 3), dtype=np.uint8), rng.integers(0, 2, 32), ("a", "b"))
    torch.manual_seed(0)
    start = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.Dropout(0.5), nn.Linear(16, 2))
    weights = []
    for draws in (1, 5):
        model = copy.deepcopy(start)
        torch.rand(draws)  # the caller's RNG in another state
        before = torch.random.get_rng_state()
        finetune(model, data, FinetuneSettings(epochs=1, batch_size=8, augment=False), seed=3)
        assert torch.equal(torch.random.get_rng_state(), before)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])
