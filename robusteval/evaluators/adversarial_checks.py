"""Sanity checks that flag adversarial results which cannot be trusted.

A weak or fooled attack reports robustness that is not there (gradient masking: Athalye et
al. 2018, arXiv:1802.00420; checklist: Carlini et al. 2019, arXiv:1902.06705). Each check
takes accuracy curves ``{eps: robust accuracy}`` and returns a :class:`Check` whose failures
become warnings in the record, with the evidence kept beside them.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from robusteval.evaluators.attacks import format_eps as _fmt

Curve = Mapping[float, float]


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
