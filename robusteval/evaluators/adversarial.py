"""Adversarial robustness of one model: fixed-ε curves, AutoAttack, minimal perturbations, checks.

The headline number is AutoAttack (APGD-CE + APGD-T by default; Croce & Hein 2020,
arXiv:2003.01690); foolbox FGSM / PGD give cheaper curves over more ε, FMN an ε-free median
minimal perturbation. A sample counts as robust only if it is classified correctly clean and
the attack does not fool it. Sanity checks (:mod:`adversarial_checks`) turn signs of a weak
or masked attack into warnings with evidence. Transfer examples are crafted here on the
dense model; the engine feeds them to every model as a shared condition.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from robusteval import validate
from robusteval.device import model_device
from robusteval.errors import RobustEvalError, expected
from robusteval.evaluators import adversarial_checks as checks
from robusteval.evaluators.base import DEFAULT_BATCH_SIZE, Evaluator, Result
from robusteval.evaluators.attacks import (
    AUTOATTACK_PRESETS,
    FIXED_EPS_ATTACKS,
    L2,
    LINF,
    NORMS,
    attack_mode,
    autoattack_cascade,
    build_autoattack,
    fixed_eps_attack,
    format_eps,
    min_norm_attack,
    random_noise,
    zero_gradient_count,
)
from robusteval.declarations import METRICS
from robusteval.registry import unknown_name_message

__all__ = ["AdversarialEvaluator", "AdversarialSettings", "AttackInputs", "craft_transfer", "evaluate_adversarial",
           "format_eps", "select_sample"]


@dataclass(frozen=True)
class AdversarialSettings:
    """What to attack with. ε lists are sorted and de-duplicated; every field is validated.

    PGD takes ``pgd_steps`` steps of 2.5·ε/steps (:func:`attacks.pgd_config`). ``autoattack_iters``
    and ``apgd_targets`` shape the ``fast`` preset only; ``standard`` is AutoAttack's published
    configuration. ``large_eps`` (L∞, None to skip) is where a cheap L∞ PGD must reach ~0 robust
    accuracy. ``check_slack`` is the accuracy margin (at least one sample) before a check fails.
    ``batch_size`` None means the evaluation batch size: the run configuration sets it to
    ``data.batch_size`` (``AuditConfig``), so every stage of a run sees an integer.
    """

    linf_eps: tuple[float, ...] = (0.25 / 255, 0.5 / 255, 1 / 255, 2 / 255, 4 / 255, 8 / 255)
    l2_eps: tuple[float, ...] = (0.03, 0.06, 0.125, 0.25, 0.5)
    attacks: tuple[str, ...] = ("fgsm", "linf_pgd", "l2_pgd")
    autoattack: str | None = "fast"
    """AutoAttack preset; ``off`` or null (None) turns it off."""
    autoattack_eps: tuple[float, ...] = (0.5 / 255, 1 / 255, 2 / 255, 8 / 255)
    min_norm: tuple[str, ...] = (LINF, L2)
    transfer: tuple[str, ...] = ("linf_pgd",)
    sample_size: int = 500
    batch_size: int | None = None
    seed: int = 0
    pgd_steps: int = 40
    min_norm_steps: int = 100
    autoattack_iters: int = 100
    apgd_targets: int = 9
    large_eps: float | None = 0.5
    check_slack: float = 0.02

    def __post_init__(self) -> None:
        for name in ("linf_eps", "l2_eps", "autoattack_eps"):
            object.__setattr__(self, name, _eps_list(name, getattr(self, name), linf=name != "l2_eps"))
        for name, kind, known in (("attacks", "attack", FIXED_EPS_ATTACKS.names()),
                                  ("transfer", "attack", FIXED_EPS_ATTACKS.names()), ("min_norm", "norm", NORMS)):
            values = tuple(getattr(self, name))
            for value in values:
                if value not in known:
                    _fail(name, unknown_name_message(kind, value, known))
            object.__setattr__(self, name, tuple(dict.fromkeys(values)))
        if self.autoattack is None:
            object.__setattr__(self, "autoattack", "off")
        if self.autoattack not in AUTOATTACK_PRESETS:
            _fail("autoattack", unknown_name_message("AutoAttack preset", self.autoattack, AUTOATTACK_PRESETS))
        for name in ("sample_size", "batch_size", "pgd_steps", "min_norm_steps", "autoattack_iters", "apgd_targets"):
            validate.positive_int(f"adversarial.{name}", getattr(self, name), optional=name == "batch_size")
        validate.non_negative_int("adversarial.seed", self.seed)
        validate.fraction("adversarial.large_eps", self.large_eps, what="an L∞ epsilon", include_high=True,
                          optional=True)
        validate.fraction("adversarial.check_slack", self.check_slack, what="an accuracy margin", include_low=True)

    def eps_for(self, norm: str) -> tuple[float, ...]:
        return self.linf_eps if norm == LINF else self.l2_eps


def _fail(name: str, message: str) -> None:
    raise RobustEvalError(f"adversarial.{name}: {message}")


def _eps_list(name: str, values: object, *, linf: bool) -> tuple[float, ...]:
    """Positive finite ε (<= 1 for L∞ on [0, 1] images), sorted, unique, distinct when formatted."""
    values = tuple(values)  # type: ignore[arg-type]
    bad = [v for v in values if not validate.is_number(v) or not 0 < v < math.inf]
    if bad:
        _fail(name, expected("positive finite numbers", bad[0]))
    if linf and max(values, default=0) > 1:
        _fail(name, expected("L∞ epsilons <= 1 for [0, 1] images", max(values)))
    unique = tuple(sorted({float(v) for v in values}))
    if len({format_eps(v) for v in unique}) < len(unique):
        _fail(name, f"epsilons {unique} collide when written with 5 decimals")
    return unique


def select_sample(n: int, *, settings: AdversarialSettings) -> torch.Tensor:
    """The sorted indices of the attacked sample: ``sample_size`` of ``n`` drawn with ``seed`` (all if fewer)."""
    if n <= settings.sample_size:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(settings.seed)
    return torch.randperm(n, generator=gen)[: settings.sample_size].sort().values


def validate_inputs(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 NCHW images inside [0, 1] and int64 labels, or a one-line RobustEvalError."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise RobustEvalError(expected("images and labels as torch tensors", (type(x).__name__, type(y).__name__)))
    if x.ndim != 4 or len(x) == 0:
        raise RobustEvalError("adversarial images: " + expected("a non-empty NCHW batch", tuple(x.shape)))
    if not x.is_floating_point():
        raise RobustEvalError("adversarial images: " + expected("floating point values in [0, 1]", x.dtype))
    if y.dtype in (torch.bool, torch.uint8) or y.is_floating_point() or y.is_complex():
        raise RobustEvalError("adversarial labels: " + expected("integer class indices (int64)", y.dtype))
    if y.shape != (len(x),):
        raise RobustEvalError("adversarial labels: " + expected(f"shape ({len(x)},), one per image", tuple(y.shape)))
    if y.device != x.device:
        raise RobustEvalError(f"adversarial labels are on {y.device} but images on {x.device}: expected one device")
    # contiguous clones: no inference tensors, and AutoAttack's grad.view needs standard strides
    x = x.detach().to(torch.float32).clone(memory_format=torch.contiguous_format)
    y = y.detach().to(torch.int64).clone()
    if not torch.isfinite(x).all():
        raise RobustEvalError(f"adversarial images contain {int((~torch.isfinite(x)).sum())} NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise RobustEvalError(
            f"adversarial images: expected values in [0, 1] (the model bounds), got range [{lo:.4g}, {hi:.4g}]"
        )
    if int(y.min()) < 0:
        raise RobustEvalError("adversarial labels: " + expected("class indices >= 0", int(y.min())))
    return x, y


def _on_device(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample on the model's device; attacks always run in fp32 (no autocast: half-precision gradients
    can vanish and make a model look robust)."""
    device = model_device(model)
    return x.to(device), y.to(device)


