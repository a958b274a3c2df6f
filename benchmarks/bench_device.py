"""What a run costs on an accelerator, as ratios measured side by side in one run.

    python benchmarks/bench_device.py [--device cuda] [--n 2000] [--repeats 5] [--batch-size 250] [--quick] [--e2e]
        [--e2e-n N] [--e2e-out DIR] [--e2e-config quick|PATH]

On ``--device`` (default: cuda if available, else cpu), with the bundled ResNet-20 on the bundled
CIFAR-10 sample (random weights if the file is missing), medians of ``--repeats`` alternating runs:

A: the engine (clean accuracy, records, shards) vs a bare ``model(x)`` loop that copies each host
   batch to the device and the logits back: throughput engine / bare (target >= 0.95x). The
   model runs behind a wrapper that moves its input to the device, so the engine takes it as is.
B: generating all 19 corruptions x 5 severities of one batch on the host, as the engine does (and,
   on an accelerator, on the device too), vs one inference pass over the 95 corrupted batches on
   the device: time generation / inference (target <= 0.25x).
C: bf16 (``torch.autocast``) vs fp32 throughput of the bare loop, and the clean-accuracy difference.
D: the adversarial evaluator restricted to AutoAttack fast (one ``--eps``, ``--aa-iters`` APGD
   iterations) vs the same attack called bare through pyautoattack, both on the device on the same
   ``--aa-n`` images (``bench_adversarial.autoattack_pair``): wall time evaluator / bare (target <= 1.05x).
E: (only with ``--e2e``: minutes) the quick preset (configs/quick.yaml, ``robusteval.api.demo``)
   end to end, timed once on ``--device`` and once on CPU: wall seconds and the ratio device / CPU.
   With ``--device cpu`` only the CPU time is printed. ``--e2e-n`` sets its images, ``--e2e-config`` another
   preset or YAML, ``--e2e-out`` keeps both run directories (``DIR/cpu``, ``DIR/<device>``) to compare
   their numbers (``scripts/compare_runs.py``).

``--quick`` (200 images, 3 repeats, batches of 16 for B, 32 images and 10 iterations for D; with
``--e2e``, the quick preset on 200 images at one ratio; sizes given as flags win) runs A-D on a 2-core
CPU in a few minutes. ``scripts/gpu_check.sh`` runs it on a GPU machine.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from bench_adversarial import autoattack_pair  # benchmarks/ is on the path when this file runs as a script
from robusteval.api import demo
from robusteval.conditions import Condition
from robusteval.config import EvaluateSettings, load_config
from robusteval.data.corruptions import BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS, condition_seed, corrupt
from robusteval.data.sources import load_source
from robusteval.device import synchronize
from robusteval.engine import EngineSettings, ModelEntry, run_conditions
from robusteval.models.archs import build_arch
from robusteval.models.bundled import BUNDLED_ARCH, BUNDLED_MODEL
from robusteval.models.loading import load_model
from robusteval.results import RunDir


class OnDevice(nn.Module):
    """``model`` on ``device``, taking host batches and returning host logits."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.model, self.device = model.to(device), device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.device)).float().cpu()


