"""The adversarial evaluator: same numbers as the libraries called directly, reproducible, clear errors."""
from __future__ import annotations

import foolbox as fb
import numpy as np
import pytest
import torch

from robusteval.compat import autoattack_module
from robusteval.errors import RobustEvalError
from robusteval.evaluators.adversarial import (
    AdversarialSettings,
    craft_transfer,
    evaluate_adversarial,
    format_eps,
    select_sample,
)
from test_adversarial_models import synthetic, tiny_net

SETTINGS = AdversarialSettings(
    linf_eps=(0.02, 0.06), l2_eps=(0.5, 1.5), attacks=("fgsm", "linf_pgd", "l2_pgd"), autoattack="fast",
    autoattack_eps=(0.06,), min_norm=("linf", "l2"), pgd_steps=5, min_norm_steps=20, autoattack_iters=20,
    apgd_targets=3, seed=7, batch_size=64,
)


@pytest.fixture(scope="module")
def run():
    model = tiny_net()
    x, y = synthetic(40, seed=5)
    return model, x, y, evaluate_adversarial(model, x, y, settings=SETTINGS)


def test_fixed_eps_curves_equal_foolbox_called_directly(run) -> None:
    model, x, y, result = run
    correct = model(x).argmax(1) == y
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    references = {"fgsm": fb.attacks.FGSM(), "linf_pgd": fb.attacks.LinfPGD(steps=5, rel_stepsize=0.5),
                  "l2_pgd": fb.attacks.L2PGD(steps=5, rel_stepsize=0.5)}
    for name, attack in references.items():
        eps = list(SETTINGS.l2_eps if name == "l2_pgd" else SETTINGS.linf_eps)
        torch.manual_seed(SETTINGS.seed)
        _, _, success = attack(fmodel, x[correct], y[correct], epsilons=eps)
        for e, s in zip(eps, success):
            assert result.metrics[f"{name}/{format_eps(e)}/accuracy"] == float((~s).sum()) / len(x)
    assert result.metrics["clean_accuracy"] == float(correct.float().mean())
    assert min(result.metrics.values()) < result.metrics["clean_accuracy"]  # attacks do fool: the test has teeth


def test_autoattack_equals_pyautoattack_called_directly(run) -> None:
    model, x, y, result = run
    AutoAttack = autoattack_module().AutoAttack
    for attacks, key in ((["apgd-ce"], "apgd_ce"), (["apgd-ce", "apgd-t"], "autoattack")):
        aa = AutoAttack(model, norm="Linf", eps=0.06, version="custom", attacks=attacks, seed=SETTINGS.seed)
        for apgd in (aa.apgd, aa.apgd_targeted):
            apgd.n_restarts, apgd.n_iter = 1, 20
            apgd.n_iter_2, apgd.n_iter_min, apgd.size_decr = max(int(0.22 * 20), 1), max(int(0.06 * 20), 1), 1
        aa.apgd_targeted.n_target_classes = 3
        _, y_adv = aa.run_standard_evaluation(x, y, batch_size=64)
        assert result.metrics[f"{key}/0.06/accuracy"] == float((y_adv == y).float().mean())
    assert result.metrics["autoattack/0.06/accuracy"] <= result.metrics["apgd_ce/0.06/accuracy"]


def test_min_norm_median_equals_fmn_called_directly(run) -> None:
    model, x, y, result = run
    correct = model(x).argmax(1) == y
    torch.manual_seed(SETTINGS.seed)
    _, adv, _ = fb.attacks.LInfFMNAttack(steps=20)(fb.PyTorchModel(model, bounds=(0, 1)), x[correct], y[correct],
                                                   epsilons=None)
    fooled = model(adv).argmax(1) != y[correct]
    norms = np.zeros(len(x))
    norms[correct.numpy()] = np.where(fooled, (adv - x[correct]).flatten(1).abs().amax(1).detach(), np.inf)
    assert result.metrics["min_norm/linf/median"] == pytest.approx(float(np.median(norms)), rel=1e-6)
    assert 0 < result.metrics["min_norm/l2/median"] < np.inf


def test_normal_model_passes_every_check_with_evidence_recorded(run) -> None:
    _, _, _, result = run
    assert result.warnings == []
    assert set(result.details["checks"]) == {"non_increasing_in_eps", "near_zero_at_large_eps", "pgd_vs_fgsm",
                                             "attack_vs_noise", "autoattack_vs_pgd", "zero_gradients"}
    assert all(c["passed"] for c in result.details["checks"].values())
    assert result.details["curves"]["linf_pgd"].keys() == {"0.02", "0.06"}


