"""Name → factory registries with "did you mean" suggestions on unknown names."""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from robusteval.errors import RobustEvalError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to factories whose lookups fail with helpful messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise RobustEvalError(unknown_name_message(self.kind, name, self._items)) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def unknown_name_message(kind: str, name: str, known: object, *, show_known: bool = True) -> str:
    """'unknown <kind> 'x' (did you mean 'y'?); known: a, b, c' (the list left out for huge registries)."""
    names = sorted(known)  # type: ignore[call-overload]
    lowered = {n.lower(): n for n in names}  # case-insensitive, so 'IMAGENET1K_V9' finds 'IMAGENET1K_V1'
    close = [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=5, cutoff=0.6)]
    close.sort(key=lambda candidate: _edit_distance(name.lower(), candidate.lower()))
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listing = f"known: {', '.join(names)}" if show_known else f"{len(names)} known"
    return f"unknown {kind} {name!r}{hint}; {listing}"


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, to rank difflib's candidates (its ratio ties on one-letter typos)."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]
