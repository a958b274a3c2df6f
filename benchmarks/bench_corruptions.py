"""Corruption generation vs inference: all 19 corruptions × 5 severities on N CIFAR-10 test images.

For every (corruption, severity) batch this times ``corrupt`` and one ResNet-20 forward pass
(untrained weights: the cost is the same) on the result, side by side in one run, and
prints per-corruption medians over repeats and the ratio generation / inference (target:
<= 1x). It also prints what these timings imply for a family of K models when each batch is
generated once and shared, versus generated again for every model.

    python benchmarks/bench_corruptions.py --n 1000 --repeats 3

``--glass-reference M`` also times glass blur against the literal port of the reference's
per-pixel loop (``tests/glass_reference.py``) on M images, per severity.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from robusteval.data.corruptions import BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS, condition_seed, corrupt
from robusteval.data.corruptions.params import CIFAR
from robusteval.data.imagefolder import load_imagefolder
from robusteval.models.archs import build_arch

SHARED_TARBALL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
EXTRACTED = Path("/tmp/cifar/cifar10-jpeg/test")


def cifar_test_images(n: int) -> torch.Tensor:
    """``n`` class-balanced CIFAR-10 test images, float NCHW in [0, 1]."""
    root = EXTRACTED
    if not root.is_dir():
        target = Path(tempfile.gettempdir()) / "robusteval-bench-cifar"
        if not (target / "cifar10-jpeg" / "test").is_dir():
            with tarfile.open(SHARED_TARBALL) as tar:
                tar.extractall(target, filter="data")
        root = target / "cifar10-jpeg" / "test"
    data = load_imagefolder(root).stratified(n, seed=0)
    return data.images(slice(None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="number of CIFAR-10 test images (default 1000)")
    parser.add_argument("--batch", type=int, default=500, help="batch size of generation and inference")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats; medians are printed")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for both sides")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--family", type=int, default=8, help="family size K for the sharing estimate")
    parser.add_argument("--glass-reference", type=int, default=0, metavar="M",
                        help="also time glass blur against the literal reference loop on M images")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    images = cifar_test_images(args.n)
    if args.glass_reference:
        glass_versus_reference(images[: args.glass_reference])
    model = build_arch("cifar_resnet20", 10).to(device).eval()
    names = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
    batches = [images[i : i + args.batch] for i in range(0, len(images), args.batch)]
    with torch.inference_mode():
        corrupt(images[:2].to(device), "frost", 1, seed=0)  # builds the frost textures once, outside the timing
        model(images[:2].to(device))
        gen: dict[str, list[float]] = {name: [] for name in names}
        inf: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(args.repeats):
            for name in names:
                g = f = 0.0
                for severity in range(1, 6):
                    for index, batch in enumerate(batches):
                        batch = batch.to(device)
                        t0 = time.perf_counter()
                        out = corrupt(batch, name, severity, seed=condition_seed(name, severity, index))
                        _sync(device)
                        t1 = time.perf_counter()
                        model(out)
                        _sync(device)
                        g, f = g + t1 - t0, f + time.perf_counter() - t1
                gen[name].append(g)
                inf[name].append(f)

    print(f"{len(images)} CIFAR-10 test images x 19 corruptions x 5 severities = {len(images) * 95} images; "
          f"batch {args.batch}, {args.threads} thread(s), {device}, median of {args.repeats}")
    print(f"{'corruption':<18} {'generate s':>11} {'ResNet-20 s':>12} {'ratio':>7}")
    for name in names:
        g, f = statistics.median(gen[name]), statistics.median(inf[name])
        print(f"{name:<18} {g:>11.3f} {f:>12.3f} {g / f:>6.2f}x")
    total_gen = sum(statistics.median(v) for v in gen.values())
    total_inf = sum(statistics.median(v) for v in inf.values())
    print(f"{'all 95 conditions':<18} {total_gen:>11.3f} {total_inf:>12.3f} {total_gen / total_inf:>6.2f}x"
          f"   (target: generation <= 1x inference)")
    k = args.family
    shared, separate = total_gen + k * total_inf, k * (total_gen + total_inf)
    print(f"family of {k} (from these timings): shared generation {shared:.1f} s vs per-model generation "
          f"{separate:.1f} s = {separate / shared:.2f}x")


def glass_versus_reference(images: torch.Tensor) -> None:
    """Seconds per severity: batched ``glass_blur`` vs the literal per-pixel loop, one image at a time."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from glass_reference import numpy_draws, reference_glass_blur

    uint8 = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    rng = np.random.RandomState(0)
    print(f"glass blur on {len(images)} images: batched vs literal reference loop")
    for severity in range(1, 6):
        t0 = time.perf_counter()
        corrupt(images, "glass_blur", severity, seed=severity)
        t1 = time.perf_counter()
        for image in uint8:
            reference_glass_blur(image, CIFAR["glass_blur"][severity - 1], numpy_draws(rng))
        t2 = time.perf_counter()
        print(f"  severity {severity}: {t1 - t0:.3f} s vs {t2 - t1:.3f} s = {(t2 - t1) / (t1 - t0):.0f}x faster")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
