"""Recovery, statistics, saving/reloading and building the family of pruned models."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from robusteval.data.arrays import LabeledArrays
from robusteval.errors import RobustEvalError
from robusteval.pruning import (
    PRUNING_METHODS,
    FinetuneSettings,
    PruneSettings,
    build_family,
    fold_masks,
    load_member,
    model_info,
    prune_model,
    save_member,
)
from robusteval.pruning.importance import PruningMethod
from robusteval.pruning.recovery import random_crop_flip, recalibrate_bn

FAST = dict(measure_latency=False, bn_batches=2, synflow_rounds=5)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))


def _data(n: int = 64) -> LabeledArrays:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return LabeledArrays(x, (np.arange(n) % 4).astype(np.int64), ("a", "b", "c", "d"))


def _layer_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


@pytest.mark.parametrize("schedule", ["one_shot", "iterative"])
def test_finetuning_keeps_removed_weights_at_zero(schedule: str) -> None:
    settings = PruneSettings(schedule=schedule, iterations=2, finetune=FinetuneSettings(epochs=1.5, batch_size=16),
                             bn_recalibration=False, **FAST)
    dense, data = _net(), _data()
    tuned = prune_model(dense, "magnitude", 0.8, settings=settings, example_input=torch.rand(1, 3, 8, 8),
                        train_data=data)
    untuned = prune_model(dense, "magnitude", 0.8, settings=PruneSettings(**FAST),
                          example_input=torch.rand(1, 3, 8, 8), train_data=None)
    tuned_w, untuned_w = _layer_weights(tuned.model), _layer_weights(untuned.model)
    for name in ("3", "6"):  # the prunable convs (stem "0" is kept dense)
        if schedule == "one_shot":  # same mask as without fine-tuning, exactly zero where removed
            assert torch.equal(tuned_w[name] == 0, untuned_w[name] == 0)
        assert not torch.equal(tuned_w[name], untuned_w[name])
    assert tuned.info["sparsity"] == pytest.approx(0.8, abs=2 / 1728)
    assert tuned.info["recovery"]["finetune_epochs"] == pytest.approx(1.5 * (2 if schedule == "iterative" else 1))


def test_bn_recalibration_matches_batch_statistics() -> None:
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 5, 3, bias=False), nn.BatchNorm2d(5)
    model = nn.Sequential(conv, bn, nn.ReLU()).eval()
    data = _data(48)
    with torch.no_grad():
        feats = conv(data.images(slice(None)))
    assert recalibrate_bn(model, data, batches=1, batch_size=48)
    torch.testing.assert_close(bn.running_mean, feats.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, feats.var((0, 2, 3), unbiased=True), rtol=1e-5, atol=1e-6)
    assert bn.momentum == 0.1 and not bn.training
    recalibrate_bn(model, data, batches=3, batch_size=16)  # one pass over every row: same mean
    torch.testing.assert_close(bn.running_mean, feats.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)


def test_bn_recalibration_by_default_and_structured_only_mode() -> None:
    structured_only = PruneSettings(**dict(FAST, bn_recalibration="structured"))
    member = prune_model(_net(), "l1_filter", 0.5, settings=structured_only,
                         example_input=torch.rand(1, 3, 8, 8), train_data=_data())
    assert member.info["recovery"]["bn_recalibrated"] and member.info["structured"]
    unstructured = prune_model(_net(), "magnitude", 0.5, settings=structured_only,
                               example_input=torch.rand(1, 3, 8, 8), train_data=_data())
    assert not unstructured.info["recovery"]["bn_recalibrated"]
    default = prune_model(_net(), "magnitude", 0.5, settings=PruneSettings(**dict(FAST, bn_recalibration=True)),
                          example_input=torch.rand(1, 3, 8, 8), train_data=_data())
    assert default.info["recovery"]["bn_recalibrated"] and PruneSettings().bn_recalibration == "structured"


def test_default_recovery_fine_tunes_briefly_and_is_skipped_without_data() -> None:
    settings = PruneSettings()
    assert settings.finetune.epochs == 0.5 and settings.finetune.max_images == 10000
    member = prune_model(_net(), "magnitude", 0.5, settings=PruneSettings(measure_latency=False),
                         example_input=torch.rand(1, 3, 8, 8), train_data=_data())
    n = len(_data())
    assert member.info["recovery"]["finetune_steps"] == -(-int(0.5 * n) // 128)
    skipped = prune_model(_net(), "magnitude", 0.5, settings=PruneSettings(measure_latency=False),
                          example_input=torch.rand(1, 3, 8, 8), train_data=None)
    assert any("fine-tuning" in w and "skipped" in w for w in skipped.info["warnings"])


def test_random_crop_flip_moves_pixels_only() -> None:
    images = torch.rand(32, 3, 8, 8)
    out = random_crop_flip(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    for i in range(32):  # every output is a shifted (and maybe mirrored) window of the zero-padded input
        padded = nn.functional.pad(images[i], (4,) * 4)
        windows = [padded[:, y:y + 8, x:x + 8] for y in range(9) for x in range(9)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)


def test_model_info_counts_macs_in_closed_form() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    with torch.no_grad():
        model[0].weight[:2] = 0
    info = model_info(model, torch.rand(3, 3, 8, 8), measure_latency=False)
    conv, linear = 8 * 8 * 4 * 27, 256 * 10
    assert info["macs"] == conv + linear
    assert info["macs_effective"] == pytest.approx(conv / 2 + linear)
    assert info["params"] == 4 * 27 + 4 + 2560 + 10
    assert info["nonzero_params"] == 2 * 27 + 4 + 2560 + 10
    assert info["layer_sparsity"]["0"] == 0.5
    json.dumps(info)


def test_model_info_measures_latency_and_speedup() -> None:
    dense = _net()
    member = prune_model(dense, "l1_filter", 0.5, settings=PruneSettings(measure_latency=True, latency_repeats=2),
                         example_input=torch.rand(1, 3, 8, 8), train_data=None)
    assert set(member.info["latency_ms"]) == {"batch_1", "batch_128"}
    assert all(v > 0 for v in member.info["speedup"].values())


def test_fold_masks_removes_reparametrisation() -> None:
    layer = nn.Linear(6, 4)
    torch_prune.l1_unstructured(layer, "weight", amount=0.5)
    expected = layer.weight.detach().clone()
    fold_masks(layer)
    assert set(dict(layer.named_parameters())) == {"weight", "bias"}
    assert not layer._forward_pre_hooks and "weight_mask" not in dict(layer.named_buffers())
    assert torch.equal(layer.weight, expected) and int((layer.weight == 0).sum()) == 12


@pytest.mark.parametrize("method", ["magnitude", "l1_filter"])
def test_saved_member_reloads_without_the_architecture(tmp_path: Path, method: str) -> None:
    x = torch.rand(2, 3, 8, 8)
    member = prune_model(_net(), method, 0.5, settings=PruneSettings(**FAST), example_input=x, train_data=None)
    path = save_member(member, tmp_path, example_input=x)
    assert path.name == f"{method}@0.5.pt2" and path.with_suffix(".json").is_file()
    loaded = load_member(path)
    assert (loaded.id, loaded.method, loaded.target_ratio) == (member.id, method, 0.5)
    assert loaded.info["sparsity"] == member.info["sparsity"]
    loaded.model.eval()
    for batch in (torch.rand(1, 3, 8, 8), torch.rand(5, 3, 8, 8)):
        with torch.no_grad():
            torch.testing.assert_close(loaded.model(batch), member.model(batch), rtol=0, atol=1e-6)
    assert not any("weight_orig" in k or "weight_mask" in k for k in loaded.model.state_dict())


def test_build_family_saves_and_reuses_members(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = PruneSettings(methods=("magnitude", "l1_filter"), ratios=(0.5, 0.8), **FAST)
    x = torch.rand(1, 3, 8, 8)
    members = list(build_family(_net(), settings=settings, example_input=x, train_data=None, out_dir=tmp_path,
                                progress=False))
    assert [m.id for m in members] == ["dense", "magnitude@0.5", "magnitude@0.8", "l1_filter@0.5", "l1_filter@0.8"]
    assert members[0].info["macs_reduction"] == 0.0
    assert members[0].info["sparsity"] == 0.0 and members[2].info["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert len(list(tmp_path.glob("*.pt2"))) == 5

    from robusteval.pruning import family

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("member rebuilt instead of reloaded")

    monkeypatch.setattr(family, "prune_model", fail)
    again = list(build_family(_net(), settings=settings, example_input=x, train_data=None, out_dir=tmp_path,
                              progress=False))
    assert [m.info["sparsity"] for m in again] == [m.info["sparsity"] for m in members]
    other_settings = PruneSettings(methods=("magnitude",), ratios=(0.5,), keep_first=False, **FAST)
    with pytest.raises(AssertionError, match="rebuilt"):  # different settings: not reused
        list(build_family(_net(), settings=other_settings, example_input=x, train_data=None, out_dir=tmp_path,
                          progress=False))


def test_a_saved_member_that_cannot_be_reloaded_is_rebuilt_with_a_warning(tmp_path: Path, capsys) -> None:
    """An archive cut short (or saved on a device this machine lacks) is rebuilt, not a crash."""
    settings = PruneSettings(methods=("magnitude",), ratios=(0.5,), **FAST)
    x = torch.rand(1, 3, 8, 8)
    first = list(build_family(_net(), settings=settings, example_input=x, train_data=None, out_dir=tmp_path,
                              progress=False))
    archive = tmp_path / "magnitude@0.5.pt2"
    archive.write_bytes(archive.read_bytes()[:200])
    again = list(build_family(_net(), settings=settings, example_input=x, train_data=None, out_dir=tmp_path,
                              progress=False))
    assert "saved member magnitude@0.5 cannot be reloaded here" in capsys.readouterr().err
    with torch.no_grad():
        torch.testing.assert_close(again[1].model(x), first[1].model(x))
    assert archive.stat().st_size > 200


class _BreaksModel(PruningMethod):
    def prune(self, model: nn.Module, ratio: float, ctx: object) -> None:
        with torch.no_grad():
            model[-1].bias.fill_(float("nan"))


def test_broken_pruned_model_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PRUNING_METHODS._items, "breaks", _BreaksModel())
    with pytest.raises(RobustEvalError, match="breaks at ratio 0.5.*NaN"):
        prune_model(_net(), "breaks", 0.5, settings=PruneSettings(**FAST), example_input=torch.rand(1, 3, 8, 8),
                    train_data=None)


@pytest.mark.parametrize("bad", [dict(schedule="cascade"), dict(bn_recalibration="always"), dict(iterations=0),
                                 dict(ratios=()), dict(methods="magnitude")])
def test_bad_settings_are_one_line_errors(bad: dict) -> None:
    with pytest.raises(RobustEvalError) as err:
        PruneSettings(**bad)
    assert "\n" not in str(err.value)
    with pytest.raises(RobustEvalError, match="epochs"):
        FinetuneSettings(epochs=-1)