def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with attack_mode(model), torch.no_grad():
        return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


@torch.inference_mode(False)
def evaluate_adversarial(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, settings: AdversarialSettings
) -> Result:
    """Attack ``model`` on all of ``x`` (choose the sample with :func:`select_sample`) and check the results.

    ``min_norm/<norm>/median`` is the median over all samples of the smallest perturbation FMN
    finds (0 where the clean prediction is already wrong, inf where none is found): the ε at
    which robust accuracy falls to 50%, with no ε to choose.
    """
    x, y = _on_device(model, *validate_inputs(x, y))
    settings = _sized(settings)
    n, bs, seed = len(x), settings.batch_size, settings.seed
    logits = _clean_logits(model, x, y, bs)
    correct = logits.argmax(dim=1) == y
    idx = correct.nonzero().flatten()
    xc, yc = x[idx], y[idx]

    def accuracy(fooled_on_correct: torch.Tensor) -> float:
        """Robust accuracy over all n samples from 'fooled' flags over the correct ones."""
        return float((~fooled_on_correct).sum()) / n

    curves: dict[str, dict[float, float]] = {}
    for attack in settings.attacks:
        eps = settings.eps_for(FIXED_EPS_ATTACKS.get(attack).norm)
        success, _ = fixed_eps_attack(model, xc, yc, attack=attack, eps=eps, steps=settings.pgd_steps, seed=seed,
                                      batch_size=bs)
        curves[attack] = {e: accuracy(s) for e, s in zip(eps, success)}

    warnings: list[str] = []
    details: dict[str, Any] = {"n": n, "clean_correct": len(idx), "autoattack_preset": settings.autoattack}
    if settings.autoattack != "off" and settings.autoattack_eps:
        stages, aa_warnings = _autoattack(model, x, y, n_classes=logits.shape[1], settings=settings)
        warnings += [f"autoattack: {w}" for w in aa_warnings]
        for stage, curve in stages.items():
            details.setdefault("autoattack_stages", {})[stage] = _keyed(curve)
        curves["apgd_ce"] = stages["apgd-ce"]
        curves["autoattack"] = stages[list(stages)[-1]]

    noise_eps = {norm: sorted({e for a, c in curves.items() if _norm_of(a) == norm for e in c}) for norm in NORMS}
    noise = {
        norm: {e: accuracy(_fooled(model, random_noise(xc, norm=norm, eps=e, seed=seed), yc, bs)) for e in eps}
        for norm, eps in noise_eps.items() if eps
    }
    metrics: dict[str, float] = {"clean_accuracy": len(idx) / n}
    for attack, curve in curves.items():
        metrics.update({f"{attack}/{format_eps(e)}/accuracy": a for e, a in curve.items()})
    for norm in settings.min_norm:
        median, details.setdefault("min_norm", {})[norm] = _min_norm(model, xc, yc, correct, norm, settings)
        metrics[f"min_norm/{norm}/median"] = median

    results = _run_checks(model, xc, yc, n=n, curves=curves, noise=noise, settings=settings)
    for check in results:
        warnings += check.failures
    details.update(curves={a: _keyed(c) for a, c in curves.items()}, noise={k: _keyed(c) for k, c in noise.items()},
                   checks={c.name: c.as_detail() for c in results})
    return Result(metrics=metrics, warnings=warnings, details=details)


