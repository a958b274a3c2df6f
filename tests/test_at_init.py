"""Pruning at initialisation (``pruning.at_init``) and the SynFlow paper's layer-collapse result."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from robusteval.data.arrays import LabeledArrays
from robusteval.errors import RobustEvalError
from robusteval.pruning import FinetuneSettings, PruneSettings, prune_model
from robusteval.pruning.at_init import reinitialised
from robusteval.report.sections import _recovery

NO_TRAINING = dict(measure_latency=False, finetune=FinetuneSettings(epochs=0.0), bn_recalibration=False)


def _vgg(widths: tuple[int, ...] = (16, 32, 64, 64, 128, 128)) -> nn.Sequential:
    """A small VGG: conv-BN-ReLU pairs with max-pooling, widening towards the classifier."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    channels = 3
    for i, width in enumerate(widths):
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        if i % 2 == 1:
            layers.append(nn.MaxPool2d(2))
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10))


def _data(n: int = 100, size: int = 16) -> LabeledArrays:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return LabeledArrays(x, (np.arange(n) % 10).astype(np.int64), tuple(str(c) for c in range(10)))


def test_at_init_scores_the_reinitialised_architecture() -> None:
    dense, x = _vgg((8, 8, 16, 16)), torch.rand(2, 3, 16, 16)
    with torch.no_grad():  # "trained" weights, unlike any initialisation
        for p in dense.parameters():
            p.add_(0.5 * torch.randn_like(p))
    member = prune_model(dense, "magnitude", 0.8, settings=PruneSettings(at_init=True, **NO_TRAINING),
                         example_input=x, train_data=None)
    fresh = reinitialised(copy.deepcopy(dense), 0)
    convs = [n for n, m in fresh.named_modules() if isinstance(m, nn.Conv2d)][1:]
    got, init, trained = (dict(m.named_modules()) for m in (member.model, fresh, dense))
    scores = torch.cat([init[n].weight.detach().abs().flatten() for n in convs])
    threshold = scores.sort().values[round(0.8 * scores.numel()) - 1]
    for name in convs:
        w0 = init[name].weight.detach()
        assert torch.equal(got[name].weight, torch.where(w0.abs() > threshold, w0, torch.zeros_like(w0))), name
        assert not torch.equal(w0, trained[name].weight)  # not the dense model's weights
    assert member.info["recovery"]["at_init"] is True
    on_trained = prune_model(dense, "magnitude", 0.8, settings=PruneSettings(**NO_TRAINING), example_input=x,
                             train_data=None)
    assert "at_init" not in on_trained.info["recovery"]


def test_at_init_member_is_trained_with_the_recovery_budget() -> None:
    dense, x = _vgg((8, 8, 16, 16)), torch.rand(2, 3, 16, 16)
    settings = PruneSettings(at_init=True, measure_latency=False, bn_recalibration=False,
                             finetune=FinetuneSettings(epochs=0.5, batch_size=10))
    member = prune_model(dense, "synflow", 0.9, settings=settings, example_input=x, train_data=_data(40))
    assert member.info["recovery"]["finetune_steps"] == 2 and member.info["recovery"]["at_init"]
    assert member.info["sparsity"] == pytest.approx(0.9, abs=1e-3)  # masks held through training


def test_synflow_avoids_the_layer_collapse_of_snip_at_initialisation() -> None:
    """Tanaka et al. 2020 (Figure 1/3): at compression 10^3 (99.9%) at initialisation, SNIP removes a whole
    layer (here the widest conv, next to the classifier), SynFlow's iterative conservation keeps every layer."""
    net, x, data = _vgg(), torch.rand(2, 3, 16, 16), _data()
    settings = PruneSettings(at_init=True, synflow_rounds=100, data_samples_per_class=10, **NO_TRAINING)
    snip = prune_model(net, "snip", 0.999, settings=settings, example_input=x, train_data=data)
    synflow = prune_model(net, "synflow", 0.999, settings=settings, example_input=x, train_data=data)
    assert snip.info["collapsed_layers"] == ["17"]
    assert any("layer collapse" in w for w in snip.info["warnings"])
    assert synflow.info["collapsed_layers"] == []
    assert snip.info["sparsity"] == pytest.approx(0.999, abs=1e-4)
    assert synflow.info["sparsity"] == pytest.approx(0.999, abs=1e-4)


@pytest.mark.parametrize(("bad", "message"), [
    (dict(at_init=True, scratch_baseline=True), "scratch_baseline needs at_init: false"),
    (dict(at_init="yes"), "at_init must be true or false"),
    (dict(fisher_prune_every=0), "fisher_prune_every"),
    (dict(fisher_flops_penalty=-1.0), "fisher_flops_penalty"),
])
def test_bad_settings_are_one_line_errors(bad: dict, message: str) -> None:
    with pytest.raises(RobustEvalError, match=message) as err:
        PruneSettings(**bad)
    assert "\n" not in str(err.value)


def test_report_says_which_members_were_pruned_at_initialisation() -> None:
    html = _recovery([{"method": "synflow", "recovery": {"at_init": True, "finetune_epochs": 20}},
                      {"method": "fisher", "recovery": {"pruning_steps": 120, "finetune_epochs": 0.5}},
                      {"method": "magnitude", "recovery": {"finetune_epochs": 0.5}}])
    assert "pruned at initialisation" in html.split("<b>fisher</b>")[0]
    assert "120 fine-tuning steps interleaved with pruning" in html
    assert html.count("pruned at initialisation") == 1
