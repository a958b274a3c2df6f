"""Metric declarations as data: stored in summary.json, read back by analysis, report and gate; gate and
report import no torch; a run written before declarations were stored is migrated; an undeclared metric
is one line of bad input, never "higher is better"."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.runs import write_synthetic_run

from robusteval.analysis import analyse, write_summary
from robusteval.cli import main
from robusteval.declarations import BUILTIN, METRICS, Declarations, Metric
from robusteval.evaluators.base import LogitEvaluator, Outputs, evaluator_declarations
from robusteval.gate import evaluate_gate, parse_rules
from robusteval.results import SCHEMA_VERSION, RunDir

ROOT = Path(__file__).resolve().parents[1]
OLD_RUN = Path(__file__).parent / "fixtures" / "old_run"  # summary.json of a smoke audit made before the change
HEAVY = ("torch", "torchvision", "foolbox", "eagerpy")


def _run_with_summary(tmp_path: Path) -> RunDir:
    """A synthetic run whose summary.json comes from the real summary writer."""
    run = RunDir(write_synthetic_run(tmp_path / "run"))
    (run.path / "summary.json").unlink()
    plan = ([m.id for m in run.models()], sorted({r.condition for r in run.records()}))
    write_summary(run, digest="synthetic", baseline="auto", seconds=None, plan=plan)
    return run


def _rules(tmp_path: Path, rules: dict) -> str:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rules": rules}))
    return str(path)


def _heavy_modules_after(argv: list[str]) -> tuple[int, list[str]]:
    """Run the CLI in a fresh interpreter; its exit code and the heavy packages it imported."""
    code = ("import sys, json; from robusteval.cli import main; rc = main(sys.argv[1:]); "
            f"print(json.dumps([rc, sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})]))")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    rc, heavy = json.loads(done.stdout.strip().splitlines()[-1])
    return rc, heavy


def test_gate_report_and_compare_import_no_torch(tmp_path):
    run = _run_with_summary(tmp_path)
    old = tmp_path / "old"
    shutil.copytree(OLD_RUN, old)
    rules = _rules(tmp_path, {"clean/accuracy": {"max_drop": 1.0}, "calibration/ece": {"max_drop": 1.0}})
    for argv in (["gate", str(run.path), "--gate", rules], ["gate", str(old), "--gate", rules],
                 ["report", str(run.path)], ["compare", str(run.path), str(run.path), "--out", str(tmp_path / "c")]):
        rc, heavy = _heavy_modules_after(argv)
        assert rc == 0, argv
        assert heavy == [], f"robusteval {argv[0]} imported {heavy}"


def test_summary_carries_the_declarations_of_every_metric_it_holds(tmp_path):
    summary = json.loads((_run_with_summary(tmp_path).path / "summary.json").read_text())
    assert summary["schema_version"] == SCHEMA_VERSION == 2
    names = {k.rsplit("/", 1)[-1] for m in summary["models"] for k in m["metrics"]}
    assert set(summary["declarations"]) == names
    declared = summary["declarations"]
    assert declared["accuracy"]["higher_is_better"] is True and declared["ece"]["higher_is_better"] is False
    assert declared["temperature"]["higher_is_better"] is None
    assert declared["fpr95_msp"] == {"higher_is_better": False, "unit": "fraction", "label": "FPR at 95% TPR"}
    assert declared["relative_mce"]["unit"] == "ratio"  # a derived metric, declared where it is derived
    assert Declarations.from_json(declared).to_json() == declared


def test_gate_reads_directions_from_a_summary_written_before_the_change(tmp_path):
    raw = json.loads((OLD_RUN / "summary.json").read_text())
    assert raw["schema_version"] == 1 and "declarations" not in raw
    summary = RunDir(OLD_RUN).read_summary()
    assert summary["schema_version"] == 2
    declared = summary["declarations"]
    assert declared["ece"]["higher_is_better"] is False and declared["auroc_msp"]["higher_is_better"] is True
    assert declared["fpr95_energy"]["higher_is_better"] is False and declared["temperature"]["higher_is_better"] is None
    dense, pruned = (m["metrics"] for m in raw["models"])
    result = evaluate_gate(summary, parse_rules({"rules": {"calibration/ece": {"max_drop": 1.0},
                                                           "clean/accuracy": {"max_drop": 1.0}}}))
    ece, accuracy = result.checks
    assert ece.passed and f"drop {pruned['calibration/ece'] - dense['calibration/ece']:.4g} " in ece.message
    assert f"drop {dense['clean/accuracy'] - pruned['clean/accuracy']:.4g} " in accuracy.message
    with pytest.raises(Exception, match="no better direction|has none"):
        evaluate_gate(summary, parse_rules({"rules": {"calibration/temperature": {"max_drop": 1.0}}}))


def test_a_name_two_producers_use_is_declared_per_family(tmp_path):
    """``mce`` is a calibration fraction and a corruption error ratio, ``accuracy`` under attack is robust
    accuracy: the summary declares each per family, and a summary that declares the name once (as written
    before) reads with the same directions."""
    run = RunDir(write_synthetic_run(tmp_path / "run"))
    (run.path / "summary.json").unlink()
    records = [json.loads(line) for line in (run.path / "records.jsonl").read_text().splitlines()]
    for record in records:
        if record["condition"] == "clean":
            record["metrics"]["calibration/mce"] = 0.2
    (run.path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_summary(run, digest="synthetic", baseline="auto", seconds=None,
                  plan=([m.id for m in run.models()], sorted({r.condition for r in run.records()})))
    summary = json.loads((run.path / "summary.json").read_text())
    keys = sorted({k for m in summary["models"] for k in m["metrics"]})
    attacked = next(k for k in keys if k.startswith("adversarial/") and k.endswith("/accuracy"))

    declared = Declarations.of_summary(summary)
    assert summary["declarations"]["mce"]["families"] == {
        "calibration": {"unit": "fraction", "label": "maximum calibration error"},
        "corruption": {"unit": "ratio", "label": "mean corruption error"}}
    assert (declared.spec("corruption/mce").unit, declared.spec("corruption/mce").label) == \
        ("ratio", "mean corruption error")
    assert (declared.spec("calibration/mce").unit, declared.spec("calibration/mce").label) == \
        ("fraction", "maximum calibration error")
    assert declared.spec(attacked).label == "robust accuracy" and declared.spec("clean/accuracy").label == \
        "top-1 accuracy" and declared.spec("noise/0.1/accuracy").label == "top-1 accuracy"
    assert Declarations.from_json(summary["declarations"]).to_json() == summary["declarations"]

    before = summary | {"declarations": {name: {k: v for k, v in d.items() if k != "families"}
                                         for name, d in summary["declarations"].items()}}
    assert all(Declarations.of_summary(before).lower_is_better(k) == declared.lower_is_better(k) for k in keys)
    rules = parse_rules({"rules": {"corruption/mce": {"max_drop": 0.05}, attacked: {"max_drop": 0.05}}})
    assert evaluate_gate(before, rules) == evaluate_gate(summary, rules)


def _add_metric(path: Path, key: str) -> None:
    summary = json.loads((path / "summary.json").read_text())
    for entry in summary["models"]:
        entry["metrics"][key] = 0.5
    (path / "summary.json").write_text(json.dumps(summary))


@pytest.mark.parametrize("old", [False, True])
def test_an_undeclared_metric_is_one_line_of_bad_input(tmp_path, capsys, old):
    if old:
        shutil.copytree(OLD_RUN, run_dir := tmp_path / "old")
    else:
        run_dir = _run_with_summary(tmp_path).path
    _add_metric(run_dir, "clean/made_up")
    assert main(["gate", str(run_dir), "--gate", _rules(tmp_path, {"clean/accuracy": {"max_drop": 1.0}})]) == 2
    err = capsys.readouterr().err
    assert err.startswith("robusteval: error: ") and err.count("\n") == 1
    assert "'clean/made_up' is not declared" in err and ("schema_version 1" in err) == old
    with pytest.raises(Exception, match="'clean/made_up' is not declared"):
        analyse(json.loads((run_dir / "summary.json").read_text()))


def test_a_users_evaluator_declares_its_own_metrics_and_a_contradiction_is_caught():
    class Spread(LogitEvaluator):
        name = "spread"
        declares = (Metric("logit_spread", None, "logits", "spread of the logits"),)

        def metrics(self, outputs: Outputs) -> dict[str, float]:
            return {"logit_spread": float(outputs.logits.std())}

    assert evaluator_declarations().find("spread/logit_spread") == Spread.declares[0]
    assert BUILTIN.find("spread/logit_spread") is None
    with pytest.raises(ValueError, match="both higher- and lower-is-better"):
        type("Contrary", (LogitEvaluator,), {"name": "contrary", "declares": (Metric("accuracy", False),),
                                              "metrics": lambda self, outputs: {}})
    assert all(isinstance(m, Metric) for row in METRICS.values() for m in row)


def test_two_user_evaluators_that_contradict_fail_when_the_second_is_defined():
    def define(name: str, higher_is_better: bool | None) -> type:
        return type(name, (LogitEvaluator,), {"name": name.lower(), "metrics": lambda self, outputs: {},
                                              "declares": (Metric("sharpness", higher_is_better),)})

    first = define("Sharp", True)
    with pytest.raises(ValueError, match="'sharpness' is declared both higher- and lower-is-better.*Sharp"):
        define("Blunt", False)
    assert evaluator_declarations().find("sharp/sharpness") == first.declares[0]  # the run's summary still writes
    again = define("Sharp", False)  # a redefinition (a notebook cell run again) replaces its class
    assert evaluator_declarations().find("sharp/sharpness") == again.declares[0]


def test_the_declarations_table_imports_nothing_heavy():
    code = "import sys, robusteval.declarations; print(' '.join(sys.modules))"
    modules = set(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                                 env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout.split())
    assert "robusteval.declarations" in modules and not modules & {*HEAVY, "numpy"}
