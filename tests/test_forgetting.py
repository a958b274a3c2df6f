"""What pruning forgets: per-class metrics, disparate impact (Hooker et al. 2019), PIEs, the gallery."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robusteval.analysis.class_impact import class_metrics, disparate_impact
from robusteval.analysis.exemplars import thumbnails
from robusteval.analysis.forgetting import Member, analyse_forgetting, find_pies, pie_mask, pruned_population
from robusteval.declarations import BUILTIN
from robusteval.errors import RobustEvalError
from robusteval.metrics import class_key, class_point
from robusteval.results import decode_ints, encode_bits, encode_ints
from robusteval.samples import Samples, read_samples, write_samples

CLASSES = tuple(f"c{i}" for i in range(10))


@pytest.mark.parametrize("name", ["cat", "a/b", "50%", "%2F", "", "x%25/y", "名前 with space"])
def test_class_keys_round_trip_any_class_name(name):
    key = class_key("corruption/fog", name)
    assert key.count("/") == 4
    assert class_point(key) == ("corruption/fog", name)
    assert class_point("clean/accuracy") is None and class_point("corruption/fog/3/accuracy") is None


def test_new_metrics_are_declared_with_their_directions():
    assert not BUILTIN.lower_is_better("clean/worst_class_accuracy")
    assert BUILTIN.lower_is_better("clean/max_class_drop")
    assert not BUILTIN.lower_is_better(class_key("clean", "cat"))


def test_packed_predictions_round_trip_and_bad_payloads_are_refused():
    values = np.array([0, 9, 999, 70000, 3])
    assert decode_ints(encode_ints(values), 5).tolist() == values.tolist()
    with pytest.raises(RobustEvalError, match="expected 4 packed integers"):
        decode_ints(encode_ints(values), 4)
    with pytest.raises(RobustEvalError, match="unreadable"):
        decode_ints("bm90IHpsaWI=", 5)


def _record(model: str, condition: str, correct: np.ndarray) -> dict:
    return {"model": model, "condition": condition, "n": len(correct), "metrics": {}, "correct": encode_bits(correct)}


def test_per_class_figures_equal_a_direct_computation_from_predictions_and_labels():
    rng = np.random.default_rng(1)
    n, conditions = 300, ["clean", "corruption/fog/1", "corruption/fog/3", "corruption/snow/1"]
    labels = {c: rng.integers(0, 10, n) for c in conditions}
    labels["clean"][labels["clean"] == 7] = 6  # class 7 absent from the clean data
    preds = {(m, c): np.where(rng.random(n) < q, labels[c], rng.integers(0, 10, n))
             for m, q in (("dense", 0.9), ("p@0.5", 0.6)) for c in conditions}
    records = [_record(m, c, p == labels[c]) for (m, c), p in preds.items()]
    got = class_metrics(records, Samples(CLASSES, labels), "dense")

    def direct(m: str, c: str, k: int) -> float:
        y, p = labels[c], preds[(m, c)]
        return sum(1 for i in range(n) if y[i] == k and p[i] == k) / sum(1 for i in range(n) if y[i] == k)

    for m in ("dense", "p@0.5"):
        clean = {k: direct(m, "clean", k) for k in range(10) if k != 7}
        assert class_key("clean", "c7") not in got[m]
        for k, value in clean.items():
            assert got[m][class_key("clean", f"c{k}")] == pytest.approx(value, abs=1e-12)
        assert got[m]["clean/worst_class_accuracy"] == pytest.approx(min(clean.values()))
        fog = (direct(m, "corruption/fog/1", 4) + direct(m, "corruption/fog/3", 4)) / 2
        assert got[m][class_key("corruption/fog", "c4")] == pytest.approx(fog)
        assert got[m][class_key("corruption/snow", "c2")] == pytest.approx(direct(m, "corruption/snow/1", 2))
    drops = [direct("dense", "clean", k) - direct("p@0.5", "clean", k) for k in range(10) if k != 7]
    assert got["p@0.5"]["clean/max_class_drop"] == pytest.approx(max(drops))
    assert got["dense"]["clean/max_class_drop"] == 0.0


def _family_with_broken_class(broken: int | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """300 samples per class; the baseline right on 90% of each; pruning loses 3% of each class's
    samples uniformly, and half of all samples of class ``broken``."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), 300)
    base = np.ones(len(labels), dtype=bool)
    pruned = base.copy()
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        base[idx[:30]] = pruned[idx[:30]] = False
        pruned[idx[30:30 + (9 if c != broken else 150)]] = False
    return base, pruned, labels


