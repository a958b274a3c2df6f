"""Where the models run and in which precision: ``device: auto|cpu|cuda|cuda:N|mps``, ``precision: fp32|bf16|fp16``.

Weights are always read to CPU and then moved (``api``); inputs are made on CPU and copied to the
model's device (``engine``). TF32 stays off on CUDA (:func:`exact_fp32`, run when this module is imported,
so in every process that uses robusteval, Ray workers included): it rounds matmul inputs to 10 mantissa
bits and moves accuracies, so numbers would depend on the GPU generation. Attacks and pruning scores
always run in fp32; ``precision`` applies to forward-only inference (:func:`autocast`).
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import nn

from robusteval.errors import RobustEvalError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def exact_fp32() -> None:
    """Switch TF32 off for CUDA matmuls and cuDNN convolutions (torch's cuDNN default is on)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


exact_fp32()


def check_device_spec(spec: str) -> None:
    """A one-line error for a spec that no machine has (not ``auto|cpu|cuda|cuda:N|mps``)."""
    kind, _, index = spec.partition(":")
    if kind not in ("auto", "cpu", "cuda", "mps") or (index and (kind != "cuda" or not index.isdigit())):
        raise RobustEvalError(f"device must be one of {', '.join(DEVICES)}, got {spec!r}")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise RobustEvalError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def available() -> list[str]:
    """The devices this machine has, for messages: ``cpu`` and ``cuda:0`` … / ``mps``."""
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu", *(f"cuda:{i}" for i in range(cuda))] + (["mps"] if _mps() else [])


def _mps() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve_device(spec: str) -> torch.device:
    """``auto`` is CUDA when available, then MPS, else CPU; a device this machine lacks is a one-line error.
    Using CUDA switches TF32 off again (see the module docstring), in case the caller turned it on."""
    check_device_spec(spec)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "mps" if _mps() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise RobustEvalError(f"device {spec!r} is not available on this machine (available: "
                                  f"{', '.join(available())}); use --device auto or one of those")
        exact_fp32()
    if device.type == "mps" and not _mps():
        raise RobustEvalError(f"device 'mps' is not available on this machine (available: {', '.join(available())}); "
                              "use --device auto or one of those")
    return device


def check_autocast(device: torch.device, precision: str) -> None:
    """Refuse a precision torch cannot autocast on ``device`` (one line)."""
    check_precision(precision)
    dtype = PRECISIONS[precision]
    if dtype is None:
        return
    if not torch.amp.is_autocast_available(device.type):
        raise RobustEvalError(f"precision {precision} needs autocast, which torch {torch.__version__} does not "
                              f"offer on {device.type}; use fp32")
    with warnings.catch_warnings(record=True) as caught:  # an unsupported dtype warns and disables autocast
        warnings.simplefilter("always")
        try:
            with torch.autocast(device.type, dtype=dtype):
                pass
        except (RuntimeError, ValueError) as exc:
            warnings.warn(str(exc), RuntimeWarning, stacklevel=1)
    refused = [str(w.message).splitlines()[0][:120] for w in caught if w.category is RuntimeWarning
               or "autocast" in str(w.message).lower()]
    if refused:
        raise RobustEvalError(f"precision {precision} is not supported on {device.type} by torch {torch.__version__} "
                              f"({refused[0]}); use fp32")


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """The context for forward-only inference: ``torch.autocast`` in bf16/fp16, nothing for fp32."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer); CPU for a model without tensors (onnxruntime)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def pinned(x: torch.Tensor, pin: bool) -> torch.Tensor:
    """``x`` in page-locked memory when ``pin`` (a CPU batch bound for a CUDA device), else ``x``."""
    return x.pin_memory() if pin and x.device.type == "cpu" else x


def to_device(x: torch.Tensor, device: torch.device, *, channels_last: bool = False) -> torch.Tensor:
    """Copy a batch to ``device`` (asynchronously to CUDA: make it :func:`pinned` first); NHWC if asked."""
    x = x.to(device, non_blocking=device.type == "cuda")
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


def _out_of_memory_type() -> type[BaseException]:
    """``torch.OutOfMemoryError`` (torch >= 2.5), or ``torch.cuda.OutOfMemoryError``, its older name (torch 2.4)."""
    return getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device running out of memory: torch's error for CUDA, or the plain ``RuntimeError``
    (``MPS backend out of memory ...``) that MPS raises."""
    return isinstance(exc, _out_of_memory_type()) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))


def free_cached_memory() -> None:
    """Return the caching allocators' unused blocks (CUDA, MPS) to the device, e.g. after running out of memory."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if _mps():
        torch.mps.empty_cache()


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA and MPS run asynchronously); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
