"""Each sanity check trips on a model built to fool the attack it guards, and stays quiet otherwise."""
from __future__ import annotations

import pytest

from robusteval.evaluators import adversarial_checks as checks
from robusteval.evaluators.adversarial import AdversarialSettings, evaluate_adversarial
from test_adversarial_models import MeanMargin, QuantisedCount, count_images, mean_images, synthetic, tiny_net

BASE = dict(autoattack="off", min_norm=(), pgd_steps=40, seed=0, batch_size=250)


def _failed(result) -> set[str]:
    return {name for name, c in result.details["checks"].items() if not c["passed"]}


def test_normal_model_trips_nothing() -> None:
    x, y = synthetic(32, seed=9)
    settings = AdversarialSettings(linf_eps=(0.01, 0.04, 0.08), l2_eps=(0.5, 1.5), autoattack_eps=(0.04, 0.08),
                                   autoattack_iters=20, apgd_targets=3, min_norm=(), pgd_steps=10, batch_size=250)
    result = evaluate_adversarial(tiny_net(), x, y, settings=settings)
    assert result.warnings == [] and _failed(result) == set()
    assert result.metrics["linf_pgd/0.08/accuracy"] < result.metrics["clean_accuracy"]


def test_zero_gradient_model_is_exposed_by_noise() -> None:
    """Quantised output: PGD moves only by its random start; sign noise of the same ε fools it."""
    x, y = count_images(32)
    settings = AdversarialSettings(linf_eps=(0.1,), attacks=("linf_pgd",), large_eps=None, **BASE)
    result = evaluate_adversarial(QuantisedCount(), x, y, settings=settings)
    assert _failed(result) == {"attack_vs_noise", "zero_gradients"}
    evidence = result.details["checks"]["attack_vs_noise"]["evidence"]["linf_pgd"]["0.1"]
    assert evidence["linf_pgd"] > 0.9 and evidence["random linf noise"] < 0.1
    assert any("random linf noise" in w for w in result.warnings)
    assert result.details["checks"]["zero_gradients"]["evidence"] == {"zero": 32, "total": 32}


def test_local_minimum_trap_makes_pgd_weaker_than_fgsm_and_not_zero_at_large_eps() -> None:
    x, y = mean_images(16)
    settings = AdversarialSettings(linf_eps=(0.2,), attacks=("fgsm", "linf_pgd"), **BASE)
    result = evaluate_adversarial(MeanMargin("trap"), x, y, settings=settings)
    assert result.metrics["fgsm/0.2/accuracy"] == 0.0 and result.metrics["linf_pgd/0.2/accuracy"] == 1.0
    assert _failed(result) == {"pgd_vs_fgsm", "near_zero_at_large_eps"}
    assert result.details["checks"]["near_zero_at_large_eps"]["evidence"]["accuracy"] == 1.0


def test_adversarial_window_makes_fgsm_non_monotone() -> None:
    x, y = mean_images(16)
    settings = AdversarialSettings(linf_eps=(0.08, 0.2), attacks=("fgsm",), **BASE)
    result = evaluate_adversarial(MeanMargin("window"), x, y, settings=settings)
    assert _failed(result) == {"non_increasing_in_eps"}
    assert result.details["checks"]["non_increasing_in_eps"]["evidence"] == {"fgsm": [["0.08", 0.0, "0.2", 1.0]]}


def test_autoattack_weaker_than_pgd_is_flagged() -> None:
    """One APGD iteration jumps 2ε past the adversarial window; 40 small PGD steps walk into it."""
    x, y = mean_images(16)
    settings = AdversarialSettings(linf_eps=(0.2,), attacks=("linf_pgd",), autoattack="fast", autoattack_eps=(0.2,),
                                   autoattack_iters=1, min_norm=(), large_eps=None, batch_size=250)
    result = evaluate_adversarial(MeanMargin("window"), x, y, settings=settings)
    assert result.metrics["linf_pgd/0.2/accuracy"] == 0.0 and result.metrics["autoattack/0.2/accuracy"] == 1.0
    assert "autoattack_vs_pgd" in _failed(result)
    assert any(w.startswith("autoattack: APGD-T skipped") for w in result.warnings)  # two classes only


@pytest.mark.parametrize(("later", "fails"), [(0.52, False), (0.53, True)])
def test_non_increasing_respects_slack(later: float, fails: bool) -> None:
    check = checks.non_increasing({"pgd": {0.1: 0.5, 0.2: later}}, slack=0.02)
    assert bool(check.failures) is fails


def test_at_least_as_strong_compares_shared_eps_only() -> None:
    check = checks.at_least_as_strong("x", ("strong", {0.1: 0.5, 0.3: 0.9}), ("weak", {0.1: 0.4, 0.2: 0.1}),
                                      slack=0.05, hint="h")
    assert check.evidence == {"0.1": {"strong": 0.5, "weak": 0.4}} and len(check.failures) == 1
