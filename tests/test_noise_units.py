"""The noise ε-ball follows Liebenwein et al. (MLSys 2021) in its units: checked against a port of
``generate_noisy_images`` from torchprune's ``paper/lost/script/eps_ball.py``, which adds the noise to
the normalised network input (CIFAR: mean (0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.2010)), unclipped."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from robusteval.conditions import build_conditions
from robusteval.api import audit
from robusteval.config import AuditConfig, config_from_dict
from robusteval.data.arrays import LabeledArrays
from robusteval.data.corruptions import DEFAULT_NOISE_EPS, condition_seed, uniform_noise
from robusteval.evaluators.settings import EvaluateSettings, NoiseSettings
from robusteval.metrics import noise_condition
from robusteval.models.bundled import BUNDLED_ARCH, BUNDLED_MODEL
from robusteval.models.wrap import Normalized
from robusteval.report import write_report

MEAN_C = (0.4914, 0.4822, 0.4465)  # eps_ball.py's CIFAR normalisation
STD_C = (0.2023, 0.1994, 0.2010)


def generate_noisy_images(eps: float, imgs: torch.Tensor, num_samples: int, noise_type: str) -> torch.Tensor:
    """Literal port of ``eps_ball.py``'s function of that name (its uniform branch)."""
    noise_shape = (num_samples,) + imgs.shape
    if noise_type == "uniform":
        noise = torch.rand(noise_shape, device=imgs.device)
    else:
        raise ValueError("Please specify valid noise type")
    return imgs + 2 * eps * (noise - 0.5)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN_C).view(1, 3, 1, 1)) / torch.tensor(STD_C).view(1, 3, 1, 1)


def _images(n: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.3, 0.5, 0.7])
def test_noise_is_eps_ball_on_the_normalised_input(eps: float) -> None:
    x, seed = _images(), 1234
    torch.manual_seed(seed)  # the port draws from the global generator, robusteval from one seeded alike
    reference = generate_noisy_images(eps, _normalise(x), 1, "uniform")[0]
    ours = _normalise(uniform_noise(x, eps, seed=seed, std=STD_C))
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_noise_condition_feeds_the_wrapped_model_what_eps_ball_feeds_it() -> None:
    """Through build_conditions with the model's --std and the Normalized wrapper: the same logits."""
    x = _images(20)
    data = LabeledArrays(x.numpy().astype(np.float32), np.arange(20) % 10, tuple(map(str, range(10))), "t")
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)).eval()
    wrapped = Normalized(net, MEAN_C, STD_C).eval()
    ev = EvaluateSettings(clean=False, agreement=False, calibration=None, noise=NoiseSettings(eps=(0.7,), subset=None))
    (cond,) = build_conditions(ev, data, seed=0, model_std=STD_C)[1:]
    key = noise_condition(0.7)
    torch.manual_seed(condition_seed(key, 0, 0, 0))
    reference = generate_noisy_images(0.7, _normalise(x), 1, "uniform")[0]
    with torch.no_grad():
        torch.testing.assert_close(wrapped(cond.inputs(0, 20, 0)), net(reference), atol=1e-4, rtol=0)
    assert "0.2023, 0.1994, 0.201" in cond.note and "the model's --std" in cond.meta["units"]


def test_a_model_without_std_gets_the_data_std() -> None:
    x = _images(10) * 0.5
    data = LabeledArrays(x.numpy().astype(np.float32), np.arange(10) % 10, tuple(map(str, range(10))), "t")
    std = tuple(float(v) for v in x.transpose(0, 1).flatten(1).double().std(1, unbiased=False))
    assert data.channel_std(chunk=3) == pytest.approx(std, abs=1e-6)
    ev = EvaluateSettings(clean=False, agreement=False, calibration=None, noise=NoiseSettings(eps=(0.3,), subset=None))
    (cond,) = build_conditions(ev, data, seed=0)[1:]
    assert "the data's" in cond.meta["units"]
    torch.manual_seed(condition_seed(noise_condition(0.3), 0, 0, 0))
    expected = x + 2 * 0.3 * torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * (torch.rand(x.shape) - 0.5)
    torch.testing.assert_close(cond.inputs(0, 10, 0), expected, atol=1e-6, rtol=0)


def test_default_grid_is_the_papers() -> None:
    """EPS_VALUES = np.linspace(0, EPS_MAX=0.7, NUM_EPS=15) in eps_ball.py."""
    assert DEFAULT_NOISE_EPS == pytest.approx(tuple(np.linspace(0, 0.7, 15)))
    assert AuditConfig().evaluate.noise is None or AuditConfig().evaluate.noise.eps == DEFAULT_NOISE_EPS


def test_summary_states_the_units(tmp_path) -> None:
    config = config_from_dict({"model": {"arch": BUNDLED_ARCH}, "data": {"source": "bundled", "subset": 40,
                                                                          "batch_size": 40},
                               "pruning": {"methods": ["magnitude"], "ratios": [0.5], "finetune": {"epochs": 0},
                                           "measure_latency": False},
                               "evaluate": {"calibration": None, "agreement": False,
                                            "noise": {"eps": [0.0, 0.5], "subset": 20}}}, where="test")
    audit(BUNDLED_MODEL, config=config, out=tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["noise_units"].startswith("ε in units of the normalised input")
    assert "the data's" in summary["noise_units"]
    html = write_report(tmp_path / "run").read_text()
    assert "Noise: x + 2ε·std·(U − ½), unclipped: ε in units of the normalised input" in html
