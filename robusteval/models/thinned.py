"""Structurally pruned ("thinned") checkpoints: fit the architecture's layer widths to the file's shapes.

Torch-Pruning, distiller and hand-written channel pruning save state_dicts whose Conv, Linear and
normalisation layers are narrower than the architecture they came from. Before PyTorch's strict
load, each such layer of the freshly built architecture is resized to the checkpoint's shapes
(its tensors and the attributes its forward reads: ``in_channels``, ``out_features``,
``num_features``, ``normalized_shape``, ...). Whether the rest of the architecture accepts the new
widths only shows in a forward pass (a forward that hard-codes a width fails): the resized layers
are recorded on the model, and :func:`failing_module` names the module a failed probe stopped in.

Torch-Pruning's own format (``tp.state_dict(model)``: every module's ``__dict__`` and attributes)
is read with ``torch_pruning.load_state_dict``, as its documentation loads it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from robusteval.errors import RobustEvalError

RESIZABLE = (_ConvNd, nn.Linear, _NormBase, nn.GroupNorm, nn.LayerNorm)
RESIZED_ATTR = "robusteval_resized_layers"


def is_tp_state_dict(obj: object) -> bool:
    """Whether ``obj`` is Torch-Pruning's ``tp.state_dict(model)`` (``full_state_dict`` + ``attributions``)."""
    return isinstance(obj, Mapping) and set(obj) == {"full_state_dict", "attributions"}


def load_tp_state_dict(model: nn.Module, obj: Mapping) -> nn.Module:
    """``torch_pruning.load_state_dict(model, state_dict=obj)``: the pruned modules replace the architecture's."""
    import torch_pruning as tp

    expected, given = [n for n, _ in model.named_modules()], list(obj["full_state_dict"])
    if set(expected) != set(given):
        differ = sorted(set(expected) ^ set(given), key=lambda n: (n not in given, n))
        raise RobustEvalError(f"its modules are not the architecture's ({len(differ)} differ, e.g. "
                              f"{', '.join(map(repr, differ[:3]))}): it was pruned from another architecture")
    return tp.load_state_dict(model, state_dict=obj)


def resize_to_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Resize every Conv/ConvTranspose/Linear/BatchNorm/GroupNorm/LayerNorm of ``model`` whose tensors are
    narrower in ``state`` (same number of dimensions, none larger); returns the resized modules' names (also kept
    on ``model`` as ``robusteval_resized_layers``). Values are left to the strict load that follows.

    The classifier (the last Linear) keeps its outputs: pruning never removes logits, so a file with
    another class count is left to the strict load, which names the mismatch."""
    resized = []
    head = next((n for n, m in reversed(list(model.named_modules())) if isinstance(m, nn.Linear)), None)
    for name, module in model.named_modules():
        if not isinstance(module, RESIZABLE) or (name == head and _more_outputs(module, state, name)):
            continue
        prefix = f"{name}." if name else ""
        changed = False
        for kind, tensors in (("parameter", module._parameters), ("buffer", module._buffers)):
            for key, tensor in list(tensors.items()):
                given = state.get(prefix + key)
                if tensor is None or given is None or given.shape == tensor.shape or not _narrower(given, tensor):
                    continue
                fresh = torch.empty(given.shape, dtype=tensor.dtype, device=tensor.device)
                tensors[key] = nn.Parameter(fresh, tensor.requires_grad) if kind == "parameter" else fresh
                changed = True
        if changed:
            _UPDATE[_kind(module)](module)
            resized.append(name)
    if resized:
        setattr(model, RESIZED_ATTR, resized)
    return resized


def _narrower(given: torch.Tensor, built: torch.Tensor) -> bool:
    """Pruning only removes: a tensor with as many dimensions, none of them larger (a wider file is not thinned)."""
    return given.ndim == built.ndim and all(g <= b for g, b in zip(given.shape, built.shape))


def _more_outputs(head: nn.Linear, state: Mapping[str, torch.Tensor], name: str) -> bool:
    given = state.get(f"{name}.weight" if name else "weight")
    return given is not None and given.ndim == 2 and given.shape[0] != head.out_features


def _kind(module: nn.Module) -> type:
    return next(t for t in (_ConvTransposeNd, _ConvNd, nn.Linear, _NormBase, nn.GroupNorm, nn.LayerNorm)
                if isinstance(module, t))


def _conv(module: _ConvNd) -> None:
    """Conv weight is (out, in/groups, k...), ConvTranspose weight (in, out/groups, k...); a depthwise
    one (groups == in == out) stays depthwise."""
    first, second = (("in_channels", "out_channels") if isinstance(module, _ConvTransposeNd)
                     else ("out_channels", "in_channels"))
    depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
    setattr(module, first, module.weight.shape[0])
    if depthwise:
        module.groups = module.weight.shape[0]
    setattr(module, second, module.weight.shape[1] * module.groups)


def _linear(module: nn.Linear) -> None:
    module.out_features, module.in_features = module.weight.shape


def _norm(module: _NormBase) -> None:
    stats = module.weight if module.weight is not None else module.running_mean
    module.num_features = stats.shape[0]


def _group_norm(module: nn.GroupNorm) -> None:
    module.num_channels = module.weight.shape[0]


def _layer_norm(module: nn.LayerNorm) -> None:
    module.normalized_shape = tuple(module.weight.shape)


_UPDATE: dict[type, Callable[[nn.Module], None]] = {
    _ConvTransposeNd: _conv, _ConvNd: _conv, nn.Linear: _linear, _NormBase: _norm,
    nn.GroupNorm: _group_norm, nn.LayerNorm: _layer_norm}


def resized_layers(model: nn.Module) -> list[str]:
    """The layers :func:`resize_to_state` resized in ``model`` or a module inside it (e.g. under a wrapper)."""
    return next((getattr(m, RESIZED_ATTR) for m in model.modules() if hasattr(m, RESIZED_ATTR)), [])


@contextmanager
def failing_module(model: nn.Module) -> Iterator[list[str]]:
    """Track the modules whose forward is running; after an exception inside the block, the list holds the
    innermost one (its name, ``""`` for the root, and class), the module the forward failed in."""
    stack: list[int] = []
    names = {id(m): (n, type(m).__name__) for n, m in model.named_modules()}

    def enter(module: nn.Module, args: tuple) -> None:
        stack.append(id(module))

    def leave(module: nn.Module, args: tuple, output: object) -> None:
        stack.pop()

    handles = [h for m in model.modules() for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    culprit: list[str] = []
    try:
        yield culprit
    except Exception:
        if stack:
            name, kind = names[stack[-1]]
            culprit[:] = [name or "the model's own forward", kind]
        raise
    finally:
        for handle in handles:
            handle.remove()
