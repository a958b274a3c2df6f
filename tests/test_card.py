"""The member card and the typed record: JSON round trips, lines of older runs, the role-based reference rule."""
from __future__ import annotations

import json

import pytest

from robusteval.analysis import analyse, baseline_id
from robusteval.card import ROLES, Costs, MemberCard, candidate_ids, reference_ids, summary_cards
from robusteval.errors import RobustEvalError
from robusteval.gate import Rule, evaluate_gate
from robusteval.records import Record
from robusteval.results import RunDir, build_summary

COSTS = Costs(sparsity=0.5, params=1000, nonzero_params=500, macs=20000, macs_effective=10000.0,
              layer_sparsity={"conv": 0.5}, collapsed_layers=("fc",), params_reduction=0.0, macs_reduction=0.0,
              latency_ms={"batch_1": 1.5}, latency_iqr_ms={"batch_1": [1.4, 1.6]}, latency_runs={"batch_1": 5},
              dense_latency_ms={"batch_1": 1.5}, dense_latency_iqr_ms={"batch_1": [1.4, 1.6]},
              speedup_measured={"batch_1": 1.0}, speedup_iqr={"batch_1": [0.9, 1.1]}, latency_device="cpu",
              sparse_runtime=False, speedup={"batch_1": 1.0}, speedup_basis="the reference")

# A models.jsonl line as written before cards had roles (keys of robusteval 0.x's _register).
OLD_LINE = {"id": "l1_filter@0.5", "method": "l1_filter", "target_ratio": 0.5, "sparsity": 0.49, "params": 130000,
            "nonzero_params": 130000, "macs": 2.1e7, "macs_effective": 2.1e7, "layer_sparsity": {"conv1": 0.5},
            "collapsed_layers": [], "params_reduction": 0.49, "macs_reduction": 0.5, "structured": True,
            "reference": "Li et al. 2017", "schedule": "one_shot", "warnings": ["w"], "prune_seconds": 0.2,
            "recovery": {"finetune_epochs": 0, "finetune_steps": 0, "bn_recalibrated": True},
            "input_shape": [1, 3, 32, 32]}


def _card(role: str, **changes) -> MemberCard:
    method = {"dense": "dense", "control": "dense+ft", "scratch": "m+scratch", "given": "given"}.get(role, "m")
    card = MemberCard(f"{role}-id", role, method, 0.5, COSTS, {"finetune_steps": 3, "at_init": True}, ("a", "b"),
                      structured=True, citation="paper", schedule="iterative", prune_seconds=1.25,
                      input_shape=(1, 3, 32, 32), extra={"future_key": [1, 2]})
    return card.replace(**changes)


@pytest.mark.parametrize("role", ROLES)
def test_a_card_of_every_role_survives_a_json_round_trip(role):
    card = _card(role)
    line = json.loads(json.dumps(card.to_json()))
    assert line["role"] == role and line["target_ratio"] == 0.5 and line["reference"] == "paper"
    assert line["future_key"] == [1, 2] and line["collapsed_layers"] == ["fc"]
    assert MemberCard.from_json(line) == card


def test_a_card_with_nothing_measured_writes_no_cost_keys():
    line = MemberCard("dense", "dense", "dense", 0.0).to_json()
    assert line == {"id": "dense", "role": "dense", "method": "dense", "target_ratio": 0.0, "warnings": [],
                    "recovery": {}}
    assert MemberCard.from_json(line) == MemberCard("dense", "dense", "dense", 0.0)


def test_an_old_models_line_reads_with_its_role_and_writes_back_every_key():
    card = MemberCard.from_json(OLD_LINE)
    assert card.role == "pruned" and card.ratio == 0.5 and card.costs.params_reduction == 0.49
    assert card.structured and card.citation == "Li et al. 2017" and card.input_shape == (1, 3, 32, 32)
    assert card.to_json() == OLD_LINE | {"role": "pruned"}
    roles = {m: MemberCard.from_json({"id": i, "method": m}).role for i, m in
             (("dense", "dense"), ("dense+ft", "dense+ft"), ("m+scratch@0.5", "m+scratch"), ("c", "given"),
              ("m@0.5", "m"))}
    assert roles == {"dense": "dense", "dense+ft": "control", "m+scratch": "scratch", "given": "given", "m": "pruned"}
    assert MemberCard.from_json({"id": "x", "sparsity": 0.3}).ratio == 0.3  # no target ratio: the sparsity


def test_costs_stated_unknown_are_written_back_as_null():
    """An ONNX graph with unknown ops has no MACs (``"macs": null``), an opaque model with no weight layers no
    sparsity: readers of models.jsonl and summary.json find the key, as before cards existed."""
    line = {"id": "m", "method": "given", "target_ratio": 0.0, "params": 10, "macs": None, "macs_effective": None,
            "sparsity": None, "params_reduction": 0.5, "macs_reduction": None, "warnings": [], "recovery": {}}
    card = MemberCard.from_json(line)
    assert card.costs.macs is None and card.costs.params == 10
    assert card.to_json() == line | {"role": "given"}
    assert json.loads(json.dumps(card.to_json()))["macs"] is None


def test_a_bad_role_is_a_one_line_error():
    with pytest.raises(RobustEvalError, match="expected a role among"):
        MemberCard.from_json({"id": "m", "role": "teacher"})