def _medians(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds of each function over ``repeats`` rounds after one warm-up each; the order
    reverses every other round, so a load change on a shared machine hits every function alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for i in range(repeats):
        for name, fn in list(fns.items())[::1 if i % 2 == 0 else -1]:
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _bare(model: nn.Module, x: torch.Tensor, batch_size: int, bf16: bool = False) -> torch.Tensor:
    """Logits of ``model`` (an :class:`OnDevice`) over host images ``x``, optionally under bf16 autocast."""
    device = model.device
    cast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.inference_mode(), cast:
        return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def _engine(model: nn.Module, data, batch_size: int) -> None:
    settings = EngineSettings(batch_size=batch_size, shard_size=1000, progress=False)
    evaluate = EvaluateSettings(calibration=None, agreement=False)
    with tempfile.TemporaryDirectory() as tmp:
        run_conditions([ModelEntry("dense", model)], [Condition("clean", "clean", data)], RunDir(tmp), evaluate,
                       settings)


def _corrupted(x: torch.Tensor) -> list[torch.Tensor]:
    names = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
    return [corrupt(x, name, s, seed=condition_seed(name, s, 0)) for name in names for s in range(1, 6)]


def _engine_vs_bare(model: OnDevice, data, args: argparse.Namespace) -> None:
    x = data.images(slice(None))
    t = _medians({"bare": lambda: _bare(model, x, args.batch_size),
                  "engine": lambda: _engine(model, data, args.batch_size)}, args.repeats, model.device)
    print(f"A  bare loop {len(x) / t['bare']:.0f} img/s, engine {len(x) / t['engine']:.0f} img/s: "
          f"engine / bare throughput = {t['bare'] / t['engine']:.3f}  (target >= 0.95)")


def _generation_vs_inference(model: OnDevice, x: torch.Tensor, args: argparse.Namespace) -> None:
    device = model.device
    batch = x[:args.corrupt_batch]
    inputs = _corrupted(batch)
    fns = {"host": lambda: _corrupted(batch), "infer": lambda: [_bare(model, c, args.batch_size) for c in inputs]}
    if device.type != "cpu":
        on_device = batch.to(device)
        fns["device"] = lambda: _corrupted(on_device)
    t = _medians(fns, args.repeats, device)
    print(f"B  {len(inputs)} corrupted batches of {len(batch)}: inference {t['infer']:.3f} s")
    for where in ("host", "device") if device.type != "cpu" else ("host",):
        print(f"   generation on the {where} {t[where]:.3f} s: generation / inference = "
              f"{t[where] / t['infer']:.3f}  (target <= 0.25)")


def _bf16_vs_fp32(model: OnDevice, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> None:
    t = _medians({"fp32": lambda: _bare(model, x, args.batch_size),
                  "bf16": lambda: _bare(model, x, args.batch_size, bf16=True)}, args.repeats, model.device)
    acc = {p: float((_bare(model, x, args.batch_size, bf16=p == "bf16").argmax(1) == y).float().mean())
           for p in ("fp32", "bf16")}
    print(f"C  fp32 {len(x) / t['fp32']:.0f} img/s, bf16 {len(x) / t['bf16']:.0f} img/s: bf16 / fp32 throughput = "
          f"{t['fp32'] / t['bf16']:.3f}; clean accuracy fp32 {acc['fp32']:.4f}, bf16 {acc['bf16']:.4f} "
          f"(bf16 - fp32 = {100 * (acc['bf16'] - acc['fp32']):+.2f} points)")


def _autoattack_vs_bare(model: OnDevice, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace,
                        trained: bool) -> None:
    device, module = model.device, model.model
    x = x[:args.aa_n].to(device)
    if trained:
        y = y[:args.aa_n].to(device)
    else:  # random weights: its own predictions as labels, so every image is attacked
        with torch.no_grad():
            y = module(x).argmax(1)
    ours, bare = autoattack_pair(module, x, y, eps=args.eps, iters=args.aa_iters, device=device)
    t = _medians({"evaluator": ours, "bare": bare}, args.repeats, device)
    print(f"D  AutoAttack fast, eps {args.eps:.5f}, {args.aa_iters} iters, {len(x)} images: evaluator "
          f"{t['evaluator']:.2f} s, bare pyautoattack {t['bare']:.2f} s: evaluator / bare = "
          f"{t['evaluator'] / t['bare']:.3f}  (target <= 1.05)")


def _end_to_end(device: torch.device, args: argparse.Namespace) -> None:
    """The quick preset (``demo``) once on ``device`` and once on CPU; with ``--quick``, 200 images (``--e2e-n``)
    and one ratio; the run directories are kept in ``--e2e-out`` when given."""
    config = load_config(args.e2e_config)
    n = args.e2e_n or (200 if args.quick else None)
    if n:
        config = config.replace(data=dataclasses.replace(config.data, subset=n))
    if args.quick:
        config = config.replace(pruning=dataclasses.replace(config.pruning, ratios=(0.5,)))
    seconds = {}
    for where in dict.fromkeys(["cpu", str(device)]):
        with contextlib.nullcontext(args.e2e_out) if args.e2e_out else tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            demo(config=config.replace(device=where), out=Path(tmp) / where, progress=False)
            seconds[where] = time.perf_counter() - start
    what = f"{args.e2e_config} preset" + (f" ({n} images" if n else " (") + (", ratio 0.5)" if args.quick else ")")
    if device.type == "cpu":
        print(f"E  {what} end to end: cpu {seconds['cpu']:.0f} s (the GPU side needs a GPU: --device cuda)")
        return
    print(f"E  {what} end to end: {device} {seconds[str(device)]:.0f} s, cpu {seconds['cpu']:.0f} s: "
          f"{device} / cpu wall time = {seconds[str(device)] / seconds['cpu']:.3f}")


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--corrupt-batch", type=int, default=128, help="images per corrupted batch in B")
    ap.add_argument("--aa-n", type=int, default=500, help="images attacked in D")
    ap.add_argument("--aa-iters", type=int, default=100, help="APGD iterations in D")
    ap.add_argument("--eps", type=float, default=2 / 255, help="L-inf eps of D (default 2/255)")
    ap.add_argument("--e2e", action="store_true", help="also run E, the quick preset end to end (minutes)")
    ap.add_argument("--e2e-n", type=int, help="images of E (default: the preset's 2,000; 200 with --quick)")
    ap.add_argument("--e2e-out", help="keep E's run directories here (DIR/cpu, DIR/<device>)")
    ap.add_argument("--e2e-config", default="quick", help="E's preset or YAML (default: quick)")
    ap.add_argument("--quick", action="store_true", help="200 images, 3 repeats, batches of 16 for B, 32 images "
                    "and 10 iterations for D, one ratio in E (sizes given as flags win)")
    if ap.parse_known_args()[0].quick:
        ap.set_defaults(n=200, repeats=3, corrupt_batch=16, aa_n=32, aa_iters=10)
    return ap.parse_args()


def main() -> None:
    args = _args()
    device = torch.device(args.device)
    data = load_source("bundled", subset=args.n)
    x, y = data.images(slice(None)), data.labels(slice(None))
    weights = BUNDLED_MODEL.is_file()
    module = load_model(BUNDLED_MODEL, arch=BUNDLED_ARCH) if weights else build_arch(BUNDLED_ARCH, 10).eval()
    model = OnDevice(module, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"device {device} ({name}), {len(x)} images, batch {args.batch_size}, repeats {args.repeats}, "
          f"{'bundled' if weights else 'random'} {BUNDLED_ARCH} weights")
    _engine_vs_bare(model, data, args)
    _generation_vs_inference(model, x, args)
    _bf16_vs_fp32(model, x, y, args)
    _autoattack_vs_bare(model, x, y, args, weights)
    if args.e2e:
        _end_to_end(device, args)


if __name__ == "__main__":
    main()
