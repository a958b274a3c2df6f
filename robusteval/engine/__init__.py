"""The audit engine: plans (model × condition × shard), records, and hands the work to an executor.

``core``: planning, shards, records, the attack stage and :class:`LocalExecutor`; ``executor``: the
:class:`Executor` protocol and its settings (:class:`EngineConfig`); ``ray``: the executor on Ray
workers; ``store``: the names of every file the engine writes in the run directory. The names
below are imported when first used, so the executor settings load without torch or Ray.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["EngineConfig", "EngineSettings", "Executor", "Job", "LocalExecutor", "ModelEntry", "attack_model",
           "compute_shards", "run_attacks", "run_conditions", "transfer_conditions"]
_LAZY = {"EngineConfig": "executor", "Executor": "executor"} | dict.fromkeys(
    ["EngineSettings", "Job", "LocalExecutor", "ModelEntry", "attack_model", "compute_shards", "run_attacks",
     "run_conditions", "transfer_conditions"], "core")


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'robusteval.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f"robusteval.engine.{_LAZY[name]}"), name)
