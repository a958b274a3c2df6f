"""Input convention and load-time checks: every model sees images in [0, 1]."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robusteval.errors import RobustEvalError


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
    probe = torch.rand(2, *image_shape, generator=torch.Generator().manual_seed(0))
    try:
        with torch.inference_mode():
            out = model(probe)
    except Exception as exc:  # any failure means the model does not accept this input
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise RobustEvalError(
            f"{name} cannot run on inputs of shape (N, {', '.join(map(str, image_shape))}) from the data: {first}"
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
