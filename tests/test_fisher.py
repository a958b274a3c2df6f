"""Fisher pruning (Theis et al. 2018 as Crowley et al. 2018 use it): the signal against a direct
computation, the removal schedule, the FLOP penalty's cost term, the equal-budget scratch baseline."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robusteval.data.arrays import LabeledArrays
from robusteval.errors import RobustEvalError
from robusteval.pruning import FinetuneSettings, PruneSettings, prune_model
from robusteval.pruning.family import scratch_member
from robusteval.pruning.fisher import FisherProbe, channel_macs
from robusteval.pruning.stats import macs
from robusteval.pruning.structured import channel_groups, remove_channels

NO_FT = FinetuneSettings(epochs=0.0, batch_size=8, augment=False)
FAST = dict(measure_latency=False, bn_batches=2, finetune=NO_FT, bn_recalibration=False)


def _data(n: int = 32, size: int = 8, classes: int = 5) -> LabeledArrays:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return LabeledArrays(x, (np.arange(n) % classes).astype(np.int64), tuple(str(c) for c in range(classes)))


def _conv_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 7, 3, padding=1, bias=False), nn.BatchNorm2d(7), nn.ReLU(),
        nn.Conv2d(7, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))


def _direct_fisher(net: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Δ_k = 1/(2N) Σ_n (∂L/∂m_nk)² with a per-example multiplier m_nk = 1 on each feature map, written
    out with functional layers: ∂L/∂m_nk = Σ_spatial a_nk ∂L/∂a_nk, with no hook involved."""
    c1, b1, _, c2, b2, _, c3, _, _, fc = net
    m2 = torch.ones(x.shape[0], 7, requires_grad=True)
    m3 = torch.ones(x.shape[0], 4, requires_grad=True)
    bn = lambda h, b: F.batch_norm(h, None, None, b.weight, b.bias, training=True, eps=b.eps)  # noqa: E731
    h = F.relu(bn(F.conv2d(x, c1.weight, padding=1), b1))
    h = F.relu(bn(F.conv2d(h, c2.weight, padding=1), b2)) * m2[:, :, None, None]
    h = F.relu(F.conv2d(h, c3.weight, c3.bias, stride=2, padding=1)) * m3[:, :, None, None]
    loss = F.cross_entropy(F.linear(h.flatten(1), fc.weight, fc.bias), y)
    g2, g3 = torch.autograd.grad(loss, [m2, m3])
    return {"3": 0.5 * g2.double().pow(2).mean(0), "6": 0.5 * g3.double().pow(2).mean(0)}


