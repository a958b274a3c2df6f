"""How far two runs of the same audit differ, metric by metric (e.g. one on CUDA, one on CPU).

    python scripts/compare_runs.py RUN_A RUN_B [--json OUT.json]

Reads both runs' records; for every (model, condition) and metric present in both, the absolute
difference. Prints one line per family (``clean``, ``corruption``, ``adversarial``, …): how many metrics,
the largest difference and where, and how many differ by more than one image of the condition (1 / n);
then how many (model, condition) pairs only one run has. Exit 0 whatever the differences.
"""
from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

from robusteval.records import Record
from robusteval.results import RunDir


def _records(run: Path) -> dict[tuple[str, str], Record]:
    return {(r.model, r.condition): r for r in RunDir(run).records()}


def compare(a: Path, b: Path) -> dict:
    """Per family: metrics compared, the largest |a - b| and its (model, key), metrics beyond one image."""
    ra, rb = _records(a), _records(b)
    families: dict[str, dict] = defaultdict(lambda: {"metrics": 0, "max_abs_diff": 0.0, "at": None,
                                                     "beyond_one_image": 0})
    for pair in sorted(ra.keys() & rb.keys()):
        x, y = ra[pair], rb[pair]
        entry = families[x.family]
        for key in sorted(x.metrics.keys() & y.metrics.keys()):
            u, v = x.metrics[key], y.metrics[key]
            diff = 0.0 if math.isnan(u) and math.isnan(v) else abs(u - v)
            entry["metrics"] += 1
            if not diff <= entry["max_abs_diff"]:  # NaN on one side only counts as the largest
                entry["max_abs_diff"], entry["at"] = diff, f"{pair[0]} {key}"
            if x.n and not diff <= 1 / x.n + 1e-9:
                entry["beyond_one_image"] += 1
    only = sorted(f"{m} {c}" for m, c in ra.keys() ^ rb.keys())
    return {"a": str(a), "b": str(b), "families": dict(families), "only_in_one": only}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--json", type=Path, help="also write the comparison here")
    args = ap.parse_args()
    result = compare(args.a, args.b)
    print(f"{args.a} vs {args.b}")
    for family, e in sorted(result["families"].items()):
        print(f"  {family}: {e['metrics']} metrics, max |diff| {e['max_abs_diff']:.3g} ({e['at']}), "
              f"{e['beyond_one_image']} beyond one image")
    print(f"  only in one run: {len(result['only_in_one'])} {result['only_in_one'][:5]}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
