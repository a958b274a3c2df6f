"""Adversarial robustness of one model: fixed-ε curves, AutoAttack, minimal perturbations, checks.

The headline number is AutoAttack (APGD-CE + APGD-T by default; Croce & Hein 2020,
arXiv:2003.01690); foolbox FGSM / PGD give cheaper curves over more ε, FMN an ε-free median
minimal perturbation. A sample counts as robust only if it is classified correctly clean and
the attack does not fool it. Attacks are kinds (:mod:`attack_kinds`): the settings name them,
:func:`plan` lists them with their ε, and each kind's base runs the ε loop and yields its curves.
Declared sanity checks (:mod:`adversarial_checks`) that find their inputs turn signs of a weak or
masked attack into warnings with evidence. Transfer examples are crafted here on the dense
model; the engine feeds them to every model as a shared condition.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from robusteval import validate
from robusteval.device import model_device
from robusteval.errors import RobustEvalError, expected
from robusteval.evaluators import adversarial_checks as checks
from robusteval.evaluators.attack_kinds import (
    ATTACKS,
    FIXED_EPS,
    Attack,
    AutoAttack,
    Curve,
    Outcome,
    Sample,
    keyed,
    minimum_norm,
    names_of,
)
from robusteval.declarations import METRICS
from robusteval.evaluators.attacks import AUTOATTACK_PRESETS, L2, LINF, NORMS, attack_mode, format_eps, random_noise
from robusteval.evaluators.base import DEFAULT_BATCH_SIZE, Evaluator, Result
from robusteval.registry import unknown_name_message

__all__ = ["AdversarialEvaluator", "AdversarialSettings", "AttackInputs", "craft_transfer", "evaluate_adversarial",
           "format_eps", "plan", "select_sample"]


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
    """Fixed-ε attack kinds by name (:data:`attack_kinds.ATTACKS`); ``transfer`` names them too."""
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
        fixed = names_of(FIXED_EPS)
        for name, kind, known in (("attacks", "attack", fixed), ("transfer", "attack", fixed),
                                  ("min_norm", "norm", NORMS)):
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


def plan(settings: AdversarialSettings) -> list[tuple[Attack, tuple[float, ...]]]:
    """The attacks ``settings`` ask for, in the order they run, each with its ε (none for minimum-norm kinds)."""
    fixed = [(ATTACKS.get(name), settings.eps_for(ATTACKS.get(name).norm)) for name in settings.attacks]
    on = settings.autoattack != "off" and settings.autoattack_eps
    ensemble = [(AutoAttack, settings.autoattack_eps)] if on else []
    smallest = [(minimum_norm(norm), ()) for norm in settings.min_norm]
    return [(kind.configured(settings), eps) for kind, eps in [*fixed, *ensemble, *smallest]]


@torch.inference_mode(False)
def evaluate_adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, settings: AdversarialSettings,
                         attacked: Callable[[str], None] | None = None) -> Result:
    """Attack ``model`` on all of ``x`` (choose the sample with :func:`select_sample`) with every attack of
    :func:`plan` (``attacked`` is told each one's name when it is done), then run the declared checks."""
    settings = _sized(settings)
    sample = _sample(model, x, y, settings.batch_size)  # type: ignore[arg-type]
    found = Outcome()
    for attack, epsilons in plan(settings):
        found.add(attack.outcome(model, sample, epsilons))
        if attacked is not None:
            attacked(attack.name)
    noise = _noise(model, sample, found, settings)
    slack = max(settings.check_slack, 1.0 / sample.n)
    verdicts = checks.run_checks(checks.CheckInputs(model, sample, found.curves, found.norms, noise, settings, slack))
    metrics = {"clean_accuracy": int(sample.correct.sum()) / sample.n}
    for name, curve in found.curves.items():
        metrics.update({f"{name}/{format_eps(e)}/accuracy": a for e, a in curve.items()})
    details = {"n": sample.n, "clean_correct": int(sample.correct.sum()), "autoattack_preset": settings.autoattack,
               **found.details, "curves": {a: keyed(c) for a, c in found.curves.items()},
               "noise": {k: keyed(c) for k, c in noise.items()}, "checks": {c.name: c.as_detail() for c in verdicts}}
    return Result(metrics=metrics | found.metrics, warnings=found.warnings + [w for c in verdicts for w in c.failures],
                  details=details)


def _sized(settings: AdversarialSettings) -> AdversarialSettings:
    """``settings`` with a batch size: an audit fills in ``data.batch_size``, a direct call the default."""
    return settings if settings.batch_size is not None else dataclasses.replace(settings, batch_size=DEFAULT_BATCH_SIZE)


def _sample(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Sample:
    """The validated sample on the model's device, with the model's clean predictions checked against the labels."""
    x, y = _on_device(model, *validate_inputs(x, y))
    logits = _predict(model, x, batch_size)
    if logits.ndim != 2:
        raise RobustEvalError("adversarial: " + expected("outputs of shape (images, classes)", tuple(logits.shape)))
    if int(y.max()) >= logits.shape[1]:
        raise RobustEvalError(
            f"adversarial labels: expected class indices below the model's {logits.shape[1]} outputs,"
            f" got {int(y.max())}"
        )
    return Sample(x, y, logits.argmax(dim=1) == y, logits.shape[1])


def _fooled(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    if len(x) == 0:
        return torch.zeros(0, dtype=torch.bool, device=x.device)
    return _predict(model, x, batch_size).argmax(dim=1) != y


def _noise(model: nn.Module, sample: Sample, found: Outcome, settings: AdversarialSettings) -> dict[str, Curve]:
    """Robust accuracy under random noise of each attacked norm, at every ε an attack of that norm used."""
    xc, yc = sample.attacked
    eps = {norm: sorted({e for a, c in found.curves.items() if found.norms[a] == norm for e in c}) for norm in NORMS}
    return {norm: {e: sample.accuracy(_fooled(model, random_noise(xc, norm=norm, eps=e, seed=settings.seed), yc,
                                              settings.batch_size))  # type: ignore[arg-type]
                   for e in values} for norm, values in eps.items() if values}


@torch.inference_mode(False)
def craft_transfer(
    dense: nn.Module, x: torch.Tensor, y: torch.Tensor, *, settings: AdversarialSettings
) -> dict[str, torch.Tensor]:
    """Adversarial examples crafted on ``dense`` for every transfer attack and ε: ``{"linf_pgd/0.00784": x_adv}``."""
    x, y = _on_device(dense, *validate_inputs(x, y))
    settings = _sized(settings)
    out: dict[str, torch.Tensor] = {}
    for name in settings.transfer:  # fixed-ε kinds only (validated)
        attack = ATTACKS.get(name).configured(settings)
        eps = settings.eps_for(attack.norm)
        _, advs = attack(dense, x, y, epsilons=eps, keep=True)  # type: ignore[operator]
        out.update({f"{name}/{format_eps(e)}": a.cpu() for e, a in zip(eps, advs or [])})
    return out


@dataclass(frozen=True)
class AttackInputs:
    """What the attack stage hands the adversarial evaluator: the model and the sample to attack."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor


class AdversarialEvaluator(Evaluator[AttackInputs]):
    """:func:`evaluate_adversarial` behind the evaluator contract (names relative to ``adversarial/``);
    ``attacked`` is told the name of each attack of :func:`plan` when it is done (progress)."""

    name = "adversarial"
    declares = METRICS["adversarial"]

    def __init__(self, settings: AdversarialSettings, attacked: Callable[[str], None] | None = None) -> None:
        self.settings, self.attacked = settings, attacked

    def run(self, inputs: AttackInputs) -> Result:
        return evaluate_adversarial(inputs.model, inputs.x, inputs.y, settings=self.settings, attacked=self.attacked)
