"""Prune potential with its uncertainty, on fixtures whose answer is known in closed form."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from robusteval.analysis import analyse, format_verdict_table, verdict_lines
from robusteval.results import encode_bits

N = 400
DELTA = 0.05


def _run(dense: np.ndarray, pruned: dict[float, np.ndarray]) -> tuple[dict, list]:
    models = {"dense": (0.0, dense), **{f"m@{r:g}": (r, c) for r, c in pruned.items()}}
    summary = {"dense": "dense", "models": [
        {"id": mid, "method": "dense" if mid == "dense" else "m", "target_ratio": r,
         "metrics": {"clean/accuracy": float(c.mean())}} for mid, (r, c) in models.items()]}
    records = [{"model": mid, "condition": "clean", "n": len(c), "correct": encode_bits(c),
                "metrics": {"clean/accuracy": float(c.mean())}} for mid, (_, c) in models.items()]
    return summary, records


def _losing(k: int) -> np.ndarray:
    """Correct everywhere except the first ``k`` of N samples: a drop of exactly k/N from an all-correct dense."""
    out = np.ones(N, dtype=bool)
    out[:k] = False
    return out


def test_potential_interval_known_answer() -> None:
    """Drops 0, 4%, 6%, 20% at 20..80% with δ = 5%, n = 400: strict potential 40%, range 20%–60%.

    The per-sample differences are k ones among N, so a bootstrap mean is Binomial(N, k/N)/N;
    its 2.5% and 97.5% quantiles (scipy) decide each ratio independently of the bootstrap code.
    """
    losses = {0.2: 0, 0.4: 16, 0.6: 24, 0.8: 80}
    for k in losses.values():  # the closed-form decision the fixture is built on
        low, high = stats.binom.ppf([0.025, 0.975], N, k / N) / N
        assert (k, low <= DELTA, high <= DELTA) in {(0, True, True), (16, True, False), (24, True, False),
                                                    (80, False, False)}
    summary, records = _run(np.ones(N, dtype=bool), {r: _losing(k) for r, k in losses.items()})
    curve = analyse(summary, records, tolerance=DELTA).curves["clean/accuracy"]["m"]
    assert curve.prune_potential == 0.4 and curve.first_out == 0.6
    assert curve.interval == (0.2, 0.6)
    assert curve.dense_halfwidth == 0.0  # an all-correct dense model has no sampling spread
    analysis = analyse(summary, records, tolerance=DELTA)
    assert "40%[20%–60%]" in format_verdict_table(analysis)
    assert "Clean accuracy prune potential 40%[20%–60%]" in verdict_lines(analysis)[0]
    assert analysis.to_json()["metrics"]["clean/accuracy"]["methods"]["m"]["prune_potential_interval"] == [0.2, 0.6]


def test_a_drop_within_noise_keeps_a_positive_upper_potential() -> None:
    """The issue's case: 'out at 20% (within noise)' gives potential 0% but not a certain 0%."""
    rng = np.random.default_rng(0)
    dense = rng.random(N) < 0.9
    pruned = dense.copy()
    pruned[np.flatnonzero(dense)[:4]] = False  # 1 point lower, δ = 0.5 points: out, but within noise
    summary, records = _run(dense, {0.2: pruned})
    curve = analyse(summary, records, tolerance=0.005).curves["clean/accuracy"]["m"]
    assert curve.prune_potential == 0.0 and curve.points[0].within_noise
    assert curve.interval == (0.0, 0.2)


@pytest.mark.parametrize(("n", "accuracy", "tolerance", "resolvable"),
                         [(200, 0.9, 0.005, False), (200, 0.9, 0.1, True)])
def test_verdict_says_when_the_test_set_cannot_resolve_delta(n: int, accuracy: float, tolerance: float,
                                                             resolvable: bool) -> None:
    dense = np.arange(n) < accuracy * n
    summary, records = _run(dense, {0.5: dense.copy()})
    analysis = analyse(summary, records, tolerance=tolerance)
    expected = 1.96 * np.sqrt(accuracy * (1 - accuracy) / n)  # normal approximation of the binomial CI
    assert analysis.curves["clean/accuracy"]["m"].dense_halfwidth == pytest.approx(expected, rel=0.15)
    too_small = [line for line in verdict_lines(analysis) if "too small to resolve" in line]
    assert bool(too_small) is not resolvable
    if too_small:
        assert "δ = 0.5 points on clean accuracy" in too_small[0] and "±4.2 points" in too_small[0]
