"""Checkpoints of ``torch.nn.utils.prune``: fold ``<name>_orig`` * ``<name>_mask`` into ``<name>``.

PyTorch's pruning API re-parametrises a pruned tensor: the module keeps ``<name>_orig`` (a
parameter) and ``<name>_mask`` (a buffer) and a forward pre-hook recomputes ``<name> = orig *
mask`` before every forward. ``model.state_dict()`` of such a model (what PyTorch's pruning
tutorial saves) therefore holds the pair instead of ``<name>``. Folding the pair gives exactly the
tensor the hook computes, so the model behaves as PyTorch's own pruned module; the pruned entries
are zeros, so nonzero counts and sparsity follow from the masks.
"""
from __future__ import annotations

import io
from collections import OrderedDict

import torch
from torch import nn
from torch.nn.utils import prune

from robusteval.errors import RobustEvalError

ORIG, MASK = "_orig", "_mask"


def fold_prune_masks(state: OrderedDict[str, torch.Tensor], source: str) -> OrderedDict[str, torch.Tensor]:
    """``state`` with every ``<name>_orig``/``<name>_mask`` pair replaced by ``<name>`` = orig * mask.

    Any parameter name is folded (``weight``, ``bias``, a custom one); an ``_orig`` without its mask
    (e.g. spectral norm's ``weight_orig``) is left alone. A mask whose shape differs from its
    ``_orig`` is a one-line error. ``_metadata`` is kept.
    """
    pairs = [key[: -len(ORIG)] for key in state if key.endswith(ORIG) and key[: -len(ORIG)] + MASK in state]
    if not pairs:
        return state
    folded: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        if key.endswith(MASK) and key[: -len(MASK)] in pairs:
            continue
        name = key[: -len(ORIG)] if key.endswith(ORIG) else None
        if name not in pairs:
            folded[key] = value
            continue
        mask = state[name + MASK]
        if mask.shape != value.shape:
            raise RobustEvalError(f"{source}: pruning mask {name + MASK!r} has shape {list(mask.shape)} but "
                                  f"{key!r} has shape {list(value.shape)}; a torch.nn.utils.prune mask must match "
                                  "the tensor it prunes")
        folded[name] = value * mask.to(value.dtype)
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        folded._metadata = metadata  # type: ignore[attr-defined]
    return folded


def _prune_hooks(module: nn.Module) -> list[prune.BasePruningMethod]:
    return [h for h in getattr(module, "_forward_pre_hooks", {}).values() if isinstance(h, prune.BasePruningMethod)]


def has_prune_hooks(model: nn.Module) -> bool:
    """Whether any module of ``model`` is re-parametrised by ``torch.nn.utils.prune``."""
    return any(_prune_hooks(m) for m in model.modules())


def folded_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with its pruning made permanent; ``model`` keeps its hooks. (``copy.deepcopy``
    refuses the non-leaf tensors the hooks compute, so the copy goes through an in-memory ``torch.save``.)"""
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return remove_prune_hooks(torch.load(buffer, weights_only=False))  # our own object, not a file


def remove_prune_hooks(model: nn.Module) -> nn.Module:
    """Make every ``torch.nn.utils.prune`` re-parametrisation of a live module permanent (``prune.remove``, in
    place), so the pruned tensors are plain parameters holding their zeros; returns ``model``."""
    for module in model.modules():
        for hook in _prune_hooks(module):
            prune.remove(module, hook._tensor_name)
    return model
