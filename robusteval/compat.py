"""Make robustbench 1.1.1 importable next to the ``pyautoattack`` package it depends on.

robustbench imports the module ``autoattack`` (``from autoattack import AutoAttack``,
``from autoattack.state import EvaluationState``) while its dependency installs the same
code as ``pyautoattack``. When no real ``autoattack`` module exists, this adapter registers
``pyautoattack`` and its submodules under the old names before robustbench is imported.
robustbench also imports ``pkg_resources``, hence the ``setuptools<81`` requirement.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

from robusteval.errors import RobustEvalError


def autoattack_module() -> ModuleType:
    """The AutoAttack package: ``autoattack`` if installed, else ``pyautoattack`` under that name."""
    if "autoattack" in sys.modules:
        return sys.modules["autoattack"]
    if importlib.util.find_spec("autoattack") is not None:
        return importlib.import_module("autoattack")
    try:
        package = importlib.import_module("pyautoattack")
    except ImportError as exc:
        raise RobustEvalError("AutoAttack is not installed: pip install pyautoattack") from exc
    sys.modules["autoattack"] = package
    sys.meta_path.insert(0, _AliasFinder())
    return package


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``autoattack.X`` to the already importable ``pyautoattack.X`` on first use."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("autoattack."):
            return None
        if importlib.util.find_spec("py" + fullname) is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module("py" + spec.name)
        sys.modules[spec.name] = module
        return module

    def exec_module(self, module: ModuleType) -> None:
        """The real module was executed under its own name already."""


def import_robustbench() -> ModuleType:
    """Import robustbench, aliasing AutoAttack first; a clear error when it cannot load."""
    autoattack_module()
    try:
        return importlib.import_module("robustbench")
    except ImportError as exc:
        hint = " (robustbench needs pkg_resources: pip install 'setuptools<81')" if "pkg_resources" in str(exc) else ""
        raise RobustEvalError(f"cannot import robustbench: {exc}{hint}") from exc
