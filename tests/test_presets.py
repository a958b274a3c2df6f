"""The paper presets (configs/synflow.yaml, crowley.yaml, lost-in-pruning.yaml): each names its paper, loads,
and runs end to end on the bundled model and data with its protocol kept and only the sizes cut."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from robusteval.api import audit
from robusteval.config import CONFIG_DIR, config_from_dict
from robusteval.models.bundled import BUNDLED_ARCH, BUNDLED_MODEL
from robusteval.report import write_report

PAPER_PRESETS = ["synflow", "crowley", "lost-in-pruning"]
HEADER_PARTS = ("Preset:", "Follows:", "Departures:", "Expected run time")


def _preset(name: str) -> dict:
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        pytest.skip(f"{path.name} is not in this checkout")
    return yaml.safe_load(path.read_text())


def _tiny(data: dict) -> dict:
    """The preset with its protocol (methods, schedule, at_init, baselines) and sizes cut to seconds."""
    data = json.loads(json.dumps(data))
    data["data"] = {"source": "bundled", "train": "bundled:train", "subset": 40, "batch_size": 40}
    data["model"] = {"arch": BUNDLED_ARCH}
    pruning = data["pruning"]
    pruning.update(ratios=pruning["ratios"][-1:], measure_latency=False, bn_batches=1, synflow_rounds=5,
                   data_samples_per_class=1, fisher_prune_every=1, iterations=min(pruning.get("iterations", 1), 2))
    pruning["finetune"] = dict(pruning.get("finetune", {}), epochs=0.01, max_images=8, batch_size=4)
    evaluate = data.setdefault("evaluate", {})
    for name, section in evaluate.items():
        if isinstance(section, dict) and "subset" in section:
            section["subset"] = 20
    if evaluate.get("corruption"):
        evaluate["corruption"].update(corruptions=["gaussian_noise", "fog"], severities=[1])
    if evaluate.get("adversarial"):
        evaluate["adversarial"].update(sample_size=8, batch_size=8)
    return data


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_preset_names_its_paper_protocol_departures_and_cost(name: str) -> None:
    _preset(name)
    header = (CONFIG_DIR / f"{name}.yaml").read_text().split("\n\n")[0]
    for part in HEADER_PARTS:
        assert part in header, f"{name}.yaml header lacks {part!r}"


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_preset_runs_end_to_end_on_bundled_data(name: str, tmp_path: Path) -> None:
    config = config_from_dict(_tiny(_preset(name)), where=f"{name}.yaml")
    run = audit(BUNDLED_MODEL, config=config, out=tmp_path / "run", progress=False)
    models = {m["id"]: m for m in run.summary["models"]}
    pruning = config.pruning
    for method in pruning.methods:
        member = models[f"{method}@{pruning.ratios[-1]:g}"]
        assert "clean/accuracy" in member["metrics"]
        assert member["recovery"].get("at_init", False) == pruning.at_init
    if pruning.scratch_baseline:
        assert any(mid.startswith(f"{pruning.methods[0]}+scratch@") for mid in models)
    report = write_report(run.path).read_text()
    if pruning.at_init:
        assert "pruned at initialisation" in report


def test_synflow_preset_follows_the_paper_grid() -> None:
    pruning = config_from_dict(_preset("synflow")).pruning
    assert pruning.at_init and set(pruning.methods) == {"random", "magnitude", "snip", "grasp", "synflow"}
    compression = [1 / (1 - r) for r in pruning.ratios]
    assert compression == pytest.approx([10 ** (k / 2) for k in range(1, 7)], rel=1e-3)


def test_crowley_preset_compares_fisher_with_its_scratch_twin() -> None:
    pruning = config_from_dict(_preset("crowley")).pruning
    assert "fisher" in pruning.methods and pruning.scratch_baseline and pruning.fisher_prune_every == 100