def test_disparate_impact_finds_the_broken_class_and_no_other():
    base, pruned, labels = _family_with_broken_class(3)
    impact, max_ci = disparate_impact(base, pruned, labels, CLASSES)
    assert [c.name for c in impact if c.significant] == ["c3"]
    hit = impact[3]
    a0, a1 = base.mean(), pruned.mean()
    assert hit.normalised == pytest.approx((120 / 300 - 270 / 300) - (a1 - a0))  # mean-shifted (Hooker et al.)
    assert hit.multiple == pytest.approx((150 / 300) / (a0 - a1))
    assert hit.baseline_recall == pytest.approx(0.9) and hit.recall == pytest.approx(0.4)
    assert max_ci[0] < 0.5 < max_ci[1]


def test_a_uniform_drop_singles_out_no_class():
    base, pruned, labels = _family_with_broken_class(None)
    impact, _ = disparate_impact(base, pruned, labels, CLASSES)
    assert not any(c.significant for c in impact)
    assert all(c.multiple == pytest.approx(1.0) for c in impact)


def test_pies_are_exactly_the_inputs_pruning_forgets():
    rng = np.random.default_rng(2)
    n = 500
    labels = rng.integers(0, 10, n)
    dense = labels.copy()
    forgotten = np.sort(rng.choice(n, 40, replace=False))
    members = {}
    strays = rng.permutation(np.setdiff1d(np.arange(n), forgotten))[:45].reshape(3, 15)
    for j, method in enumerate(("magnitude", "synflow", "l1_filter")):
        p = dense.copy()
        if j < 2:  # two of three members forget the set: their label is the modal prediction
            p[forgotten] = (labels[forgotten] + 1) % 10
        p[strays[j]] = (p[strays[j]] + 5) % 10  # each member alone changes others: no modal change
        members[f"{method}@0.5"] = p
    members["magnitude@0.9"] = np.where(np.arange(n) < 10, (labels + 3) % 10, labels)
    population = pruned_population([Member(i, i.split("@")[0], float(i.split("@")[1])) for i in members]
                                   + [Member("dense", "dense", 0.0)], ("dense",))
    pies = find_pies(members | {"dense": dense}, labels, CLASSES, population, "dense")
    assert [p.ratio for p in pies] == [0.5, 0.9]
    assert pies[0].index.tolist() == forgotten.tolist()
    assert pies[0].baseline_accuracy == 1.0 and pies[0].pruned_accuracy == 0.0
    assert sum(pies[0].by_class.values()) == 40
    assert pies[1].index.tolist() == list(range(10))


def test_a_tie_with_the_baseline_label_is_no_pie():
    mask, _ = pie_mask(np.array([1, 1, 1]), np.array([[1, 2, 2], [2, 1, 2]]))
    assert mask.tolist() == [False, False, True]
    mask, modal = pie_mask(np.array([1, 1]), np.array([[1, 2], [2, 3], [3, 4]]))  # three-way ties
    assert mask.tolist() == [False, True] and modal.tolist()[1] == 2


