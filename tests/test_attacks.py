"""The attack wrappers against the libraries called directly, and against closed forms."""
from __future__ import annotations

import eagerpy as ep
import foolbox as fb
import pytest
import torch
from torch import nn

from robusteval.compat import autoattack_module
from robusteval.evaluators import attacks
from robusteval.evaluators.attack_kinds import ATTACKS, minimum_norm
from test_adversarial_models import synthetic, tiny_net

SEED = 3


@pytest.fixture(scope="module")
def setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    x, y = synthetic(24, seed=2)
    return tiny_net(), x, y


def _direct_foolbox(model: nn.Module, attack: fb.attacks.Attack, x: torch.Tensor, y: torch.Tensor, eps: list[float]):
    torch.manual_seed(SEED)
    return attack(fb.PyTorchModel(model.eval(), bounds=(0, 1)), x, y, epsilons=eps)


@pytest.mark.parametrize(
    ("name", "reference"),
    [("fgsm", fb.attacks.LinfFastGradientAttack()),
     ("linf_pgd", fb.attacks.LinfPGD(steps=5, rel_stepsize=0.5)),
     ("l2_pgd", fb.attacks.L2PGD(steps=5, rel_stepsize=0.5))],
)
def test_fixed_eps_attack_equals_foolbox_exactly(setup, name: str, reference: fb.attacks.Attack) -> None:
    model, x, y = setup
    eps = [0.01, 0.05] if name != "l2_pgd" else [0.2, 1.0]
    success, advs = ATTACKS.get(name)(steps=5, seed=SEED, batch_size=64)(model, x, y, epsilons=eps, keep=True)
    _, clipped, expected = _direct_foolbox(model, reference, x, y, eps)
    assert torch.equal(success, expected)
    for got, want in zip(advs, clipped):
        assert torch.equal(got, want)
    assert success[-1].float().mean() > 0  # the larger ε does fool something, so the comparison has teeth


def test_pgd_config_is_madry_step_rule() -> None:
    assert attacks.pgd_config(40) == {"steps": 40, "rel_stepsize": 2.5 / 40}


def test_deterministic_attack_does_not_depend_on_batching(setup) -> None:
    model, x, y = setup
    whole, _ = ATTACKS.get("fgsm")(steps=1, seed=0, batch_size=64)(model, x, y, epsilons=[0.05])
    parts, _ = ATTACKS.get("fgsm")(steps=1, seed=0, batch_size=5)(model, x, y, epsilons=[0.05])
    assert torch.equal(whole, parts)


def test_min_norm_matches_closed_form_distance_to_a_hyperplane() -> None:
    """For a linear two-class model the minimal L2 / L∞ perturbation is s / ||w||_2 or s / ||w||_1.

    Scores s = w·x + b are small (no clipping by the [0, 1] box) and positive: FMN stops exactly
    on the boundary, where argmax breaks the tie towards class 0, i.e. adversarial for label 1.
    """
    torch.manual_seed(0)
    linear = nn.Linear(48, 1)
    x = torch.rand(16, 3, 4, 4) * 0.2 + 0.4
    with torch.no_grad():
        score = linear(x.flatten(1)).squeeze(1)
        linear.bias -= score.min() - 0.005
        score = linear(x.flatten(1)).squeeze(1)
    y = torch.ones(16, dtype=torch.int64)
    w = linear.weight.detach().flatten()
    model = _TwoClass(linear)
    for norm, dual in (("l2", w.norm(p=2)), ("linf", w.norm(p=1))):
        got = minimum_norm(norm)(steps=100, seed=0, batch_size=16)(model, x, y)
        torch.testing.assert_close(got, score / dual, rtol=0.01, atol=1e-5)


class _TwoClass(nn.Module):
    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.linear(x.flatten(1))
        return torch.cat([-s, s], dim=1)


def test_linf_min_norm_equals_foolbox_fmn(setup) -> None:
    model, x, y = setup
    got = minimum_norm("linf")(steps=20, seed=SEED, batch_size=64)(model, x, y)
    _, adv, _ = _direct_foolbox(model, fb.attacks.LInfFMNAttack(steps=20), x, y, None)  # type: ignore[arg-type]
    fooled = model(adv).argmax(1) != y
    want = torch.where(fooled, (adv - x).flatten(1).abs().amax(dim=1), torch.tensor(float("inf")))
    assert torch.equal(got, want.detach())


