"""Common corruptions (CIFAR-10-C / ImageNet-C) and uniform noise, on batches of [0, 1] tensors.

Parameters: the severity tables of Hendrycks & Dietterich, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations" (ICLR 2019), copied from their scripts
``make_cifar_c.py`` and ``make_imagenet_c.py`` (github.com/hendrycks/robustness); see
``params``. Inputs whose shorter side is >= 224 px use the ImageNet table, all smaller ones
(including 33..223 px) the CIFAR table (``parameter_set``); ``corrupt`` picks it from the
batch's size, and ``describe(name)`` says how each corruption relates to the reference.

Differences from the reference scripts, everywhere:
- Randomness comes from a seeded ``torch.Generator`` (one per call, see ``condition_seed``),
  not NumPy's global state: same distributions, different draws. A result depends on the
  whole batch, so the same batch with the same seed always gives the same images.
- ``make_cifar_c.py`` saves uint8 arrays (truncating ``x·255``); CIFAR-size results here stay
  float32 in [0, 1] (at most 1/255 apart, without the reference's −0.5/255 mean bias). Steps that
  quantise inside the reference (glass blur, the snow layer, spatter, JPEG) still do.
  ``make_imagenet_c.py`` saves every result as a JPEG of quality 85, and ImageNet-C is stored so:
  the audit's ImageNet-size corrupted inputs (``parameter_set`` "imagenet") get the same final step,
  truncation to uint8 and a PIL JPEG round trip at quality 85 (``imagenet_c_save``); ``corrupt``
  itself returns the corruption before that save.
- Motion blur and snow use ImageMagick's motion-blur kernel re-implemented in torch; frost
  uses the reference photographs given as ``frost_dir`` (the audit passes the copy it downloads
  into the cache, ``robusteval.data.frost_photos``), else procedurally drawn textures (``textures``).
- Non-square images are handled per axis where the reference assumes squares (zoom).

Devices: a batch on an accelerator is corrupted there and the result stays there. Random
numbers are drawn on the CPU from the seeded generator and moved, so a seed gives the same
draws on every device; constant kernels and matrices are built on the CPU and moved. On CUDA,
results equal the CPU's up to float rounding (a quantised step may differ by 1/255), and
convolutions run in float64 (cuDNN's default TF32 would round them). MPS has no float64:
float64 steps (glass blur, elastic transform, spatter, the snow and fog layers, shot noise's
Poisson rates) run on the CPU and their results move to MPS. CPU-only steps everywhere: the
Poisson draw, PIL JPEG, SciPy's distance transform (spatter) and glass blur's pixel map.

``uniform_noise`` is the ε-ball experiment of Liebenwein et al., "Lost in Pruning: The
Effects of Pruning Neural Networks beyond Test Accuracy" (MLSys 2021), in its units: ε is
added to the *normalised* network input (x − mean)/std, unclipped, as their ``eps_ball.py``
does; on [0, 1] pixels that is ε·std per channel.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from robusteval import validate
from robusteval.data.corruptions import blur, digital, noise, spatter, weather  # each registers its corruptions
from robusteval.data.corruptions.params import parameter_set, severity_parameters
from robusteval.data.corruptions.registry import CORRUPTIONS, Corruption
from robusteval.errors import RobustEvalError, expected
from robusteval.metrics import BENCHMARK_CORRUPTIONS

__all__ = [
    "BENCHMARK_CORRUPTIONS",
    "CORRUPTIONS",
    "DEFAULT_NOISE_EPS",
    "EXTRA_CORRUPTIONS",
    "Corruption",
    "condition_seed",
    "corrupt",
    "describe",
    "imagenet_c_save",
    "parameter_set",
    "uniform_noise",
]

IMAGENET_C_JPEG_QUALITY = 85
"""ImageNet-size results go through the reference's final save: uint8 (truncated), JPEG at this quality."""

MIN_SIDE = 16
"""Smallest supported image side (glass blur and frost crops need room)."""

DEFAULT_NOISE_EPS: tuple[float, ...] = tuple(round(0.05 * i, 10) for i in range(15))
"""ε ∈ linspace(0, 0.7, 15), the grid of Liebenwein et al. (2021), in their units (the normalised input)."""


EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
"""The 4 held-out validation corruptions."""


def describe(name: str) -> str:
    """How corruption ``name`` relates to the reference implementation, one line."""
    return CORRUPTIONS.get(name).note


