"""robusteval: what does pruning cost beyond test accuracy?

``audit`` prunes a model into a family and evaluates every member; ``prune`` builds the family
only; ``compare`` compares two run directories (release to release); ``load_config`` reads a YAML
preset. See README.md.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["AuditConfig", "audit", "compare", "demo", "load_config", "prune"]
_LAZY = {"audit": "robusteval.api", "demo": "robusteval.api", "prune": "robusteval.api",
         "compare": "robusteval.report.comparison",
         "AuditConfig": "robusteval.config", "load_config": "robusteval.config"}


def __getattr__(name: str) -> Any:
    """Import the heavy API (torch, foolbox, …) only when it is used."""
    if name not in _LAZY:
        raise AttributeError(f"module 'robusteval' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
