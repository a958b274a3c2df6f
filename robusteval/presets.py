"""Presets: the YAML files of the top-level ``configs/``, found by name wherever robusteval is installed.

``configs/`` is the one source. A build (wheel or sdist, ``setup.py``) copies every ``configs/*.yaml``
into the package as ``robusteval/configs/``; a source checkout or an editable install reads
``configs/`` itself. A preset is named by its file stem (``quick`` → ``quick.yaml``).
"""
from __future__ import annotations

from pathlib import Path

from robusteval.errors import RobustEvalError

_PACKAGE = Path(__file__).resolve().parent
#: where an install keeps the presets (``setup.py`` copies ``configs/*.yaml`` there)
PACKAGED_DIR = _PACKAGE / "configs"
#: where a source checkout keeps them
SOURCE_DIR = _PACKAGE.parent / "configs"


def preset_dir() -> Path:
    """The folder of the presets: the packaged copy of an install, else the checkout's ``configs/``."""
    return PACKAGED_DIR if PACKAGED_DIR.is_dir() else SOURCE_DIR


def preset_names() -> list[str]:
    """The names of every preset, sorted."""
    folder = preset_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def describe(path: Path) -> str:
    """A preset's description: the first sentence of the comment block it starts with, else ''."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    text = " ".join(part for part in header if part)
    end = text.find(". ")
    return text if end < 0 else text[:end + 1]


def presets() -> list[tuple[str, Path, str]]:
    """(name, path, description) of every preset, sorted by name."""
    folder = preset_dir()
    return [(name, folder / f"{name}.yaml", describe(folder / f"{name}.yaml")) for name in preset_names()]


def resolve(name_or_path: str | Path, what: str) -> Path:
    """The file a ``--config``/``--gate`` value means: an existing path as given, else a preset name
    (a bare word without a suffix); neither is a one-line error listing the presets."""
    path = Path(name_or_path)
    if path.exists():
        return path
    preset = preset_dir() / f"{name_or_path}.yaml"
    if not path.suffix and path.name == str(name_or_path) and preset.is_file():
        return preset
    names = ", ".join(preset_names()) or "none found"
    raise RobustEvalError(f"{what} {path} does not exist (give a path, or a preset name: {names})")


def listing() -> str:
    """The presets as ``robusteval presets`` prints them: where they are, then one line per preset."""
    rows = presets()
    width = max((len(name) for name, _, _ in rows), default=0)
    head = f"presets in {preset_dir()} (give the name to --config, or to --gate for gate rules):"
    return "\n".join([head, *(f"  {name:<{width}}  {text}".rstrip() for name, _, text in rows)])
