"""Build step: ship every top-level ``configs/*.yaml`` as package data ``robusteval/configs/``.

``configs/`` stays the one source of the presets (``robusteval.presets`` reads it in a checkout);
wheels, and the sdist's wheels, get a copy made here at build time. Metadata lives in pyproject.toml.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PRESETS = Path(__file__).resolve().parent / "configs"


class BuildWithPresets(build_py):
    """build_py, then copy the presets into the built package, replacing what an earlier build left
    (not for editable installs: they read ``configs/`` in place)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib, "robusteval", "configs")
        shutil.rmtree(target, ignore_errors=True)  # a preset removed from configs/ must not linger in build/
        self.mkpath(str(target))
        for preset in sorted(PRESETS.glob("*.yaml")):
            self.copy_file(str(preset), str(target / preset.name))


setup(cmdclass={"build_py": BuildWithPresets})
