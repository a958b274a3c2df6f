"""Pruning at initialisation (``pruning.at_init``) and the training a member got besides its recovery.

At initialisation (the setting of SNIP, GraSP and SynFlow, Tanaka et al. 2020) the method scores the
re-initialised architecture of the dense model (data-free for SynFlow, magnitude and random; one
batch of training data for SNIP and GraSP), and the masked network is then trained with the
recovery budget: the member is a sparse network trained from scratch, not a pruned trained one.
"""
from __future__ import annotations

import torch
from torch import nn

from robusteval.device import model_device
from robusteval.pruning.importance import PruneContext
from robusteval.pruning.settings import PruneSettings


def reinitialised(model: nn.Module, seed: int) -> nn.Module:
    """``model`` with every submodule's ``reset_parameters()`` called (PyTorch's default initialisation,
    BatchNorm statistics reset), seeded so that every member of a family starts from the same weights.
    The draws come from the CPU generator (the model is initialised on the CPU and moved back), so a
    seed gives the same weights on every device."""
    device = model_device(model)
    model = model.cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            if hasattr(module, "reset_parameters") and module is not model:
                module.reset_parameters()
    return model.to(device)


def training_notes(settings: PruneSettings, ctx: PruneContext) -> dict:
    """What a member's ``recovery`` record adds to its fine-tuning: ``at_init`` (pruned at
    initialisation, so the recovery budget trained it from scratch) and ``pruning_steps`` (optimizer
    steps the method took while pruning, e.g. Fisher pruning's interleaved fine-tuning)."""
    notes: dict = {}
    if settings.at_init:
        notes["at_init"] = True
    if ctx.train_steps:
        notes["pruning_steps"] = ctx.train_steps
    return notes
