"""Wall time of the embedded default (`robusteval demo`, configs/quick.yaml) against its 10-minute budget.

    python benchmarks/bench_demo.py [--config quick] [--keep DIR]

Runs the whole demo (prune → evaluate → report) in a fresh run directory in this process and
prints the time of each stage and the ratio to 600 s.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from robusteval.api import demo
from robusteval.config import load_config
from robusteval.report import write_report

BUDGET_S = 600.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="quick")
    ap.add_argument("--keep", help="run directory to keep (default: a temporary one)")
    args = ap.parse_args()
    config = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep or tmp) / "demo"
        start = time.perf_counter()
        run = demo(config=config, out=out, progress=False)
        audited = time.perf_counter()
        write_report(run.path, tolerance=config.analysis.tolerance, tolerances=config.analysis.tolerances)
        end = time.perf_counter()
    n = len(run.summary["models"])
    print(f"demo ({args.config}): {n} models; audit {audited - start:.0f} s, report {end - audited:.0f} s, "
          f"total {end - start:.0f} s = {(end - start) / BUDGET_S:.2f}x the {BUDGET_S:.0f} s budget")


if __name__ == "__main__":
    main()
