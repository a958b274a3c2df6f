"""Iterative Synaptic Flow pruning (Tanaka et al. 2020, "Pruning neural networks without any data
by iteratively conserving synaptic flow")."""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from robusteval.pruning.importance import PruneContext, PruningMethod
from robusteval.pruning.masks import Masks, apply_masks, masks_from_scores
from robusteval.pruning.registry import PRUNING_METHODS


class _LinearizedCopy:
    """A float64 copy of the model in eval mode with every parameter and buffer replaced by |·|.

    Working on a copy is the reference code's "abs, score, restore signs" without touching the
    original model.
    """

    def __init__(self, model: nn.Module, layer_names: Sequence[str], example_input: torch.Tensor) -> None:
        self.device = example_input.device
        work = torch.device("cpu") if self.device.type == "mps" else self.device  # MPS has no float64
        self.model = copy.deepcopy(model).to(work).double().eval()
        with torch.no_grad():
            for tensor in self.model.state_dict().values():
                if tensor.is_floating_point():
                    tensor.abs_()
        modules = dict(self.model.named_modules())
        self.layers = {name: modules[name] for name in layer_names}
        self.abs_weights = {name: m.weight.detach().clone() for name, m in self.layers.items()}
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.ones = torch.ones_like(example_input[:1], dtype=torch.float64, device=work)

    def scores(self, masks: Masks | None) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            for name, m in self.layers.items():
                w = self.abs_weights[name]
                m.weight.copy_(w if masks is None else w * masks[name].to(w.device))
        weights = [m.weight for m in self.layers.values()]
        with torch.enable_grad():
            grads = torch.autograd.grad(self.model(self.ones).sum(), weights)
        dtype = torch.float32 if self.device.type == "mps" else torch.float64  # scores ranked where the masks live
        return {name: (g * w).detach().abs().to(self.device, dtype) for name, g, w in zip(self.layers, grads, weights)}


def synflow_scores(
    model: nn.Module, layer_names: Sequence[str], example_input: torch.Tensor, masks: Masks | None = None
) -> dict[str, torch.Tensor]:
    """SynFlow scores |∂R/∂θ ⊙ θ| with R = 1ᵀ f(1; |θ|) the summed output on an all-ones input."""
    return _LinearizedCopy(model, layer_names, example_input).scores(masks)


class SynFlowPruning(PruningMethod):
    """Data-free iterative SynFlow with global masks (Tanaka et al. 2020).

    Round k of n keeps the fraction (1 - ratio)^((k + 1) / n) of the prunable weights (the
    paper's exponential schedule), re-scoring the masked network each round.
    """

    reference = "Tanaka et al. 2020, Pruning neural networks without any data by iteratively conserving synaptic flow"

    def prune(self, model: nn.Module, ratio: float, ctx: PruneContext) -> None:
        rounds = ctx.settings.synflow_rounds
        flow = _LinearizedCopy(model, list(ctx.layers), ctx.example_input)
        masks = ctx.masks
        for k in range(rounds):
            round_ratio = 1.0 - (1.0 - ratio) ** ((k + 1) / rounds)
            masks = masks_from_scores(flow.scores(masks), round_ratio, scope="global", previous=masks)
        ctx.masks = masks
        if masks is not None:
            apply_masks(ctx.layers, masks)


PRUNING_METHODS.add("synflow", SynFlowPruning())
