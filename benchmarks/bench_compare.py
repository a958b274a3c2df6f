"""The cost of ``robusteval compare`` on two runs of the demo's size, beside one report rebuild.

    python benchmarks/bench_compare.py [--repeats 3]

Writes two run directories shaped like ``robusteval demo``'s (17 models: dense, dense+ft and 3 methods x 5
ratios; the quick preset's conditions and metric keys, about 530 metrics per model; per-sample bits for
2,000 clean images and 100 per corruption and noise condition; reliability bins and ROC curves), the second
with its pruned members worse (as if fine-tuned less), without pruning or evaluating anything. Then times,
median over ``--repeats``:

A: ``compare_runs`` (read both runs, pair the models, a bootstrap interval per accuracy metric);
B: writing comparison.html, .json and .md from it;
C: ``write_report`` of one of the runs (the report the audit writes), for scale.
Prints the medians and (A + B) / C.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from robusteval.analysis.compare import compare_runs
from robusteval.analysis.derive import derive
from robusteval.config import load_config
from robusteval.report import write_report
from robusteval.report.comparison import write_comparison
from robusteval.results import RunDir, build_summary, encode_bits

CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression")
NOISE_EPS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
OOD_SETS = ("gaussian_noise", "uniform_noise", "blobs", "pixel_shuffled", "patch_shuffled")
METHODS = {"magnitude": 0.3, "synflow": 0.6, "l1_filter": 1.2}  # fragility
LINF_EPS = (0.0019608, 0.0039216, 0.0078431)


def _loss(method: str, ratio: float, worse: bool) -> float:
    return METHODS.get(method, 0.0) * (1.6 if worse else 1.0) * 0.3 * max(0.0, ratio - 0.3) ** 1.5


def _bit_record(model: str, cond: str, n: int, correct: np.ndarray, loss: float) -> dict:
    metrics = {f"{cond}/accuracy": float(correct.mean())}
    if cond == "clean":
        metrics |= {"clean/top5": 0.99 - loss / 4, "clean/loss": 0.5 + 2 * loss}
        metrics |= {f"calibration/{k}": 0.05 + loss * (i + 1) / 10 for i, k in enumerate(
            ("ece", "aece", "mce", "classwise_ece", "nll", "brier", "confidence", "temperature", "ece_after_ts",
             "nll_after_ts", "confidence_gap"))}
    elif cond.startswith("corruption/"):
        metrics |= {f"calibration/{cond}/ece": 0.1 + loss, f"calibration/{cond}/nll": 1 + loss}
    if model != "dense":
        prefix = "agreement" if cond == "clean" else f"agreement/{cond}"
        metrics |= {f"{prefix}/{k}": v for k, v in (("top1", 1 - loss), ("kl", loss), ("l2", loss), ("linf", loss),
                                                     ("dense_correct_pruned_wrong", loss / 2))}
    details = {"calibration": {"reliability": _reliability(loss)}} if cond == "clean" else {}
    return {"model": model, "condition": cond, "family": cond.split("/")[0], "n": n, "metrics": metrics,
            "correct": encode_bits(correct), "details": details, "warnings": []}


def _reliability(loss: float, bins: int = 15) -> dict:
    """The calibration evaluator's reliability bins (its default 15), overconfident by ``loss``."""
    conf = (np.arange(bins) + 0.5) / bins
    return {"edges": np.linspace(0, 1, bins + 1).tolist(), "confidence": conf.tolist(),
            "accuracy": np.clip(conf - 0.02 - loss, 0, 1).tolist(), "count": [100] * bins}