def test_samples_file_round_trips_and_thumbnails_are_small(tmp_path):
    images = torch.rand(3, 3, 200, 100)
    small = thumbnails(images)
    assert small.shape == (3, 64, 32, 3) and small.dtype == np.uint8
    assert thumbnails(torch.rand(2, 1, 32, 32)).shape == (2, 32, 32, 3)  # gray to RGB, never enlarged
    samples = Samples(("a/b", "<x>"), {"clean": np.array([0, 1, 1])}, np.array([2]), small[:1],
                      {"fog": small[:2]}, (1, 5))
    write_samples(tmp_path, samples)
    back = read_samples(tmp_path)
    assert back.classes == samples.classes and back.labels["clean"].tolist() == [0, 1, 1]
    assert (back.thumbnail(2) == small[0]).all() and back.thumbnail(0) is None
    assert back.severities == (1, 5) and back.strips["fog"].shape == (2, 64, 32, 3)
    (tmp_path / "samples.npz").write_bytes(b"not a zip")
    with pytest.raises(RobustEvalError, match="not a readable samples file"):
        read_samples(tmp_path)


def test_forgetting_of_a_run_names_the_broken_class():
    base, pruned, labels = _family_with_broken_class(3)
    preds = {"dense": np.where(base, labels, (labels + 1) % 10), "m@0.5": np.where(pruned, labels, (labels + 1) % 10)}
    records = [_record(m, "clean", p == labels) | {"predicted": encode_ints(p)} for m, p in preds.items()]
    out = analyse_forgetting(records, Samples(CLASSES, {"clean": labels}), [Member("dense", "dense", 0.0),
                             Member("m@0.5", "m", 0.5)], "dense", ("dense",))
    assert out.impact["m@0.5"].most_affected().name == "c3"
    assert len(out.pies) == 1 and len(out.pies[0].index) == int((base & ~pruned).sum())
    assert out.gallery and all(g.label != g.pruned and g.baseline == g.label for g in out.gallery)


def test_report_shows_heatmap_pies_gallery_and_strips_with_class_names_escaped(tmp_path):
    import json
    import re

    from fixtures.runs import CLASSES as NAMES
    from fixtures.runs import CORRUPTIONS, SEVERITIES, write_synthetic_run
    from robusteval.samples import GALLERY_SIZE
    from robusteval.report import write_report

    report = write_report(write_synthetic_run(tmp_path / "run"))
    text = report.read_text(encoding="utf-8")
    section = text[text.index('<section id="forgetting">'):]
    section = section[:section.index("</section>")]
    assert "per-class accuracy drop heatmap" in section and "Pruning identified exemplars" in section
    cards = re.findall(r'<figure[^>]*><img [^>]*src="data:image/png;base64,[^"]+">', section)
    assert 0 < len(cards) <= GALLERY_SIZE
    strip = re.findall(r'alt="([^"]*), severity (\d)"', text)
    assert len(strip) == len(CORRUPTIONS) * len(SEVERITIES)
    assert "<b>cat</b>" not in text and "&lt;b&gt;cat&lt;/b&gt; &amp; &quot;dog&quot;" in section
    analysis = json.loads((report.parent / "analysis.json").read_text())["forgetting"]
    assert analysis["classes"] == list(NAMES)
    counts = [p["count"] for p in analysis["pies"]]
    assert counts == sorted(counts) and counts[-1] > 0  # the fixture's members lose more at larger ratios
    assert analysis["disparate_impact"]["random@0.9"]["overall_drop"] > 0


