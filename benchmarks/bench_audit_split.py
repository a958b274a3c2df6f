"""Where a clean candidate-vs-reference audit's time goes: start-up, latency, evaluation, report.

    nice python benchmarks/bench_audit_split.py [--repeats 3] [--subset 500]

Makes the bundled ResNet-20 (the dense reference, its safetensors file) and a channel-thinned copy
(l1_filter at 0.5, no fine-tuning) exported to ONNX, then runs, ``--repeats`` times, each in a fresh
process as a user would:

    robusteval audit thinned.onnx --reference cifar_resnet20.safetensors --arch cifar_resnet20
        --config clean --data bundled --subset 500

Inside that process, the time spent in ``pruning.stats.latency_ms`` (latency), in the audit's evaluation
stage (``api._evaluate``: every condition on both models, the sample images) and in writing the report
is measured, and the exit (from the CLI's return to the process's end: interpreter and thread
teardown); start-up is the rest of the process's wall time (interpreter, imports, loading, sizes,
summary). Prints each run's split, then the medians and the latency share of the whole audit.
Compare code versions on the same machine in alternation (the machine's load moves the split). The
timing settings are the defaults: ``audit --reference`` drops the config's ``pruning`` section.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

PHASES = ("latency", "evaluation", "report")
REPO = Path(__file__).resolve().parents[1]  # the audit runs this checkout's robusteval


def _timed(spent: dict[str, float], phase: str, fn: Callable) -> Callable:
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[phase] += time.perf_counter() - start
    return wrapper


def child(argv: list[str], result: Path) -> None:
    """Run the CLI in this process with the phases timed; write them to ``result``."""
    from robusteval import api, finish
    from robusteval.cli import main
    from robusteval.pruning import stats

    spent = dict.fromkeys(PHASES, 0.0)
    stats.latency_ms = _timed(spent, "latency", stats.latency_ms)
    api._evaluate = _timed(spent, "evaluation", api._evaluate)
    finish.report_with_verdict = _timed(spent, "report", finish.report_with_verdict)
    code = main(argv)
    result.write_text(json.dumps({"code": code, "robusteval": api.__file__, "ended": time.time(), **spent}))


def make_models(root: Path) -> tuple[Path, Path]:
    """The bundled model's file and an ONNX export of its l1_filter@0.5 thinned copy."""
    import torch

    from robusteval.models.bundled import BUNDLED_ARCH, BUNDLED_MODEL
    from robusteval.models.loading import load_model
    from robusteval.pruning import PruneSettings, prune_model
    from robusteval.pruning.settings import FinetuneSettings

    dense = load_model(BUNDLED_MODEL, arch=BUNDLED_ARCH, num_classes=10).eval()
    x = torch.rand(2, 3, 32, 32)
    settings = PruneSettings(measure_latency=False, finetune=FinetuneSettings(epochs=0))
    thinned = prune_model(dense, "l1_filter", 0.5, settings=settings, example_input=x, train_data=None).model.eval()
    path = root / "thinned.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(thinned, (x,), path, dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    return BUNDLED_MODEL, path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--subset", type=int, default=500)
    parser.add_argument("--child", nargs=2, metavar=("RESULT", "ARGV_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if args.child:
        child(json.loads(args.child[1]), Path(args.child[0]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dense, candidate = make_models(root)
        rows = []
        for i in range(args.repeats):
            argv = ["audit", str(candidate), "--reference", str(dense), "--arch", "cifar_resnet20", "--config",
                    "clean", "--data", "bundled", "--subset", str(args.subset), "--out", str(root / f"run{i}"),
                    "--quiet"]
            start = time.time()
            subprocess.run([sys.executable, __file__, "--child", str(root / f"t{i}.json"), json.dumps(argv)],
                           check=True, stdout=subprocess.DEVNULL, env=os.environ | {"PYTHONPATH": str(REPO)})
            end = time.time()
            spent = json.loads((root / f"t{i}.json").read_text())
            assert spent["code"] == 0 and Path(spent["robusteval"]).is_relative_to(REPO), spent
            total, exit_ = end - start, end - spent["ended"]
            row = ({"total": total, "start-up": total - exit_ - sum(spent[p] for p in PHASES)}
                   | {p: spent[p] for p in PHASES} | {"exit": exit_})
            model = json.loads((root / f"run{i}" / "summary.json").read_text())["models"][1]
            rows.append(row)
            print(f"run {i + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in row.items())
                  + f"; latency pairs {model.get('latency_runs')}, warnings {model.get('warnings')}")
        medians = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print("median: " + ", ".join(f"{k} {v:.2f} s" for k, v in medians.items())
              + f"; latency share {100 * medians['latency'] / medians['total']:.1f}% "
              f"(median of per-run shares {100 * statistics.median(r['latency'] / r['total'] for r in rows):.1f}%)")


if __name__ == "__main__":
    main()
