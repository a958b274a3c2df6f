"""The registry of corruptions: each one registers itself where it is defined (``@corruption``).

Importing :mod:`robusteval.data.corruptions` imports every defining module, so the registry is
full whenever a name is looked up. This module imports nothing of the package.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from robusteval.registry import Registry

Apply = Callable[..., Tensor]
"""``apply(batch, severity parameters, generator)``: the corrupted batch."""


@dataclass(frozen=True)
class Corruption:
    """One corruption: ``apply(batch, severity parameters, generator)`` and how it relates to the reference."""

    name: str
    apply: Apply
    random: bool
    note: str


CORRUPTIONS: Registry[Corruption] = Registry("corruption")


def corruption(name: str, *, random: bool, note: str) -> Callable[[Apply], Apply]:
    """Decorator registering the function as corruption ``name``; ``random``: it draws from the generator."""

    def deco(apply: Apply) -> Apply:
        CORRUPTIONS.add(name, Corruption(name, apply, random, note))
        return apply

    return deco
