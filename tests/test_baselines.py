"""Fair baselines: the control dense+ft (dense model, same recovery budget), drops against it, and
the Crowley et al. (2018) from-scratch baseline of structured members."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robusteval.analysis import CONTROL_ID, analyse, baseline_id, verdict_lines
from robusteval.api import audit
from robusteval.config import AnalysisSettings, AuditConfig, DataSettings, EvaluateSettings
from robusteval.card import as_cards
from robusteval.data.arrays import LabeledArrays
from robusteval.errors import RobustEvalError
from robusteval.pruning import FinetuneSettings, PruneSettings, build_family

FAST = dict(measure_latency=False, bn_batches=2)


def _net(classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes)).eval()


def _data(n: int = 64) -> LabeledArrays:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return LabeledArrays(x, (np.arange(n) % 4).astype(np.int64), ("a", "b", "c", "d"))


def _family(settings: PruneSettings, train: LabeledArrays | None, out: Path | None = None) -> list:
    return list(build_family(_net(), settings=settings, example_input=torch.rand(1, 3, 8, 8), train_data=train,
                             out_dir=out, progress=False))


def test_control_member_is_present_only_when_recovery_fine_tunes() -> None:
    tune = FinetuneSettings(epochs=1, batch_size=16)
    settings = PruneSettings(methods=("magnitude",), ratios=(0.5,), finetune=tune, **FAST)
    members = _family(settings, _data())
    assert [m.id for m in members] == ["dense", CONTROL_ID, "magnitude@0.5"]
    control, pruned = members[1], members[2]
    assert control.info["recovery"]["finetune_steps"] == pruned.info["recovery"]["finetune_steps"] == 4
    assert control.info["sparsity"] == 0.0
    dense_w, control_w = members[0].model[0].weight, control.model[0].weight
    assert not torch.equal(dense_w, control_w)  # it really trained
    no_tune = PruneSettings(methods=("magnitude",), ratios=(0.5,), finetune=FinetuneSettings(epochs=0), **FAST)
    assert [m.id for m in _family(no_tune, _data())] == ["dense", "magnitude@0.5"]
    assert [m.id for m in _family(settings, None)] == ["dense", "magnitude@0.5"]


def test_scratch_baseline_retrains_the_pruned_architecture(tmp_path: Path) -> None:
    tune = FinetuneSettings(epochs=1, batch_size=16)
    off = PruneSettings(methods=("magnitude", "l1_filter"), ratios=(0.5,), finetune=tune, **FAST)
    assert "l1_filter+scratch@0.5" not in [m.id for m in _family(off, _data(), tmp_path)]
    on = PruneSettings(methods=("magnitude", "l1_filter"), ratios=(0.5,), finetune=tune, scratch_baseline=True, **FAST)
    members = {m.id: m for m in _family(on, _data(), tmp_path)}  # pruned members reloaded from disk
    assert list(members) == ["dense", CONTROL_ID, "magnitude@0.5", "l1_filter@0.5", "l1_filter+scratch@0.5"]
    scratch, pruned = members["l1_filter+scratch@0.5"], members["l1_filter@0.5"]
    assert scratch.method == "l1_filter+scratch" and scratch.info["structured"] is True
    assert scratch.info["params"] == pruned.info["params"] < members["dense"].info["params"]
    assert scratch.info["recovery"]["finetune_steps"] == pruned.info["recovery"]["finetune_steps"]
    x = torch.rand(4, 3, 8, 8)
    assert not torch.allclose(scratch.model(x), pruned.model(x))  # re-initialised, not the pruned weights


def test_a_saved_control_is_reloaded_not_trained_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control is saved under its id like every member, so a resumed run (and the Ray driver, which loads
    what its workers saved) reloads it instead of fine-tuning it anew."""
    settings = PruneSettings(methods=("magnitude",), ratios=(0.5,), finetune=FinetuneSettings(epochs=1, batch_size=16),
                             **FAST)
    first = _family(settings, _data(), tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.pt2")) == ["dense+ft.pt2", "dense.pt2", "magnitude@0.5.pt2"]
    from robusteval.pruning import family

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the control was fine-tuned again instead of reloaded")

    monkeypatch.setattr(family, "finetune", fail)
    again = _family(settings, _data(), tmp_path)
    assert [m.id for m in again] == ["dense", CONTROL_ID, "magnitude@0.5"]
    assert again[1].card.recovery == first[1].card.recovery
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(again[1].model(x), first[1].model(x), rtol=0, atol=1e-6)


def _summary(baseline: str | None) -> dict:
    models = [("dense", "dense", 0.0, 0.80), (CONTROL_ID, CONTROL_ID, 0.0, 0.85), ("m@0.5", "m", 0.5, 0.84)]
    summary = {"dense": "dense", "models": [{"id": i, "method": m, "target_ratio": r, "metrics": {"clean/accuracy": a}}
                                            for i, m, r, a in models]}
    return summary | ({"baseline": baseline} if baseline else {})


def test_drops_are_measured_against_the_chosen_baseline() -> None:
    control = analyse(_summary(CONTROL_ID), tolerance=0.005)
    assert control.methods == ["m"] and control.dense == "dense"
    assert control.curves["clean/accuracy"]["m"].points[0].drop == pytest.approx(0.01)
    assert control.curves["clean/accuracy"]["m"].prune_potential == 0.0
    assert "against dense+ft" in control.baseline_note() and "against dense+ft" in control.to_json()["baseline_note"]
    plain = analyse(_summary(None), tolerance=0.005)
    assert plain.methods == ["m"]  # the control is a baseline, never a pruned method
    assert plain.curves["clean/accuracy"]["m"].points[0].drop == pytest.approx(-0.04)
    assert "untouched dense model dense (the control dense+ft" in plain.baseline_note()
    assert verdict_lines(plain)[0].startswith("m stays within tolerance")


def test_baseline_choice() -> None:
    ids = as_cards({"id": i} for i in ["dense", CONTROL_ID, "m@0.5"])
    assert baseline_id("auto", ids) == CONTROL_ID
    assert baseline_id("auto", as_cards({"id": i} for i in ["dense", "m@0.5"])) == "dense"
    assert baseline_id("dense", ids) == "dense"
    with pytest.raises(RobustEvalError, match="needs recovery fine-tuning"):
        baseline_id(CONTROL_ID, as_cards([{"id": "dense"}]))
    with pytest.raises(RobustEvalError, match="baseline must be one of"):
        AnalysisSettings(baseline="pruned")


def test_audit_reports_drops_against_the_control(tmp_path: Path) -> None:
    """End to end on the bundled sample: the control is evaluated like a member and is the baseline."""
    pruning = PruneSettings(methods=("magnitude",), ratios=(0.5,), finetune=FinetuneSettings(epochs=1, max_images=64),
                            **FAST)
    config = AuditConfig(data=DataSettings(source="bundled", subset=64, batch_size=64), pruning=pruning,
                         evaluate=EvaluateSettings(calibration=None))
    from robusteval.models.archs import build_arch

    run = audit(build_arch("cifar_resnet20", 10).eval(), config=config, out=tmp_path / "run", progress=False)
    assert run.summary["baseline"] == CONTROL_ID
    ids = [m["id"] for m in run.summary["models"]]
    assert ids == ["dense", CONTROL_ID, "magnitude@0.5"]
    analysis = analyse(run.summary, tolerance=0.005)
    point = analysis.curves["clean/accuracy"]["magnitude"].points[0]
    assert point.drop == pytest.approx(run.metrics(CONTROL_ID)["clean/accuracy"]
                                       - run.metrics("magnitude@0.5")["clean/accuracy"])
