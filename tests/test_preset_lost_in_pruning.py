"""configs/lost-in-pruning.yaml validates and runs end to end on the bundled data with tiny budgets."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from robusteval import audit, load_config
from robusteval.analysis import analyse_run
from robusteval.data.corruptions import BENCHMARK_CORRUPTIONS, DEFAULT_NOISE_EPS, EXTRA_CORRUPTIONS
from robusteval.models.bundled import BUNDLED_ARCH, BUNDLED_MODEL


def test_preset_is_the_papers_setting() -> None:
    config = load_config("lost-in-pruning")
    assert config.analysis.tolerance == 0.005  # δ = 0.5%
    assert config.pruning.methods == ("magnitude", "l1_filter") and config.pruning.schedule == "iterative"
    assert config.evaluate.noise.eps == DEFAULT_NOISE_EPS and config.evaluate.noise.subset == 1000
    assert set(config.evaluate.corruption.corruptions) == set(BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS)
    assert config.evaluate.adversarial is None and config.evaluate.agreement


def test_preset_runs_end_to_end_with_tiny_budgets(tmp_path: Path) -> None:
    config = load_config("lost-in-pruning")
    config = config.replace(
        model=dataclasses.replace(config.model, arch=BUNDLED_ARCH),
        data=dataclasses.replace(config.data, source="bundled", train="bundled:train", subset=40, batch_size=40),
        pruning=dataclasses.replace(config.pruning, ratios=(0.5,), iterations=2, measure_latency=False, bn_batches=1,
                                    finetune=dataclasses.replace(config.pruning.finetune, max_images=32,
                                                                 batch_size=16)),
        evaluate=dataclasses.replace(
            config.evaluate,
            corruption=dataclasses.replace(config.evaluate.corruption, subset=10,
                                           corruptions=("gaussian_noise", "frost", "spatter")),
            noise=dataclasses.replace(config.evaluate.noise, eps=(0.0, 0.35, 0.7), subset=10)))
    run = audit(BUNDLED_MODEL, config=config, out=tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["complete"] and {m["id"] for m in summary["models"]} >= {"dense", "magnitude@0.5",
                                                                             "l1_filter@0.5", "dense+ft"}
    metrics = run.metrics("l1_filter@0.5")
    assert {"noise/0.7/accuracy", "noise/auc/accuracy", "agreement/noise/0.7/top1", "corruption/mce",
            "corruption/mce_all", "corruption/spatter/3/accuracy"} <= set(metrics)
    assert "normalised input" in summary["noise_units"]
    analysis = analyse_run(tmp_path / "run", tolerance=config.analysis.tolerance)
    assert set(analysis.curves["noise/auc/accuracy"]) == {"magnitude", "l1_filter"}
