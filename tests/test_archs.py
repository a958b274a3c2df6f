"""Architecture registry: published parameter counts, output shapes, torchvision and file factories."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from robusteval.errors import RobustEvalError
from robusteval.models.archs import ARCHS, build_arch
from robusteval.models.cifar import LeNet300100, _PadShortcut


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _two_digits(count: int) -> str:
    """A parameter count in millions, rounded to 2 significant digits as papers print it."""
    return f"{float(f'{count / 1e6:.2g}'):g}M"


# He et al. (2016), "Deep Residual Learning for Image Recognition", Table 6 (CIFAR-10, option A).
HE_2016_PARAMS = {20: "0.27M", 32: "0.46M", 44: "0.66M", 56: "0.85M", 110: "1.7M"}


@pytest.mark.parametrize("depth", sorted(HE_2016_PARAMS))
def test_cifar_resnet_parameter_counts_match_he_2016(depth: int) -> None:
    assert _two_digits(_params(build_arch(f"cifar_resnet{depth}", 10))) == HE_2016_PARAMS[depth]


@pytest.mark.parametrize("depth", sorted(HE_2016_PARAMS))
def test_option_b_adds_exactly_the_two_projections(depth: int) -> None:
    # 1x1 convolutions 16→32 and 32→64 plus their BatchNorm scale and shift; option A has no parameters there
    projections = 16 * 32 + 32 * 64 + 2 * (32 + 64)
    extra = _params(build_arch(f"cifar_resnet{depth}_b", 10)) - _params(build_arch(f"cifar_resnet{depth}", 10))
    assert extra == projections == 2752


def test_option_a_shortcut_subsamples_and_zero_pads() -> None:
    x = torch.rand(2, 16, 8, 8)
    out = _PadShortcut(16, 2)(x)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2], atol=0, rtol=0)
    assert not out[:, :8].any() and not out[:, 24:].any()


def test_wide_resnet_parameter_counts_match_zagoruyko_2016() -> None:
    """Zagoruyko & Komodakis (2016), "Wide Residual Networks": WRN-16-4 has 2.7M, WRN-28-10 36.5M parameters."""
    assert f"{_params(build_arch('wrn16_4', 10)) / 1e6:.1f}M" == "2.7M"
    assert f"{_params(build_arch('wrn28_10', 10)) / 1e6:.1f}M" == "36.5M"


def test_lenet_300_100_closed_form() -> None:
    # on MNIST (LeCun et al. 1998): 784·300+300 + 300·100+100 + 100·10+10 = 266,610 (Han et al. 2015: "267K")
    assert _params(LeNet300100(10, in_features=784)) == 266_610
    assert _params(build_arch("lenet_300_100", 10)) == 3072 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10


@pytest.mark.parametrize("name", ARCHS.names())
def test_every_registered_arch_outputs_one_logit_per_class(name: str) -> None:
    model = build_arch(name, 7).eval()
    with torch.inference_mode():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_torchvision_arch() -> None:
    model = build_arch("torchvision:resnet18", 5).eval()
    assert isinstance(model, nn.Module) and model.fc.out_features == 5
    with torch.inference_mode():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize(("name", "suggestion"), [("resnet181", "resnet18"), ("vitb16", "vit_b_16")])
def test_unknown_torchvision_arch_suggests(name: str, suggestion: str) -> None:
    with pytest.raises(RobustEvalError, match=f"unknown torchvision model '{name}' \\(did you mean '{suggestion}'"):
        build_arch(f"torchvision:{name}", 10)


def test_unknown_arch_suggests() -> None:
    with pytest.raises(RobustEvalError, match="architecture 'cifar_resnet_56' \\(did you mean 'cifar_resnet56'"):
        build_arch("cifar_resnet_56", 10)


FACTORIES = '''
from torch import nn

def with_classes(num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))

def with_kwargs(**kwargs):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, kwargs["num_classes"]))

def fixed():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))

def not_a_module(num_classes=10):
    return {"weights": None}

def raises(num_classes=10):
    raise ValueError("bad width")

def raises_type_error(num_classes=10):
    return nn.Linear("three", num_classes)

NOT_CALLABLE = 3
'''


@pytest.fixture
def arch_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_models.py"
    path.write_text(FACTORIES)
    return path


@pytest.mark.parametrize(("factory", "classes"), [("with_classes", 6), ("with_kwargs", 6), ("fixed", 4)])
def test_file_factory(factory: str, classes: int, arch_file: Path) -> None:
    model = build_arch(f"{arch_file}:{factory}", 6)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, classes)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        ("missing", "has no callable 'missing'"),
        ("NOT_CALLABLE", "has no callable 'NOT_CALLABLE'"),
        ("not_a_module", "returned dict, expected a torch.nn.Module"),
        ("raises", "raises failed: ValueError: bad width"),
        ("raises_type_error", "raises_type_error failed: TypeError"),  # not retried without num_classes
    ],
)
def test_file_factory_errors(factory: str, match: str, arch_file: Path) -> None:
    with pytest.raises(RobustEvalError, match=match) as exc:
        build_arch(f"{arch_file}:{factory}", 10)
    assert "\n" not in str(exc.value)


def test_file_factory_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(RobustEvalError, match="does not exist"):
        build_arch(f"{tmp_path / 'nope.py'}:make", 10)
    broken = tmp_path / "broken.py"
    broken.write_text("import not_a_real_module_xyz\n")
    with pytest.raises(RobustEvalError, match="importing .*broken.py failed: ModuleNotFoundError"):
        build_arch(f"{broken}:make", 10)
