"""Latency spread with and without a loaded CPU: paired alternating timing vs separate timing.

Times the bundled ResNet-20 (dense) against a masked member (magnitude@0.8: same kernels, true
speed-up 1.0x) and a structured one (l1_filter@0.5), at batch 1 and 128, first on an idle
machine, then with busy-loop processes competing for the cores. For each it prints the
member's median latency and IQR, the paired speed-up (median of per-pair ratios, IQR), and
what separate timing (dense measured once, member later) would have reported.

    python benchmarks/bench_latency.py --repeats 21 --load 2
"""
from __future__ import annotations

import argparse
import subprocess
import sys

import torch

from robusteval.models.bundled import BUNDLED_ARCH, BUNDLED_MODEL
from robusteval.models.loading import load_model
from robusteval.pruning import PruneSettings, prune_model
from robusteval.pruning.settings import FinetuneSettings
from robusteval.pruning.stats import latency_ms


def report(name: str, member: torch.nn.Module, dense: torch.nn.Module, x: torch.Tensor, repeats: int) -> None:
    paired = latency_ms(member, x, repeats=repeats, dense=dense)
    separate_dense = latency_ms(dense, x, repeats=repeats)["latency_ms"]
    separate_member = latency_ms(member, x, repeats=repeats)["latency_ms"]
    for key in ("batch_1", "batch_128"):
        low, high = paired["latency_iqr_ms"][key]
        s_low, s_high = paired["speedup_iqr"][key]
        print(f"  {name:<16} {key:<9} latency {paired['latency_ms'][key]:8.2f} ms (IQR {low:.2f}–{high:.2f}, "
              f"width {100 * (high - low) / paired['latency_ms'][key]:4.0f}%)  paired speed-up "
              f"{paired['speedup_measured'][key]:.2f}x (IQR {s_low:.2f}–{s_high:.2f})  separate "
              f"{separate_dense[key] / separate_member[key]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--load", type=int, default=2, help="busy-loop processes in the loaded run")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dense = load_model(BUNDLED_MODEL, arch=BUNDLED_ARCH, num_classes=10).eval()
    x = torch.rand(2, 3, 32, 32)
    settings = PruneSettings(measure_latency=False, finetune=FinetuneSettings(epochs=0))
    members = {m: prune_model(dense, m, r, settings=settings, example_input=x, train_data=None).model
               for m, r in (("magnitude", 0.8), ("l1_filter", 0.5))}
    for load in (0, args.load):
        print(f"{'idle' if load == 0 else f'{load} busy-loop process(es)'}: {args.repeats} paired repeats, "
              f"{args.threads} thread(s)")
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
        try:
            for name, member in members.items():
                report(name, member, dense, x, args.repeats)
        finally:
            for process in busy:
                process.kill()
                process.wait()


if __name__ == "__main__":
    main()
