"""Attacks as kinds: each has a ``name``, a ``norm``, a ``kind`` and one ``run`` method.

As in foolbox's ``FixedEpsilonAttack``, a base class per kind owns everything around ``run`` (a
final ``__call__`` and :meth:`Attack.outcome`): gradients, eval mode and frozen weights, seeding,
batching, the ε loop, clipping into the ε ball, the success check, and the curves and metrics
it yields. A kind writes only ``run``. Kinds register by ``name`` when their class is defined
(:data:`ATTACKS`), so a new attack is one small class, and settings name it like the built-in ones.

- fixed-ε (:class:`FixedEpsilonAttack`): ``run`` perturbs one batch within ε; the curve is robust
  accuracy per ε. Also what transfer examples are crafted with.
- minimum-norm (:class:`MinimumNormAttack`): ``run`` returns the closest adversarials it finds;
  the metric is the median norm of the perturbation.
- ensemble (:class:`EnsembleAttack`): ``run`` attacks in stages, each on the samples still robust;
  one curve for the whole ensemble, its stages kept as details.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Protocol, final

import foolbox as fb
import numpy as np
import torch
from torch import nn

from robusteval.evaluators.attacks import (
    L2,
    LINF,
    L2FMN,
    attack_mode,
    autoattack_cascade,
    batches,
    build_autoattack,
    format_eps,
    pgd_config,
    seeded,
)
from robusteval.registry import Registry

FIXED_EPS, MIN_NORM, ENSEMBLE = "fixed-eps", "minimum-norm", "ensemble"
Curve = dict[float, float]
"""Robust accuracy over the whole sample, per ε."""


class AttackSettings(Protocol):
    """The settings a kind is configured from (:class:`~robusteval.evaluators.adversarial.AdversarialSettings`)."""

    pgd_steps: int
    min_norm_steps: int
    autoattack: str
    autoattack_iters: int
    apgd_targets: int
    seed: int
    batch_size: int


@dataclass(frozen=True)
class Sample:
    """The attacked sample on the model's device, and which images the model classifies correctly clean."""

    x: torch.Tensor
    y: torch.Tensor
    correct: torch.Tensor
    classes: int

    @property
    def n(self) -> int:
        return len(self.x)

    @cached_property
    def attacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The correctly classified images and their labels: the only ones an attack can fool."""
        idx = self.correct.nonzero().flatten()
        return self.x[idx], self.y[idx]

    def accuracy(self, fooled: torch.Tensor) -> float:
        """Robust accuracy over all ``n`` images from 'fooled' flags over the correctly classified ones."""
        return float((~fooled).sum()) / self.n


@dataclass
class Outcome:
    """What attacks found: curves (name → ε → accuracy) and each curve's norm, metrics relative to
    ``adversarial/``, JSON-able detail sections (dicts, merged section by section) and warnings.
    :meth:`add` merges another outcome in order."""

    curves: dict[str, Curve] = field(default_factory=dict)
    norms: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def add(self, other: Outcome) -> None:
        self.curves.update(other.curves)
        self.norms.update(other.norms)
        self.metrics.update(other.metrics)
        for key, value in other.details.items():
            self.details.setdefault(key, {}).update(value)
        self.warnings += other.warnings


ATTACKS: Registry[type[Attack]] = Registry("attack")
"""Every attack kind by name, filled when each class is defined."""


class Attack(ABC):
    """An attack kind. Subclasses of a kind's base set ``name`` and ``norm`` and write ``run``."""

    name: ClassVar[str]
    norm: ClassVar[str]
    kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in vars(cls):
            ATTACKS.add(cls.name, cls)

    def __init__(self, *, steps: int, seed: int, batch_size: int) -> None:
        """``steps`` (iterations, where the attack has them), ``seed`` of its random draws, images per batch."""
        self.steps, self.seed, self.batch_size = steps, seed, batch_size

    @classmethod
    @abstractmethod
    def configured(cls, settings: AttackSettings) -> Attack:
        """The attack with the steps, seed and batch size of ``settings``."""

    @abstractmethod
    def outcome(self, model: nn.Module, sample: Sample, epsilons: tuple[float, ...]) -> Outcome:
        """Attack ``sample`` at every ε (minimum-norm kinds take none) and say what was found."""


def names_of(kind: str) -> tuple[str, ...]:
    """The registered attacks of one kind, sorted."""
    return tuple(name for name in ATTACKS if ATTACKS.get(name).kind == kind)


def minimum_norm(norm: str) -> type[MinimumNormAttack]:
    """The minimum-norm kind for ``norm``."""
    return next(k for k in map(ATTACKS.get, names_of(MIN_NORM)) if k.norm == norm)  # type: ignore[misc]


