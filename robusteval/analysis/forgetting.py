"""What pruning forgets: pruning identified exemplars (PIEs), the gallery, and per-class impact of the family.

Hooker et al., "What Do Compressed Deep Neural Networks Forget?" (arXiv 1911.05248), call an image a
PIE at sparsity t when the *modal* top-1 label of a population of pruned models (30 independently
pruned networks at t) differs from the modal label of a population of dense models. An audit has
one dense baseline and, per ratio, one member per pruning method, so here:

* the dense population is the run's baseline alone (``dense``, or the control ``dense+ft`` when the
  run has one: like the paper's dense models it had the pruned models' training budget); its modal
  label is its prediction;
* the pruned population at ratio r is every pruning method's member at r (a given candidate, as
  in ``audit pruned.pt2 --reference dense.pt``, at its sparsity; ``+scratch`` members are trained
  anew, not pruned, and are left out), so the population varies the *method* where the paper
  varies the random seed;
* the modal label is the most frequent prediction; when several labels tie for it and the
  baseline's label is among them, the image is not a PIE (a tie is no evidence of a change), so
  with two methods an image is a PIE only when both members leave the baseline's label.

The gallery shows the most-forgotten PIEs: baseline right first, then PIE at the most ratios, then
left by the most pruned members (over all ratios), then lost at the smallest ratio. Everything is read from the records (``predicted``, ``correct``) and
the run's ``samples.npz``; nothing loads a model.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robusteval.analysis.class_impact import ModelImpact, correctness, disparate_impact
from robusteval.card import CANDIDATE_ROLES, MemberCard, role_of
from robusteval.records import Record, as_records
from robusteval.results import decode_ints
from robusteval.samples import GALLERY_SIZE, Samples


@dataclass(frozen=True)
class Member:
    """A model of the run as the PIE population sees it."""

    id: str
    method: str
    ratio: float
    role: str = ""  # its card's role; "" derives it from id and method as for an older run (``role_of``)

    @classmethod
    def of(cls, card: MemberCard) -> Member:
        return cls(card.id, card.method, card.ratio, card.role)

    @property
    def is_candidate(self) -> bool:
        """A pruned model under audit, by the card's rule (:attr:`robusteval.card.MemberCard.is_candidate`)."""
        return (self.role or role_of(self.id, self.method)) in CANDIDATE_ROLES


@dataclass(frozen=True)
class PieRatio:
    """PIEs at one prune ratio: their clean-sample indices, the modal pruned label of each, by class."""

    ratio: float
    members: tuple[str, ...]
    index: np.ndarray
    modal: np.ndarray  # the pruned population's modal label per PIE
    n: int
    by_class: dict[str, int]
    baseline_accuracy: float | None  # the baseline's accuracy on these PIEs (None: no PIE)
    pruned_accuracy: float | None  # the modal label's accuracy on them

    def to_json(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "members": list(self.members), "count": int(len(self.index)), "n": self.n,
                "share": len(self.index) / self.n if self.n else None, "by_class": self.by_class,
                "baseline_accuracy": self.baseline_accuracy, "pruned_accuracy": self.pruned_accuracy}


@dataclass(frozen=True)
class GalleryItem:
    """One forgotten clean input: its labels (class names) and the first ratio at which it is a PIE."""

    index: int
    label: str
    baseline: str
    pruned: str
    first_ratio: float
    ratios: int


@dataclass
class Forgetting:
    """The run's answer to "who pays for the pruning": per-model class impact, PIEs, the gallery."""

    baseline: str
    classes: tuple[str, ...]
    impact: dict[str, ModelImpact] = field(default_factory=dict)
    pies: list[PieRatio] = field(default_factory=list)
    gallery: list[GalleryItem] = field(default_factory=list)
    samples: Samples | None = None

    def method_impacts(self, method: str) -> list[ModelImpact]:
        return sorted((i for i in self.impact.values() if i.method == method), key=lambda i: i.ratio)

    def to_json(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "classes": list(self.classes),
                "disparate_impact": {m: i.to_json() for m, i in self.impact.items()},
                "pies": [p.to_json() for p in self.pies],
                "gallery": [vars(g) for g in self.gallery]}


def pruned_population(members: Iterable[Member], references: Sequence[str]) -> dict[float, list[str]]:
    """ratio → ids of the members pruned from the baseline at that ratio (see the module docstring)."""
    out: dict[float, list[str]] = {}
    for m in members:
        if m.id in references or not m.is_candidate:
            continue
        out.setdefault(m.ratio, []).append(m.id)
    return dict(sorted(out.items()))


