"""robusteval: what does pruning cost beyond test accuracy?

``audit`` prunes a model into a family and evaluates every member; ``prune`` builds the family
only; ``load_config`` reads a YAML preset. See README.md.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["AuditConfig", "audit", "load_config", "prune"]


def __getattr__(name: str) -> Any:
    """Import the heavy API (torch, foolbox, …) only when it is used."""
    if name in ("audit", "prune"):
        from robusteval import audit as module

        return getattr(module, name)
    if name in ("AuditConfig", "load_config"):
        from robusteval import config

        return getattr(config, name)
    raise AttributeError(f"module 'robusteval' has no attribute {name!r}")
