"""Pruning methods against independent references: exact counts, thresholds, conservation, geometry."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robusteval.data.arrays import LabeledArrays
from robusteval.errors import RobustEvalError
from robusteval.models.archs import build_arch
from robusteval.pruning import PruneSettings, prune_model
from robusteval.pruning.coreset import point_sensitivities
from robusteval.pruning.synflow import synflow_scores

FAST = dict(measure_latency=False, bn_batches=2, synflow_rounds=10, data_samples_per_class=2)


def _data(n: int = 40, size: int = 32, classes: int = 10) -> LabeledArrays:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return LabeledArrays(x, (np.arange(n) % classes).astype(np.int64), tuple(str(c) for c in range(classes)))


@pytest.fixture(scope="module")
def resnet20() -> nn.Module:
    torch.manual_seed(0)
    return build_arch("cifar_resnet20", 10)


def _prunable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Conv/Linear weights minus the stem conv and the classifier (the default kept layers)."""
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    modules = dict(model.named_modules())
    return {n: modules[n].weight.detach() for n in names[1:-1]}


@pytest.mark.parametrize("method", ["random", "magnitude", "layer_magnitude", "snip", "grasp", "synflow"])
def test_unstructured_sparsity_equals_target(resnet20: nn.Module, method: str) -> None:
    settings = PruneSettings(methods=(method,), ratios=(0.7,), **FAST)
    member = prune_model(resnet20, method, 0.7, settings=settings, example_input=torch.rand(2, 3, 32, 32),
                         train_data=_data())
    weights = _prunable_weights(member.model)
    total = sum(w.numel() for w in weights.values())
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    assert abs(zeros - 0.7 * total) <= len(weights)
    assert member.info["sparsity"] == pytest.approx(zeros / total)
    assert member.id == f"{method}@0.7" and not member.info["structured"]
    assert not any("weight_orig" in k or "weight_mask" in k for k in member.model.state_dict())


def test_dense_model_is_not_mutated(resnet20: nn.Module) -> None:
    before = {k: v.clone() for k, v in resnet20.state_dict().items()}
    prune_model(resnet20, "l1_filter", 0.5, settings=PruneSettings(**FAST),
                example_input=torch.rand(2, 3, 32, 32), train_data=_data())
    assert all(torch.equal(before[k], v) for k, v in resnet20.state_dict().items())


def test_magnitude_equals_independent_global_threshold(resnet20: nn.Module) -> None:
    member = prune_model(resnet20, "magnitude", 0.9, settings=PruneSettings(**FAST),
                         example_input=torch.rand(1, 3, 32, 32), train_data=None)
    dense = _prunable_weights(resnet20)
    flat = torch.cat([w.abs().flatten() for w in dense.values()]).sort().values
    threshold = flat[round(0.9 * flat.numel()) - 1]
    for name, w in _prunable_weights(member.model).items():
        assert torch.equal(w != 0, dense[name].abs() > threshold), name


def _bias_free_relu_net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(6, 5, 3, bias=False), nn.ReLU(),
        nn.Flatten(), nn.Linear(5 * 4 * 4, 7, bias=False), nn.ReLU(), nn.Linear(7, 4, bias=False))


