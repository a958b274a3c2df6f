"""File primitives at the bottom of the package: atomic writes and reading a YAML file.

Imports nothing from robusteval except :mod:`robusteval.errors`, so every layer can use it.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import yaml

from robusteval.errors import RobustEvalError


def write_atomic(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Let ``write`` fill a temporary file next to ``path``, fsync it and rename it over ``path``;
    on any failure the temporary file is removed and ``path`` is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=True) + "\n")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, also reading ``1e9`` and ``1.0e9`` as floats: YAML 1.1 (PyYAML's
    resolver) makes them strings, YAML 1.2 and every other tool read numbers."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
                              list("-+0123456789."))


def read_yaml_file(path: Path, what: str) -> Any:
    """The parsed YAML of a text file; unreadable, binary or malformed files are one-line errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RobustEvalError(f"{what} {path} is not UTF-8 text (byte {exc.start}): expected a YAML file") from None
    except OSError as exc:
        raise RobustEvalError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RobustEvalError(f"{what} {path} is not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise RobustEvalError(f"{what} {path} is nested too deeply to be a {what}") from None
