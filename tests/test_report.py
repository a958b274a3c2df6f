"""The HTML report: rebuilt from a hand-made run directory alone (no models), self-contained, every section."""
from __future__ import annotations

import base64
import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from fixtures.browser import open_in_chromium
from fixtures.runs import write_synthetic_run
from robusteval.errors import RobustEvalError
from robusteval.report import write_report
from robusteval.report.html import SECTIONS

KNOWN = Path(__file__).parent / "fixtures" / "known_answer"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run = write_synthetic_run(tmp_path_factory.mktemp("run"))
    return write_report(run)


def test_report_has_every_section_and_embedded_figures(report):
    text = report.read_text(encoding="utf-8")
    for title in SECTIONS.values():
        assert f"<h2>{title}</h2>" in text
    figures = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', text)
    assert len(figures) >= 10
    assert all(base64.b64decode(f)[:8] == b"\x89PNG\r\n\x1a\n" for f in figures)
    assert "magnitude keeps clean accuracy up to 90% but corruption accuracy leaves tolerance at 90%" in text
    for colour in ("ok", "warn", "bad"):  # verdict cells of all three kinds
        assert f'<td class="{colour}">' in text
    assert "robusteval audit models/resnet20.pt" in text  # how to reproduce, from the manifest
    assert "check gradients" in text  # a record's adversarial sanity warning
    assert "layer3.2.conv2" in text  # collapsed layer


def test_report_is_self_contained(report):
    text = report.read_text(encoding="utf-8")
    assert "http:" not in text and "https:" not in text and "//" not in re.sub(r"base64,[^\"]+", "", text)
    for url in re.findall(r'(?:src|href)="([^"]*)"', text):
        assert url.startswith(("data:", "#")), url


def test_report_writes_analysis_json_and_summary_csv(report):
    run = report.parent
    analysis = json.loads((run / "analysis.json").read_text(encoding="utf-8"), parse_constant=pytest.fail)
    assert analysis["prune_potential"]["random"] == dict.fromkeys(analysis["families"], 0.0)
    assert analysis["prune_potential"]["magnitude"]["clean"] == 0.9
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    with open(run / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    n_derived = 2 * len(summary["models"])  # noise/mean_accuracy and ood/mean_auroc_msp per model
    assert len(rows) == sum(len(m["metrics"]) for m in summary["models"]) + n_derived
    row = next(r for r in rows if r["model"] == "random@0.9" and r["metric"] == "clean/accuracy")
    assert row["within_tolerance"] == "False" and float(row["ci_low"]) > 0


def test_sections_without_metrics_are_skipped(tmp_path):
    run = shutil.copytree(KNOWN, tmp_path / "known")  # summary only: no records, no manifest
    text = write_report(run).read_text(encoding="utf-8")
    assert "<h2>Verdict</h2>" in text and "<h2>Metrics vs prune ratio</h2>" in text
    for absent in ("corruption", "robustness", "calibration"):
        assert f"<h2>{SECTIONS[absent]}</h2>" not in text


def test_missing_run_directory_is_bad_input(tmp_path):
    with pytest.raises(RobustEvalError, match="expected a run directory"):
        write_report(tmp_path / "nope")
    with pytest.raises(RobustEvalError, match="summary.json is missing"):
        write_report(tmp_path)


@pytest.mark.browser
def test_report_renders_in_headless_chromium(report, tmp_path):
    page, errors = open_in_chromium(report, tmp_path / "profile", "report.png")
    assert errors == []
    assert page["headings"] == list(SECTIONS.values())
    assert page["gallery"] > 0 and page["thumbnails"] == page["gallery"]  # the forgotten inputs' pictures decode
    assert page["images"] >= 10 and page["broken"] == 0
    assert not page["overflow"]  # no horizontal scrolling on a laptop-sized window


def test_report_states_recovery_and_how_corrupted_inputs_were_made() -> None:
    from robusteval.analysis import Evidence
    from robusteval.report.sections import _condition_notes, _recovery

    summary = {"models": [
        {"id": "dense", "method": "dense"},
        {"id": "magnitude@0.5", "method": "magnitude", "recovery": {"finetune_epochs": 0.256, "bn_recalibrated": False}},
        {"id": "l1_filter@0.5", "method": "l1_filter", "recovery": {"finetune_epochs": 0, "bn_recalibrated": True}},
        {"id": "random@0.5", "method": "random", "recovery": {}},
    ]}
    text = _recovery(summary["models"])
    assert "<b>magnitude</b>: fine-tuned 0.26 epoch(s)" in text
    assert "<b>l1_filter</b>: BatchNorm re-calibrated" in text
    assert "<b>random</b>: no recovery" in text
    records = [{"family": "corruption", "condition": "corruption/frost/3", "meta": {"corruption": "frost"},
                "note": "generated on the fly (cifar parameters): procedural frost textures"},
               {"family": "clean", "condition": "clean", "note": "the evaluation data as given"}]
    notes = _condition_notes(Evidence.from_records(records).notes["corruption"])
    assert "frost" in notes and "procedural" in notes and "evaluation data as given" not in notes


def test_names_are_escaped_in_html_and_plots(tmp_path):
    """A model id with markup, '$' (matplotlib mathtext) and control characters renders as text."""
    run = write_synthetic_run(tmp_path / "run")
    evil = "<script>alert(1)</script>$\\frac{$\x1b"
    for name in ("summary.json", "records.jsonl", "models.jsonl"):
        path = run / name
        path.write_text(path.read_text(encoding="utf-8").replace("random@0.5", evil.replace("\\", "\\\\")
                                                                  .replace("\x1b", "\\u001b")), encoding="utf-8")
    text = write_report(run).read_text(encoding="utf-8")
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_a_single_model_with_corruptions_is_reported(tmp_path):
    """No pruned members: the corruption section is a table of the model's own accuracies."""
    from robusteval.results import RunDir, build_summary

    run = RunDir(tmp_path / "one")
    records = [{"model": "dense", "condition": f"corruption/{c}/{s}", "n": 10, "family": "corruption",
                "metrics": {f"corruption/{c}/{s}/accuracy": 0.5 + s / 10}} for c in ("fog", "snow") for s in (1, 3)]
    records.append({"model": "dense", "condition": "clean", "n": 10, "metrics": {"clean/accuracy": 0.9}})
    for rec in records:
        run.add_record(rec)
    run.add_model({"id": "dense", "method": "dense", "target_ratio": 0.0})
    run.write_summary(build_summary("dense", run.models(), records, {"complete": True, "missing": []}))
    text = write_report(run.path).read_text(encoding="utf-8")
    assert "<h2>Corruptions</h2>" in text and "Accuracy per corruption and severity" in text
    assert "<td>fog</td><td>0.6</td><td>0.8</td>" in text
