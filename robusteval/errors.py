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


def warn(message: str) -> None:
    """A one-line warning on stderr: the run goes on, the user should know."""
    print(f"robusteval: warning: {message}", file=sys.stderr, flush=True)
