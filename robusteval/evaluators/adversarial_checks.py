"""Sanity checks that flag adversarial results which cannot be trusted.

A weak or fooled attack reports robustness that is not there (gradient masking: Athalye et
al. 2018, arXiv:1802.00420; checklist: Carlini et al. 2019, arXiv:1902.06705). Each check
reads accuracy curves ``{eps: robust accuracy}`` and returns a :class:`Check` whose failures
become warnings in the record, with the evidence kept beside them.

Checks are declared (:func:`sanity_check`): a name, the inputs they need (curves by attack name,
``large_eps`` when that setting is on) and a function of the :class:`CheckInputs`. The evaluator
runs, in declaration order, every check whose inputs exist (:func:`run_checks`); the others are
skipped, so a check never names the attacks that happen to be configured.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

from robusteval.evaluators.attack_kinds import FGSM, AttackSettings, AutoAttack, Curve, LinfPGD, Sample
from robusteval.evaluators.attacks import format_eps as _fmt
from robusteval.evaluators.attacks import zero_gradient_count


@dataclass
class Check:
    """One check's outcome: failure messages (empty when it passed) and JSON-able evidence."""

    name: str
    failures: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_detail(self) -> dict[str, Any]:
        return {"passed": not self.failures, "failures": list(self.failures), "evidence": self.evidence}


def non_increasing(curves: Mapping[str, Curve], *, slack: float) -> Check:
    """Robust accuracy must not increase with ε (a larger ball contains the smaller one's adversarials)."""
    check = Check("non_increasing_in_eps")
    for attack, curve in curves.items():
        points = sorted(curve.items())
        for (e0, a0), (e1, a1) in zip(points, points[1:]):
            if a1 > a0 + slack:
                check.failures.append(
                    f"{attack}: robust accuracy rises from {a0:.3f} at eps {_fmt(e0)} to {a1:.3f} at eps {_fmt(e1)}"
                    " (expected non-increasing): the attack is unreliable, gradients may be masked"
                )
                check.evidence.setdefault(attack, []).append([_fmt(e0), a0, _fmt(e1), a1])
    return check


def near_zero(accuracy: float, *, attack: str, eps: float, slack: float) -> Check:
    """At a huge ε (e.g. L∞ 0.5, enough to turn any image grey) robust accuracy must be ~0."""
    check = Check("near_zero_at_large_eps", evidence={"attack": attack, "eps": _fmt(eps), "accuracy": accuracy})
    if accuracy > slack:
        check.failures.append(
            f"{attack} at eps {_fmt(eps)} leaves robust accuracy {accuracy:.3f} (expected ~0): the attack cannot"
            " reach the decision boundary even with a huge budget, gradients may be masked"
        )
    return check


def at_least_as_strong(
    name: str, strong: tuple[str, Curve], weak: tuple[str, Curve], *, slack: float, hint: str
) -> Check:
    """The stronger attack's robust accuracy must not exceed the weaker one's at any shared ε."""
    (strong_name, strong_curve), (weak_name, weak_curve) = strong, weak
    check = Check(name)
    for eps in sorted(set(strong_curve) & set(weak_curve)):
        a_strong, a_weak = strong_curve[eps], weak_curve[eps]
        if a_strong > a_weak + slack:
            check.failures.append(
                f"{strong_name} leaves robust accuracy {a_strong:.3f} at eps {_fmt(eps)} but {weak_name} only"
                f" {a_weak:.3f} (expected {strong_name} at least as strong): {hint}"
            )
            check.evidence[_fmt(eps)] = {strong_name: a_strong, weak_name: a_weak}
    return check


def zero_gradients(count: int, total: int) -> Check:
    """No correctly classified sample should have an exactly zero input gradient."""
    check = Check("zero_gradients", evidence={"zero": count, "total": total})
    if count:
        check.failures.append(
            f"{count} of {total} correctly classified samples have an exactly zero loss gradient (expected none):"
            " gradient-based attacks cannot move them, so their robustness is not measured"
        )
    return check


class CheckSettings(AttackSettings, Protocol):
    """The settings checks read besides the attacks' own: the huge ε of the near-zero check (None: off)."""

    large_eps: float | None


