"""Checkpoints as people save them: find the weights, strip wrapper prefixes, load with PyTorch's strict rules.

The weights may sit at the top of the file or under a usual key (``state_dict``, ``model``, ...)
beside metadata (``epoch``, ``best_prec1``, an optimizer). A file that also holds an EMA copy
says which one was taken. ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile)
prefixes are stripped together with the state_dict's ``_metadata``, so PyTorch's own
backward compatibility (BatchNorm filling in ``num_batches_tracked`` for checkpoints saved
before PyTorch 0.4.1) applies exactly as in ``model.load_state_dict``, which decides.
"""
from __future__ import annotations

import difflib
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from robusteval.errors import RobustEvalError, describe

log = logging.getLogger(__name__)

WEIGHT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "module", "weights", "params")
EMA_KEYS = ("state_dict_ema", "model_ema", "ema", "ema_state_dict", "ema_model", "module_ema")
PREFIXES = ("module.", "_orig_mod.")


def extract_state_dict(obj: object, source: str = "model", *, key: str | None = None) -> OrderedDict[str, torch.Tensor]:
    """The tensors of a (possibly nested) checkpoint, its ``_metadata`` kept; non-tensor entries are dropped.

    ``key`` names the entry holding the weights (e.g. ``state_dict_ema``); by default the regular
    weights are taken, and a note is logged when the file also holds an EMA copy.
    """
    weights = _select(obj, source, key)
    state: OrderedDict[str, torch.Tensor] = OrderedDict(
        (k, v) for k, v in weights.items() if isinstance(k, str) and isinstance(v, torch.Tensor))
    if not state:
        raise RobustEvalError(f"{source}: expected a state_dict (a mapping of names to tensors), "
                              f"got {_kind(weights)}")
    return _keep_metadata(state, weights)


def _keep_metadata(new: OrderedDict[str, torch.Tensor], old: Mapping) -> OrderedDict[str, torch.Tensor]:
    """Copy the per-module versions PyTorch stores in ``state_dict()._metadata`` (its compatibility rules read them)."""
    metadata = getattr(old, "_metadata", None)
    if isinstance(metadata, Mapping):
        new._metadata = OrderedDict((k, dict(v)) for k, v in metadata.items())  # type: ignore[attr-defined]
    return new


def _select(obj: object, source: str, key: str | None) -> Mapping:
    """The mapping that holds the weights: ``obj[key]``, the top level, or one of the usual keys."""
    if not isinstance(obj, Mapping):
        raise RobustEvalError(f"{source}: expected a state_dict (a mapping of names to tensors), got {_kind(obj)}")
    if key is not None:
        if not isinstance(obj.get(key), Mapping):
            raise RobustEvalError(f"{source} has no weights under {key!r}; its entries: {_entries(obj)}")
        return obj[key]
    if any(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    regular = next((k for k in WEIGHT_KEYS if _holds_tensors(obj.get(k))), None)
    ema = next((k for k in EMA_KEYS if _holds_tensors(obj.get(k))), None)
    if regular is not None and ema is not None:
        log.warning("%s holds regular weights under %r and an EMA copy under %r; using %r "
                    "(--checkpoint-key %s takes the EMA copy)", source, regular, ema, regular, ema)
    elif ema is not None:
        log.warning("%s holds only an EMA copy of the weights (under %r); using it", source, ema)
    if regular is not None or ema is not None:
        return obj[regular or ema]
    nested = [k for k, v in obj.items() if _holds_tensors(v)]
    if len(nested) > 1:
        raise RobustEvalError(f"{source} holds tensors under several entries ({', '.join(map(repr, nested))}); "
                              "say which are the weights with --checkpoint-key")
    return obj[nested[0]] if nested else obj


def _holds_tensors(value: object) -> bool:
    return isinstance(value, Mapping) and any(isinstance(v, torch.Tensor) for v in value.values())


def _kind(obj: object) -> str:
    if isinstance(obj, Mapping):
        return f"a mapping without tensors (entries: {_entries(obj)})" if obj else "an empty mapping"
    return type(obj).__name__


def _entries(obj: Mapping) -> str:
    names = [str(k) for k in obj]
    return ", ".join(repr(n) for n in names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")


def strip_prefixes(state: OrderedDict[str, torch.Tensor], model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """Drop ``module.``/``_orig_mod.`` from every key (and from ``_metadata``) when all keys carry the prefix
    and the model's own keys do not; repeated until none is left (``module._orig_mod.conv.weight``)."""
    state = _keep_metadata(OrderedDict(state), state)
    expected = list(model.state_dict())
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in expected):
                consume_prefix_in_state_dict_if_present(state, prefix)
                changed = True
    return state


def load_strict(model: nn.Module, state: OrderedDict[str, torch.Tensor], what: str) -> None:
    """``model.load_state_dict(state)`` (strict); when PyTorch refuses, one line says what differs."""
    try:
        model.load_state_dict(state)
        return
    except RuntimeError as exc:
        problem = _differences(model, state) or describe(exc)
    raise RobustEvalError(f"{what}: {problem}")


def _differences(model: nn.Module, state: OrderedDict[str, torch.Tensor]) -> str:
    """Missing and unexpected keys (PyTorch's own verdict, with the closest names) and shape mismatches."""
    target = model.state_dict()
    wrong = {k: (tuple(v.shape), tuple(target[k].shape)) for k, v in state.items()
             if k in target and _shape_differs(v, target[k])}
    rest = _keep_metadata(OrderedDict((k, v) for k, v in state.items() if k not in wrong), state)
    try:
        result = model.load_state_dict(rest, strict=False)
    except RuntimeError:
        return ""
    missing = [k for k in result.missing_keys if k not in wrong]
    unexpected = list(result.unexpected_keys)
    parts = []
    if missing:
        parts.append(f"{_count(missing, 'missing key')}: " + _named(missing, unexpected, "closest in the file"))
    if unexpected:
        parts.append(f"{_count(unexpected, 'unexpected key')}: " + _named(unexpected, missing, "closest expected"))
    if wrong:
        shapes = [f"{k!r} is {list(file)} in the file, {list(want)} in the model" for k, (file, want) in wrong.items()]
        parts.append(f"{_count(shapes, 'shape mismatch', 'es')}: " + ", ".join(shapes[:3])
                     + (f", ... (+{len(shapes) - 3} more)" if len(shapes) > 3 else ""))
    return "; ".join(parts)


def _shape_differs(given: torch.Tensor, wanted: torch.Tensor) -> bool:
    """PyTorch's rule, including its 0.3 compatibility: a 1-element 1-d tensor fills a 0-d parameter."""
    if wanted.ndim == 0 and given.shape == (1,):
        return False
    return given.shape != wanted.shape


def _count(items: Sequence[object], noun: str, plural: str = "s") -> str:
    return f"{len(items)} {noun}{plural if len(items) != 1 else ''}"


def _named(keys: Sequence[str], others: Sequence[str], label: str, shown: int = 3) -> str:
    items = []
    for key in keys[:shown]:
        close = difflib.get_close_matches(key, others, n=1, cutoff=0.5)
        items.append(f"{key!r} ({label}: {close[0]!r})" if close else repr(key))
    return ", ".join(items) + (f", ... (+{len(keys) - shown} more)" if len(keys) > shown else "")
