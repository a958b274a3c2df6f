"""Safe model loading: state_dict (+ arch), safetensors (+ arch), TorchScript, torch.export, ONNX.

A pickled full module (``torch.save(model)``) runs arbitrary code when unpickled, so it is
refused unless the caller passes ``trust_pickle=True``, and so is a torch.export archive with a
member that needs the full unpickler (``export_archive``); loading never falls back silently to
unsafe unpickling. Every loaded model is returned in eval mode.
"""
from __future__ import annotations

import errno
import hashlib
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from robusteval.errors import RobustEvalError, describe
from robusteval.models.archs import build_arch
from robusteval.models.checkpoint import extract_state_dict, load_strict, strip_prefixes
from robusteval.models.export_archive import load_program
from robusteval.models.pruned_state import fold_prune_masks, remove_prune_hooks
from robusteval.models.sources import ModelSource, resolve_model
from robusteval.models.thinned import is_tp_state_dict, load_tp_state_dict, resize_to_state

PICKLE_REFUSED = (
    "{path} is a pickled full model (torch.save(model)); unpickling it can run arbitrary code, "
    "so it is refused. If you trust its source, pass --trust-pickle; better, re-export it safely: "
    "torch.save(model.state_dict(), 'model.pt') with --arch, or torch.export.save(torch.export.export("
    "model, (example,), dynamic_shapes=({{0: torch.export.Dim('batch')}},)), 'model.pt2')"
)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 of the file at ``path``, read in 1 MiB chunks (model files can be many GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def detect_format(path: Path) -> str:
    """One of "safetensors", "export", "torchscript", "torch" (a torch.save zip or legacy pickle)."""
    if path.suffix == ".safetensors":
        return "safetensors"
    if zipfile.is_zipfile(path):
        try:
            names = zipfile.ZipFile(path).namelist()
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as exc:  # a member name that is not UTF-8
            raise RobustEvalError(f"{path} is not a readable model file: {exc}") from exc
        if any(n.endswith("/archive_format") or n.endswith("/models/model.json") for n in names):
            return "export"
        if any(n.endswith("/constants.pkl") for n in names):
            return "torchscript"
    return "torch"


def load_model(
    source: str | Path | ModelSource,
    *,
    arch: str | None = None,
    num_classes: int = 10,
    trust_pickle: bool = False,
    checkpoint_key: str | None = None,
) -> nn.Module:
    """Load the model file (or ``hf-hub:``/``torchvision:`` reference, see :mod:`.sources`) in eval mode.

    ``arch`` (a registry name, ``torchvision:<name>``, ``timm:<name>`` or ``file.py:factory``) is
    required for weights-only formats (state_dict, safetensors) and ignored for self-describing
    ones; ``checkpoint_key`` names the checkpoint entry holding the weights (default: found).
    """
    source = resolve_model(source)
    if source.build is not None:
        return source.build().eval()
    path = source.path
    if not path.is_file():
        try:
            os.stat(path)  # follows links: a loop raises ELOOP
            state = "is a directory" if path.is_dir() else "is not a regular file"
        except OSError as exc:
            state = "is a symlink loop" if exc.errno == errno.ELOOP else "does not exist"
        raise RobustEvalError(f"model file {path} {state}")
    if path.stat().st_size == 0:
        raise RobustEvalError(f"model file {path} is empty")
    arch, classes = arch or source.arch, source.num_classes or num_classes
    if path.suffix.lower() == ".onnx":
        return _load_onnx(path).eval()
    fmt = detect_format(path)
    if fmt == "export":
        model = _load_export(path, trust_pickle)
    elif fmt == "torchscript":
        model = _load_torchscript(path)
    elif fmt == "safetensors":
        model = _with_state_dict(_read_safetensors(path), path, arch, classes, checkpoint_key)
    else:
        loaded = _torch_load(path, trust_pickle)
        if isinstance(loaded, nn.Module):
            model = remove_prune_hooks(loaded)
        elif is_tp_state_dict(loaded):
            model = _with_tp_state_dict(loaded, path, arch, classes)
        else:
            model = _with_state_dict(loaded, path, arch, classes, checkpoint_key)
    return model.eval()


def _load_onnx(path: Path) -> nn.Module:
    from robusteval.models.onnx import OnnxModel

    model = OnnxModel(path)
    return FixedBatch(model, model.batch) if model.batch else model


def _load_export(path: Path, trust_pickle: bool) -> nn.Module:
    try:
        program = load_program(path, trust_pickle=trust_pickle)
        module = program.module()
    except RobustEvalError:
        raise
    except Exception as exc:  # corrupt archives raise many different types
        raise RobustEvalError(f"{path} is not a readable torch.export archive: {_short(exc)}") from exc
    # .module() patches train()/eval() to raise; the graph already fixes the mode it was exported in,
    # so restore nn.Module's flag-setting methods (as copy.deepcopy of the module does anyway).
    del module.train, module.eval
    inputs = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in program.graph_signature.user_inputs]
    value = inputs[0].meta.get("val") if len(inputs) == 1 else None
    batch = value.shape[0] if value is not None and value.ndim > 0 else None
    return FixedBatch(module, batch) if isinstance(batch, int) else module