class FixedEpsilonAttack(Attack):
    """Perturbations of size at most ε; success per ε and image, from one ``run`` per batch and ε."""

    kind = FIXED_EPS
    _distance: ClassVar[dict[str, fb.distances.Distance]] = {LINF: fb.distances.linf, L2: fb.distances.l2}

    @classmethod
    def configured(cls, settings: AttackSettings) -> FixedEpsilonAttack:
        return cls(steps=settings.pgd_steps, seed=settings.seed, batch_size=settings.batch_size)

    @final
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epsilons: tuple[float, ...],
                 keep: bool = False) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Success (len(epsilons), N) and, when ``keep``, the adversarials clipped into each ε ball."""
        clip = self._distance[self.norm].clip_perturbation
        successes, advs = [], [[] for _ in epsilons]
        with attack_mode(model), seeded(self.seed, x.device):
            fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device=x.device)
            for part in batches(len(x), self.batch_size):
                xb, yb = x[part], y[part]
                rows = []
                for k, eps in enumerate(epsilons):
                    clipped = clip(xb, self.run(fmodel, xb, yb, epsilon=eps), eps)
                    rows.append((fmodel(clipped).argmax(dim=-1) != yb).detach())
                    if keep:
                        advs[k].append(clipped.detach())
                successes.append(torch.stack(rows) if rows else torch.zeros(0, len(xb), dtype=torch.bool))
        success = torch.cat(successes, dim=1) if successes else torch.zeros(len(epsilons), 0, dtype=torch.bool)
        return success, ([torch.cat(a) for a in advs] if keep else None)

    @final
    def outcome(self, model: nn.Module, sample: Sample, epsilons: tuple[float, ...]) -> Outcome:
        success, _ = self(model, *sample.attacked, epsilons=epsilons)
        curve = {e: sample.accuracy(s) for e, s in zip(epsilons, success)}
        return Outcome(curves={self.name: curve}, norms={self.name: self.norm})

    @abstractmethod
    def run(self, model: fb.Model, x: torch.Tensor, y: torch.Tensor, *, epsilon: float) -> torch.Tensor:
        """``x`` perturbed by at most ``epsilon`` to fool ``model`` on labels ``y`` (clipped afterwards)."""


# FGSM: Goodfellow et al. 2015, arXiv:1412.6572. PGD: Madry et al. 2018, arXiv:1706.06083.
class FGSM(FixedEpsilonAttack):
    name, norm = "fgsm", LINF

    def run(self, model: fb.Model, x: torch.Tensor, y: torch.Tensor, *, epsilon: float) -> torch.Tensor:
        return fb.attacks.FGSM().run(model, x, y, epsilon=epsilon)


class LinfPGD(FixedEpsilonAttack):
    name, norm = "linf_pgd", LINF

    def run(self, model: fb.Model, x: torch.Tensor, y: torch.Tensor, *, epsilon: float) -> torch.Tensor:
        return fb.attacks.LinfPGD(**pgd_config(self.steps)).run(model, x, y, epsilon=epsilon)


class L2PGD(FixedEpsilonAttack):
    name, norm = "l2_pgd", L2

    def run(self, model: fb.Model, x: torch.Tensor, y: torch.Tensor, *, epsilon: float) -> torch.Tensor:
        return fb.attacks.L2PGD(**pgd_config(self.steps)).run(model, x, y, epsilon=epsilon)


class MinimumNormAttack(Attack):
    """The smallest perturbation that fools the model, per image; ``min_norm/<norm>/median`` over the sample."""

    kind = MIN_NORM

    @classmethod
    def configured(cls, settings: AttackSettings) -> MinimumNormAttack:
        return cls(steps=settings.min_norm_steps, seed=settings.seed, batch_size=settings.batch_size)

    @final
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image norm of the smallest adversarial perturbation found (inf where none is)."""
        p = float("inf") if self.norm == LINF else 2.0
        out = []
        with attack_mode(model), seeded(self.seed, x.device):
            fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device=x.device)
            for part in batches(len(x), self.batch_size):
                adv = self.run(fmodel, x[part], y[part])
                fooled = model(adv).argmax(dim=1) != y[part]
                dist = (adv - x[part]).flatten(1).norm(p=p, dim=1)
                out.append(torch.where(fooled, dist, torch.full_like(dist, float("inf"))).detach())
        return torch.cat(out) if out else torch.zeros(0)

    @final
    def outcome(self, model: nn.Module, sample: Sample, epsilons: tuple[float, ...] = ()) -> Outcome:
        """The median over all images (0 where the clean prediction is already wrong, inf where none is
        found): the ε at which robust accuracy falls to 50%, with no ε to choose."""
        norms = torch.zeros(sample.n, dtype=torch.float64)
        correct = sample.correct.cpu()
        norms[correct.nonzero().flatten()] = self(model, *sample.attacked).cpu().double()  # MPS has no float64
        return Outcome(metrics={f"min_norm/{self.norm}/median": float(np.median(norms.numpy()))},
                       details={"min_norm": {self.norm: _norm_summary(norms, correct)}})

    @abstractmethod
    def run(self, model: fb.Model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adversarials of ``x`` as close as the attack can find (not necessarily adversarial)."""


# Fast Minimum-Norm attack: Pintor et al. 2021, arXiv:2102.12827.
class LinfFMN(MinimumNormAttack):
    name, norm = "linf_fmn", LINF

    def run(self, model: fb.Model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return fb.attacks.LInfFMNAttack(steps=self.steps).run(model, x, y)


class L2FMNAttack(MinimumNormAttack):
    name, norm = "l2_fmn", L2

    def run(self, model: fb.Model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return L2FMN(steps=self.steps).run(model, x, y)


def _norm_summary(norms: torch.Tensor, correct: torch.Tensor) -> dict[str, Any]:
    """Quantiles of the minimal perturbation over the correctly classified samples, and the attack's failures."""
    attacked = norms[correct].numpy()
    found = attacked[np.isfinite(attacked)]
    levels = (0.1, 0.25, 0.5, 0.75, 0.9) if len(found) else ()
    quantiles = {f"q{round(q * 100)}": float(np.quantile(found, q)) for q in levels}
    return {"attacked": int(len(attacked)), "not_found": int(len(attacked) - len(found)), **quantiles}


class EnsembleAttack(Attack):
    """Attacks in stages, each on the images still robust. The curve ``name`` is the whole ensemble's,
    each of ``stage_curves`` is reported as a curve of its own, every stage is kept in the details."""

    kind = ENSEMBLE
    stage_curves: ClassVar[tuple[str, ...]] = ()

    @final
    def outcome(self, model: nn.Module, sample: Sample, epsilons: tuple[float, ...]) -> Outcome:
        stages: dict[str, Curve] = {}
        messages: list[str] = []
        for eps in epsilons:
            robust, logged = self.run(model, sample.x, sample.y, epsilon=eps, classes=sample.classes)
            for stage, flags in robust.items():
                stages.setdefault(stage, {})[eps] = float(flags.float().mean())
            messages += [m for m in logged if m not in messages]
        messages += self.caveats(sample.classes)
        curves = {s.replace("-", "_"): stages[s] for s in self.stage_curves} | {self.name: stages[list(stages)[-1]]}
        return Outcome(curves=curves, norms=dict.fromkeys(curves, self.norm),
                       details={f"{self.name}_stages": {s: keyed(c) for s, c in stages.items()}},
                       warnings=[f"{self.name}: {m}" for m in messages])

    @abstractmethod
    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epsilon: float,
            classes: int) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Robust flags per image after each stage (cumulative, in order) and the messages the stages logged."""

    def caveats(self, classes: int) -> list[str]:
        """Messages about what the ensemble could not run on a model of ``classes`` outputs."""
        return []


class AutoAttack(EnsembleAttack):
    """AutoAttack (Croce & Hein 2020, arXiv:2003.01690) through the library, in L∞ (:func:`build_autoattack`)."""

    name, norm = "autoattack", LINF
    stage_curves = ("apgd-ce",)

    def __init__(self, *, preset: str, targets: int, steps: int, seed: int, batch_size: int) -> None:
        super().__init__(steps=steps, seed=seed, batch_size=batch_size)
        self.preset, self.targets = preset, targets

    @classmethod
    def configured(cls, settings: AttackSettings) -> AutoAttack:
        return cls(preset=settings.autoattack, targets=settings.apgd_targets, steps=settings.autoattack_iters,
                   seed=settings.seed, batch_size=settings.batch_size)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epsilon: float,
            classes: int) -> tuple[dict[str, torch.Tensor], list[str]]:
        aa = build_autoattack(model, eps=epsilon, preset=self.preset, n_classes=classes, iters=self.steps,
                              targets=self.targets, seed=self.seed, device=x.device)
        return autoattack_cascade(aa, x, y, batch_size=self.batch_size)

    def caveats(self, classes: int) -> list[str]:
        if classes < 4:
            return [f"APGD-T skipped: its targeted DLR loss needs at least 4 classes, the model has {classes}"]
        return []


def keyed(curve: Curve) -> dict[str, float]:
    """A curve with its ε written as in metric keys, for the details."""
    return {format_eps(e): a for e, a in sorted(curve.items())}