def test_fisher_signal_equals_direct_computation() -> None:
    net, x = _conv_net(), torch.rand(6, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    want = _direct_fisher(net, x, y)
    _, groups = channel_groups(net, x, keep_first=True)
    assert [g.name for g in groups] == ["3", "6"]  # the conv read by conv "6", the conv read (flattened) by "9"
    probe = FisherProbe(groups)
    try:
        net.train()
        for _ in range(2):  # accumulated over steps, as the reference code's running_fisher
            F.cross_entropy(net(x), y).backward()
            probe.accumulate()
    finally:
        probe.close()
    for name in want:
        torch.testing.assert_close(probe.fisher[name], 2 * want[name], rtol=1e-4, atol=1e-12)
    assert all(float(want[name].max()) > 0 for name in want)


def test_masked_channel_reads_as_zero_and_is_never_chosen_again() -> None:
    net, x = _conv_net(), torch.rand(4, 3, 8, 8)
    _, groups = channel_groups(net, x, keep_first=True)
    probe = FisherProbe(groups)
    probe.fisher["3"][:] = torch.arange(7, dtype=torch.float64) + 1.0
    probe.fisher["6"][:] = 100.0
    assert probe.remove_weakest(1, {}) == ("3", 0)
    seen = []
    net[6].register_forward_pre_hook(lambda _m, i: seen.append(i[0].detach()))  # the reader, after the mask
    net.eval()(x)
    assert float(seen[0][:, 0].abs().max()) == 0 and float(seen[0][:, 1:].abs().max()) > 0
    probe.fisher["6"][:] = 100.0  # signals were reset; channel 0 is off, so channel 1 is next
    assert probe.remove_weakest(1, {}) == ("3", 1) and probe.plan() == {"3": [0, 1]}
    probe.close()


def test_fisher_reaches_the_target_ratio_and_reduces_macs() -> None:
    dense, x = _conv_net(), torch.rand(2, 3, 8, 8)
    settings = PruneSettings(methods=("fisher",), ratios=(0.5,), fisher_prune_every=2, **FAST)
    member = prune_model(dense, "fisher", 0.5, settings=settings, example_input=x, train_data=_data())
    convs = [m for m in member.model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].out_channels == 6 and convs[1].out_channels + convs[2].out_channels == 11 - round(0.5 * 11)
    assert member.info["macs"] < macs(dense, x)[0]
    assert member.info["recovery"]["pruning_steps"] == 2 * round(0.5 * 11)
    assert member.info["structured"] and member.id == "fisher@0.5"
    assert member.model(x).shape == (2, 5)


def test_fisher_on_a_resnet_prunes_inside_blocks_only() -> None:
    from robusteval.models.archs import build_arch

    torch.manual_seed(0)
    dense, x = build_arch("cifar_resnet20", 10), torch.rand(2, 3, 32, 32)
    settings = PruneSettings(methods=("fisher",), ratios=(0.3,), fisher_prune_every=1, **FAST)
    member = prune_model(dense, "fisher", 0.3, settings=settings, example_input=x, train_data=_data(16, 32, 10))
    inner = [b.conv1.out_channels for stage in (member.model.layer1, member.model.layer2, member.model.layer3)
             for b in stage]
    assert sum(inner) == 336 - round(0.3 * 336) and min(inner) >= 1
    assert [b.conv2.out_channels for b in member.model.layer3] == [64, 64, 64]  # coupled residual channels kept
    assert member.info["macs_reduction"] > 0.1


def test_channel_macs_equal_the_measured_saving() -> None:
    net, x = _conv_net(), torch.rand(1, 3, 8, 8)
    graph, groups = channel_groups(net, x, keep_first=True)
    saved = channel_macs(net, groups, x)
    before = macs(net, x)[0]
    for group in groups:
        model = copy.deepcopy(net)
        graph_m, groups_m = channel_groups(model, x, keep_first=True)
        remove_channels(model, graph_m, groups_m, {group.name: [0]}, x)
        assert saved[group.name] == pytest.approx(before - macs(model, x)[0])


def test_flops_penalty_prefers_the_costlier_channels() -> None:
    net, x = _conv_net(), torch.rand(2, 3, 8, 8)
    _, groups = channel_groups(net, x, keep_first=True)
    saved = channel_macs(net, groups, x)
    costly = max(saved, key=saved.get)
    probe = FisherProbe(groups)
    probe.fisher["3"][:], probe.fisher["6"][:] = 1.0, 1.0
    probe.fisher[costly][:] = 2.0  # costlier channels are more important by the signal alone
    assert probe.remove_weakest(1, {})[0] != costly
    probe.fisher["3"][:], probe.fisher["6"][:] = 1.0, 1.0
    probe.fisher[costly][:] = 2.0
    total = macs(net, x)[0]
    assert probe.remove_weakest(1, {k: 1e3 * v / total for k, v in saved.items()})[0] == costly
    probe.close()


def test_scratch_baseline_gets_the_same_training_steps() -> None:
    dense, x = _conv_net(), torch.rand(2, 3, 8, 8)
    settings = PruneSettings(methods=("fisher",), ratios=(0.5,), fisher_prune_every=2, scratch_baseline=True,
                             **dict(FAST, finetune=FinetuneSettings(epochs=0.25, batch_size=8, augment=False)))
    data = _data()
    pruned = prune_model(dense, "fisher", 0.5, settings=settings, example_input=x, train_data=data)
    scratch = scratch_member(pruned, dense, settings=settings, example_input=x, train_data=data)
    rec = pruned.info["recovery"]
    assert scratch.info["recovery"]["finetune_steps"] == rec["finetune_steps"] + rec["pruning_steps"] == 1 + 12


def test_fisher_without_training_data_is_one_line_error() -> None:
    with pytest.raises(RobustEvalError, match="needs training data") as err:
        prune_model(_conv_net(), "fisher", 0.5, settings=PruneSettings(**FAST), example_input=torch.rand(1, 3, 8, 8),
                    train_data=None)
    assert "\n" not in str(err.value)
