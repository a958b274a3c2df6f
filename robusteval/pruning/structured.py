"""Real removal of output channels with torch-pruning's dependency graph, and the L1 filter norm.

Only *uncoupled* channels are removed: the output channels of a Conv2d/Linear whose dependency
group contains no other producing layer, i.e. not tied to other layers by a residual addition.
In ResNets these are the channels inside each block (outputs of the block's first conv), which
is also what Li et al. (2017) prune in CIFAR ResNets. Coupled groups are left alone; torch-pruning
mis-traces the option-A zero-padding shortcut of CIFAR ResNets, but only inside coupled groups.
As a safety net every removal is checked against the same model with those channels zeroed.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from robusteval.errors import RobustEvalError
from robusteval.pruning.importance import ChannelImportance, PruneContext, PruningMethod
from robusteval.pruning.masks import execution_order
from robusteval.pruning.registry import PRUNING_METHODS

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass
class ChannelGroup:
    """Output channels of ``producer`` and every layer that reads them."""

    name: str
    producer: nn.Module
    bn: nn.Module | None
    consumers: list[tuple[nn.Module, list[int], list[int]]]
    """(layer, its input indices, the producer channel each index comes from)."""

    @property
    def channels(self) -> int:
        return int(self.producer.weight.shape[0])


def _out_fn(module: nn.Module):  # type: ignore[no-untyped-def]
    return tp.prune_conv_out_channels if isinstance(module, nn.Conv2d) else tp.prune_linear_out_channels


def _plain_layer(module: object) -> bool:
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


def _supported(module: object) -> bool:
    """Plain conv/linear, BatchNorm, or a parameter-free op (activation, pooling, flatten, add)."""
    if _plain_layer(module) or isinstance(module, _BN):
        return True
    return isinstance(module, nn.Module) and not any(True for _ in module.parameters(recurse=False))


def channel_groups(
    model: nn.Module, example_input: torch.Tensor, *, keep_first: bool
) -> tuple[tp.DependencyGraph, list[ChannelGroup]]:
    """The dependency graph of ``model`` and its uncoupled, removable channel groups."""
    order = execution_order(model, example_input)
    modules = dict(model.named_modules())
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(model, example_input[:1], verbose=False)
    groups = []
    candidates = order[1 if keep_first else 0: -1]  # the classifier's outputs are the model's outputs
    for name in candidates:
        producer = modules[name]
        if not _plain_layer(producer) or producer.weight.shape[0] < 2:
            continue
        group = graph.get_pruning_group(producer, _out_fn(producer), list(range(producer.weight.shape[0])))
        producers, bns, consumers, ok = [], [], [], True
        for item in group:
            module, handler = item.dep.target.module, item.dep.handler
            if not _supported(module):
                ok = False
                break
            if isinstance(module, _BN):
                bns.append(module)
            elif _plain_layer(module) and graph.is_out_channel_pruning_fn(handler):
                producers.append(module)
            elif _plain_layer(module) and graph.is_in_channel_pruning_fn(handler):
                consumers.append((module, list(item.idxs), list(item.root_idxs)))
        if ok and producers == [producer] and consumers:
            groups.append(ChannelGroup(name, producer, bns[0] if bns else None, consumers))
    return graph, groups


def l1_filter_importance(group: ChannelGroup, ctx: PruneContext) -> torch.Tensor:
    """L1 norm of each output filter (Li et al. 2017, "Pruning filters for efficient ConvNets")."""
    return group.producer.weight.detach().abs().flatten(1).sum(1)


class ChannelPruning(PruningMethod):
    """Remove the lowest-scoring output channels, the same fraction in every removable group.

    ``ratio`` is the fraction of each group's original channels removed (at least one kept);
    scores of all groups are computed before any removal (Li et al.'s "independent" strategy).
    """

    structured = True

    def __init__(self, importance: ChannelImportance, *, reference: str) -> None:
        self.importance = importance
        self.reference = reference

    def prune(self, model: nn.Module, ratio: float, ctx: PruneContext) -> None:
        graph, groups = removable_groups(model, ctx)
        plan: dict[str, list[int]] = {}
        for group in groups:
            base = ctx.base_channels.setdefault(group.name, group.channels)
            drop = group.channels - max(1, round(base * (1.0 - ratio)))
            if drop > 0:
                scores = self.importance(group, ctx)
                plan[group.name] = torch.argsort(scores, stable=True)[:drop].tolist()
        remove_channels(model, graph, groups, plan, ctx.example_input)


def removable_groups(model: nn.Module, ctx: PruneContext) -> tuple[tp.DependencyGraph, list[ChannelGroup]]:
    """:func:`channel_groups` of ``model``, or a one-line error when it has none."""
    graph, groups = channel_groups(model, ctx.example_input, keep_first=ctx.settings.keep_first)
    if not groups:
        raise RobustEvalError(
            "no removable channels: expected Conv2d/Linear layers whose outputs are not tied to "
            "other layers by residual additions, found none"
        )
    return graph, groups


def remove_channels(model: nn.Module, graph: tp.DependencyGraph, groups: list[ChannelGroup],
                    plan: dict[str, list[int]], example_input: torch.Tensor) -> None:
    """Remove the output channels ``plan[group name]`` of each group (and every input reading them) in
    place, checked against the same model with those channels zeroed."""
    reference = _zeroed_copy(model, graph, {g.name: g for g in groups}, plan)
    for group in groups:
        if plan.get(group.name):
            graph.get_pruning_group(group.producer, _out_fn(group.producer), plan[group.name]).prune()
    _check_equivalent(model, reference, example_input)


PRUNING_METHODS.add("l1_filter", ChannelPruning(l1_filter_importance,
                                                reference="Li et al. 2017, Pruning filters for efficient ConvNets"))


@torch.no_grad()
def _zeroed_copy(model: nn.Module, graph: tp.DependencyGraph, groups: dict[str, ChannelGroup],
                 plan: dict[str, list[int]]) -> nn.Module:
    """A copy of ``model`` whose planned channels output exactly zero (weights, biases, BN affine)."""
    names = {m: n for n, m in model.named_modules()}
    twin = copy.deepcopy(model)
    twin_modules = dict(twin.named_modules())
    for name, idxs in plan.items():
        for item in graph.get_pruning_group(groups[name].producer, _out_fn(groups[name].producer), idxs):
            module = item.dep.target.module
            if graph.is_out_channel_pruning_fn(item.dep.handler) and module in names:
                target = twin_modules[names[module]]
                for tensor in (getattr(target, "weight", None), getattr(target, "bias", None)):
                    if tensor is not None:
                        tensor[list(item.idxs)] = 0
    return twin


@torch.no_grad()
def _check_equivalent(pruned: nn.Module, reference: nn.Module, example_input: torch.Tensor) -> None:
    pruned.eval()
    reference.eval()
    got, want = pruned(example_input), reference(example_input)
    err = float((got - want).abs().max()) if got.shape == want.shape else float("inf")
    if not err <= 1e-4 * (1.0 + float(want.abs().max())):
        raise RobustEvalError(
            f"cannot remove channels of this model correctly: the smaller model differs from the "
            f"channel-zeroed one by {err:.3g} (unsupported layer or coupling)"
        )
