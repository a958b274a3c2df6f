"""Sharing corrupted batches across a family, and the cost of the logit-reading evaluators.

    python benchmarks/bench_family.py [--n 200] [--models 8] [--repeats 3]

A: the engine audits a family of ``--models`` ResNet-20s on all 19 corruptions x 5 severities,
   each corrupted batch made once and fed to every model (accuracy only).
B: the same family audited one model at a time: models x (generation + inference).
C: A plus calibration and agreement on every condition.
Prints medians and the ratios B/A (issue target >= 1.8x) and C/A (target < 1.10x).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from robusteval.conditions import build_conditions
from robusteval.config import AuditConfig, CorruptionSettings, DataSettings, EvaluateSettings
from robusteval.data.sources import load_source
from robusteval.engine import EngineSettings, ModelEntry, run_conditions
from robusteval.evaluators.calibration import CalibrationSettings
from robusteval.models.archs import build_arch
from robusteval.results import RunDir


def _config(n: int, extra: bool) -> AuditConfig:
    return AuditConfig(data=DataSettings(subset=n),
                       evaluate=EvaluateSettings(calibration=CalibrationSettings() if extra else None,
                                                 agreement=extra, corruption=CorruptionSettings(subset=n)))


def _time(models: list[ModelEntry], config: AuditConfig, data, settings: EngineSettings) -> float:
    conditions = [c for c in build_conditions(config.evaluate, data, seed=config.data.seed) if c.family == "corruption"]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run_conditions(models, conditions, RunDir(tmp), config.evaluate, settings)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = load_source("bundled", subset=args.n)
    family = []
    for i in range(args.models):
        torch.manual_seed(i)
        family.append(ModelEntry("dense" if i == 0 else f"m{i}", build_arch("cifar_resnet20", 10).eval()))
    settings = EngineSettings(batch_size=250, shard_size=1000, progress=False)
    plain, extra = _config(args.n, False), _config(args.n, True)
    shared, alone, evaluated = [], [], []
    for _ in range(args.repeats):
        shared.append(_time(family, plain, data, settings))
        alone.append(sum(_time([ModelEntry("dense", m.module)], plain, data, settings) for m in family))
        evaluated.append(_time(family, extra, data, settings))
    a, b, c = (statistics.median(t) for t in (shared, alone, evaluated))
    print(f"{args.models} models, 95 corruption conditions x {args.n} images, {torch.get_num_threads()} threads, "
          f"medians of {args.repeats}")
    print(f"A shared batches (accuracy only):      {a:8.2f} s")
    print(f"B one model at a time:                 {b:8.2f} s   B/A = {b / a:.2f}x  (target >= 1.8x)")
    print(f"C shared + calibration + agreement:    {c:8.2f} s   C/A = {c / a:.3f}x (target < 1.10x)")


if __name__ == "__main__":
    main()