def test_an_audit_keeps_predictions_and_samples_and_the_gate_checks_worst_class_accuracy(tmp_path, capsys):
    """End to end: per-class figures equal the records' predictions vs the kept labels; a gate rule on
    clean/worst_class_accuracy passes a low budget and fails (exit 1) a high one."""
    from robusteval.cli import main
    from robusteval.models.archs import build_arch
    from robusteval.results import RunDir

    torch.manual_seed(0)
    model, config, run = tmp_path / "model.pt", tmp_path / "c.yaml", tmp_path / "run"
    torch.save(build_arch("lenet_300_100", 10).state_dict(), model)
    config.write_text("data: {source: bundled, subset: 60}\n"
                      "pruning: {methods: [magnitude, random], ratios: [0.5, 0.9], measure_latency: false}\n"
                      "evaluate: {calibration: null, agreement: false, noise: null, ood: null, adversarial: null,\n"
                      "           corruption: {corruptions: [fog, contrast], severities: [1, 2], subset: 20}}\n")
    assert main(["audit", str(model), "--arch", "lenet_300_100", "--config", str(config), "--out", str(run),
                 "--quiet"]) == 0, capsys.readouterr().err
    samples = read_samples(run)
    records = {(r.model, r.condition): r for r in RunDir(run).records()}
    summary = json.loads((run / "summary.json").read_text())
    y = samples.labels["clean"]
    for entry in summary["models"]:
        predicted = decode_ints(records[(entry["id"], "clean")].predicted, len(y))
        per_class = [float((predicted[y == c] == c).mean()) for c in range(10) if (y == c).any()]
        got = [entry["metrics"][class_key("clean", name)] for c, name in enumerate(samples.classes) if (y == c).any()]
        assert got == pytest.approx(per_class)
        assert entry["metrics"]["clean/worst_class_accuracy"] == pytest.approx(min(per_class))
        assert class_key("corruption/fog", samples.classes[0]) in entry["metrics"]
    assert sorted(samples.strips) == ["contrast", "fog"] and samples.strips["fog"].shape == (2, 32, 32, 3)
    assert len(samples.gallery) == len(samples.gallery_index) <= 32
    worst = min(e["metrics"]["clean/worst_class_accuracy"] for e in summary["models"])
    for budget, code in ((worst, 0), (worst + 0.01, 1)):
        (tmp_path / "gate.yaml").write_text(f"rules:\n  clean/worst_class_accuracy: {{min: {budget!r}}}\n")
        assert main(["gate", str(run), "--gate", str(tmp_path / "gate.yaml")]) == code
    assert "What pruning forgets" in (run / "report.html").read_text()


def test_the_gallery_puts_the_most_forgotten_first_and_lets_classes_take_turns():
    from robusteval.analysis.forgetting import gallery

    labels = np.array([0] * 10 + [1] * 10 + [2, 2])
    dense = labels.copy()
    dense[21] = 0  # the baseline is wrong on sample 21 and the members at 20% right: a PIE, shown last
    low = {m: (labels + 1) % 3 for m in ("a@0.5", "b@0.5")}
    high = {m: np.where(np.arange(22) == 20, (labels + 1) % 3, labels) for m in ("a@0.2", "b@0.2")}
    predicted = low | high | {"dense": dense}
    population = {0.2: ["a@0.2", "b@0.2"], 0.5: ["a@0.5", "b@0.5"]}
    pies = find_pies(predicted, labels, CLASSES, population, "dense")
    items = gallery(pies, predicted, labels, CLASSES, "dense", size=5)
    assert items[0].index == 20 and items[0].ratios == 2 and items[0].first_ratio == 0.2  # lost earliest, twice
    assert [g.label for g in items[1:]] == ["c0", "c1", "c0", "c1"]  # equally forgotten: classes take turns
    assert gallery(pies, predicted, labels, CLASSES, "dense", size=30)[-1].index == 21  # baseline wrong: last


def test_the_pruned_population_leaves_out_baselines_and_scratch_members_only():
    members = [Member("dense", "dense", 0.0), Member("dense+ft", "dense+ft", 0.0), Member("m@0.5", "m", 0.5),
               Member("s@0.5", "s", 0.5), Member("m+scratch@0.5", "m+scratch", 0.5), Member("cand", "given", 0.7)]
    assert pruned_population(members, ("dense+ft",)) == {0.5: ["m@0.5", "s@0.5"], 0.7: ["cand"]}
