"""Pruning benchmarks: SynFlow-100 wall time, family build time, l1_filter MACs and CPU latency vs dense.

Run: ``.venv/bin/python benchmarks/bench_pruning.py [--threads 1] [--repeats 3]``. Prints medians
and ratios measured side by side in one run (dense and pruned timed alternately).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from robusteval.data.arrays import LabeledArrays
from robusteval.models.archs import build_arch
from robusteval.pruning import PruneSettings, build_family, prune_model
from robusteval.pruning.stats import macs

FAMILY_METHODS = ("random", "magnitude", "snip", "synflow", "l1_filter")
FAMILY_RATIOS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)


def _synthetic_cifar(n: int = 2560) -> LabeledArrays:
    rng = np.random.default_rng(0)
    return LabeledArrays(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                         rng.integers(0, 10, n).astype(np.int64), tuple(str(c) for c in range(10)))


def _median_seconds(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_synflow(repeats: int) -> None:
    dense = build_arch("cifar_resnet20", 10)
    settings = PruneSettings(methods=("synflow",), ratios=(0.9,), measure_latency=False)
    x = torch.rand(1, 3, 32, 32)
    t = _median_seconds(lambda: prune_model(dense, "synflow", 0.9, settings=settings, example_input=x,
                                            train_data=None), repeats)
    print(f"synflow-100 ResNet-20 @0.9: median {t:.2f} s over {repeats} runs (target < 15 s) ratio {t / 15:.2f}")


def bench_family(data: LabeledArrays) -> None:
    dense = build_arch("cifar_resnet20", 10)
    settings = PruneSettings(methods=FAMILY_METHODS, ratios=FAMILY_RATIOS, measure_latency=False)
    start = time.perf_counter()
    members = list(build_family(dense, settings=settings, example_input=torch.rand(1, 3, 32, 32),
                                train_data=data, progress=False))
    t = time.perf_counter() - start
    print(f"family ResNet-20 {len(FAMILY_METHODS)} methods x {len(FAMILY_RATIOS)} ratios ({len(members)} models, "
          f"no fine-tuning, BN re-calibration for l1_filter, no latency): {t:.1f} s (target < 180 s) "
          f"ratio {t / 180:.2f}")
    slowest = sorted(members[1:], key=lambda m: -m.card.prune_seconds)[:3]
    print("  slowest members: " + ", ".join(f"{m.id} {m.card.prune_seconds:.1f} s" for m in slowest))


def _latency(model: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        model(x)
    return (time.perf_counter() - start) * 1e3


def bench_l1_filter(arch: str, data: LabeledArrays, repeats: int) -> None:
    torch.manual_seed(0)
    dense = build_arch(arch, 10).eval()
    x = torch.rand(1, 3, 32, 32)
    settings = PruneSettings(methods=("l1_filter",), ratios=(0.5,), measure_latency=False)
    pruned = prune_model(dense, "l1_filter", 0.5, settings=settings, example_input=x, train_data=data).model
    dense_macs, pruned_macs = macs(dense, x)[0], macs(pruned, x)[0]
    print(f"l1_filter@0.5 {arch}: MACs {pruned_macs / 1e6:.1f}M vs dense {dense_macs / 1e6:.1f}M "
          f"(ratio {pruned_macs / dense_macs:.3f})")
    for batch in (1, 128):
        xb = x.expand(batch, -1, -1, -1).contiguous()
        _latency(dense, xb), _latency(pruned, xb)  # warm-up
        d, p = [], []
        for _ in range(repeats):  # alternate so both see the same machine load
            d.append(_latency(dense, xb))
            p.append(_latency(pruned, xb))
        dm, pm = statistics.median(d), statistics.median(p)
        print(f"  batch {batch:3d}: median latency pruned {pm:.2f} ms vs dense {dm:.2f} ms "
              f"(speed-up {dm / pm:.2f}x, {repeats} runs)")


def bench_coreset(data: LabeledArrays) -> None:
    dense = build_arch("cifar_resnet20", 10)
    settings = PruneSettings(methods=("coreset_filter",), ratios=(0.5,), measure_latency=False)
    x = torch.rand(1, 3, 32, 32)
    start = time.perf_counter()
    prune_model(dense, "coreset_filter", 0.5, settings=settings, example_input=x, train_data=data)
    first = time.perf_counter() - start
    start = time.perf_counter()
    prune_model(dense, "coreset_filter", 0.7, settings=settings, example_input=x, train_data=data)
    print(f"coreset_filter ResNet-20: first ratio {first:.1f} s, next ratio (cached bounds) "
          f"{time.perf_counter() - start:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    data = _synthetic_cifar()
    bench_synflow(args.repeats)
    bench_family(data)
    for arch in ("cifar_resnet20", "torchvision:resnet18"):
        bench_l1_filter(arch, data, max(args.repeats, 10))
    bench_coreset(data)


if __name__ == "__main__":
    main()
