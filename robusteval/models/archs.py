"""Architecture registry: built-in names, ``torchvision:<name>``, ``timm:<name>`` and ``path/to/file.py:factory``."""
from __future__ import annotations

import functools
import importlib.util
import inspect
from collections.abc import Callable
from pathlib import Path

from torch import nn

from robusteval.errors import RobustEvalError
from robusteval.models.cifar import CifarResNet, CifarVGG, LeNet300100, WideResNet
from robusteval.registry import Registry, unknown_name_message

ArchFactory = Callable[[int], nn.Module]
"""Builds an untrained model for ``num_classes`` classes."""

ARCHS: Registry[ArchFactory] = Registry("architecture")
for _depth in (20, 32, 44, 56, 110):
    ARCHS.add(f"cifar_resnet{_depth}", functools.partial(lambda c, d: CifarResNet(d, c, "A"), d=_depth))
    ARCHS.add(f"cifar_resnet{_depth}_b", functools.partial(lambda c, d: CifarResNet(d, c, "B"), d=_depth))
ARCHS.add("cifar_vgg11", lambda c: CifarVGG(11, c))
ARCHS.add("cifar_vgg16", lambda c: CifarVGG(16, c))
ARCHS.add("wrn16_4", lambda c: WideResNet(16, 4, c))
ARCHS.add("wrn28_10", lambda c: WideResNet(28, 10, c))
ARCHS.add("lenet_300_100", lambda c: LeNet300100(c))


def build_arch(spec: str, num_classes: int) -> nn.Module:
    """Build the architecture named by ``spec`` with ``num_classes`` outputs."""
    if spec.startswith("torchvision:"):
        return _torchvision_arch(spec.split(":", 1)[1], num_classes)
    if spec.startswith("timm:"):
        return _timm_arch(spec.split(":", 1)[1], num_classes)
    if ".py:" in spec:
        return _file_arch(spec, num_classes)
    return ARCHS.get(spec)(num_classes)


def _torchvision_arch(name: str, num_classes: int) -> nn.Module:
    import torchvision.models as tvm

    if ":" in name:
        raise RobustEvalError(f"--arch torchvision:{name}: pretrained torchvision weights are a model, not an "
                              f"architecture; give torchvision:{name} in place of the model file")
    names = tvm.list_models(module=tvm)
    if name not in names:
        raise RobustEvalError(unknown_name_message("torchvision model", name, names))
    return tvm.get_model(name, weights=None, num_classes=num_classes)


def _timm_arch(name: str, num_classes: int) -> nn.Module:
    """An untrained timm model (the weights come from the model file); timm is an optional extra."""
    try:
        import timm
    except ImportError:
        raise RobustEvalError(f"--arch timm:{name} needs timm: pip install 'robusteval[timm]'") from None
    if not timm.is_model(name):
        raise RobustEvalError(unknown_name_message("timm model", name, timm.list_models(), show_known=False))
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


def _file_arch(spec: str, num_classes: int) -> nn.Module:
    path_str, factory_name = spec.rsplit(":", 1)
    path = Path(path_str)
    if not path.is_file():
        raise RobustEvalError(f"architecture file {path} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"robusteval_user_arch_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise RobustEvalError(f"cannot import architecture file {path}")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # user code: report any failure in one line
        raise RobustEvalError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise RobustEvalError(f"{path} has no callable {factory_name!r}")
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # some builtins have no signature
        params = []
    takes_classes = any(p.name == "num_classes" or p.kind is p.VAR_KEYWORD for p in params)
    try:
        model = factory(num_classes=num_classes) if takes_classes else factory()
    except Exception as exc:  # user code: report any failure in one line
        text = str(exc).strip().splitlines()
        raise RobustEvalError(f"{spec} failed: {type(exc).__name__}: {text[0] if text else ''}") from exc
    if not isinstance(model, nn.Module):
        raise RobustEvalError(f"{spec} returned {type(model).__name__}, expected a torch.nn.Module")
    return model