class FixedBatch(nn.Module):
    """Runs a program exported with a static batch size on any batch: chunks, zero-padding the last."""

    def __init__(self, program: nn.Module, batch: int) -> None:
        super().__init__()
        self.program = program
        self.batch = batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for start in range(0, x.shape[0], self.batch):
            chunk = x[start:start + self.batch]
            n = chunk.shape[0]
            if n < self.batch:
                chunk = torch.cat([chunk, chunk.new_zeros(self.batch - n, *chunk.shape[1:])])
            outs.append(self.program(chunk)[:n])
        return torch.cat(outs)


def _load_torchscript(path: Path) -> nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise RobustEvalError(f"{path} is not a readable TorchScript archive: {_short(exc)}") from exc


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RobustEvalError(f"{path} is not a readable safetensors file: {_short(exc)}") from exc


def _torch_load(path: Path, trust_pickle: bool) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # only a pickle that imports code (a GLOBAL outside torch's allow-list) is a full module;
        # any other unpickling failure (e.g. "Unsupported operand" on garbage bytes) is an unreadable file
        if "GLOBAL" not in str(exc):
            raise RobustEvalError(f"{path} is not a readable model file (truncated or not a torch file): "
                                  f"{_short(exc.__context__ or exc)}") from exc
        if not trust_pickle:
            raise RobustEvalError(PICKLE_REFUSED.format(path=path)) from None
    except Exception as exc:  # truncated or garbage files raise many types (RuntimeError, EOFError, KeyError, ...)
        raise RobustEvalError(f"{path} is not a readable model file (truncated or not a torch file): "
                              f"{_short(exc)}") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # trusted pickle: report whatever went wrong in one line
        raise RobustEvalError(f"unpickling {path} failed: {_short(exc)}") from exc


def _with_state_dict(obj: object, path: Path, arch: str | None, num_classes: int,
                     checkpoint_key: str | None) -> nn.Module:
    state = extract_state_dict(obj, str(path), key=checkpoint_key)
    if arch is None:
        raise RobustEvalError(f"{path} holds only weights (a state_dict); say which architecture with --arch")
    model = build_arch(arch, num_classes)
    state = fold_prune_masks(strip_prefixes(state, model), str(path))
    resize_to_state(model, state)
    load_strict(model, state, f"{path} does not fit architecture {arch!r} with {num_classes} classes")
    return model


def _with_tp_state_dict(obj: dict, path: Path, arch: str | None, num_classes: int) -> nn.Module:
    """Torch-Pruning's ``tp.state_dict(model)`` file (a trusted pickle: it holds the modules themselves)."""
    if arch is None:
        raise RobustEvalError(f"{path} is a Torch-Pruning state_dict (tp.state_dict); say which architecture "
                              "it was pruned from with --arch")
    try:
        return remove_prune_hooks(load_tp_state_dict(build_arch(arch, num_classes), obj))
    except RobustEvalError as exc:
        raise RobustEvalError(f"{path} does not fit architecture {arch!r}: {exc}") from None
    except Exception as exc:  # a file for another architecture fails inside torch_pruning in many ways
        raise RobustEvalError(f"{path}: torch_pruning.load_state_dict into architecture {arch!r} failed: "
                              f"{_short(exc)}") from exc


def _short(exc: BaseException) -> str:
    return describe(exc)
