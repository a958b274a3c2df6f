"""The metric and record contract: one key grammar, directions declared by evaluators, one derivation.

A metric added in one evaluator (declared there) reaches summary.json, the analysis, the report and
a gate rule with no other module edited; every headline the verdict table shows can be gated.
"""
from __future__ import annotations

import csv
import json

import pytest
import torch
from fixtures.runs import write_synthetic_run

from robusteval import metrics
from robusteval.analysis import analyse, write_summary
from robusteval.api import audit
from robusteval.config import AuditConfig, DataSettings, EvaluateSettings, ModelSettings
from robusteval.evaluators.base import LOGIT_EVALUATORS, LogitEvaluator, Outputs, Result, Use
from robusteval.gate import evaluate_gate, parse_rules
from robusteval.declarations import BUILTIN, Declarations, Metric
from robusteval.metrics import MetricKey
from robusteval.models.bundled import BUNDLED_ARCH, BUNDLED_MODEL
from robusteval.pruning import PruneSettings
from robusteval.pruning.settings import FinetuneSettings
from robusteval.report import write_report
from robusteval.results import RunDir


class MarginEvaluator(LogitEvaluator):
    """A new evaluator, written as a user would: top-1 minus top-2 logit, and the share of small margins."""

    name = "margin"
    declares = (Metric("mean_margin", True, "logits", "mean top-1 margin"),
                Metric("low_margin_rate", False, label="share of samples with a margin below 1"))

    def metrics(self, outputs: Outputs) -> dict[str, float]:
        top2 = outputs.logits.topk(2, dim=1).values
        margin = top2[:, 0] - top2[:, 1]
        return {"mean_margin": float(margin.mean()), "low_margin_rate": float((margin < 1).double().mean())}


@pytest.fixture
def margin_registered(monkeypatch):
    monkeypatch.setitem(LOGIT_EVALUATORS._items, "margin", Use(("clean",), lambda settings: MarginEvaluator()))


def test_a_metric_declared_in_one_evaluator_reaches_summary_analysis_report_and_gate(margin_registered, tmp_path):
    config = AuditConfig(data=DataSettings(subset=200, batch_size=100), model=ModelSettings(arch=BUNDLED_ARCH),
                         evaluate=EvaluateSettings(calibration=None),
                         pruning=PruneSettings(methods=("magnitude",), ratios=(0.5, 0.95), measure_latency=False,
                                               finetune=FinetuneSettings(epochs=0)))
    run = audit(BUNDLED_MODEL, config=config, out=tmp_path / "run", progress=False)

    summary = json.loads((run.path / "summary.json").read_text())
    for entry in summary["models"]:
        assert {"margin/mean_margin", "margin/low_margin_rate"} <= set(entry["metrics"])
    declared = Declarations.of_summary(summary)
    assert declared.lower_is_better("margin/low_margin_rate") and not declared.lower_is_better("margin/mean_margin")

    analysis = analyse(summary, RunDir(run.path).records())
    curve = analysis.curves["margin/low_margin_rate"]["magnitude"]
    dense, pruned = analysis.values["dense"]["margin/low_margin_rate"], analysis.values["magnitude@0.95"]
    assert curve.points[-1].drop == pytest.approx(pruned["margin/low_margin_rate"] - dense)  # lower is better

    report = write_report(run.path)
    assert "margin metrics vs prune ratio" in report.read_text()
    rows = list(csv.DictReader((run.path / "summary.csv").open()))
    assert {r["metric"] for r in rows} >= {"margin/mean_margin", "margin/low_margin_rate"}
    assert json.loads((run.path / "analysis.json").read_text())["metrics"]["margin/low_margin_rate"]["lower_is_better"]

    gate = evaluate_gate(summary, parse_rules({"rules": {"margin/low_margin_rate": {"max_drop": 1.0}}}))
    assert gate.passed and all("missing" not in c.message for c in gate.checks)
    observed = pruned["margin/low_margin_rate"] - dense
    failing = evaluate_gate(summary, parse_rules({"rules": {"margin/low_margin_rate": {"max_drop": observed - 1e-9}}}),
                            models=["magnitude@0.95"])
    assert not failing.passed


