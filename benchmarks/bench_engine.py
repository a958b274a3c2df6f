"""Clean-evaluation throughput of the engine vs a bare ``model(x)`` loop on the same tensors.

    python benchmarks/bench_engine.py [--n 2000] [--repeats 5] [--batch-size 250]

Both run in this process on the bundled CIFAR-10 sample with the bundled ResNet-20 (random
weights if it is missing), alternating, and the medians are compared. Target: >= 0.9x.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from robusteval.conditions import Condition
from robusteval.config import AuditConfig, EvaluateSettings
from robusteval.data.sources import load_source
from robusteval.engine import EngineSettings, ModelEntry, run_conditions
from robusteval.models.archs import build_arch
from robusteval.models.bundled import BUNDLED_MODEL
from robusteval.results import RunDir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=250)
    args = ap.parse_args()
    data = load_source("bundled", subset=args.n)
    model = build_arch("cifar_resnet20", 10).eval()
    if BUNDLED_MODEL.is_file():
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(BUNDLED_MODEL)))
    x = data.images(slice(None))
    config = AuditConfig(evaluate=EvaluateSettings(calibration=None, agreement=False))
    settings = EngineSettings(batch_size=args.batch_size, shard_size=1000, progress=False)

    def bare() -> None:
        with torch.inference_mode():
            for i in range(0, len(x), args.batch_size):
                model(x[i:i + args.batch_size]).float()

    def engine() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            run_conditions([ModelEntry("dense", model)], [Condition("clean", "clean", data)], RunDir(tmp),
                           config.evaluate, settings)

    bare()  # warm-up
    t_bare, t_engine = [], []
    for _ in range(args.repeats):
        for fn, times in ((bare, t_bare), (engine, t_engine)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    mb, me = statistics.median(t_bare), statistics.median(t_engine)
    print(f"images: {len(x)}, batch {args.batch_size}, threads {torch.get_num_threads()}, repeats {args.repeats}")
    print(f"bare model(x) loop: median {mb:.3f} s ({len(x) / mb:.0f} img/s)")
    print(f"engine (clean accuracy, records, shards): median {me:.3f} s ({len(x) / me:.0f} img/s)")
    print(f"engine throughput / bare throughput = {mb / me:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
