"""Thin wrappers over foolbox 3 and AutoAttack: one place that handles their pitfalls.

The attack kinds (:mod:`robusteval.evaluators.attack_kinds`) run through these. Every attack is
the library's own with the given configuration (nothing is re-implemented or weakened, except
that foolbox 3.3.4's broken L2 FMN projection is fixed in :class:`L2FMN`); this handles what both
libraries leave to the caller: grad mode (attacks must run outside ``no_grad``/``inference_mode``),
eval mode, frozen weights
(foolbox backpropagates into parameter ``.grad``), batching, seeding of the global RNG the
libraries draw random starts from (restored afterwards), and AutoAttack's log warnings.
AutoAttack is reached only through :func:`robusteval.compat.autoattack_module`.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

import eagerpy as ep
import foolbox as fb
import torch
from torch import nn

from robusteval.compat import autoattack_module

LINF, L2 = "linf", "l2"
NORMS = (LINF, L2)
AUTOATTACK_PRESETS = ("fast", "standard", "off")


def format_eps(eps: float) -> str:
    """ε as a plain decimal for metric keys: 5 decimals (at least 3 significant digits), no exponent.

    ``0.5/255`` → ``0.00196``, ``8/255`` → ``0.03137``, ``0.25`` → ``0.25``, ``1.0`` → ``1``.
    """
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"expected a finite non-negative epsilon, got {eps!r}")
    decimals = 5 if eps == 0 else max(5, 2 - math.floor(math.log10(eps)))
    text = f"{eps:.{decimals}f}".rstrip("0").rstrip(".")
    return text or "0"


def pgd_config(steps: int) -> dict[str, float | int]:
    """PGD with a step of 2.5·ε/steps (Madry et al. 2018), so fewer steps still travel 2.5·ε.

    foolbox's own default (ε/30 per step) travels only 1.3·ε in 40 steps and 0.33·ε in 10.
    """
    return {"steps": steps, "rel_stepsize": 2.5 / steps}


class L2FMN(fb.attacks.L2FMNAttack):
    """foolbox's L2 FMN with its projection fixed.

    foolbox 3.3.4 projects with ``factor = minimum(1, norms / norms)`` (always 1), so the L2
    attack never shrinks its perturbation and reports norms several times the minimum. This
    projects ``x - x0`` onto the L2 ball of radius ε as the FMN paper (Alg. 1) does.
    """

    def project(self, x: ep.Tensor, x0: ep.Tensor, epsilon: ep.Tensor) -> ep.Tensor:
        delta = x - x0
        norms = ep.maximum(delta.flatten(start=1).norms.l2(axis=-1), 1e-12)
        factor = ep.minimum(1, epsilon / norms).reshape((-1,) + (1,) * (x.ndim - 1))
        return x0 + delta * factor


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Gradients on (even inside ``inference_mode``), model in eval mode with frozen weights; restored after."""
    was_training = model.training
    frozen = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the global RNG the libraries draw from; the caller's RNG state is restored afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def batches(n: int, batch_size: int) -> Iterator[slice]:
    """Slices of ``batch_size`` images (the last one shorter) over ``n``."""
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def random_noise(x: torch.Tensor, *, norm: str, eps: float, seed: int) -> torch.Tensor:
    """x plus random noise of norm ε (uniform signs for L∞, a scaled Gaussian for L2), clipped to [0, 1]."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    if norm == LINF:
        noise = torch.randint(0, 2, x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1
        return (x + eps * noise).clamp(0.0, 1.0)
    noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    scale = eps / noise.flatten(1).norm(dim=1).clamp_min(1e-12)
    return (x + noise * scale.view(-1, *[1] * (x.ndim - 1))).clamp(0.0, 1.0)


def zero_gradient_count(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int) -> int:
    """Samples whose cross-entropy input gradient is exactly zero (masked or saturated gradients)."""
    count = 0
    with attack_mode(model):
        for part in batches(len(x), batch_size):
            xb = x[part].clone().requires_grad_(True)
            loss = nn.functional.cross_entropy(model(xb), y[part], reduction="sum")
            (grad,) = torch.autograd.grad(loss, [xb])
            count += int((grad.flatten(1).abs().sum(dim=1) == 0).sum())
    return count


class _Collect(logging.Handler):
    """Keeps AutoAttack's WARNING messages (randomised/dynamic defence, zero gradients, ...)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.messages:
            self.messages.append(message)


@contextmanager
def _autoattack_log() -> Iterator[_Collect]:
    logger = logging.getLogger("auto-attack")
    handler, propagate = _Collect(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def build_autoattack(
    model: nn.Module, *, eps: float, preset: str, n_classes: int, iters: int, targets: int, seed: int,
    device: torch.device,
) -> object:
    """An AutoAttack (Croce & Hein 2020, arXiv:2003.01690) for L∞ ε.

    ``standard`` is the published configuration (APGD-CE, APGD-T, FAB-T, Square). ``fast`` is
    APGD-CE + APGD-T with one restart each, ``iters`` iterations and ``targets`` target classes.
    Target counts are capped at ``n_classes - 1``; APGD-T needs at least 4 classes and is dropped below.
    """
    AutoAttack = autoattack_module().AutoAttack
    if preset == "standard":
        aa = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=seed, device=device)
    else:
        aa = AutoAttack(model, norm="Linf", eps=eps, version="custom", attacks=["apgd-ce", "apgd-t"],
                        seed=seed, device=device)
        for apgd in (aa.apgd, aa.apgd_targeted):
            apgd.n_restarts = 1
            apgd.n_iter = apgd.n_iter_orig = iters
            apgd.n_iter_2, apgd.n_iter_min, apgd.size_decr = (max(int(f * iters), 1) for f in (0.22, 0.06, 0.03))
        aa.apgd_targeted.n_target_classes = targets
    aa.apgd_targeted.n_target_classes = min(aa.apgd_targeted.n_target_classes, n_classes - 1)
    aa.fab.n_target_classes = min(aa.fab.n_target_classes, n_classes - 1)
    if n_classes < 4:
        aa.attacks_to_run = [a for a in aa.attacks_to_run if a != "apgd-t"]
    return aa


def autoattack_cascade(
    aa: object, x: torch.Tensor, y: torch.Tensor, *, batch_size: int
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Run AutoAttack's attacks in its own order, each on the samples still robust.

    This is exactly what ``run_standard_evaluation`` does in one call; running it one attack
    at a time exposes the robust flags after each stage (``{attack: bool per sample}``,
    cumulative). Returns those flags and AutoAttack's logged warnings.
    """
    stages = list(aa.attacks_to_run)  # type: ignore[attr-defined]
    robust = torch.ones(len(x), dtype=torch.bool, device=x.device)
    flags: dict[str, torch.Tensor] = {}
    model = aa.model  # type: ignore[attr-defined]
    with _autoattack_log() as log, attack_mode(model):
        for stage in stages:
            idx = robust.nonzero().flatten()
            if len(idx):
                aa.attacks_to_run = [stage]  # type: ignore[attr-defined]
                run = aa.run_standard_evaluation  # type: ignore[attr-defined]
                _, y_adv = run(x[idx], y[idx], batch_size=batch_size)
                robust[idx] = y_adv.to(robust.device) == y[idx]
            flags[stage] = robust.clone()
    aa.attacks_to_run = stages  # type: ignore[attr-defined]
    return flags, log.messages