@dataclass(frozen=True)
class CheckInputs:
    """What checks read: the attacked model and sample, every curve and its norm, the random-noise
    curves per norm, the settings, and the accuracy margin (``slack``) before a check fails."""

    model: nn.Module
    sample: Sample
    curves: Mapping[str, Curve]
    norms: Mapping[str, str]
    noise: Mapping[str, Curve]
    settings: CheckSettings
    slack: float

    def has(self, name: str) -> bool:
        """Whether input ``name`` exists: a curve of that name, or ``large_eps`` when it is set."""
        return name in self.curves or (name == "large_eps" and self.settings.large_eps is not None)


@dataclass(frozen=True)
class SanityCheck:
    """A declared check: its name, the inputs it needs (see :meth:`CheckInputs.has`), its function."""

    name: str
    needs: tuple[str, ...]
    check: Callable[[CheckInputs], Check]


CHECKS: list[SanityCheck] = []
"""Every declared check, in the order their results (and warnings) appear."""


def sanity_check(name: str, needs: tuple[str, ...] = ()) -> Callable[[Callable[[CheckInputs], Check]], SanityCheck]:
    """Decorator declaring a check function under ``name``, run when every input of ``needs`` exists."""

    def deco(check: Callable[[CheckInputs], Check]) -> SanityCheck:
        if any(c.name == name for c in CHECKS):
            raise ValueError(f"check {name!r} is declared twice")
        CHECKS.append(SanityCheck(name, needs, check))
        return CHECKS[-1]

    return deco


def run_checks(inputs: CheckInputs) -> list[Check]:
    """The result of every declared check whose inputs exist, named as declared."""
    return [dataclasses.replace(c.check(inputs), name=c.name) for c in CHECKS
            if all(inputs.has(need) for need in c.needs)]


def _stronger(name: str, strong: str, weak: str, hint: str) -> SanityCheck:
    """Declare that attack ``strong`` must leave no more robust accuracy than ``weak`` at any shared ε."""
    return sanity_check(name, (strong, weak))(lambda inputs: at_least_as_strong(
        name, (strong, inputs.curves[strong]), (weak, inputs.curves[weak]), slack=inputs.slack, hint=hint))


@sanity_check("non_increasing_in_eps")
def _monotone(inputs: CheckInputs) -> Check:
    return non_increasing(inputs.curves, slack=inputs.slack)


@sanity_check("near_zero_at_large_eps", needs=("large_eps",))
def _large_eps(inputs: CheckInputs) -> Check:
    """A cheap L∞ PGD at ``large_eps`` on the correctly classified images."""
    eps = float(inputs.settings.large_eps)  # type: ignore[arg-type]
    success, _ = LinfPGD.configured(inputs.settings)(inputs.model, *inputs.sample.attacked, epsilons=(eps,))
    return near_zero(inputs.sample.accuracy(success[0]), attack=LinfPGD.name, eps=eps, slack=inputs.slack)


_stronger("pgd_vs_fgsm", LinfPGD.name, FGSM.name,
          "an iterative attack that loses to one step is stuck, e.g. in a masked or flat loss region")


@sanity_check("attack_vs_noise")
def _against_noise(inputs: CheckInputs) -> Check:
    """Every curve against random noise of its norm at the same ε."""
    check = Check("attack_vs_noise")
    for attack, curve in inputs.curves.items():
        norm = inputs.norms[attack]
        sub = at_least_as_strong(
            "attack_vs_noise", (attack, curve), (f"random {norm} noise", inputs.noise.get(norm, {})),
            slack=inputs.slack,
            hint="random noise of the same norm beats the attack, so its gradients are not informative")
        check.failures += sub.failures
        if sub.evidence:
            check.evidence[attack] = sub.evidence
    return check


_stronger("autoattack_vs_pgd", AutoAttack.name, LinfPGD.name,
          "AutoAttack should dominate foolbox PGD; its result is unreliable for this model")


@sanity_check("zero_gradients")
def _gradients(inputs: CheckInputs) -> Check:
    xc, yc = inputs.sample.attacked
    return zero_gradients(zero_gradient_count(inputs.model, xc, yc, batch_size=inputs.settings.batch_size), len(xc))
