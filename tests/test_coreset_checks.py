"""What of Tukan et al. (2022) can be checked without their training runs: on a real layer, the sensitivity
bounds against their definition, the Löwner-ellipsoid sandwich, and that the method uses no data."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from robusteval.data.arrays import LabeledArrays
from robusteval.pruning import FinetuneSettings, PruneSettings, prune_model
from robusteval.pruning.coreset import (
    MVEE_TOL,
    _span_coordinates,
    caratheodory_scale,
    channel_points,
    coreset_importance,
    mvee_symmetric,
    point_sensitivities,
)
from robusteval.pruning.importance import PruneContext
from robusteval.pruning.structured import channel_groups

SETTINGS = PruneSettings(measure_latency=False, finetune=FinetuneSettings(epochs=0.0), bn_recalibration=False)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 10, 3, padding=1, bias=False), nn.BatchNorm2d(10), nn.ReLU(),
        nn.Conv2d(10, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))
    with torch.no_grad():  # trained-looking BatchNorm affine parameters
        for bn in (net[1], net[4]):
            bn.weight.uniform_(0.2, 2.0)
            bn.bias.uniform_(-0.5, 0.5)
    return net


def _layer_points() -> np.ndarray:
    net, x = _net(), torch.rand(1, 3, 8, 8)
    _, groups = channel_groups(net, x, keep_first=True)
    group = next(g for g in groups if g.name == "3")  # conv 8→10, read by the 3x3 conv "6" (90 points in R^6)
    consumer, idxs, roots = group.consumers[0]
    return channel_points(group, consumer, idxs, roots)[0]


def test_sensitivity_bounds_of_a_layer_dominate_the_definition() -> None:
    """s(p_i) = sup_q |p_iᵀq| / Σ_j |p_jᵀq|, searched over random directions and each point's own."""
    points = _layer_points()
    rng = np.random.default_rng(0)
    queries = np.concatenate([rng.standard_normal((50000, points.shape[1])), points])
    ratios = np.abs(points @ queries.T)
    empirical = (ratios / ratios.sum(0)).max(1)
    bound = point_sensitivities(points, max_dim=64)
    assert (np.minimum(bound, 1.0) >= empirical - 1e-12).all()
    assert (bound < 1.0).any()  # informative, not only the trivial bound


def test_lowner_ellipsoid_sandwiches_the_layer_points() -> None:
    """E ⊇ conv(±P) ⊇ E/√r (John's theorem, up to the solver tolerance), checked point by point and on
    every semi-axis vertex with a linear program."""
    own = _span_coordinates(_layer_points(), 64)
    r = own.shape[1]
    g = mvee_symmetric(own)
    assert np.einsum("ij,jk,ik->i", own, g, own).max() <= 1.0 + 1e-9
    evals, evecs = np.linalg.eigh(g)
    for k in range(r):
        vertex = evecs[:, k] / np.sqrt(evals[k] * r * (1.0 + MVEE_TOL))
        alpha, support = caratheodory_scale(own, vertex)
        assert alpha >= 1.0 - 1e-6 and 1 <= len(support) <= r + 1  # inside the hull, a Carathéodory set


def test_coreset_importance_uses_no_data() -> None:
    """Scores depend on weights only: not on a data batch, not on BatchNorm running statistics, and a
    model prunes identically with and without training data."""
    net, x = _net(), torch.rand(1, 3, 8, 8)
    _, groups = channel_groups(net, x, keep_first=True)
    ctx = PruneContext(example_input=x, settings=SETTINGS, layers={})
    before = [coreset_importance(g, ctx) for g in groups]
    with torch.no_grad():
        for bn in (net[1], net[4]):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.1, 5.0)
    ctx.batch = (torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))
    for want, group in zip(before, groups):
        assert torch.equal(coreset_importance(group, ctx), want)
    rng = np.random.default_rng(0)
    data = LabeledArrays(rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8), np.arange(20) % 5,
                         tuple("abcde"))
    free = prune_model(net, "coreset_filter", 0.5, settings=SETTINGS, example_input=x, train_data=None)
    fed = prune_model(net, "coreset_filter", 0.5, settings=SETTINGS, example_input=x, train_data=data)
    assert all(torch.equal(a, b) for a, b in zip(free.model.state_dict().values(), fed.model.state_dict().values()))
