"""Per-weight importance scores of the unstructured methods (random, magnitude, SNIP, GraSP)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robusteval.errors import RobustEvalError
from robusteval.pruning.importance import MaskPruning, PruneContext
from robusteval.pruning.registry import PRUNING_METHODS

GRASP_TEMPERATURE = 200.0
"""Softmax temperature of the GraSP reference code (Wang et al. 2020)."""


def random_scores(model: nn.Module, ctx: PruneContext) -> dict[str, torch.Tensor]:
    """Uniform random scores: with a per-layer budget, random pruning at the same ratio in every layer."""
    return {name: torch.rand(m.weight.shape, generator=ctx.generator).to(m.weight.device)
            for name, m in ctx.layers.items()}


PRUNING_METHODS.add("random", MaskPruning(random_scores, scope="layer",
                                          reference="random pruning, the same ratio in every layer"))


def magnitude_scores(model: nn.Module, ctx: PruneContext) -> dict[str, torch.Tensor]:
    """|w| (Han et al. 2015); global thresholding is "WT" in Liebenwein et al. 2021."""
    return {name: m.weight.detach().abs() for name, m in ctx.layers.items()}


PRUNING_METHODS.add("magnitude", MaskPruning(
    magnitude_scores, scope="global", reference='global |w| thresholding ("WT" in Liebenwein et al. 2021, Lost in Pruning)'))
PRUNING_METHODS.add("layer_magnitude", MaskPruning(magnitude_scores, scope="layer",
                                                   reference="|w| per layer (Han et al. 2015)"))


def _require_batch(ctx: PruneContext, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    if ctx.batch is None:
        raise RobustEvalError(f"pruning method {method!r} needs training data, got none (pass --train-data)")
    return ctx.batch


def snip_scores(model: nn.Module, ctx: PruneContext) -> dict[str, torch.Tensor]:
    """Connection sensitivity |∂L/∂w ⊙ w| on one batch (Lee et al. 2019, SNIP)."""
    x, y = _require_batch(ctx, "snip")
    weights = [m.weight for m in ctx.layers.values()]
    with torch.enable_grad():
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), weights)
    return {name: (g * w).detach().abs() for name, g, w in zip(ctx.layers, grads, weights)}


PRUNING_METHODS.add("snip", MaskPruning(
    snip_scores, scope="global", needs_data=True,
    reference="Lee et al. 2019, SNIP: single-shot network pruning based on connection sensitivity"))


def grasp_scores(model: nn.Module, ctx: PruneContext) -> dict[str, torch.Tensor]:
    """Gradient signal preservation (Wang et al. 2020, GraSP): score θ ⊙ Hg, keep the highest.

    GraSP removes the weights with the largest S(-θ) = -θ ⊙ Hg, i.e. keeps the largest θ ⊙ Hg.
    As in the reference code the logits are divided by a temperature of 200, g is the
    (detached) loss gradient and Hg the gradient of gᵀ∇L, by double back-propagation.
    """
    x, y = _require_batch(ctx, "grasp")
    weights = [m.weight for m in ctx.layers.values()]
    with torch.enable_grad():
        grad_w = torch.autograd.grad(F.cross_entropy(model(x) / GRASP_TEMPERATURE, y), weights)
        grad_f = torch.autograd.grad(
            F.cross_entropy(model(x) / GRASP_TEMPERATURE, y), weights, create_graph=True)
        z = sum((gw.detach() * gf).sum() for gw, gf in zip(grad_w, grad_f))
        hg = torch.autograd.grad(z, weights)
    return {name: (h * w).detach() for name, h, w in zip(ctx.layers, hg, weights)}


PRUNING_METHODS.add("grasp", MaskPruning(
    grasp_scores, scope="global", needs_data=True,
    reference="Wang et al. 2020, Picking winning tickets before training by preserving gradient flow"))
