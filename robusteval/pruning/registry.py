"""The registry of pruning methods, one entry per name users type.

Each method registers itself where it is defined (``unstructured.py``, ``synflow.py``,
``structured.py``, ``coreset.py``, ``fisher.py``); importing :mod:`robusteval.pruning` imports them
all, so the registry is full whenever settings are validated. This module imports nothing of the package.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from robusteval.registry import Registry

if TYPE_CHECKING:
    from robusteval.pruning.importance import PruningMethod

PRUNING_METHODS: Registry[PruningMethod] = Registry("pruning method")