def _sized(settings: AdversarialSettings) -> AdversarialSettings:
    """``settings`` with a batch size: an audit fills in ``data.batch_size``, a direct call the default."""
    return settings if settings.batch_size is not None else dataclasses.replace(settings, batch_size=DEFAULT_BATCH_SIZE)


def _clean_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The model's logits on the clean sample, checked against the labels."""
    logits = _predict(model, x, batch_size)
    if logits.ndim != 2:
        raise RobustEvalError("adversarial: " + expected("outputs of shape (images, classes)", tuple(logits.shape)))
    if int(y.max()) >= logits.shape[1]:
        raise RobustEvalError(
            f"adversarial labels: expected class indices below the model's {logits.shape[1]} outputs,"
            f" got {int(y.max())}"
        )
    return logits


def _min_norm(model: nn.Module, xc: torch.Tensor, yc: torch.Tensor, correct: torch.Tensor, norm: str,
              settings: AdversarialSettings) -> tuple[float, dict[str, Any]]:
    """Median minimal perturbation over all samples (0 where already wrong) and its summary."""
    norms = torch.zeros(len(correct), dtype=torch.float64)
    norms[correct.nonzero().flatten().cpu()] = min_norm_attack(
        model, xc, yc, norm=norm, steps=settings.min_norm_steps, seed=settings.seed,
        batch_size=settings.batch_size).cpu().double()  # MPS has no float64: CPU first
    return float(np.median(norms.numpy())), _norm_summary(norms, correct.cpu())


def _autoattack(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, n_classes: int, settings: AdversarialSettings
) -> tuple[dict[str, dict[float, float]], list[str]]:
    """AutoAttack stage curves ``{stage: {eps: cumulative robust accuracy}}`` and its warnings."""
    stages: dict[str, dict[float, float]] = {}
    messages: list[str] = []
    for eps in settings.autoattack_eps:
        aa = build_autoattack(model, eps=eps, preset=settings.autoattack, n_classes=n_classes,
                              iters=settings.autoattack_iters, targets=settings.apgd_targets, seed=settings.seed,
                              device=x.device)
        flags, logged = autoattack_cascade(aa, x, y, batch_size=settings.batch_size)
        for stage, robust in flags.items():
            stages.setdefault(stage, {})[eps] = float(robust.float().mean())
        messages += [m for m in logged if m not in messages]
    if n_classes < 4 and settings.autoattack != "off":
        messages.append(f"APGD-T skipped: its targeted DLR loss needs at least 4 classes, the model has {n_classes}")
    return stages, messages


