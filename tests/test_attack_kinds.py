"""Attacks as kinds, declared sanity checks, and the attack stage's progress bar."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from robusteval.analysis.drops import headline_metrics
from robusteval.engine import EngineSettings, ModelEntry, run_attacks
from robusteval.errors import RobustEvalError
from robusteval.evaluators import adversarial_checks as checks
from robusteval.evaluators.adversarial import AdversarialSettings, evaluate_adversarial, plan
from robusteval.evaluators.attack_kinds import (
    ATTACKS,
    ENSEMBLE,
    FGSM,
    FIXED_EPS,
    MIN_NORM,
    AutoAttack,
    FixedEpsilonAttack,
    L2PGD,
    LinfPGD,
)
from robusteval.evaluators.attacks import LINF
from robusteval.results import RunDir
from test_adversarial_models import synthetic, tiny_net

QUICK = dict(linf_eps=(0.02, 0.06), l2_eps=(0.5,), autoattack="off", min_norm=(), pgd_steps=5, large_eps=None,
             seed=7, batch_size=16)


class SignStep(FixedEpsilonAttack):
    """FGSM by hand: a signed-gradient step of 3ε, which the base must clip back into the ε ball."""

    name, norm = "test_sign_step", LINF
    calls: list[float] = []

    def run(self, model, x: torch.Tensor, y: torch.Tensor, *, epsilon: float) -> torch.Tensor:
        SignStep.calls.append(epsilon)
        x = x.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, [x])
        return (x + 3 * epsilon * grad.sign()).clamp(0, 1).detach()


def test_a_registered_kind_runs_through_the_evaluators_eps_loop() -> None:
    """A kind writes only ``run``; the base loops over ε and batches, clips into the ball and checks success,
    so a hand-written FGSM gives foolbox's FGSM curve exactly, under its own metric keys and checks."""
    x, y = synthetic(40, seed=5)
    SignStep.calls.clear()
    settings = AdversarialSettings(attacks=("fgsm", "test_sign_step"), **QUICK)
    result = evaluate_adversarial(tiny_net(), x, y, settings=settings)
    batches = -(-result.details["clean_correct"] // 16)  # the correctly classified images, 16 a batch
    assert batches > 1 and SignStep.calls == [0.02, 0.06] * batches  # one run per batch and ε
    for eps in ("0.02", "0.06"):
        assert result.metrics[f"test_sign_step/{eps}/accuracy"] == result.metrics[f"fgsm/{eps}/accuracy"]
    assert result.metrics["fgsm/0.06/accuracy"] < result.metrics["clean_accuracy"]  # it does fool: the test has teeth
    assert result.details["curves"]["test_sign_step"] == result.details["curves"]["fgsm"]
    _, advs = SignStep(steps=1, seed=0, batch_size=16)(tiny_net(), x, y, epsilons=(0.05,), keep=True)
    assert (advs[0] - x).abs().max() <= 0.05 + 1e-6  # a 3ε step, clipped by the base


def test_kinds_name_norm_and_kind_and_the_plan_follows_the_settings() -> None:
    settings = AdversarialSettings(attacks=("linf_pgd", "l2_pgd"), autoattack="fast", min_norm=("l2",))
    assert [(a.name, a.norm, a.kind, eps) for a, eps in plan(settings)] == [
        ("linf_pgd", "linf", FIXED_EPS, settings.linf_eps), ("l2_pgd", "l2", FIXED_EPS, settings.l2_eps),
        ("autoattack", "linf", ENSEMBLE, settings.autoattack_eps), ("l2_fmn", "l2", MIN_NORM, ())]
    assert [a.name for a, _ in plan(AdversarialSettings(attacks=(), autoattack="off", min_norm=()))] == []


def test_unknown_attack_names_are_one_line_errors_with_a_suggestion() -> None:
    with pytest.raises(RobustEvalError, match=r"unknown attack 'linf_pdg' \(did you mean 'linf_pgd'\?\)"):
        ATTACKS.get("linf_pdg")
    with pytest.raises(RobustEvalError, match="unknown attack 'autoattack'"):  # not a fixed-ε kind
        AdversarialSettings(attacks=("autoattack",))


def test_a_declared_check_is_skipped_without_its_inputs_and_runs_with_them(monkeypatch) -> None:
    seen: list[list[str]] = []

    def l2_seen(evidence: checks.CheckInputs) -> checks.Check:
        seen.append(sorted(evidence.curves))
        return checks.Check("any name", failures=["l2 curve seen"], evidence={"l2": evidence.curves["l2_pgd"]})

    monkeypatch.setattr(checks, "CHECKS", [*checks.CHECKS, checks.SanityCheck("l2_seen", ("l2_pgd",), l2_seen)])
    x, y = synthetic(24, seed=1)
    without = evaluate_adversarial(tiny_net(), x, y, settings=AdversarialSettings(attacks=("fgsm",), **QUICK))
    assert "l2_seen" not in without.details["checks"] and seen == []
    assert "near_zero_at_large_eps" not in without.details["checks"]  # a built-in one: large_eps is off
    found = evaluate_adversarial(tiny_net(), x, y, settings=AdversarialSettings(attacks=("fgsm", "l2_pgd"), **QUICK))
    assert seen == [["fgsm", "l2_pgd"]]
    assert found.details["checks"]["l2_seen"] == {"passed": False, "failures": ["l2 curve seen"],
                                                  "evidence": {"l2": {0.5: found.metrics["l2_pgd/0.5/accuracy"]}}}
    assert found.warnings[-1] == "l2 curve seen"


def test_the_adversarial_headline_knows_the_built_in_kinds_by_name() -> None:
    """Analysis is torch-free and names the attacks it prefers for the headline as strings: a kind renamed
    without them would silently lose the headline."""
    strongest_first = (AutoAttack, LinfPGD, FGSM, L2PGD)
    for i, kind in enumerate(strongest_first):
        dense = {f"adversarial/{k.name}/0.03/accuracy": 0.5 for k in strongest_first[i:]}
        assert headline_metrics(dense)["adversarial"] == f"adversarial/{kind.name}/0.03/accuracy"


def test_declaring_a_check_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        checks.sanity_check("zero_gradients")(lambda evidence: checks.Check("zero_gradients"))


def _attack_stage(tmp_path, progress: bool) -> None:
    torch.manual_seed(0)
    models = [ModelEntry("dense", tiny_net()), ModelEntry("l1@0.5", tiny_net())]
    x, y = synthetic(16, seed=3)
    settings = AdversarialSettings(attacks=("fgsm", "linf_pgd"), min_norm=("linf",), min_norm_steps=5, **{
        k: v for k, v in QUICK.items() if k != "min_norm"})
    run_attacks(models, x, y, RunDir(tmp_path), settings, EngineSettings(batch_size=16, shard_size=16,
                                                                         progress=progress))


def test_the_attack_stage_shows_one_bar_with_eta_over_models_and_attacks(tmp_path, capsys) -> None:
    _attack_stage(tmp_path / "on", progress=True)
    err = capsys.readouterr().err
    assert "adversarial: attacking" in err
    assert re.search(r"\| 6/6 \[\d\d:\d\d<\d\d:\d\d, [\d.]+(s/)?attack", err), err  # 2 models × 3 attacks, with ETA
    _attack_stage(tmp_path / "off", progress=False)  # --quiet
    assert capsys.readouterr().err == ""