def condition_seed(name: str, severity: int, batch_index: int, base_seed: int = 0) -> int:
    """A 63-bit seed for one (corruption or condition, severity, batch), stable across processes."""
    digest = hashlib.sha256(f"{base_seed}/{name}/{severity}/{batch_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def corrupt(x: Tensor, name: str, severity: int, *, seed: int, frost_dir: str | None = None) -> Tensor:
    """Corruption ``name`` at ``severity`` (1..5) of a float (N, 3, H, W) batch in [0, 1].

    Returns a new tensor of the same shape, dtype and device with values in [0, 1], the same
    for any memory layout of ``x``. The parameter table follows the image size
    (``parameter_set``); ``seed`` fixes all randomness.
    ``frost_dir``: a folder with the reference's frost photographs (``frost1.png`` …
    ``frost5.jpg``); frost then uses them instead of the procedural textures.
    """
    corruption = CORRUPTIONS.get(name)
    validate.severity(f"corruption {name!r}", severity)
    _check_batch(x, f"corruption {name!r}", image=True)
    if x.shape[0] == 0:
        return x.clone()
    x = x.contiguous()  # reductions (contrast's means) would otherwise sum in layout order
    table = parameter_set(x.shape[-2], x.shape[-1])
    gen = torch.Generator().manual_seed(seed)
    params = severity_parameters(name, severity, table)
    out = weather.frost(x, params, gen, frost_dir) if name == "frost" else corruption.apply(x, params, gen)
    return out.clamp_(0.0, 1.0).to(x.dtype)


def imagenet_c_save(x: Tensor) -> Tensor:
    """What ``make_imagenet_c.py`` does to every corrupted image before ImageNet-C stores it:
    ``Image.fromarray(np.uint8(x·255)).save(..., quality=85)`` (truncation to uint8, then a JPEG round
    trip at quality 85); the audit applies it to corruptions it generates with the ImageNet table."""
    return digital.jpeg_round_trip(torch.floor(x.clamp(0, 1) * 255), IMAGENET_C_JPEG_QUALITY).to(x.dtype)


def uniform_noise(x: Tensor, eps: float, *, seed: int, std: Sequence[float]) -> Tensor:
    """x + 2ε·std_c·(U − ½), U ~ U[0, 1) per value, unclipped: uniform noise of radius ε on the normalised
    input (x − mean)/std, the ε-ball of Liebenwein et al. (MLSys 2021, ``eps_ball.py``). ``std``: the
    per-channel std the model normalises by (one value per channel, or one for all)."""
    if not math.isfinite(eps) or eps < 0:
        raise RobustEvalError("uniform noise: " + expected("a finite eps >= 0", eps))
    _check_batch(x, "uniform noise", image=False)
    scale = torch.tensor([float(s) for s in std], dtype=torch.float64)
    if scale.numel() not in (1, x.shape[1]) or not bool((scale > 0).all()):
        raise RobustEvalError("uniform noise: " + expected(f"1 or {x.shape[1]} positive std values", list(std)))
    scale = scale.view(1, -1, 1, 1)
    return noise.uniform_noise_sample(x, float(eps), scale, torch.Generator().manual_seed(seed))


def _check_batch(x: Tensor, what: str, *, image: bool) -> None:
    """Float (N, C, H, W) in [0, 1], finite; RGB of at least ``MIN_SIDE`` px when ``image``."""
    if not isinstance(x, Tensor):
        raise RobustEvalError(f"{what}: " + expected("a torch.Tensor", type(x).__name__))
    if not x.is_floating_point():
        raise RobustEvalError(f"{what}: " + expected("a float tensor in [0, 1]", x.dtype))
    if x.ndim != 4 or (image and x.shape[1] != 3):
        want = "(N, 3, H, W)" if image else "(N, C, H, W)"
        raise RobustEvalError(f"{what}: " + expected(f"a batch of shape {want}", tuple(x.shape)))
    if image and min(x.shape[-2:]) < MIN_SIDE:
        raise RobustEvalError(f"{what}: " + expected(f"images of at least {MIN_SIDE}x{MIN_SIDE} px", tuple(x.shape)))
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise RobustEvalError(f"{what}: images contain NaN or infinite values")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise RobustEvalError(f"{what}: " + expected("values in [0, 1]", (float(x.min()), float(x.max()))))