def _fooled(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    if len(x) == 0:
        return torch.zeros(0, dtype=torch.bool, device=x.device)
    return _predict(model, x, batch_size).argmax(dim=1) != y


def _run_checks(
    model: nn.Module, xc: torch.Tensor, yc: torch.Tensor, *, n: int, curves: dict[str, dict[float, float]],
    noise: dict[str, dict[float, float]], settings: AdversarialSettings,
) -> list[checks.Check]:
    """Every sanity check that the configured attacks allow."""
    slack = max(settings.check_slack, 1.0 / n)
    found = [checks.non_increasing(curves, slack=slack)]
    if settings.large_eps is not None:
        success, _ = fixed_eps_attack(model, xc, yc, attack="linf_pgd", eps=[settings.large_eps],
                                      steps=settings.pgd_steps, seed=settings.seed, batch_size=settings.batch_size)
        found.append(checks.near_zero(float((~success[0]).sum()) / n, attack="linf_pgd", eps=settings.large_eps,
                                      slack=slack))
    if "linf_pgd" in curves and "fgsm" in curves:
        found.append(checks.at_least_as_strong(
            "pgd_vs_fgsm", ("linf_pgd", curves["linf_pgd"]), ("fgsm", curves["fgsm"]), slack=slack,
            hint="an iterative attack that loses to one step is stuck, e.g. in a masked or flat loss region"))
    noise_check = checks.Check("attack_vs_noise")
    for attack, curve in curves.items():
        norm = _norm_of(attack)
        sub = checks.at_least_as_strong(
            "attack_vs_noise", (attack, curve), (f"random {norm} noise", noise[norm]), slack=slack,
            hint="random noise of the same norm beats the attack, so its gradients are not informative")
        noise_check.failures += sub.failures
        if sub.evidence:
            noise_check.evidence[attack] = sub.evidence
    found.append(noise_check)
    if "autoattack" in curves and "linf_pgd" in curves:
        found.append(checks.at_least_as_strong(
            "autoattack_vs_pgd", ("autoattack", curves["autoattack"]), ("linf_pgd", curves["linf_pgd"]),
            slack=slack, hint="AutoAttack should dominate foolbox PGD; its result is unreliable for this model"))
    found.append(checks.zero_gradients(zero_gradient_count(model, xc, yc, batch_size=settings.batch_size), len(xc)))
    return found


def _norm_of(attack: str) -> str:
    """The norm of a curve's attack (AutoAttack runs in L∞ here)."""
    return FIXED_EPS_ATTACKS.get(attack).norm if attack in FIXED_EPS_ATTACKS else LINF


def _keyed(curve: dict[float, float]) -> dict[str, float]:
    return {format_eps(e): a for e, a in sorted(curve.items())}


def _norm_summary(norms: torch.Tensor, correct: torch.Tensor) -> dict[str, Any]:
    """Quantiles of the minimal perturbation over the correctly classified samples, and FMN's failures."""
    attacked = norms[correct].numpy()
    found = attacked[np.isfinite(attacked)]
    levels = (0.1, 0.25, 0.5, 0.75, 0.9) if len(found) else ()
    quantiles = {f"q{round(q * 100)}": float(np.quantile(found, q)) for q in levels}
    return {"attacked": int(len(attacked)), "not_found": int(len(attacked) - len(found)), **quantiles}


@torch.inference_mode(False)
def craft_transfer(
    dense: nn.Module, x: torch.Tensor, y: torch.Tensor, *, settings: AdversarialSettings
) -> dict[str, torch.Tensor]:
    """Adversarial examples crafted on ``dense`` for every transfer attack and ε: ``{"linf_pgd/0.00784": x_adv}``."""
    x, y = _on_device(dense, *validate_inputs(x, y))
    settings = _sized(settings)
    out: dict[str, torch.Tensor] = {}
    for attack in settings.transfer:
        eps = settings.eps_for(FIXED_EPS_ATTACKS.get(attack).norm)
        _, advs = fixed_eps_attack(dense, x, y, attack=attack, eps=eps, steps=settings.pgd_steps, seed=settings.seed,
                                   batch_size=settings.batch_size, keep_adversarials=True)
        out.update({f"{attack}/{format_eps(e)}": a.cpu() for e, a in zip(eps, advs or [])})
    return out


@dataclass(frozen=True)
class AttackInputs:
    """What the attack stage hands the adversarial evaluator: the model and the sample to attack."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor


class AdversarialEvaluator(Evaluator[AttackInputs]):
    """:func:`evaluate_adversarial` behind the evaluator contract (names relative to ``adversarial/``)."""

    name = "adversarial"
    declares = METRICS["adversarial"]

    def __init__(self, settings: AdversarialSettings) -> None:
        self.settings = settings

    def run(self, inputs: AttackInputs) -> Result:
        return evaluate_adversarial(inputs.model, inputs.x, inputs.y, settings=self.settings)
