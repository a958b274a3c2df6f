"""The engine: one input batch per condition shared by every model, records, resumability."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robusteval.conditions import Condition
from robusteval.config import AuditConfig, EvaluateSettings
from robusteval.data.arrays import LabeledArrays
from robusteval.engine import EngineSettings, ModelEntry, run_conditions
from robusteval.metrics import metric_key
from robusteval.errors import RobustEvalError
from robusteval.results import RunDir, decode_bits

CONFIG = AuditConfig(evaluate=EvaluateSettings(calibration=None))


def _data(n: int = 60, seed: int = 0) -> LabeledArrays:
    rng = np.random.default_rng(seed)
    return LabeledArrays(rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), rng.integers(0, 4, n),
                         ("a", "b", "c", "d"))


class Recorder(nn.Module):
    """A linear model that remembers a fingerprint of every input batch it saw."""

    def __init__(self, seed: int, fail_at: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(8 * 8 * 3, 4)
        self.seen: list[float] = []
        self.fail_at = fail_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail_at is not None and len(self.seen) == self.fail_at:
            raise KeyboardInterrupt("simulated crash")
        self.seen.append(float(x.double().sum()))
        return self.fc(x.flatten(1))


class CountingTransform:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, x: torch.Tensor, batch_index: int) -> torch.Tensor:
        self.calls.append(batch_index)
        g = torch.Generator().manual_seed(batch_index)
        return (x + 0.1 * torch.rand(x.shape, generator=g)).clamp(0, 1)


def _family(fail_at: int | None = None) -> list[ModelEntry]:
    return [ModelEntry("dense", Recorder(0)), ModelEntry("a@0.5", Recorder(1, fail_at)), ModelEntry("b@0.5", Recorder(2))]


SETTINGS = EngineSettings(batch_size=10, shard_size=20, progress=False)


def test_each_batch_is_made_once_and_shared(tmp_path):
    transform = CountingTransform()
    cond = Condition("noise/0.1", "noise", _data(), transform)
    models = _family()
    run_conditions(models, [cond], RunDir(tmp_path), CONFIG.evaluate, SETTINGS)
    assert transform.calls == list(range(6))  # 60 images / batch 10, made once for all 3 models
    assert models[0].module.seen == models[1].module.seen == models[2].module.seen


def test_records_hold_metrics_and_paired_correctness(tmp_path):
    data = _data()
    models = _family()
    run = RunDir(tmp_path)
    run_conditions(models, [Condition("clean", "clean", data)], run, CONFIG.evaluate, SETTINGS)
    records = {r.model: r for r in run.records()}
    assert set(records) == {"dense", "a@0.5", "b@0.5"}
    x, y = data.images(slice(None)), data.labels(slice(None))
    for m in models:
        with torch.no_grad():
            expected = (m.module.fc(x.flatten(1)).argmax(1) == y).numpy()
        rec = records[m.id]
        assert np.array_equal(decode_bits(rec.correct, rec.n), expected)
        assert rec.metrics["clean/accuracy"] == pytest.approx(expected.mean(), abs=1e-12)
    assert "agreement/top1" in records["a@0.5"].metrics
    assert "agreement/top1" not in records["dense"].metrics
    assert not (tmp_path / "shards" / "clean").exists()


def test_rerun_skips_finished_work(tmp_path):
    run = RunDir(tmp_path)
    cond = Condition("noise/0.1", "noise", _data(), CountingTransform())
    run_conditions(_family(), [cond], run, CONFIG.evaluate, SETTINGS)
    again = CountingTransform()
    models = _family()
    run_conditions(models, [Condition("noise/0.1", "noise", _data(), again)], run, CONFIG.evaluate, SETTINGS)
    assert again.calls == [] and all(not m.module.seen for m in models)
    assert len(run.records()) == 3


def test_crash_loses_at_most_the_shard_in_flight(tmp_path):
    reference = RunDir(tmp_path / "ref")
    run_conditions(_family(), [Condition("noise/0.1", "noise", _data(), CountingTransform())], reference,
                   CONFIG.evaluate, SETTINGS)
    run = RunDir(tmp_path / "crash")
    with pytest.raises(KeyboardInterrupt):  # model a@0.5 dies on its 5th batch (shard 2 of 3)
        run_conditions(_family(fail_at=4), [Condition("noise/0.1", "noise", _data(), CountingTransform())], run,
                       CONFIG.evaluate, SETTINGS)
    resumed = CountingTransform()
    run_conditions(_family(), [Condition("noise/0.1", "noise", _data(), resumed)], run, CONFIG.evaluate, SETTINGS)
    assert resumed.calls == [4, 5]  # shards 0 and 1 were kept; only shard 2 is recomputed
    strip = lambda recs: sorted((r.model, r.metrics, r.correct) for r in recs)  # noqa: E731
    assert strip(run.records()) == strip(reference.records())


@pytest.mark.parametrize("agreement", [True, False])
@pytest.mark.parametrize("key, family", [("noise/0.1", "noise"), ("shift/x", "shift"),
                                         ("adversarial/transfer/fgsm", "transfer")])
def test_dense_logits_are_computed_exactly_when_an_evaluator_needs_them(tmp_path, key, family, agreement):
    """Dense already recorded, a pruned model not: dense runs again only for an evaluator that reads its logits
    (agreement, registered for clean, corruption, noise and shift; not transfer, which the engine's old
    ``family != "ood"`` rule ran dense for anyway)."""
    run = RunDir(tmp_path)
    evaluate = dataclasses.replace(CONFIG.evaluate, agreement=agreement)
    run_conditions([ModelEntry("dense", Recorder(0))], [Condition(key, family, _data())], run, evaluate, SETTINGS)
    models = _family()
    run_conditions(models, [Condition(key, family, _data())], run, evaluate, SETTINGS)
    agreed = any(k.startswith("agreement/") for r in run.records() if r.model == "a@0.5" for k in r.metrics)
    assert bool(models[0].module.seen) == agreed == (agreement and family != "transfer")


def test_nan_logits_are_a_clear_error(tmp_path):
    class NaNModel(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((x.shape[0], 4), float("nan"))

    with pytest.raises(RobustEvalError, match="NaN"):
        run_conditions([ModelEntry("dense", NaNModel())], [Condition("clean", "clean", _data())], RunDir(tmp_path),
                       CONFIG.evaluate, SETTINGS)


@pytest.mark.parametrize(("evaluator", "key", "family", "expected"), [
    ("accuracy", "clean", "clean", "clean/accuracy"),
    ("accuracy", "corruption/fog/3", "corruption", "corruption/fog/3/accuracy"),
    ("calibration", "clean", "clean", "calibration/accuracy"),
    ("calibration", "corruption/fog/3", "corruption", "calibration/corruption/fog/3/accuracy"),
    ("agreement", "noise/0.1", "noise", "agreement/noise/0.1/accuracy"),
    ("ood", "ood/blobs", "ood", "ood/blobs/accuracy"),
])
def test_metric_keys(evaluator, key, family, expected):
    assert metric_key(evaluator, key, family, "accuracy") == expected


def test_the_executor_settings_import_without_torch_or_ray():
    code = "import sys, robusteval.engine.executor; print(sorted({'torch', 'ray'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_only_the_engine_store_names_the_engines_files_in_the_run_directory():
    package = Path(__file__).resolve().parents[1] / "robusteval"
    joined = re.compile(r"""/ f?["'](shards|logits|models|transfer\.pt)["']""")
    found = [str(p.relative_to(package)) for p in package.rglob("*.py")
             if p != package / "engine" / "store.py" and joined.search(p.read_text())]
    assert found == []
