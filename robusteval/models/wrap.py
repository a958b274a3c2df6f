"""Input convention and load-time checks: every model sees images in [0, 1]."""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from torch import nn

from robusteval.device import is_out_of_memory, model_device
from robusteval.errors import RobustEvalError, describe
from robusteval.models.thinned import failing_module, resized_layers


class Normalized(nn.Module):
    """Owns input normalisation: ``model((x - mean) / std)`` for x in [0, 1]."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise RobustEvalError(f"--mean has {len(mean)} values but --std has {len(std)}")
        if any(s <= 0 for s in std):
            raise RobustEvalError(f"--std values must be positive, got {list(std)}")
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


class LogitsOf(nn.Module):
    """``model(x).logits``: for models that return an output object (Hugging Face transformers' ``ModelOutput``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


def with_logits(model: nn.Module, image_shape: tuple[int, int, int]) -> nn.Module:
    """``model``, wrapped in :class:`LogitsOf` when a probe batch shows it returns an object with a tensor
    ``.logits`` (so every evaluator, attack, pruning method and export sees a tensor); a failing probe is left
    to :func:`check_model`, which reports it."""
    if isinstance(model, LogitsOf):
        return model
    probe = torch.rand(2, *image_shape, generator=torch.Generator().manual_seed(0)).to(model_device(model))
    try:
        with torch.inference_mode():
            out = model(probe)
    except Exception:  # check_model runs the same probe and says what failed
        return model
    return LogitsOf(model).eval() if isinstance(getattr(out, "logits", None), torch.Tensor) else model


def parse_floats(text: str | Sequence[float] | None, what: str) -> tuple[float, ...] | None:
    """'0.485,0.456,0.406' (or a list from a config) → floats; None stays None."""
    if text is None:
        return None
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        return tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise RobustEvalError(f"{what}: expected comma-separated numbers, got {text!r}") from None


def with_normalization(model: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None) -> nn.Module:
    """Wrap ``model`` when a mean/std is given (both or neither)."""
    if mean is None and std is None:
        return model
    if mean is None or std is None:
        raise RobustEvalError("give both --mean and --std, or neither")
    return Normalized(model, mean, std).eval()


def check_model(model: nn.Module, image_shape: tuple[int, int, int], num_classes: int, name: str = "model") -> None:
    """Run a probe batch of the data's shape; the output must be (batch, num_classes) and finite."""
    probe = torch.rand(2, *image_shape, generator=torch.Generator().manual_seed(0)).to(model_device(model))
    resized = resized_layers(model)
    try:
        with torch.inference_mode(), (failing_module(model) if resized else nullcontext([])) as culprit:
            out = model(probe)
    except Exception as exc:  # any failure means the model does not accept this input
        if resized and culprit:  # a thinned checkpoint: the architecture's forward does not take the file's widths
            raise RobustEvalError(
                f"{name}: the architecture was resized to the checkpoint's layer widths ({len(resized)} layers, "
                f"e.g. {resized[0]!r}) but its forward fails in {culprit[0]!r} ({culprit[1]}) on inputs of shape "
                f"(N, {', '.join(map(str, image_shape))}): {describe(exc)}; its code hard-codes a width, so "
                "export the pruned model itself (torch.export .pt2 or ONNX) and audit that file"
            ) from exc
        raise RobustEvalError(
            f"{name} cannot run on inputs of shape (N, {', '.join(map(str, image_shape))}) from the data: "
            f"{describe(exc)}"
        ) from exc
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise RobustEvalError(f"{name}: expected logits of shape (batch, classes), got {shape}")
    if out.shape[1] != num_classes:
        raise RobustEvalError(
            f"{name} outputs {out.shape[1]} logits per input but the data has {num_classes} classes"
        )
    if not torch.isfinite(out).all():
        raise RobustEvalError(f"{name} produces NaN or infinite logits on a probe batch")


def has_gradients(model: nn.Module) -> bool:
    """False when any part runs outside autograd (an ONNX model: ``differentiable = False``)."""
    return all(getattr(m, "differentiable", True) for m in model.modules())


def run_batch(model: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    """``model(x)`` for a batch of the evaluation; a failure (or a wrong output shape) names the model and the
    batch size, since a model that passed the probe batch of 2 can still fail on a larger one (running out
    of device memory is raised as it is)."""
    try:
        out = model(x)
    except RobustEvalError:
        raise
    except Exception as exc:  # any failure inside the model's own code
        if is_out_of_memory(exc):  # the engine retries in halves
            raise
        raise RobustEvalError(f"{name} failed on a batch of {len(x)} inputs (the load-time probe of 2 ran; try the "
                              f"batch size it was exported for as --batch-size): {describe(exc)}") from exc
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(x):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise RobustEvalError(f"{name} returned {shape} for a batch of {len(x)} inputs: expected ({len(x)}, classes)")
    return out
