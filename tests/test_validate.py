"""The shared value checks: bool is never a number, both message forms, optional values."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from robusteval import validate
from robusteval.errors import RobustEvalError


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (lambda: validate.positive_int("bins", 0), "bins: expected a positive integer, got 0"),
        (lambda: validate.positive_int("bins", True), "bins: expected a positive integer, got True"),
        (lambda: validate.positive_int("subset", -1, must_be=True), "subset must be positive, got -1"),
        (lambda: validate.positive_int("subset", 2.0, must_be=True), "subset must be a positive integer, got 2.0"),
        (lambda: validate.non_negative_int("seed", False), "seed: expected a non-negative integer, got False"),
        (lambda: validate.integer("points", 1, minimum=2), "points: expected an integer >= 2, got 1"),
        (lambda: validate.positive_number("lr", True, must_be=True), "lr must be a number, got True"),
        (lambda: validate.positive_number("lr", math.nan), "lr: expected a positive number, got nan"),
        (lambda: validate.positive_number("wd", -1, allow_zero=True, must_be=True), "wd must be non-negative, got -1"),
        (lambda: validate.fraction("split", 1.0), "split: expected a fraction in (0, 1), got 1.0"),
        (lambda: validate.fraction("eps", 0, include_high=True, optional=True, what="an epsilon"),
         "eps: expected an epsilon in (0, 1] or None, got 0"),
        (lambda: validate.fraction("ratio", 1, include_low=True, must_be=True, what="removed"),
         "ratio must lie in [0, 1) (removed), got 1"),
        (lambda: validate.fraction("ratio", math.inf, include_low=True, must_be=True),
         "ratio must be a number in [0, 1), got inf"),
        (lambda: validate.severity("fog", True), "fog: expected a severity in 1..5, got True"),
        (lambda: validate.severities("severities", ()), "severities must be a non-empty list from 1 to 5, got []"),
        (lambda: validate.severities("severities", (1, 6)), "severities must be a non-empty list from 1 to 5, got [1, 6]"),
    ],
)
def test_bad_values_are_one_line_errors(check: Callable[[], Any], message: str) -> None:
    with pytest.raises(RobustEvalError) as err:
        check()
    assert str(err.value) == message


def test_good_values_come_back() -> None:
    assert validate.positive_int("n", 3) == 3 and validate.positive_int("n", None, optional=True) is None
    assert validate.non_negative_int("seed", 0) == 0 and validate.positive_number("wd", 0, allow_zero=True) == 0
    assert validate.fraction("r", 0, include_low=True) == 0.0 and validate.fraction("e", 1, include_high=True) == 1.0
    assert validate.fraction("e", None, optional=True) is None
    assert validate.severity("fog", 5) == 5 and validate.severities("s", [1, 3]) == (1, 3)
