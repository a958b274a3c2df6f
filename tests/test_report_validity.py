"""What the report says about its own validity: the attack budget, the baseline, potential ranges."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from fixtures.runs import write_synthetic_run
from robusteval.config import CONFIG_DIR
from robusteval.report import write_report
from robusteval.report.html import attack_strength_note
from robusteval.report.sections import ATTACK_BUDGET
from robusteval.results import RunDir


def _quick_adversarial() -> dict:
    return yaml.safe_load((CONFIG_DIR / "quick.yaml").read_text())["evaluate"]["adversarial"]


def test_attack_strength_note_derives_from_the_settings() -> None:
    note = attack_strength_note({"config": {"evaluate": {"adversarial": _quick_adversarial()}}})
    for part in ("PGD 10 steps (default 40)", "50 attacked images (default 500)",
                 "AutoAttack 20 APGD iterations (default 100)", "upper bound"):
        assert part in note
    assert attack_strength_note({"config": {"evaluate": {"adversarial": {"pgd_steps": 40, "sample_size": 500}}}}) == ""
    assert attack_strength_note({}) == ""
    stronger = attack_strength_note({"config": {"evaluate": {"adversarial": {"pgd_steps": 100, "sample_size": 50}}}})
    assert "PGD" not in stronger and "50 attacked images" in stronger


def test_the_reports_attack_defaults_are_the_settings_defaults() -> None:
    from robusteval.evaluators.adversarial import AdversarialSettings

    defaults = vars(AdversarialSettings())
    assert {key: default for key, (_, default) in ATTACK_BUDGET.items()} == {k: defaults[k] for k in ATTACK_BUDGET}


def test_report_states_the_attack_budget_and_the_baseline(tmp_path: Path) -> None:
    run_dir = write_synthetic_run(tmp_path / "run")
    run = RunDir(run_dir)
    manifest = run.read_manifest()
    manifest["config"] = dict(manifest.get("config") or {}, evaluate={"adversarial": _quick_adversarial()})
    run.write_manifest(manifest)
    text = write_report(run_dir).read_text(encoding="utf-8")
    assert text.count("Attacks weaker than the defaults: PGD 10 steps (default 40)") == 2  # verdict and robustness
    assert "drops are measured against the untouched dense model" in text
    analysis = json.loads((run_dir / "analysis.json").read_text(encoding="utf-8"))
    assert analysis["baseline"] == analysis["untouched_dense"]