def _other_records(model: str, loss: float) -> list[dict]:
    fpr = np.linspace(0, 1, 101)
    out = [{"model": model, "condition": f"ood/{s}", "family": "ood", "n": 400, "warnings": [],
            "metrics": {f"ood/{s}/{m}_{score}": 0.8 - loss for m in ("auroc", "aupr_in", "aupr_out", "fpr95")
                        for score in ("msp", "max_logit", "energy")},
            "details": {"ood": {"roc": {"msp": {"fpr": fpr.tolist(), "tpr": (fpr ** 0.3).tolist()}}}}}
           for s in OOD_SETS]
    adversarial = {f"adversarial/{a}/{e}/accuracy": max(0.0, 0.5 - 20 * e - loss) for a in ("fgsm", "linf_pgd")
                   for e in LINF_EPS}
    adversarial |= {f"adversarial/transfer/linf_pgd/{e}/accuracy": 0.6 - loss for e in LINF_EPS}
    adversarial |= {"adversarial/l2_pgd/0.125/accuracy": 0.4 - loss,
                    "adversarial/autoattack/0.0039216/accuracy": 0.3 - loss,
                    "adversarial/min_norm/linf/median": 0.004 - loss / 100}
    return out + [{"model": model, "condition": "adversarial", "family": "adversarial", "n": 50,
                   "metrics": adversarial, "details": {}, "warnings": []}]


def write_demo_shaped_run(path: Path, *, worse: bool) -> Path:
    """A finished run directory of the demo's shape (see the module docstring); ``worse`` degrades pruned members."""
    rng = np.random.default_rng(0)
    run = RunDir(path)
    models = [("dense", "dense", 0.0), ("dense+ft", "dense+ft", 0.0)] + [
        (f"{m}@{r}", m, r) for m in METHODS for r in (0.2, 0.4, 0.6, 0.8, 0.9)]
    conditions = {"clean": 2000, **{f"corruption/{c}/{s}": 100 for c in CORRUPTIONS for s in (1, 3, 5)},
                  **{f"noise/{e:g}": 100 for e in NOISE_EPS}}
    draws = {c: (rng.random(n), 0.86 if c == "clean" else 0.6 + 0.2 * rng.random()) for c, n in conditions.items()}
    records = []
    for model, method, ratio in models:
        loss = _loss(method, ratio, worse)
        for cond, n in conditions.items():
            u, accuracy = draws[cond]
            records.append(_bit_record(model, cond, n, u < accuracy - (1 if cond == "clean" else 2) * loss, loss))
        records += _other_records(model, loss)
        run.add_model({"id": model, "method": method, "target_ratio": ratio, "sparsity": ratio})
    for record in records:
        run.add_record(record)
    config = load_config("quick").to_dict()
    config["pruning"]["finetune"]["epochs"] = 0.1 if worse else 0.25
    summary = build_summary("dense", run.models(), records,
                            {"config_digest": f"demo-shaped-{worse}", "complete": True, "missing": [],
                             "baseline": "dense+ft"})
    derived = derive({m["id"]: m["metrics"] for m in summary["models"]}, "dense")
    for entry in summary["models"]:
        entry["metrics"] = derived[entry["id"]]
    run.write_summary(summary)
    run.write_manifest({"config": config, "config_digest": summary["config_digest"], "seed": 0, "device": "cpu",
                        "precision": "fp32", "engine": "local", "model_sha256": {"dense": "0" * 64},
                        "data": {"source": "bundled", "n": 2000, "sha256": "1" * 64}})
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base, new = (write_demo_shaped_run(Path(tmp) / name, worse=name == "v2") for name in ("v1", "v2"))
        times: dict[str, list[float]] = {"A": [], "B": [], "C": []}
        for _ in range(args.repeats):
            start = time.perf_counter()
            comparison = compare_runs(base, new)
            middle = time.perf_counter()
            write_comparison(comparison, Path(tmp) / "comparison")
            end = time.perf_counter()
            write_report(base)
            times["A"].append(middle - start)
            times["B"].append(end - middle)
            times["C"].append(time.perf_counter() - end)
    med = {k: statistics.median(v) for k, v in times.items()}
    n_metrics = len(comparison.deltas) // len(comparison.pairs)
    print(f"two demo-shaped runs: {len(comparison.pairs)} model pairs, {n_metrics} metrics each, "
          f"{sum(d.ci is not None for d in comparison.deltas)} bootstrap intervals")
    print(f"A compare_runs {med['A']:.2f} s, B page/json/md {med['B']:.2f} s, C one report {med['C']:.2f} s; "
          f"(A + B) / C = {(med['A'] + med['B']) / med['C']:.2f}x")


if __name__ == "__main__":
    main()
