"""One exception family with user-facing messages; the CLI maps them to exit codes."""
from __future__ import annotations

import sys


class RobustEvalError(Exception):
    """Bad input or an unusable environment: a one-line message, exit code 2."""

    exit_code = 2


class GateFailed(RobustEvalError):
    """The gate found a budget exceeded: exit code 1."""

    exit_code = 1


def expected(what: str, got: object) -> str:
    """Format 'expected X, got Y' consistently."""
    return f"expected {what}, got {got!r}"


def describe(exc: BaseException) -> str:
    """'<Type>: <first line>' of an exception; for TorchScript errors, the Python error they end with."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if lines and lines[0].startswith("The following operation failed in the TorchScript interpreter"):
        return lines[-1][:200]
    return f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"


def warn(message: str) -> None:
    """A one-line warning on stderr: the run goes on, the user should know."""
    print(f"robusteval: warning: {message}", file=sys.stderr, flush=True)