def test_reruns_reproduce_and_leave_the_global_rng_alone(run) -> None:
    model, x, y, result = run
    settings = AdversarialSettings(**{**SETTINGS.__dict__, "autoattack": "off", "min_norm": ()})
    state = torch.get_rng_state()
    with torch.inference_mode():  # the caller's inference mode must not break the attacks
        again = evaluate_adversarial(model, x, y, settings=settings)
    assert torch.equal(torch.get_rng_state(), state)
    for key, value in again.metrics.items():
        assert result.metrics[key] == value


def test_transfer_examples_stay_in_the_ball_and_fool_the_dense_model() -> None:
    model = tiny_net()
    x, y = synthetic(16, seed=5)
    settings = AdversarialSettings(linf_eps=(0.02, 0.1), transfer=("linf_pgd", "l2_pgd"), l2_eps=(1.0,), pgd_steps=5,
                                   batch_size=250)
    out = craft_transfer(model, x, y, settings=settings)
    assert list(out) == ["linf_pgd/0.02", "linf_pgd/0.1", "l2_pgd/1"]
    assert (out["linf_pgd/0.1"] - x).abs().max() <= 0.1 + 1e-6
    assert (out["l2_pgd/1"] - x).flatten(1).norm(dim=1).max() <= 1.0 + 1e-5
    assert all(0 <= float(a.min()) and float(a.max()) <= 1 for a in out.values())
    with torch.no_grad():
        assert (model(out["linf_pgd/0.1"]).argmax(1) == y).float().mean() < (model(x).argmax(1) == y).float().mean()


def test_select_sample_is_seeded_sorted_and_bounded() -> None:
    settings = AdversarialSettings(sample_size=5, seed=1)
    idx = select_sample(100, settings=settings)
    assert len(idx) == 5 and torch.equal(idx, idx.sort().values) and len(set(idx.tolist())) == 5
    assert torch.equal(idx, select_sample(100, settings=settings))
    assert not torch.equal(idx, select_sample(100, settings=AdversarialSettings(sample_size=5, seed=2)))
    assert torch.equal(select_sample(3, settings=settings), torch.arange(3))


def test_settings_normalise_and_validate() -> None:
    s = AdversarialSettings(linf_eps=[2 / 255, 1 / 255, 2 / 255], attacks=["fgsm"])  # type: ignore[arg-type]
    assert s.linf_eps == (1 / 255, 2 / 255) and s.attacks == ("fgsm",)
    bad = [({"attacks": ("linf_pdg",)}, "did you mean 'linf_pgd'"), ({"linf_eps": (-0.1,)}, "positive finite"),
           ({"linf_eps": (2.0,)}, "<= 1"), ({"autoattack": "full"}, "AutoAttack preset"),
           ({"min_norm": ("l1",)}, "unknown norm"), ({"batch_size": 0}, "positive integer"),
           ({"l2_eps": (0.100001, 0.1)}, "collide"), ({"seed": -1}, "non-negative")]
    for kwargs, message in bad:
        with pytest.raises(RobustEvalError, match=message):
            AdversarialSettings(**kwargs)


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [(torch.full((2, 1, 4, 4), 1.5), torch.tensor([0, 1]), r"values in \[0, 1\].*got range \[1.5, 1.5\]"),
     (torch.full((2, 1, 4, 4), float("nan")), torch.tensor([0, 1]), "NaN"),
     (torch.rand(2, 1, 4, 4), torch.tensor([0.0, 1.0]), "integer class indices"),
     (torch.rand(2, 1, 4, 4), torch.tensor([[0], [1]]), r"shape \(2,\)"),
     (torch.rand(2, 1, 4, 4), torch.tensor([0, 1, 2]), r"shape \(2,\)"),
     (torch.rand(1, 4, 4), torch.tensor([0]), "NCHW"),
     (torch.randint(0, 255, (2, 1, 4, 4), dtype=torch.uint8), torch.tensor([0, 1]), "floating point"),
     (torch.rand(2, 1, 4, 4), torch.tensor([0, -1]), ">= 0"),
     (torch.rand(2, 3, 8, 8), torch.tensor([0, 10]), "below the model's 10 outputs")],
)
def test_bad_inputs_raise_one_line_errors(x: torch.Tensor, y: torch.Tensor, message: str) -> None:
    with pytest.raises(RobustEvalError, match=message) as info:
        evaluate_adversarial(tiny_net(), x, y, settings=SETTINGS)
    assert "\n" not in str(info.value)


def test_channels_last_strided_inputs_give_the_same_numbers(run) -> None:
    """Images decoded as NHWC and permuted keep NHWC strides; AutoAttack's grad.view once failed on them."""
    model, x, y, expected = run
    strided = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert not strided.is_contiguous()
    assert evaluate_adversarial(model, strided, y, settings=SETTINGS).metrics == expected.metrics