def test_synflow_conserves_flow_in_every_layer() -> None:
    """Tanaka et al. 2020, Theorem 2: every layer of a bias-free ReLU net carries the same total score R."""
    net = _bias_free_relu_net()
    x = torch.rand(2, 3, 6, 6)
    names = [n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    scores = synflow_scores(net, names, x)
    abs_net = _bias_free_relu_net().double()
    with torch.no_grad():
        for p in abs_net.parameters():
            p.abs_()
        flow = float(abs_net(torch.ones(1, 3, 6, 6, dtype=torch.float64)).sum())
    for name in names:
        assert float(scores[name].sum()) == pytest.approx(flow, rel=1e-9), name


def _deep_plain_net() -> nn.Module:
    """VGG-like, bias-free; one wide middle layer has tiny weights, so global |w| wipes it out."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU()]
    widths = [8, 8, 32, 32, 8, 8, 8]
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        conv = nn.Conv2d(a, b, 3, padding=1, bias=False)
        if i == 2:
            with torch.no_grad():
                conv.weight.mul_(0.05)
        layers += [conv, nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10, bias=False))


def test_synflow_avoids_the_layer_collapse_of_magnitude() -> None:
    net, x = _deep_plain_net(), torch.rand(2, 3, 6, 6)
    settings = PruneSettings(**dict(FAST, synflow_rounds=100))
    magnitude = prune_model(net, "magnitude", 0.99, settings=settings, example_input=x, train_data=None)
    synflow = prune_model(net, "synflow", 0.99, settings=settings, example_input=x, train_data=None)
    assert "6" in magnitude.info["collapsed_layers"]
    assert any("layer collapse" in w for w in magnitude.info["warnings"])
    assert synflow.info["collapsed_layers"] == []
    assert synflow.info["sparsity"] == pytest.approx(0.99, abs=1e-3)


@pytest.mark.parametrize("arch", ["cifar_resnet20", "torchvision:resnet18"])
def test_l1_filter_removes_lowest_l1_filters_and_macs(arch: str) -> None:
    torch.manual_seed(0)
    dense, x = build_arch(arch, 10), torch.rand(2, 3, 32, 32)
    member = prune_model(dense, "l1_filter", 0.5, settings=PruneSettings(**FAST), example_input=x, train_data=None)
    block, pruned_block = dense.layer2[0], member.model.layer2[0]
    l1 = block.conv1.weight.detach().abs().sum((1, 2, 3))
    keep = l1.argsort(descending=True)[: block.conv1.out_channels // 2].sort().values
    assert torch.equal(pruned_block.conv1.weight, block.conv1.weight[keep])
    assert torch.equal(pruned_block.conv2.weight, block.conv2.weight[:, keep])
    assert member.info["macs"] < 0.6 * build_macs(dense, x)
    assert member.info["structured"] and member.info["params"] < sum(p.numel() for p in dense.parameters())
    assert member.model(x).shape == dense.eval()(x).shape
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in member.model.modules())


def build_macs(model: nn.Module, x: torch.Tensor) -> int:
    from robusteval.pruning.stats import macs

    return macs(model, x)[0]


def test_structured_removal_is_checked_against_zeroed_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    import copy

    from robusteval.pruning import structured

    monkeypatch.setattr(structured, "_zeroed_copy", lambda model, *a: copy.deepcopy(model))
    with pytest.raises(RobustEvalError, match="cannot remove channels"):
        prune_model(_tiny_bn_cnn(), "l1_filter", 0.5, settings=PruneSettings(**FAST),
                    example_input=torch.rand(2, 3, 8, 8), train_data=None)


def _tiny_bn_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12), nn.ReLU(),
        nn.Conv2d(12, 12, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5))


def test_coreset_filter_shrinks_the_model() -> None:
    dense, x = _tiny_bn_cnn(), torch.rand(2, 3, 8, 8)
    member = prune_model(dense, "coreset_filter", 0.5, settings=PruneSettings(**FAST), example_input=x,
                         train_data=None)
    convs = [m for m in member.model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 6, 6]  # stem kept, two groups halved
    assert member.info["macs_reduction"] > 0.3
    assert member.model(x).shape == (2, 5)


def test_coreset_sensitivities_hand_computed() -> None:
    """±{(2,0), (0,1), (1,½)}: Löwner ellipsoid x²/4 + y² ≤ 1, r = 2. The axis vertices (2,0)/√2 and
    (0,1)/√2 reach the hull at α = √2 through the Carathéodory sets {p1}, {p2}; with ‖p1‖_G = ‖p2‖_G = 1
    and ‖p3‖_G = 1/√2 the bounds r‖p‖_G/α are √2, √2 and 1."""
    bound = point_sensitivities(np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.5]]))
    np.testing.assert_allclose(bound, [np.sqrt(2), np.sqrt(2), 1.0], rtol=0.02)


def test_coreset_bounds_dominate_brute_force_sensitivity() -> None:
    rng = np.random.default_rng(3)
    points = rng.standard_normal((60, 4)) * rng.uniform(0.05, 2.0, (60, 1))
    queries = rng.standard_normal((20000, 4))
    ratios = np.abs(points @ queries.T)
    empirical = (ratios / ratios.sum(0)).max(1)
    bound = point_sensitivities(points)
    assert (np.minimum(bound, 1.0) >= empirical - 1e-12).all()
    assert np.corrcoef(bound, empirical)[0, 1] > 0.5


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5, float("nan"), "0.5"])
def test_bad_ratio_is_one_line_error(ratio: object) -> None:
    with pytest.raises(RobustEvalError, match=r"\[0, 1\)") as err:
        prune_model(_tiny_bn_cnn(), "magnitude", ratio, settings=PruneSettings(**FAST),  # type: ignore[arg-type]
                    example_input=torch.rand(1, 3, 8, 8), train_data=None)
    assert "\n" not in str(err.value)


def test_unknown_method_suggests_the_closest_name() -> None:
    with pytest.raises(RobustEvalError, match="did you mean 'magnitude'") as err:
        PruneSettings(methods=("magnitud",))
    assert "\n" not in str(err.value)
    with pytest.raises(RobustEvalError, match="did you mean 'synflow'"):
        prune_model(_tiny_bn_cnn(), "synflo", 0.5, settings=PruneSettings(**FAST),
                    example_input=torch.rand(1, 3, 8, 8), train_data=None)


def test_model_without_prunable_layer_is_one_line_error() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    with pytest.raises(RobustEvalError, match="no prunable layer") as err:
        prune_model(model, "magnitude", 0.5, settings=PruneSettings(**FAST),
                    example_input=torch.rand(1, 3, 8, 8), train_data=None)
    assert "\n" not in str(err.value)


def test_data_methods_without_data_fail_clearly() -> None:
    with pytest.raises(RobustEvalError, match="needs training data"):
        prune_model(_tiny_bn_cnn(), "snip", 0.5, settings=PruneSettings(**FAST),
                    example_input=torch.rand(1, 3, 8, 8), train_data=None)