def test_run_models_are_cards_and_a_later_line_updates_one(tmp_path):
    run = RunDir(tmp_path)
    run.add_model(OLD_LINE)
    run.add_model({"id": OLD_LINE["id"], "warnings": ["later"]})
    run.add_model(_card("given"))
    cards = run.models()
    assert [c.role for c in cards] == ["pruned", "given"] and cards[0].warnings == ("later",)
    assert cards[1] == _card("given")


def test_a_record_survives_a_json_round_trip_and_runs_return_records(tmp_path):
    record = Record("m@0.5", "noise/0.1", "noise", 10, {"noise/0.1/accuracy": 0.7}, {"accuracy": {"k": 1}},
                    ("w",), "note", {"units": "pixel"}, "AAA=", {"config": "abc", "seed": 0}, 1.5, "BBB=")
    line = json.loads(json.dumps(record.to_json()))
    assert Record.from_json(line) == record
    run = RunDir(tmp_path)
    run.add_record(line)
    run.add_record(line | {"metrics": {"noise/0.1/accuracy": 0.8}})  # the last record of a pair wins
    assert run.records() == [Record.from_json(line | {"metrics": {"noise/0.1/accuracy": 0.8}})]


def _summary(*cards: MemberCard, baseline: str = "dense") -> dict:
    values = {"dense": 0.9, "dense+ft": 0.91}
    records = [{"model": c.id, "condition": "clean", "metrics": {"clean/accuracy": values.get(c.id, 0.8)}}
               for c in cards]
    return build_summary("dense", cards, records, {"baseline": baseline, "complete": True, "missing": []})


def test_references_and_candidates_are_decided_by_role():
    cards = [MemberCard("dense", "dense", "dense", 0.0), MemberCard("dense+ft", "control", "dense+ft", 0.0),
             MemberCard("m@0.5", "pruned", "m", 0.5), MemberCard("m+scratch@0.5", "scratch", "m+scratch", 0.5),
             MemberCard("deployed", "given", "given", 0.4)]
    assert reference_ids(cards) == ("dense", "dense+ft")
    assert candidate_ids(cards) == ("m@0.5", "deployed")
    summary = _summary(*cards)
    analysis = analyse(summary)
    assert analysis.references == ("dense", "dense+ft") and analysis.baseline == analysis.dense == "dense"
    # the gate checks the candidates only: not the control, even when drops are measured against dense
    checked = {c.model for c in evaluate_gate(summary, [Rule("clean/accuracy", "min", 0.0)]).checks}
    assert checked == {"m@0.5", "deployed"}


def test_a_pruned_member_named_like_a_method_of_the_references_is_still_a_candidate():
    """Roles, not ids or method suffixes, decide: a method whose name ends in '+scratch' but that pruned the
    model here is audited like any pruned member."""
    cards = [MemberCard("dense", "dense", "dense", 0.0), MemberCard("x+scratch@0.5", "pruned", "x+scratch", 0.5)]
    summary = _summary(*cards)
    assert [c.model for c in evaluate_gate(summary, [Rule("clean/accuracy", "min", 0.0)]).checks] == ["x+scratch@0.5"]


def test_the_baseline_and_the_control_are_found_by_role_not_by_id():
    """A control whose id is not ``dense+ft`` (nor the dense model's ``dense``) is still the control: chosen as
    the baseline, named as such, and no pruned method."""
    cards = [MemberCard("base", "dense", "dense", 0.0), MemberCard("base+tuned", "control", "dense+ft", 0.0),
             MemberCard("m@0.5", "pruned", "m", 0.5)]
    assert baseline_id("auto", cards) == baseline_id("dense+ft", cards) == "base+tuned"
    assert baseline_id("dense", cards) == baseline_id("auto", cards[::2]) == "base"
    records = [{"model": c.id, "condition": "clean", "metrics": {"clean/accuracy": 0.9}} for c in cards]
    summary = build_summary("base", cards, records, {"baseline": "base+tuned", "complete": True, "missing": []})
    analysis = analyse(summary)
    assert analysis.references == ("base", "base+tuned") and analysis.methods == ["m"]
    assert analysis.baseline_note().startswith("drops are measured against base+tuned: the dense model fine-tuned")
    against_dense = analyse(summary | {"baseline": "base"}).baseline_note()
    assert against_dense == ("drops are measured against the untouched dense model base (the control base+tuned, "
                             "fine-tuned like the pruned models, is shown beside it)")


def test_the_models_a_summary_names_dense_and_baseline_are_references_even_without_roles():
    """A hand-made summary (or an older run's) whose lines carry no role: the models it names ``dense`` and
    ``baseline`` are the references, for the analysis and the gate alike."""
    summary = {"dense": "d", "baseline": "b", "models": [
        {"id": "d", "metrics": {"clean/accuracy": 0.9}}, {"id": "b", "metrics": {"clean/accuracy": 0.92}},
        {"id": "p", "method": "m", "target_ratio": 0.5, "metrics": {"clean/accuracy": 0.8}}]}
    cards = summary_cards(summary)
    assert [c.role for c in cards] == ["dense", "control", "pruned"]
    assert reference_ids(cards) == analyse(summary).references == ("d", "b") and candidate_ids(cards) == ("p",)
    assert [c.model for c in evaluate_gate(summary, [Rule("clean/accuracy", "min", 0.0)]).checks] == ["p"]
    assert summary_cards(summary | {"baseline": "d"})[1].role == "pruned"  # named by neither: as its line says
