"""Adversarial evaluator: wrapper overhead against the bare library calls, and per-image preset cost.

    python benchmarks/bench_adversarial.py --n 500 --repeats 3
    python benchmarks/bench_adversarial.py --n 32 --iters 10 --preset-n 8   # a busy laptop

Measured side by side in one run on CIFAR ResNet-20 (the bundled weights when
``robusteval/assets/cifar_resnet20.safetensors`` exists, else a random init whose own predictions
serve as labels so every image is attacked). Prints medians over ``--repeats``:

1. overhead: the evaluator restricted to one attack vs the same attack called bare (AutoAttack
   fast at one ε with ``--iters`` APGD iterations; foolbox L∞ PGD over the ε list on the same
   clean-correct images). The
   evaluator's extra work (input checks, a clean pass, the noise and zero-gradient checks) is
   included; target ratio <= 1.10.
2. per-image cost of each AutoAttack preset (full settings) at one ε through the evaluator on
   ``--preset-n`` images, timed once, with the robust fraction after each stage (cost grows with it).
"""
from __future__ import annotations

import argparse
import io
import statistics
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import foolbox as fb
import numpy as np
import torch
from PIL import Image

from robusteval.compat import autoattack_module
from robusteval.evaluators.adversarial import AdversarialSettings, evaluate_adversarial
from robusteval.evaluators.attacks import pgd_config
from robusteval.models.archs import build_arch

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "robusteval" / "assets" / "cifar_resnet20.safetensors"
TARBALL = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
EXTRACTED = Path("/tmp/cifar/cifar10-jpeg/test")


def load_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first test images of each class, round-robin, as float [0, 1] NCHW and int64 labels."""
    by_class: dict[str, list[bytes]] = {}
    per_class = -(-n // 10)
    if EXTRACTED.is_dir():
        for d in sorted(p for p in EXTRACTED.iterdir() if p.is_dir()):
            by_class[d.name] = [f.read_bytes() for f in sorted(d.iterdir())[:per_class]]
    else:
        with tarfile.open(TARBALL) as tar:
            for m in tar:
                parts = m.name.split("/")
                if m.isfile() and len(parts) >= 3 and parts[-3] == "test" and len(by_class.setdefault(parts[-2], [])) < per_class:
                    by_class[parts[-2]].append(tar.extractfile(m).read())  # type: ignore[union-attr]
    images, labels = [], []
    for i in range(per_class):
        for label, name in enumerate(sorted(by_class)):
            if i < len(by_class[name]) and len(images) < n:
                images.append(np.asarray(Image.open(io.BytesIO(by_class[name][i])).convert("RGB")))
                labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255)
    return x.contiguous(), torch.tensor(labels, dtype=torch.int64)


def load_model() -> tuple[torch.nn.Module, bool]:
    model = build_arch("cifar_resnet20", 10)
    if WEIGHTS.is_file():
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(WEIGHTS)))
    return model.eval(), WEIGHTS.is_file()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


QUIET = dict(attacks=(), autoattack="off", min_norm=(), transfer=(), large_eps=None, batch_size=250, seed=0)


def autoattack_pair(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, iters: int,
                    device: torch.device | str = "cpu") -> tuple[Callable[[], object], Callable[[], object]]:
    """(evaluator, bare): the evaluator restricted to AutoAttack fast at one ε with ``iters`` APGD
    iterations, and the same attack called bare through pyautoattack on ``device``, on ``x``, ``y``."""
    fast = AdversarialSettings(**{**QUIET, "autoattack": "fast", "autoattack_eps": (eps,), "autoattack_iters": iters})

    def bare() -> object:
        aa = autoattack_module().AutoAttack(model, norm="Linf", eps=eps, version="custom",
                                            attacks=["apgd-ce", "apgd-t"], seed=0, device=device)
        for apgd in (aa.apgd, aa.apgd_targeted):
            apgd.n_restarts, apgd.n_iter = 1, iters
            apgd.n_iter_2, apgd.n_iter_min, apgd.size_decr = (max(int(f * iters), 1) for f in (0.22, 0.06, 0.03))
        return aa.run_standard_evaluation(x, y, batch_size=250)

    return (lambda: evaluate_adversarial(model, x, y, settings=fast)), bare


def side_by_side(name: str, ours: Callable[[], object], bare: Callable[[], object], repeats: int, n: int) -> None:
    """Interleave the two calls, swapping which goes first, so machine load hits both alike."""
    t_ours, t_bare = [], []
    for r in range(repeats):
        for first in ((bare, ours) if r % 2 == 0 else (ours, bare)):
            (t_bare if first is bare else t_ours).append(timed(first))
    a, b = statistics.median(t_ours), statistics.median(t_bare)
    verdict = "ok" if a / b <= 1.10 else "OVER TARGET"
    print(f"{name:<34} evaluator {a:8.2f} s  bare {b:8.2f} s  ratio {a / b:5.3f} ({verdict}; {a / n * 1e3:.1f} ms/image)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="images (default 500)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eps", type=float, default=2 / 255, help="L∞ ε for AutoAttack (default 2/255)")
    parser.add_argument("--iters", type=int, default=100, help="APGD iterations in the overhead comparison")
    parser.add_argument("--preset-n", type=int, default=None, help="images for the preset costs (default --n)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, trained = load_model()
    x, y = load_images(args.n)
    if not trained:
        with torch.no_grad():
            y = model(x).argmax(1)
    n = len(x)
    print(f"ResNet-20 ({'bundled weights' if trained else 'RANDOM INIT: labels = its own predictions'}), "
          f"{n} CIFAR-10 test images, {args.threads} thread(s), median of {args.repeats}")
    ours, bare = autoattack_pair(model, x, y, eps=args.eps, iters=args.iters)
    side_by_side(f"AutoAttack fast, 1 eps, {args.iters} iters", ours, bare, args.repeats, n)

    pgd = AdversarialSettings(**{**QUIET, "attacks": ("linf_pgd",)})
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    xc, yc = x[correct], y[correct]

    def bare_pgd() -> object:
        torch.manual_seed(0)
        attack = fb.attacks.LinfPGD(**pgd_config(pgd.pgd_steps))
        fmodel = fb.PyTorchModel(model, bounds=(0, 1))
        return [attack(fmodel, xc[i : i + 250], yc[i : i + 250], epsilons=list(pgd.linf_eps))
                for i in range(0, len(xc), 250)]

    side_by_side(f"foolbox L-inf PGD, {len(pgd.linf_eps)} eps", lambda: evaluate_adversarial(model, x, y, settings=pgd),
                 bare_pgd, args.repeats, n)

    m = min(args.preset_n or n, n)
    for preset in ("fast", "standard"):
        settings = AdversarialSettings(**{**QUIET, "autoattack": preset, "autoattack_eps": (args.eps,)})
        start = time.perf_counter()
        result = evaluate_adversarial(model, x[:m], y[:m], settings=settings)
        seconds = time.perf_counter() - start
        left = ", ".join(f"{s} {next(iter(c.values())):.3f}" for s, c in result.details["autoattack_stages"].items())
        print(f"preset {preset:<9} eps {args.eps:.5f}: {seconds / m:.3f} s/image ({seconds:.1f} s for {m}); "
              f"robust after {left}")


if __name__ == "__main__":
    main()
