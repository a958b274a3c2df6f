"""Value checks shared by every settings class: each returns the value or raises a one-line error.

``name`` is the setting as the user knows it (``"calibration bins"``, ``"adversarial.seed"``).
Messages read ``"<name>: expected <what>, got <value>"``; with ``must_be=True`` they read
``"<name> must be <reason>, got <value>"`` instead, the form of the run configuration's and the
pruning settings' own keys. A bool is never a number here, although Python counts it as an int.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from robusteval.errors import RobustEvalError

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
"""The corruption severities of Hendrycks & Dietterich (2019)."""


def _fail(name: str, value: object, what: str, reason: str = "", must_be: bool = False) -> RobustEvalError:
    """The error for ``value``: ``what`` is the full requirement, ``reason`` the part it misses."""
    return RobustEvalError(f"{name} must be {reason}, got {value!r}" if must_be
                           else f"{name}: expected {what}, got {value!r}")


def is_int(value: object) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """An int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(name: str, value: Any, *, minimum: int, optional: bool = False, must_be: bool = False) -> Any:
    """``value`` if it is an integer >= ``minimum`` (or None when ``optional``)."""
    if value is None and optional:
        return None
    if is_int(value) and value >= minimum:
        return value
    what = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
    reason = {0: "non-negative", 1: "positive"}.get(minimum, f">= {minimum}") if is_int(value) else what
    raise _fail(name, value, what, reason, must_be)


def positive_int(name: str, value: Any, *, optional: bool = False, must_be: bool = False) -> Any:
    """``value`` if it is an integer >= 1 (or None when ``optional``)."""
    return integer(name, value, minimum=1, optional=optional, must_be=must_be)


def non_negative_int(name: str, value: Any, *, must_be: bool = False) -> Any:
    """``value`` if it is an integer >= 0."""
    return integer(name, value, minimum=0, must_be=must_be)


def positive_number(name: str, value: Any, *, allow_zero: bool = False, must_be: bool = False) -> Any:
    """``value`` if it is a number > 0 (>= 0 with ``allow_zero``); NaN never is."""
    if is_number(value) and (value >= 0 if allow_zero else value > 0):
        return value
    sign = "non-negative" if allow_zero else "positive"
    raise _fail(name, value, f"a {sign} number", sign if is_number(value) else "a number", must_be)


def fraction(name: str, value: Any, *, what: str = "a fraction", include_low: bool = False,
             include_high: bool = False, optional: bool = False, must_be: bool = False) -> Any:
    """``float(value)`` if it is a finite number in the interval from 0 to 1 (ends as asked), or None
    when ``optional``; ``what`` names it in messages (``"... expected <what> in (0, 1)"``)."""
    if value is None and optional:
        return None
    interval = f"{'[' if include_low else '('}0, 1{']' if include_high else ')'}"
    finite = is_number(value) and math.isfinite(value)
    if finite and (0 <= value if include_low else 0 < value) and (value <= 1 if include_high else value < 1):
        return float(value)
    if not must_be:
        raise _fail(name, value, f"{what} in {interval}{' or None' if optional else ''}")
    if finite:
        raise RobustEvalError(f"{name} must lie in {interval} ({what}), got {value!r}")
    raise RobustEvalError(f"{name} must be a number in {interval}, got {value!r}")


def severity(name: str, value: Any) -> int:
    """``value`` if it is a corruption severity (an integer from 1 to 5)."""
    if is_int(value) and value in SEVERITIES:
        return value
    raise _fail(name, value, "a severity in 1..5")


def severities(name: str, values: Iterable[Any]) -> tuple[int, ...]:
    """``values`` as a tuple if it is a non-empty list of severities (the "must be" form)."""
    values = tuple(values)
    if not values or not all(is_int(v) and v in SEVERITIES for v in values):
        raise RobustEvalError(f"{name} must be a non-empty list from 1 to 5, got {list(values)}")
    return values