def test_every_verdict_headline_can_be_gated(tmp_path):
    """The summary writer stores every derived metric, so the gate sees what the report shows."""
    run_dir = write_synthetic_run(tmp_path / "run")
    run = RunDir(run_dir)
    (run_dir / "summary.json").unlink()
    models = [m.id for m in run.models()]
    summary = write_summary(run, digest="synthetic", baseline="auto", seconds=None,
                            plan=(models, sorted({r.condition for r in run.records()})))
    analysis = analyse(summary, run.records())
    assert set(analysis.families) == set(metrics.FAMILIES)  # noise and OOD headlines included
    rules = parse_rules({"rules": {key: {"max_drop": 1e6} for key in analysis.families.values()}})
    result = evaluate_gate(summary, rules)
    assert len(result.checks) == len(rules) * (len(models) - 1)
    assert result.passed, [c.message for c in result.failures]


def test_key_grammar_formats_and_parses_one_way():
    for key in ("clean/accuracy", "corruption/fog/3/accuracy", "adversarial/transfer/linf_pgd/0.00784/accuracy",
                "agreement/noise/0.1/top1", "ood/blobs/auroc_msp"):
        assert str(MetricKey.parse(key)) == key
    assert MetricKey.parse("corruption/fog/3/accuracy") == MetricKey("corruption", ("fog", "3"), "accuracy")
    with pytest.raises(ValueError):
        MetricKey.parse("accuracy")
    assert metrics.corruption_point("corruption/fog/3/accuracy") == ("fog", 3)
    assert metrics.corruption_point("corruption/fog/mean_accuracy") is None
    assert metrics.noise_point("noise/0.1/accuracy") == (0.1, "accuracy")
    assert metrics.noise_point("noise/auc/accuracy") is None
    point = metrics.attack_point("adversarial/transfer/linf_pgd/0.00784/accuracy")
    assert point is not None and point.transfer and point.attack == "linf_pgd" and point.eps == 0.00784
    assert metrics.attack_point("adversarial/min_norm/linf/median") is None


def test_directions_come_from_the_declarations():
    lower = ["calibration/ece", "clean/loss", "clean/error", "ood/svhn/fpr95_energy", "corruption/mce",
             "corruption/fog/relative_ce", "agreement/kl", "agreement/dense_correct_pruned_wrong"]
    higher = ["clean/accuracy", "ood/svhn/auroc_msp", "ood/mean_auroc_msp", "agreement/top1", "noise/auc/accuracy",
              "adversarial/min_norm/linf/median"]
    assert all(BUILTIN.lower_is_better(k) for k in lower)
    assert not any(BUILTIN.lower_is_better(k) for k in higher)
    with pytest.raises(ValueError, match="both higher- and lower-is-better"):
        BUILTIN.extended([Metric("ece", True)])


def test_an_evaluator_returning_an_undeclared_metric_is_a_bug_caught_at_once():
    class Sloppy(LogitEvaluator):
        name = "sloppy"
        declares = (Metric("kept", True),)

        def metrics(self, outputs: Outputs) -> dict[str, float]:
            return {"kept": 1.0, "forgotten": 0.0}

    with pytest.raises(TypeError, match="'forgotten', a metric it does not declare"):
        Sloppy()(Outputs(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)))
    assert isinstance(Sloppy().run(Outputs(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))), Result)


def test_records_have_one_shape():
    """Condition records and the attack stage's records come from one writer with the same keys."""
    from robusteval.engine.core import _as_record

    class Stub:
        name = "adversarial"

    condition_like = _as_record("m", ("adversarial", "adversarial"), 3, [(Stub(), Result({"fgsm/0.1/accuracy": 0.5}))],
                                provenance={"config": "x", "seed": 0}, seconds=1.0)
    record = condition_like.to_json()
    assert record["metrics"] == {"adversarial/fgsm/0.1/accuracy": 0.5}
    assert set(record) == {"model", "condition", "family", "n", "metrics", "details", "warnings", "note", "meta",
                           "config", "seed", "seconds"}


def test_attack_settings_without_a_batch_size_work_outside_an_audit():
    """``adversarial.batch_size`` defaults to the run's evaluation batch size; a direct call uses the default."""
    from robusteval.evaluators.adversarial import AdversarialSettings, AttackInputs, AdversarialEvaluator

    settings = AdversarialSettings(attacks=("fgsm",), linf_eps=(0.01,), l2_eps=(0.1,), autoattack="off",
                                   min_norm=(), transfer=(), large_eps=None, sample_size=8)
    assert settings.batch_size is None
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
    x, y = torch.rand(8, 3, 2, 2), torch.arange(8) % 3
    result = AdversarialEvaluator(settings)(AttackInputs(model, x, y))
    assert set(result.metrics) == {"clean_accuracy", "fgsm/0.01/accuracy"}
