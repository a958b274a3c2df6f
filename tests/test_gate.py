"""The CI gate: rule validation, pass/fail semantics, JUnit XML, Markdown and GitHub annotations."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from robusteval.errors import RobustEvalError
from robusteval.gate import (
    Rule,
    evaluate_gate,
    github_annotations,
    load_rules,
    markdown_summary,
    parse_rules,
    write_junit,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

SUMMARY = {"dense": "dense", "models": [
    {"id": "dense", "metrics": {"clean/accuracy": 0.90, "calibration/ece": 0.030, "corruption/mean_accuracy": 0.70}},
    {"id": "good", "metrics": {"clean/accuracy": 0.897, "calibration/ece": 0.028, "corruption/mean_accuracy": 0.69}},
    {"id": "bad", "metrics": {"clean/accuracy": 0.85, "calibration/ece": float("nan")}},  # corruption missing
]}


def _rules(text: str, tmp_path: Path) -> list[Rule]:
    path = tmp_path / "gate.yaml"
    path.write_text(text)
    return load_rules(path)


def test_example_gate_file_loads():
    rules = load_rules(CONFIGS / "gate.yaml")
    assert {r.metric for r in rules} == {"clean/accuracy", "corruption/mean_accuracy", "calibration/ece"}


def test_within_budget_passes():
    rules = parse_rules({"rules": {"clean/accuracy": {"max_drop": 0.005, "min": 0.89},
                                   "calibration/ece": {"max_increase": 0.0, "max_drop": 0.0, "max": 0.05},
                                   "corruption/mean_accuracy": {"max_relative_drop": 0.02}}})
    result = evaluate_gate(SUMMARY, rules, models=["good"])
    assert result.passed and len(result.checks) == 6, [c.message for c in result.failures]


def test_exceeded_missing_and_nan_fail_with_a_reason():
    rules = parse_rules({"rules": {"clean/accuracy": {"max_drop": 0.005},
                                   "calibration/ece": {"max_increase": 0.02},
                                   "corruption/mean_accuracy": {"max_drop": 0.02}}})
    result = evaluate_gate(SUMMARY, rules)
    assert not result.passed
    assert [(c.model, c.rule.metric) for c in result.failures] == [
        ("bad", "clean/accuracy"), ("bad", "calibration/ece"), ("bad", "corruption/mean_accuracy")]
    messages = [c.message for c in result.failures]
    assert "drop 0.05 exceeds budget max_drop" in messages[0]
    assert "NaN" in messages[1] and "missing for model 'bad'" in messages[2]


def test_drop_is_direction_aware_and_relative_drop_scales():
    summary = {"dense": "d", "models": [{"id": "d", "metrics": {"calibration/ece": 0.03, "clean/accuracy": 0.8}},
                                        {"id": "p", "metrics": {"calibration/ece": 0.05, "clean/accuracy": 0.78}}]}
    rules = parse_rules({"rules": {"calibration/ece": {"max_drop": 0.019},
                                   "clean/accuracy": {"max_relative_drop": 0.03}}})
    ece, acc = evaluate_gate(summary, rules).checks
    assert not ece.passed and "drop 0.02 " in ece.message  # ECE rose by 0.02: that is its drop
    assert acc.passed and "relative drop 0.025" in acc.message  # 0.02 / 0.8


def test_missing_reference_metric_fails():
    summary = {"dense": "d", "models": [{"id": "d", "metrics": {}}, {"id": "p", "metrics": {"clean/accuracy": 0.9}}]}
    result = evaluate_gate(summary, parse_rules({"rules": {"clean/accuracy": {"max_drop": 0.01, "min": 0.5}}}))
    drop_check, min_check = result.checks
    assert not drop_check.passed and "reference model 'd'" in drop_check.message
    assert min_check.passed  # absolute bounds need no reference


def test_unknown_reference_or_model_is_bad_input():
    rules = parse_rules({"rules": {"clean/accuracy": {"max_drop": 0.01}}})
    with pytest.raises(RobustEvalError, match="unknown reference model 'nope'"):
        evaluate_gate(SUMMARY, rules, reference="nope")
    with pytest.raises(RobustEvalError, match="did you mean 'good'"):
        evaluate_gate(SUMMARY, rules, models=["goood"])


@pytest.mark.parametrize(("text", "match"), [
    ("rules:\n  clean/accuracy: {max_dorp: 0.01}\n", r"rule 'clean/accuracy'.*did you mean 'max_drop'"),
    ("rules:\n  clean/accuracy: {max_drop: lots}\n", r"rule 'clean/accuracy'.*finite number for max_drop, got 'lots'"),
    ("rules:\n  clean/accuracy: {max_drop: .nan}\n", r"finite number"),
    ("rules:\n  clean/accuracy: {max_drop: true}\n", r"finite number"),
    ("rules:\n  clean/accuracy: 0.01\n", r"rule 'clean/accuracy'.*mapping like"),
    ("rule:\n  clean/accuracy: {max_drop: 0.01}\n", r"single top-level key 'rules', got \['rule'\]"),
    ("rules: {}\n", r"non-empty mapping"),
    ("rules: [\n", r"not valid YAML at line"),
])
def test_bad_rules_files_name_the_file_and_rule(tmp_path, text, match):
    with pytest.raises(RobustEvalError, match=match) as info:
        _rules(text, tmp_path)
    assert "gate.yaml" in str(info.value) and "\n" not in str(info.value)


def test_missing_rules_file(tmp_path):
    with pytest.raises(RobustEvalError, match=r"gate file .*absent.yaml does not exist \(give a path, or a preset"):
        load_rules(tmp_path / "absent.yaml")


def test_junit_xml_has_one_case_per_rule_per_model(tmp_path):
    rules = parse_rules({"rules": {"clean/accuracy": {"max_drop": 0.005}, "calibration/ece": {"max_increase": 0.02},
                                   "corruption/mean_accuracy": {"max_drop": 0.02}}})
    path = write_junit(evaluate_gate(SUMMARY, rules), tmp_path / "out" / "junit.xml")
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites" and (root.get("tests"), root.get("failures")) == ("6", "3")
    suites = root.findall("testsuite")
    assert [(s.get("tests"), s.get("failures")) for s in suites] == [("3", "0"), ("3", "3")]
    cases = root.iter("testcase")
    failed = [c for c in cases if c.find("failure") is not None]
    assert len(failed) == 3 and all(c.find("failure").get("message") for c in failed)
    assert {c.get("name") for c in failed} == {r.name for r in rules}


def test_markdown_and_annotations_list_failures():
    rules = parse_rules({"rules": {"clean/accuracy": {"max_drop": 0.005}}})
    result = evaluate_gate(SUMMARY, rules)
    md = markdown_summary(result)
    assert "FAILED (1 of 2 checks)" in md and md.count("\n| `") == 2
    (note,) = github_annotations(result)
    assert note.startswith("::error title=robusteval gate%3A clean/accuracy max_drop 0.005::bad: ")
    passing = evaluate_gate(SUMMARY, rules, models=["good"])
    assert github_annotations(passing) == [] and "passed" in markdown_summary(passing)


# --- user-controlled names cannot inject into CI outputs ----------------------------------------------------------

EVIL_MODEL = "evil\n::error title=pwned::owned\r\x1b[31m\x00`|%,:"
EVIL_METRIC = "clean/accuracy\n::set-output name=x::y\x07"
EVIL = {"dense": "dense", "models": [{"id": "dense", "metrics": {"clean/accuracy": 0.9, EVIL_METRIC: 0.9}},
                                     {"id": EVIL_MODEL, "metrics": {"clean/accuracy": 0.5, EVIL_METRIC: 0.5}}],
        "declarations": {name: {"higher_is_better": True} for name in ("accuracy", EVIL_METRIC.rsplit("/", 1)[-1])}}


def _evil_result():
    return evaluate_gate(EVIL, parse_rules({"rules": {"clean/accuracy": {"max_drop": 0.01},
                                                      EVIL_METRIC: {"max_drop": 0.01}}}))


def test_markdown_summary_has_no_raw_newline_from_a_name():
    md = markdown_summary(_evil_result())
    lines = md.splitlines()
    assert len(lines) == 6 + 2  # title, blank, reference, blank, header, rule, one row per check
    assert not any(line.startswith("::") for line in lines)
    assert all(line.startswith("|") for line in lines[4:])
    assert "\x1b" not in md and "\x00" not in md and "\\x0a::error title=pwned" in md
    assert all(line.count("|") - line.count("\\|") == 7 for line in lines[4:])  # no extra column from a '|'


def test_annotations_escape_data_and_properties_as_the_actions_toolkit():
    notes = github_annotations(_evil_result())
    assert len(notes) == 2
    for note in notes:
        assert "\n" not in note and "\r" not in note and note.startswith("::error title=")
        title, _, message = note[len("::error title="):].partition("::")
        assert ":" not in title and "," not in title  # properties: ':' and ',' escaped too
    assert "evil%0A::error title=pwned::owned%0D" in notes[0] and "%25%2C%3A" not in notes[0].split("::", 2)[2]
    assert "robusteval gate%3A clean/accuracy%0A%3A%3Aset-output name=x%3A%3Ay" in notes[1]


def test_junit_is_well_formed_with_control_characters_in_names(tmp_path):
    path = write_junit(_evil_result(), tmp_path / "junit.xml")
    root = ET.parse(path).getroot()  # ill-formed XML raises here
    names = [case.get("classname") for case in root.iter("testcase")]
    assert names == ["robusteval.gate.evil\n::error title=pwned::owned\r\\u001b[31m\\u0000`|%,:"] * 2
    assert "\\u0007" in root.findall(".//testcase")[1].get("name")


def test_junit_to_an_unwritable_path_is_bad_input(tmp_path):
    with pytest.raises(RobustEvalError, match="cannot write the JUnit file"):
        write_junit(_evil_result(), tmp_path)  # a directory


def test_a_single_model_run_is_gated_on_absolute_budgets_only():
    summary = {"dense": "dense", "models": [{"id": "dense", "metrics": {"clean/accuracy": 0.9}}]}
    result = evaluate_gate(summary, parse_rules({"rules": {"clean/accuracy": {"min": 0.95}}}))
    assert [c.model for c in result.checks] == ["dense"] and not result.passed
    with pytest.raises(RobustEvalError, match="only the model 'dense'.*min/max"):
        evaluate_gate(summary, parse_rules({"rules": {"clean/accuracy": {"max_drop": 0.01}}}))


def test_yaml_1_2_floats_are_numbers(tmp_path):
    (rule,) = _rules("rules:\n  clean/accuracy: {max_drop: 5e-3}\n", tmp_path)
    assert rule.limit == 0.005
    (rule,) = _rules("rules:\n  clean/accuracy: {max_drop: 1.0e-2}\n", tmp_path)
    assert rule.limit == 0.01


def test_a_binary_gate_file_is_bad_input(tmp_path):
    path = tmp_path / "gate.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" + bytes(range(256)))
    with pytest.raises(RobustEvalError, match="gate file .*gate.yaml is not UTF-8 text"):
        load_rules(path)


def test_gate_measures_against_the_run_baseline_and_checks_only_candidates():
    """With a control (dense+ft) the gate uses the baseline the report uses; baselines are not candidates."""
    summary = {"dense": "dense", "baseline": "dense+ft", "models": [
        {"id": "dense", "method": "dense", "metrics": {"clean/accuracy": 0.80}},
        {"id": "dense+ft", "method": "dense+ft", "metrics": {"clean/accuracy": 0.84}},
        {"id": "l1_filter@0.5", "method": "l1_filter", "metrics": {"clean/accuracy": 0.82}},
        {"id": "l1_filter+scratch@0.5", "method": "l1_filter+scratch", "metrics": {"clean/accuracy": 0.30}},
    ]}
    rules = parse_rules({"rules": {"clean/accuracy": {"max_drop": 0.01}}})
    result = evaluate_gate(summary, rules)
    assert result.reference == "dense+ft"
    assert [(c.model, c.passed) for c in result.checks] == [("l1_filter@0.5", False)]  # 0.84 - 0.82 > 0.01
    against_dense = evaluate_gate(summary, rules, reference="dense")
    assert [(c.model, c.passed) for c in against_dense.checks] == [("l1_filter@0.5", True)]
