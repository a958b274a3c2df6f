"""The Ray engine against the local engine on the same audit, as ratios measured side by side in one run.

    python benchmarks/bench_ray.py [--n 1000] [--repeats 3] [--workers 2] [--scaling 1,2,4,8] [--gpu]

The audit: the bundled ResNet-20 pruned by magnitude at 50% (no fine-tune, no latency), evaluated on
clean data, 4 corruptions x 2 severities, 3 noise levels and calibration, ``--n`` images.

A: Ray with ``--workers`` workers x 1 torch thread vs the local engine with ``--workers`` threads
   (medians of ``--repeats`` alternating runs; Ray is started once, before timing, and its start-up
   is printed apart): time Ray / local (target <= 1.15x on a 2-core machine with 2 workers).
S: with ``--scaling``, Ray with 1, 2, ... workers: speed-up over 1 worker and efficiency
   speed-up / workers (target >= 0.8 up to 8 workers on a 16-core machine). Needs that many cores.
G: with ``--gpu``, Ray with one GPU worker (``gpus_per_worker: 1``) vs the local engine on the GPU.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import ray
import torch

from robusteval.api import audit
from robusteval.config import config_from_dict
from robusteval.models.bundled import BUNDLED_ARCH, BUNDLED_MODEL


def _config(n: int, engine: dict, device: str = "cpu"):
    return config_from_dict({
        "data": {"source": "bundled", "subset": n, "batch_size": 100, "shard_size": 200, "train": None},
        "model": {"arch": BUNDLED_ARCH}, "device": device, "engine": engine,
        "pruning": {"methods": ["magnitude"], "ratios": [0.5], "finetune": {"epochs": 0}, "measure_latency": False},
        "evaluate": {"calibration": {}, "agreement": True, "noise": {"eps": [0.05, 0.1, 0.2], "subset": n},
                     "corruption": {"corruptions": ["gaussian_noise", "fog", "contrast", "pixelate"],
                                    "severities": [2, 5], "subset": n}},
    })


def _timed(config) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        audit(BUNDLED_MODEL, config=config, out=tmp, progress=False)
        return time.perf_counter() - start


def _medians(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median seconds of each over ``repeats`` rounds; the order reverses every other round."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(repeats):
        for name, fn in list(fns.items())[::1 if i % 2 == 0 else -1]:
            times[name].append(fn())
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scaling", help="worker counts for part S, e.g. 1,2,4,8")
    ap.add_argument("--gpu", action="store_true", help="part G: one GPU worker vs the local engine on the GPU")
    args = ap.parse_args()
    counts = [int(c) for c in args.scaling.split(",")] if args.scaling else []
    cpus = max([args.workers, *counts])
    start = time.perf_counter()
    ray.init(num_cpus=cpus, num_gpus=1 if args.gpu else 0, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    print(f"{os.cpu_count()} cores, Ray with {cpus} CPUs started in {time.perf_counter() - start:.1f} s; "
          f"{args.n} images, {args.repeats} repeats")
    ray_config = _config(args.n, {"kind": "ray", "cpus_per_worker": 1})
    local_config = _config(args.n, {"kind": "local"}).replace(threads=args.workers)

    def local() -> float:
        return _timed(local_config)

    def on_ray() -> float:
        torch.set_num_threads(1)  # the driver only records; its workers compute
        try:
            return _timed(ray_config)
        finally:
            torch.set_num_threads(args.workers)

    _timed(local_config)  # warm-up: imports, caches
    t = _medians({"local": local, "ray": on_ray}, args.repeats)
    print(f"A  local engine ({args.workers} threads) {t['local']:.1f} s, Ray ({args.workers} workers x 1 thread) "
          f"{t['ray']:.1f} s: Ray / local = {t['ray'] / t['local']:.3f}  (target <= 1.15)")
    if counts:
        one = None
        for workers in counts:
            seconds = _medians({"ray": lambda w=workers: _timed(_config(args.n * workers // counts[0], {
                "kind": "ray", "cpus_per_worker": cpus / w}))}, args.repeats)["ray"]
            one = one or seconds
            print(f"S  {workers} workers: {seconds:.1f} s for {workers // counts[0]}x the images, efficiency "
                  f"{one / seconds:.3f}  (target >= 0.8)")
    if args.gpu:
        t = _medians({"local": lambda: _timed(_config(args.n, {"kind": "local"}, "cuda")),
                      "ray": lambda: _timed(_config(args.n, {"kind": "ray", "cpus_per_worker": 1,
                                                             "gpus_per_worker": 1}, "cuda"))}, args.repeats)
        print(f"G  local engine on the GPU {t['local']:.1f} s, Ray with one GPU worker {t['ray']:.1f} s: "
              f"Ray / local = {t['ray'] / t['local']:.3f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