def pie_mask(baseline: np.ndarray, population: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(is a PIE, modal label) per sample, from the baseline's predictions (n,) and the pruned
    population's (members, n). A sample is a PIE when the baseline's label gets fewer votes than the
    most voted label; among labels tied for the most votes the first member's is the modal one."""
    population = np.atleast_2d(population)
    votes = np.stack([(population == row).sum(axis=0) for row in population])  # each member's label's count
    modal = population[votes.argmax(axis=0), np.arange(population.shape[1])]
    return (population == baseline).sum(axis=0) < votes.max(axis=0), modal


def find_pies(predicted: Mapping[str, np.ndarray], labels: np.ndarray, classes: tuple[str, ...],
              population: Mapping[float, Sequence[str]], baseline: str) -> list[PieRatio]:
    """The PIEs at every ratio whose members all have predictions."""
    if baseline not in predicted:
        return []
    base = predicted[baseline]
    out = []
    for ratio, ids in population.items():
        if not ids or any(i not in predicted for i in ids):
            continue
        mask, modal = pie_mask(base, np.stack([predicted[i] for i in ids]))
        index = np.flatnonzero(mask)
        counts = np.bincount(labels[index], minlength=len(classes))
        out.append(PieRatio(ratio, tuple(ids), index, modal[index], len(base),
                            {classes[c]: int(k) for c, k in enumerate(counts) if k},
                            float((base[index] == labels[index]).mean()) if len(index) else None,
                            float((modal[index] == labels[index]).mean()) if len(index) else None))
    return out


def gallery(pies: Sequence[PieRatio], predicted: Mapping[str, np.ndarray], labels: np.ndarray,
            classes: tuple[str, ...], baseline: str, size: int = GALLERY_SIZE) -> list[GalleryItem]:
    """The ``size`` most-forgotten PIEs (ordering in the module docstring; equally forgotten inputs
    take turns by class, so one class does not fill the gallery)."""
    base = predicted.get(baseline)
    if base is None:
        return []
    first: dict[int, tuple[float, int]] = {}
    count: dict[int, int] = {}
    for p in pies:
        for i, label in zip(p.index.tolist(), p.modal.tolist()):
            first.setdefault(i, (p.ratio, label))
            count[i] = count.get(i, 0) + 1
    members = [m for p in pies for m in p.members]
    away = {i: sum(int(predicted[m][i] != base[i]) for m in members) for i in first}

    def score(i: int) -> tuple:
        return bool(base[i] != labels[i]), -count[i], -away[i], first[i][0]

    turn: dict[tuple, int] = {}
    ranked = []
    for i in sorted(first, key=lambda i: (score(i), i)):
        group = (score(i), int(labels[i]))
        turn[group] = turn.get(group, 0) + 1
        ranked.append((score(i), turn[group], i))
    order = [i for *_, i in sorted(ranked)[:size]]

    def name(c: int) -> str:
        return classes[c] if 0 <= c < len(classes) else f"output {c}"

    return [GalleryItem(i, name(int(labels[i])), name(int(base[i])), name(first[i][1]), first[i][0], count[i])
            for i in order]


def predictions(records: Iterable[Record | Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """model → top-1 predictions on the clean data, from the records that carry them."""
    return {r.model: decode_ints(r.predicted, r.n) for r in as_records(records)
            if r.condition == "clean" and r.predicted}


def analyse_forgetting(records: Sequence[Record | Mapping[str, Any]], samples: Samples, members: Sequence[Member],
                       baseline: str, references: Sequence[str], *, seed: int = 0) -> Forgetting:
    """Class impact of every pruned member, PIEs per ratio and the gallery (see the module docstring)."""
    labels = samples.labels.get("clean")
    out = Forgetting(baseline, samples.classes, samples=samples)
    if labels is None:
        return out
    correct = {m: by_condition["clean"] for m, by_condition in correctness(records, samples.labels).items()
               if "clean" in by_condition}
    for m in members:
        if m.id in references or m.id == baseline or m.id not in correct or baseline not in correct:
            continue
        classes, max_ci = disparate_impact(correct[baseline], correct[m.id], labels, samples.classes, seed=seed)
        overall = float(correct[baseline].mean() - correct[m.id].mean())
        worst = max((c.drop for c in classes), default=float("nan"))
        out.impact[m.id] = ModelImpact(m.id, m.method, m.ratio, overall, classes, worst, max_ci)
    predicted = {m: p for m, p in predictions(records).items() if len(p) == len(labels)}
    out.pies = find_pies(predicted, labels, samples.classes, pruned_population(members, references), baseline)
    out.gallery = gallery(out.pies, predicted, labels, samples.classes, baseline)
    return out


def impact_lines(forgetting: Forgetting, methods: Sequence[str]) -> list[str]:
    """Per method, at the smallest ratio where a class is significantly hit harder than the average, the
    class hit hardest there."""
    lines = []
    for method in methods:
        hit = [(i, c) for i in forgetting.method_impacts(method) if (c := i.most_affected()) is not None]
        if not hit:
            continue
        impact, c = hit[0]
        times = f", {c.multiple:.1f}x the average drop" if c.multiple is not None else ""
        lines.append(f"{method}: class {c.name} pays first and most, at {100 * impact.ratio:.4g}% (accuracy "
                     f"{100 * c.recall:.1f}% vs {100 * c.baseline_recall:.1f}% on {forgetting.baseline}{times}; "
                     f"normalised recall difference {c.normalised:+.2f}, significant).")
    if forgetting.pies:
        counts = ", ".join(f"{len(p.index)} at {100 * p.ratio:.4g}%" for p in forgetting.pies)
        lines.append(f"Pruning identified exemplars (clean inputs whose modal pruned prediction differs from "
                     f"{forgetting.baseline}'s): {counts}.")
    return lines