def test_l2_fmn_fix_projects_onto_the_ball() -> None:
    """foolbox 3.3.4's L2 FMN projection is the identity; the fixed one scales x - x0 to norm ε."""
    x0 = ep.astensor(torch.zeros(2, 3))
    x = ep.astensor(torch.tensor([[3.0, 4.0, 0.0], [0.3, 0.0, 0.4]]))
    eps = ep.astensor(torch.tensor([1.0, 1.0]))
    projected = attacks.L2FMN().project(x, x0, eps).raw
    torch.testing.assert_close(projected, torch.tensor([[0.6, 0.8, 0.0], [0.3, 0.0, 0.4]]))
    assert torch.equal(fb.attacks.L2FMNAttack().project(x, x0, eps).raw, x.raw)  # the upstream bug still there


def test_random_noise_has_the_requested_norm() -> None:
    x = torch.full((4, 3, 8, 8), 0.5)
    linf = attacks.random_noise(x, norm="linf", eps=0.1, seed=0)
    assert torch.allclose((linf - x).abs(), torch.full_like(x, 0.1))
    l2 = attacks.random_noise(x, norm="l2", eps=0.3, seed=0)
    torch.testing.assert_close((l2 - x).flatten(1).norm(dim=1), torch.full((4,), 0.3))
    assert torch.equal(l2, attacks.random_noise(x, norm="l2", eps=0.3, seed=0))


def test_attack_mode_restores_model_state_and_rng() -> None:
    model = tiny_net().train()
    rng = torch.get_rng_state()
    with torch.inference_mode(), attacks.attack_mode(model), attacks.seeded(5, torch.device("cpu")):
        assert torch.is_grad_enabled() and not model.training
        assert not any(p.requires_grad for p in model.parameters())
        torch.rand(3)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_zero_gradient_count() -> None:
    x, y = synthetic(10, seed=0)

    class Masked(nn.Module):
        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            return tiny_net()(torch.round(inp * 4) / 4)

    assert attacks.zero_gradient_count(Masked(), x, y, batch_size=4) == 10
    assert attacks.zero_gradient_count(tiny_net(), x, y, batch_size=4) == 0


def _reference_autoattack(model: nn.Module, *, eps: float, version: str) -> object:
    AutoAttack = autoattack_module().AutoAttack
    if version == "standard":
        return AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=SEED)
    aa = AutoAttack(model, norm="Linf", eps=eps, version="custom", attacks=["apgd-ce", "apgd-t"], seed=SEED)
    aa.apgd.n_restarts = 1
    aa.apgd_targeted.n_target_classes = 3
    return aa


@pytest.mark.parametrize("preset", ["fast", "standard"])
def test_autoattack_cascade_equals_one_library_call(setup, preset: str) -> None:
    model, x, y = setup
    eps = 0.05
    aa = attacks.build_autoattack(model, eps=eps, preset=preset, n_classes=10, iters=100, targets=3, seed=SEED,
                                  device=x.device)
    reference = _reference_autoattack(model.eval(), eps=eps, version=preset)
    for a in (aa, reference):  # keep the standard preset's FAB-T and Square cheap, identically on both sides
        a.fab.n_iter, a.fab.n_target_classes, a.square.n_queries = 10, 3, 100
    flags, _ = attacks.autoattack_cascade(aa, x, y, batch_size=16)
    _, y_adv = reference.run_standard_evaluation(x, y, batch_size=16)
    assert list(flags) == reference.attacks_to_run
    assert torch.equal(flags[list(flags)[-1]], y_adv == y)
    clean = model(x).argmax(1) == y
    assert clean.sum() > flags["apgd-ce"].sum() > 0  # some samples fooled, some survive: a real comparison


def test_autoattack_fast_preset_configuration() -> None:
    aa = attacks.build_autoattack(tiny_net(), eps=0.1, preset="fast", n_classes=10, iters=20, targets=9, seed=0,
                                  device=torch.device("cpu"))
    assert aa.attacks_to_run == ["apgd-ce", "apgd-t"]
    assert (aa.apgd.n_restarts, aa.apgd_targeted.n_restarts, aa.apgd.n_iter, aa.apgd_targeted.n_target_classes) == (1, 1, 20, 9)
    small = attacks.build_autoattack(tiny_net(), eps=0.1, preset="standard", n_classes=3, iters=100, targets=9,
                                     seed=0, device=torch.device("cpu"))
    assert small.attacks_to_run == ["apgd-ce", "fab-t", "square"] and small.fab.n_target_classes == 2


def test_format_eps() -> None:
    assert [attacks.format_eps(e) for e in (0.5 / 255, 1 / 255, 2 / 255, 8 / 255, 0.25 / 255)] == [
        "0.00196", "0.00392", "0.00784", "0.03137", "0.00098"]
    assert [attacks.format_eps(e) for e in (0.03, 0.125, 0.5, 1.0, 2.5, 1e-7, 0.0)] == [
        "0.03", "0.125", "0.5", "1", "2.5", "0.0000001", "0"]
