"""``robusteval compare BASE NEW``: release-to-release deltas with bootstrap intervals, what else differs, the gate."""
from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from scipy import stats

from robusteval.analysis import bootstrap_difference_ci
from robusteval.cli import main
from robusteval.errors import RobustEvalError
from robusteval.models.bundled import BUNDLED_MODEL
from robusteval.results import decode_bits

CLEAN_ONLY = "data: {source: bundled}\nevaluate: {clean: true, calibration: {}, agreement: false}\n"


def _evaluate(model: Path, out: Path, config: Path, subset: int = 200) -> Path:
    code = main(["evaluate", str(model), "--arch", "cifar_resnet20", "--subset", str(subset), "--config", str(config),
                 "--out", str(out), "--quiet", "--no-report"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Small runs of the bundled ResNet-20 (clean data and calibration, 150-200 bundled images): the same
    run twice, a worse model (noise on its layer3 convolutions), another subset, another calibration config."""
    d = tmp_path_factory.mktemp("runs")
    config, bins = d / "clean.yaml", d / "bins.yaml"
    config.write_text(CLEAN_ONLY)
    bins.write_text(CLEAN_ONLY.replace("calibration: {}", "calibration: {bins: 10}"))
    weights = load_file(str(BUNDLED_MODEL))
    generator = torch.Generator().manual_seed(0)
    for key, value in weights.items():
        if key.startswith("layer3") and value.dim() == 4:
            weights[key] = value + value.std() * torch.randn(value.shape, generator=generator)
    save_file(weights, str(d / "worse.safetensors"))
    return {"base": _evaluate(BUNDLED_MODEL, d / "base", config), "again": _evaluate(BUNDLED_MODEL, d / "again", config),
            "worse": _evaluate(d / "worse.safetensors", d / "worse", config),
            "subset": _evaluate(BUNDLED_MODEL, d / "subset", config, subset=150),
            "bins": _evaluate(BUNDLED_MODEL, d / "bins", bins)}


def _rules(tmp_path: Path, text: str = "clean/accuracy: {max_drop: 0.01}\n  calibration/ece: {max_increase: 0.02}\n"):
    path = tmp_path / "rules.yaml"
    path.write_text(f"rules:\n  {text}")
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _bits(run: Path) -> np.ndarray:
    record = next(json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()
                  if json.loads(line)["condition"] == "clean")
    return decode_bits(record["correct"], record["n"])


def test_identical_runs_have_zero_deltas_and_pass_the_gate(runs, tmp_path, capsys):
    from robusteval import compare

    comparison = compare(runs["base"], runs["again"], out=tmp_path / "out")
    assert comparison.pairs == [("dense", "dense")] and comparison.paired and comparison.warnings == []
    assert comparison.config_changes == [] and len(comparison.deltas) > 10
    assert all(d.change == 0 for d in comparison.deltas)
    with_ci = [d for d in comparison.deltas if d.ci is not None]
    assert [d.metric for d in with_ci] == ["clean/accuracy"]
    assert all(d.ci[0] <= 0 <= d.ci[1] and d.paired and d.verdict == "within noise" for d in with_ci)
    data = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert data["paired"] is True and {d["change"] for d in data["deltas"]} == {0.0}
    junit = tmp_path / "junit.xml"
    assert main(["compare", str(runs["base"]), str(runs["again"]), "--out", str(tmp_path / "cli"),
                 "--gate", str(_rules(tmp_path)), "--junit", str(junit)]) == 0
    out = capsys.readouterr().out
    assert "robusteval gate passed" in out and "0 metric(s) worse and 0 better beyond noise" in out
    assert ET.parse(junit).getroot().get("failures") == "0"
    assert "robusteval gate passed" in (tmp_path / "cli" / "comparison.md").read_text()


def test_a_worse_model_on_the_same_data_fails_the_gate(runs, tmp_path, capsys, monkeypatch):
    from robusteval import compare

    comparison = compare(runs["base"], runs["worse"])
    clean = next(d for d in comparison.deltas if d.metric == "clean/accuracy")
    assert clean.paired and clean.ci[1] < 0 and clean.verdict == "worse"
    # the paired interval against SciPy's paired percentile bootstrap over the same per-sample bits
    before, after = _bits(runs["base"]).astype(float), _bits(runs["worse"]).astype(float)
    assert clean.change == pytest.approx(after.mean() - before.mean())
    ref = stats.bootstrap((before, after), lambda a, b, axis: np.mean(b - a, axis=axis), paired=True,
                          method="percentile", n_resamples=20000, random_state=1).confidence_interval
    assert clean.ci == pytest.approx((ref.low, ref.high), abs=0.012)
    (_, _, before_sha, after_sha), = comparison.model_digests()
    assert before_sha and after_sha and before_sha != after_sha
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    rules, junit = _rules(tmp_path), tmp_path / "junit.xml"
    assert main(["compare", str(runs["base"]), str(runs["worse"]), "--out", str(tmp_path / "out"),
                 "--gate", str(rules), "--junit", str(junit)]) == 1
    captured = capsys.readouterr()
    assert "robusteval: gate failed: 2 of 2 checks exceeded their budget" in captured.err
    annotations = [line for line in captured.out.splitlines() if line.startswith("::error")]
    assert len(annotations) == 2 and "clean/accuracy drop 0." in annotations[0]
    assert ET.parse(junit).getroot().get("failures") == "2"
    assert json.loads((tmp_path / "out" / "comparison.json").read_text())["gate"]["passed"] is False
    # the same check from the gate's side
    assert main(["gate", str(runs["worse"]), "--baseline-run", str(runs["base"]), "--gate", str(rules)]) == 1
    assert "robusteval gate FAILED (2 of 2 checks)" in capsys.readouterr().out


def test_different_subsets_are_unpaired_with_a_warning(runs, tmp_path, capsys):
    assert main(["compare", str(runs["base"]), str(runs["subset"]), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "robusteval: warning: deltas are unpaired" in err and "different subset (200 vs 150)" in err
    data = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert data["paired"] is False
    clean = next(d for d in data["deltas"] if d["metric"] == "clean/accuracy")
    assert clean["paired"] is False and clean["ci"][0] <= clean["change"] <= clean["ci"][1]
    assert {"key": "data.subset", "base": 200, "new": 150} in data["config_changes"]
    assert "different subset (200 vs 150)" in (tmp_path / "out" / "comparison.html").read_text()


def test_a_config_change_is_listed(runs, tmp_path, capsys):
    from robusteval import compare

    comparison = compare(runs["base"], runs["bins"], out=tmp_path / "out")
    assert comparison.paired  # same samples: only the ECE's binning changed
    assert comparison.config_changes == [("evaluate.calibration.bins", 15, 10)]
    digest = next(row for row in comparison.setup if row[0] == "config digest")
    assert digest[1] != digest[2]
    markdown = (tmp_path / "out" / "comparison.md").read_text()
    assert "`config evaluate.calibration.bins`: 15 → 10" in markdown
    assert "evaluate.calibration.bins" in (tmp_path / "out" / "comparison.html").read_text()


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--help"])
    assert exc.value.code == 0 and "BASE_ID=NEW_ID" in capsys.readouterr().out


def test_unpaired_interval_matches_scipy():
    rng = np.random.default_rng(3)
    before, after = rng.random(300) < 0.8, rng.random(250) < 0.7
    low, high = bootstrap_difference_ci(before, after, n_resamples=20000, seed=1)
    ref = stats.bootstrap((before.astype(float), after.astype(float)),
                          lambda a, b, axis: np.mean(b, axis=axis) - np.mean(a, axis=axis), paired=False,
                          method="percentile", n_resamples=20000, random_state=2).confidence_interval
    assert (low, high) == pytest.approx((ref.low, ref.high), abs=0.008)


def _edit_summary(run: Path, tmp_path: Path, edit) -> Path:
    copy = shutil.copytree(run, tmp_path / f"edited-{run.name}")
    summary = json.loads((copy / "summary.json").read_text())
    edit(summary)
    (copy / "summary.json").write_text(json.dumps(summary))
    return copy


def _incomplete(s):
    s.update(complete=False, missing=[{"model": "dense", "condition": "clean"}])


def _rename(s):
    s["models"][0]["id"] = "v2"


def _drop_ece(s):
    del s["models"][0]["metrics"]["calibration/ece"]


@pytest.mark.parametrize(("edit", "extra", "names"), [
    (_incomplete, [], ["edited-again", "the run is incomplete", "'clean'"]),
    (lambda s: s.update(schema_version=3), [], ["edited-again", "summary.json", "schema_version 2, got 3"]),
    (_rename, [], ["no model in common", "edited-again", "['v2']", "--pair"]),
    (None, ["--pair", "dense=v9"], ["edited-again", "unknown model 'v9'"]),
    (None, ["--pair", "dense"], ["--pair 'dense'", "BASE_ID=NEW_ID"]),
    (_drop_ece, ["--gate", "RULES"], ["'calibration/ece'", "only the base run", "base"]),
])
def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, capsys, edit, extra, names):
    new = _edit_summary(runs["again"], tmp_path, edit or (lambda s: None))
    extra = [str(_rules(tmp_path)) if arg == "RULES" else arg for arg in extra]
    out = tmp_path / "out"
    assert main(["compare", str(runs["base"]), str(new), "--out", str(out), *extra]) == 2
    line = _error_line(capsys)
    assert line.startswith("robusteval: error: ") and all(n in line for n in names), line
    assert not out.exists()


def test_bad_input_from_the_gate_side(runs, tmp_path, capsys):
    rules = _rules(tmp_path)
    assert main(["gate", str(runs["base"]), "--baseline-run", str(tmp_path / "nope"), "--gate", str(rules)]) == 2
    assert "expected a run directory" in _error_line(capsys)
    assert main(["gate", str(runs["base"]), "--baseline-run", str(runs["again"]), "--gate", str(rules),
                 "--reference", "dense"]) == 2
    assert "--reference and --baseline-run exclude each other" in _error_line(capsys)
    with pytest.raises(RobustEvalError, match="neither run has it"):
        from robusteval.analysis.compare import compare_runs
        from robusteval.gate import evaluate_comparison_gate, parse_rules

        evaluate_comparison_gate(compare_runs(runs["base"], runs["again"]),
                                 parse_rules({"rules": {"ood/mean_auroc_msp": {"max_drop": 0.01}}}))


def test_comparison_page_overlays_both_runs_and_is_self_contained(tmp_path):
    from fixtures.runs import write_synthetic_run
    from robusteval.report.comparison import SECTIONS, compare

    base, new = write_synthetic_run(tmp_path / "v1"), write_synthetic_run(tmp_path / "v2")
    compare(base, new, pairs=[("magnitude@0.9", "magnitude@0.7"), ("dense", "dense")], out=tmp_path / "out")
    text = (tmp_path / "out" / "comparison.html").read_text(encoding="utf-8")
    for title in SECTIONS.values():
        assert f"<h2>{title}</h2>" in text
    assert len(re.findall(r'<img alt="[^"]*: both runs" src="data:image/png;base64,', text)) >= 7
    assert "magnitude@0.9 → magnitude@0.7" in text and "no data digest in the manifest" in text
    for url in re.findall(r'(?:src|href)="([^"]*)"', text):
        assert url.startswith(("data:", "#")), url


def test_names_are_escaped_in_every_output(tmp_path, capsys, monkeypatch):
    """A model id with markup, a newline that would start a workflow command and mathtext renders as text."""
    from fixtures.runs import write_synthetic_run

    evil = "<script>alert(1)</script>\n::error title=pwned::x$\\frac{$"
    runs = []
    for name in ("v1", "v2"):
        run = write_synthetic_run(tmp_path / name)
        for file in ("summary.json", "records.jsonl", "models.jsonl"):
            path = run / file
            path.write_text(path.read_text().replace("random@0.5", json.dumps(evil)[1:-1]))
        runs.append(run)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    rules = _rules(tmp_path, "clean/accuracy: {max_drop: -1.0}\n")  # always fails: annotations are printed
    assert main(["compare", str(runs[0]), str(runs[1]), "--out", str(tmp_path / "out"), "--gate", str(rules)]) == 1
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("::")] == [
        line for line in out.splitlines() if line.startswith("::error title=robusteval gate%3A clean/accuracy")]
    page = (tmp_path / "out" / "comparison.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    markdown = (tmp_path / "out" / "comparison.md").read_text()
    assert "\\x0a::error title=pwned" in markdown and not any(line.startswith("::") for line in markdown.splitlines())


@pytest.mark.browser
def test_comparison_page_renders_in_headless_chromium(tmp_path):
    from fixtures.browser import open_in_chromium
    from fixtures.runs import write_synthetic_run
    from robusteval.report.comparison import SECTIONS, compare

    base, new = write_synthetic_run(tmp_path / "v1"), write_synthetic_run(tmp_path / "v2")
    compare(base, new, pairs=[("magnitude@0.9", "magnitude@0.7"), ("random@0.5", "random@0.7")], out=tmp_path / "out")
    page, errors = open_in_chromium(tmp_path / "out" / "comparison.html", tmp_path / "profile", "comparison.png")
    assert errors == []
    assert page["headings"] == list(SECTIONS.values())
    assert page["images"] >= 7 and page["broken"] == 0
    assert page["worse"] > 0  # random@0.7 is worse than random@0.5 beyond noise
    assert not page["overflow"]


def _page_figures(monkeypatch) -> dict:
    """alt text → the matplotlib Figure of every figure the comparison page embeds (filled in as it renders)."""
    from robusteval.report import comparison

    figures, embed = {}, comparison._figure

    def spy(fig, alt: str) -> str:
        figures[alt] = fig
        return embed(fig, alt)

    monkeypatch.setattr(comparison, "_figure", spy)
    return figures


def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_visible()]


def _legend(fig) -> list[str]:
    return [t.get_text() for t in fig.legends[0].get_texts()]


def _details(run: Path, model: str, condition: str) -> dict:
    return next(r["details"] for r in map(json.loads, (run / "records.jsonl").read_text().splitlines())
                if (r["model"], r["condition"]) == (model, condition))


def test_comparison_page_overlays_the_reliability_diagrams_and_roc_curves_of_both_runs(tmp_path, monkeypatch):
    from fixtures.runs import OOD_SETS, write_synthetic_run
    from robusteval.report.comparison import compare

    figures = _page_figures(monkeypatch)
    base, new = write_synthetic_run(tmp_path / "v1"), write_synthetic_run(tmp_path / "v2")
    compare(base, new, pairs=[("random@0.5", "random@0.9"), ("dense", "dense")], out=tmp_path / "out")
    text = (tmp_path / "out" / "comparison.html").read_text(encoding="utf-8")
    for alt in ("reliability diagrams: both runs", "OOD ROC curves: both runs"):
        assert f'<img alt="{alt}" src="data:image/png;base64,' in text
    assert "none in" not in text  # both runs have every pair's details: no note
    reliability, roc = figures["reliability diagrams: both runs"], figures["OOD ROC curves: both runs"]
    assert _titles(reliability) == ["random@0.5 → random@0.9", "dense"]
    assert _legend(reliability) == ["accuracy (base)", "accuracy (new)", "gap to confidence (base)",
                                    "gap to confidence (new)", "perfect calibration"]
    assert _titles(roc) == [f"OOD: {s}" for s in OOD_SETS]
    assert _legend(roc) == ["base run", "new run", "random@0.5 → random@0.9", "dense"]
    # the base run's model dashed, the new run's solid: the curves and bars are each run's own records
    panel = reliability.axes[0]
    bins = {run: _details(run_dir, model, "clean")["calibration"]["reliability"]["accuracy"]
            for run, run_dir, model in (("base", base, "random@0.5"), ("new", new, "random@0.9"))}
    outlined = [p.get_height() for p in panel.patches if not p.get_fill()]
    filled = [p.get_height() for p in panel.patches if p.get_fill()]
    assert outlined[:9] == pytest.approx(bins["base"][1:]) and filled[:9] == pytest.approx(bins["new"][1:])
    assert bins["base"] != bins["new"]
    lines = {line.get_linestyle(): line.get_ydata() for line in roc.axes[1].get_lines()
             if line.get_label() == "random@0.5 → random@0.9"}
    assert list(lines["--"]) == _details(base, "random@0.5", "ood/svhn")["ood"]["roc"]["msp"]["tpr"]
    assert list(lines["-"]) == _details(new, "random@0.9", "ood/svhn")["ood"]["roc"]["msp"]["tpr"]


@pytest.mark.parametrize("stripped", [("dense",), "every model"])
def test_a_pair_the_base_run_has_no_calibration_details_for_gets_a_note(tmp_path, monkeypatch, stripped):
    """Calibration off for one model (or the whole base run): no panel for the pair, a one-line note, no error."""
    from fixtures.runs import write_synthetic_run
    from robusteval.report.comparison import compare

    figures = _page_figures(monkeypatch)
    base, new = write_synthetic_run(tmp_path / "v1"), write_synthetic_run(tmp_path / "v2")
    path = base / "records.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        if stripped == "every model" or record["model"] in stripped:
            record["details"].pop("calibration", None)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    compare(base, new, pairs=[("dense", "dense"), ("magnitude@0.5", "magnitude@0.7")], out=tmp_path / "out")
    text = (tmp_path / "out" / "comparison.html").read_text(encoding="utf-8")
    notes = [line for line in re.findall(r'<p class="note">([^<]*)</p>', text) if "none in" in line]
    assert len(notes) == 1
    if stripped == "every model":
        assert "reliability: dense (none in the base run), magnitude@0.5 → magnitude@0.7 (none in the base run)" \
            in notes[0]
        assert "reliability diagrams: both runs" not in figures
    else:
        assert "reliability: dense (none in the base run)." in notes[0] and "magnitude@0.5" not in notes[0]
        assert _titles(figures["reliability diagrams: both runs"]) == ["magnitude@0.5 → magnitude@0.7"]
    assert _titles(figures["OOD ROC curves: both runs"]) == ["OOD: gaussian", "OOD: svhn"]
