"""Analysis: direction rule, prune potential on a hand-made known answer, tolerances, bootstrap CIs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from robusteval.analysis import (
    analyse,
    analyse_run,
    bootstrap_mean_ci,
    format_verdict_table,
    prune_potential,
    tolerance_for,
    verdict_lines,
)
from robusteval.declarations import BUILTIN
from robusteval.errors import RobustEvalError
from robusteval.results import encode_bits

KNOWN = Path(__file__).parent / "fixtures" / "known_answer"

# (metric, method) → (prune potential, first ratio out of tolerance), worked out by hand from
# tests/fixtures/known_answer/summary.json with δ = 0.005 (dense: acc 0.920, ece 0.030, corr 0.700).
EXPECTED = {
    ("clean/accuracy", "magnitude"): (0.8, 0.9),  # drops -0.001, 0.002, 0.004, 0.015
    ("clean/accuracy", "synflow"): (0.5, 0.7),  # non-monotone: 0.001, 0.010 (out), 0.003, 0.004
    ("clean/accuracy", "random"): (0.0, 0.5),  # out at the smallest ratio
    ("calibration/ece", "magnitude"): (0.7, 0.8),  # lower is better: +0.001, +0.004, +0.006
    ("calibration/ece", "synflow"): (0.9, None),  # improves, then +0.004
    ("calibration/ece", "random"): (0.9, None),  # not evaluated at 0.7: skipped
    ("corruption/mean_accuracy", "magnitude"): (0.5, 0.7),
    ("corruption/mean_accuracy", "synflow"): (0.9, None),
    ("corruption/mean_accuracy", "random"): (0.7, 0.8),  # NaN at 0.8 is out of tolerance
}


@pytest.fixture(scope="module")
def known():
    return analyse_run(KNOWN)


@pytest.mark.parametrize("key", ["clean/error", "corruption/fog/relative_ce", "calibration/ece",
                                 "calibration/corruption/fog/3/ece", "corruption/mce",
                                 "corruption/fog/ce", "clean/loss", "ood/svhn/fpr95_energy", "agreement/kl",
                                 "agreement/dense_correct_pruned_wrong", "calibration/nll", "calibration/brier"])
def test_error_like_metrics_are_lower_is_better(key):
    assert BUILTIN.lower_is_better(key)


@pytest.mark.parametrize("key", ["clean/accuracy", "ood/svhn/auroc_msp", "agreement/top1",
                                 "adversarial/min_norm/l2/median", "noise/0.05/accuracy"])
def test_accuracy_like_metrics_are_higher_is_better(key):
    assert not BUILTIN.lower_is_better(key)


@pytest.mark.parametrize(("metric", "method"), sorted(EXPECTED))
def test_prune_potential_matches_hand_computed_answer(known, metric, method):
    curve = known.curves[metric][method]
    assert (curve.prune_potential, curve.first_out) == EXPECTED[(metric, method)]


def test_prune_potential_stops_at_the_first_failure_of_a_non_monotone_curve():
    assert prune_potential([(0.9, True), (0.5, True), (0.7, False)]) == (0.5, 0.7)
    assert prune_potential([(0.5, True), (0.9, True)]) == (0.9, None)


def test_drop_exactly_at_tolerance_is_within():
    summary = {"dense": "d", "models": [{"id": "d", "method": "dense", "target_ratio": 0.0,
                                         "metrics": {"clean/accuracy": 0.92}},
                                        {"id": "p", "method": "m", "target_ratio": 0.5,
                                         "metrics": {"clean/accuracy": 0.915}}]}
    assert analyse(summary).curves["clean/accuracy"]["m"].prune_potential == 0.5


def test_per_metric_tolerances_by_key_prefix_and_glob():
    tols = {"calibration/": 0.01, "calibration/ece": 0.002, "ood/*/fpr95_*": 0.05, "ood": 0.03}
    assert tolerance_for("calibration/ece", tolerances=tols) == 0.002  # exact key wins
    assert tolerance_for("calibration/nll", tolerances=tols) == 0.01  # prefix
    assert tolerance_for("ood/svhn/fpr95_msp", tolerances=tols) == 0.05  # longest match: the glob
    assert tolerance_for("ood/svhn/auroc_msp", tolerances=tols) == 0.03
    assert tolerance_for("clean/accuracy", default=0.01, tolerances=tols) == 0.01
    # a looser ECE tolerance moves magnitude's potential from 70% to 80% (increase 0.006 at 80%, 0.020 at 90%)
    curve = analyse_run(KNOWN, tolerances={"calibration/": 0.01}).curves["calibration/ece"]["magnitude"]
    assert (curve.prune_potential, curve.first_out, curve.tolerance) == (0.8, 0.9, 0.01)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "0.01", True])
def test_bad_tolerances_are_rejected(bad):
    with pytest.raises(RobustEvalError, match="tolerance"):
        analyse_run(KNOWN, tolerances={"clean/accuracy": bad})


def test_summary_without_its_dense_model_is_rejected():
    with pytest.raises(RobustEvalError, match="dense model 'x'"):
        analyse({"dense": "x", "models": [{"id": "y", "metrics": {}}]})


def test_verdict_names_the_most_fragile_family(known):
    lines = verdict_lines(known)
    assert lines[0] == ("magnitude keeps clean accuracy up to 80% but corruption accuracy leaves tolerance at 70% "
                        "(1.0 points lower).")
    assert lines[2].startswith("random: clean accuracy leaves tolerance at 50%")
    table = format_verdict_table(known)
    row = next(line for line in table.splitlines() if line.startswith("magnitude"))
    assert row.split()[2:] == ["80%", "50%", "70%"]  # clean, corruption, calibration (family order)


def test_to_json_is_strict_json(known):
    data = json.loads(json.dumps(known.to_json(), allow_nan=False))
    assert data["prune_potential"]["synflow"] == {"clean": 0.5, "corruption": 0.9, "calibration": 0.9}
    nan_point = data["metrics"]["corruption/mean_accuracy"]["methods"]["random"]["points"][2]
    assert nan_point["value"] is None and nan_point["within_tolerance"] is False


def _run(dense: np.ndarray, pruned: dict[str, np.ndarray], extra_dense: dict | None = None):
    """A summary and paired clean records for one dense and several pruned models."""
    models = {"dense": dense, **pruned}
    summary = {"dense": "dense", "models": [
        {"id": mid, "method": "dense" if mid == "dense" else mid.split("@")[0],
         "target_ratio": 0.0 if mid == "dense" else float(mid.split("@")[1]),
         "metrics": {"clean/accuracy": float(c.mean()), **((extra_dense or {}) if mid == "dense" else {})}}
        for mid, c in models.items()]}
    records = [{"model": mid, "condition": "clean", "n": len(c), "correct": encode_bits(c),
                "metrics": {"clean/accuracy": float(c.mean())}} for mid, c in models.items()]
    return summary, records


def test_bootstrap_ci_contains_true_drop_and_flags_noise():
    rng = np.random.default_rng(1)
    dense = rng.random(2000) < 0.9
    right = np.flatnonzero(dense)
    wrong = np.flatnonzero(~dense)
    lossy = dense.copy()
    lossy[right[:100]] = False  # loses exactly 100 of 2000: a true drop of 0.05
    swapped = dense.copy()
    swapped[right[:15]] = False  # 15 lost, 15 gained: no drop
    swapped[wrong[:15]] = True
    summary, records = _run(dense, {"a@0.5": lossy, "b@0.5": swapped})
    analysis = analyse(summary, records)
    lossy_point = analysis.curves["clean/accuracy"]["a"].points[0]
    lo, hi = lossy_point.ci
    assert lo <= 0.05 <= hi and lo > 0.03 and lossy_point.within_noise is False
    assert analysis.curves["clean/accuracy"]["b"].points[0].within_noise is True


def test_bootstrap_agrees_with_scipy_paired_bootstrap():
    rng = np.random.default_rng(2)
    dense = rng.random(600) < 0.85
    pruned = dense & (rng.random(600) < 0.93) | (~dense & (rng.random(600) < 0.1))
    ours = bootstrap_mean_ci(dense.astype(float) - pruned, n_resamples=4000, seed=3)
    ref = stats.bootstrap((dense.astype(float), pruned.astype(float)), lambda a, b, axis: np.mean(a - b, axis=axis),
                          paired=True, method="percentile", n_resamples=4000, random_state=3).confidence_interval
    assert ours == pytest.approx((ref.low, ref.high), abs=0.004)


def test_bootstrap_interval_covers_the_true_drop_about_95_percent_of_the_time():
    # per-sample differences with P(+1)=0.05, P(-1)=0.02: the true mean drop is 0.03
    rng = np.random.default_rng(4)
    hits = 0
    for seed in range(200):
        d = rng.choice([1.0, -1.0, 0.0], size=1500, p=[0.05, 0.02, 0.93])
        lo, hi = bootstrap_mean_ci(d, n_resamples=1000, seed=seed)
        hits += lo <= 0.03 <= hi
    assert 0.89 <= hits / 200 <= 0.99


def test_excess_error_and_dense_agreement_identity():
    summary = {"dense": "d", "models": [
        {"id": "d", "method": "dense", "target_ratio": 0.0,
         "metrics": {"clean/accuracy": 0.9, "corruption/mean_accuracy": 0.7, "noise/0.1/accuracy": 0.6}},
        {"id": "m@0.5", "method": "m", "target_ratio": 0.5,
         "metrics": {"clean/accuracy": 0.88, "corruption/mean_accuracy": 0.62, "noise/0.1/accuracy": 0.59,
                     "agreement/top1": 0.97}}]}
    analysis = analyse(summary)
    assert analysis.excess["m@0.5"] == pytest.approx({"corruption/mean_accuracy": 0.06, "noise/0.1/accuracy": -0.01,
                                                      "noise/mean_accuracy": -0.01})
    assert analysis.curves["agreement/top1"]["m"].dense == 1.0
    assert analysis.curves["agreement/top1"]["m"].points[0].drop == pytest.approx(0.03)


def test_adversarial_headline_prefers_autoattack_at_the_smallest_epsilon():
    metrics = {"adversarial/linf_pgd/0.0039/accuracy": 0.3, "adversarial/autoattack/0.0314/accuracy": 0.1,
               "adversarial/autoattack/0.0078/accuracy": 0.2, "adversarial/transfer/fgsm/0.0039/accuracy": 0.5}
    summary = {"dense": "d", "models": [{"id": "d", "method": "dense", "target_ratio": 0.0, "metrics": metrics},
                                        {"id": "m@0.5", "method": "m", "target_ratio": 0.5, "metrics": metrics}]}
    assert analyse(summary).families["adversarial"] == "adversarial/autoattack/0.0078/accuracy"
    only_pgd = {k: v for k, v in metrics.items() if "autoattack" not in k}
    summary["models"][0]["metrics"] = only_pgd
    assert analyse(summary).families["adversarial"] == "adversarial/linf_pgd/0.0039/accuracy"
