"""Which weights are prunable, and the ONE place that turns importance scores into masks."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from robusteval.errors import RobustEvalError

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)
Masks = dict[str, torch.Tensor]
"""Prunable layer name → bool tensor shaped like its weight (True = kept)."""


def execution_order(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Names of the Conv2d/Linear modules of ``model`` in the order a forward pass first calls them."""
    order: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES):
            handles.append(module.register_forward_pre_hook(
                lambda _m, _i, name=name: order.append(name) if name not in order else None))
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(example_input[:1])
        model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    return order


def prunable_layers(
    model: nn.Module, example_input: torch.Tensor, *, keep_first: bool = True, keep_last: bool = True
) -> dict[str, nn.Module]:
    """Conv2d and Linear layers whose weights may be pruned, in execution order.

    The first layer run (the stem) and the last one (the classifier) stay dense when
    ``keep_first``/``keep_last``; biases and BatchNorm are never pruned.
    """
    order = execution_order(model, example_input)
    modules = dict(model.named_modules())
    chosen = order[1 if keep_first else 0: len(order) - 1 if keep_last else len(order)]
    if not chosen:
        raise RobustEvalError(
            f"no prunable layer: expected Conv2d/Linear layers besides the kept first/last ones, "
            f"found {len(order)} ({', '.join(order) or 'none'})"
        )
    return {name: modules[name] for name in chosen}


def masks_from_scores(
    scores: Mapping[str, torch.Tensor], ratio: float, *, scope: str, previous: Masks | None = None
) -> Masks:
    """Keep the highest-scoring weights so that exactly ``round(ratio * n)`` are removed.

    ``scope`` "global" ranks all layers together, "layer" removes the same fraction of every
    layer. Weights already removed in ``previous`` stay removed (their scores are ignored).
    Ties are broken by position, so the count is exact.
    """
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    flat = {}
    for name, score in scores.items():  # ranked in float64 on CPU (MPS has no float64)
        s = score.detach().flatten().cpu().double()
        s[torch.isnan(s)] = -torch.inf
        if previous is not None:
            s[~previous[name].flatten()] = -torch.inf
        flat[name] = s
    if scope == "layer":
        return {name: _keep_top(s, s.numel() - round(ratio * s.numel())).view_as(scores[name]).to(scores[name].device)
                for name, s in flat.items()}
    joined = torch.cat(list(flat.values()))
    keep = _keep_top(joined, joined.numel() - round(ratio * joined.numel()))
    out, start = {}, 0
    for name, s in flat.items():
        out[name] = keep[start: start + s.numel()].view_as(scores[name]).to(scores[name].device)
        start += s.numel()
    return out


def _keep_top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` highest scores, never one that is -inf (already removed)."""
    keep = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:
        keep[torch.topk(scores, k, sorted=False).indices] = True
    return keep & (scores > -torch.inf)


@torch.no_grad()
def apply_masks(layers: Mapping[str, nn.Module], masks: Masks) -> None:
    """Zero the removed weights in place (called after every optimizer step while fine-tuning)."""
    for name, mask in masks.items():
        layers[name].weight.mul_(mask.to(layers[name].weight.dtype))


def fold_masks(model: nn.Module) -> nn.Module:
    """Make ``torch.nn.utils.prune`` reparametrisations permanent: no ``weight_orig``/``weight_mask``.

    Returns ``model`` (changed in place) with every pruning hook removed and the mask multiplied
    into the plain weight tensor.
    """
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
    return model


def weight_sparsity(layers: Mapping[str, nn.Module]) -> dict[str, float]:
    """Fraction of exactly-zero weights per layer."""
    return {name: float((m.weight == 0).sum()) / m.weight.numel() for name, m in layers.items()}
