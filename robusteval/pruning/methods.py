"""The built-in pruning methods: importing this module registers every one of them.

Each method registers itself in :data:`PRUNING_METHODS` (``registry.py``) where it is defined.
"""
from __future__ import annotations

from robusteval.pruning import coreset, fisher, structured, synflow, unstructured
from robusteval.pruning.registry import PRUNING_METHODS

__all__ = ["PRUNING_METHODS", "coreset", "fisher", "structured", "synflow", "unstructured"]
