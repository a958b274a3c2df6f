"""Two runs side by side: the release-to-release comparison behind ``robusteval compare BASE NEW``.

Reads only the two run directories (summary, records, manifest); nothing loads a model. Models are
matched by id, or by explicit ``(base id, new id)`` pairs. For every metric both models of a pair
have: the base value, the new value, the change ``new - base`` and, for accuracy-type metrics whose
records keep per-sample correctness, the change's 95% percentile-bootstrap interval:

* **paired** when both runs evaluated the same samples (same data digest, seed and subset): the
  bootstrap of the per-sample differences ``new_correct - base_correct``, as within a run;
* **unpaired** otherwise: each run's samples are resampled on their own, and a warning says why
  the runs could not be paired (different data, seed or subset).

What differs besides the models (config keys, data, seed, versions, device, precision) is listed,
because a change caused by the setup is not a regression of the model.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from robusteval.analysis.drops import per_sample_correctness
from robusteval.analysis.model import Evidence, _nan_to_none
from robusteval.analysis.potential import bootstrap_difference_ci, bootstrap_mean_ci
from robusteval.declarations import Declarations, drop
from robusteval.errors import RobustEvalError
from robusteval.registry import unknown_name_message
from robusteval.results import RunDir, incomplete_message


@dataclass(frozen=True)
class RunSide:
    """One of the two runs: its summary, manifest, per-sample correctness (metric → model → bits) and the
    records' evidence (reliability bins, OOD ROC curves) for the comparison page's overlaid figures."""

    path: Path
    summary: Mapping[str, Any]
    manifest: Mapping[str, Any]
    correctness: Mapping[str, Mapping[str, np.ndarray]] = field(default_factory=dict, compare=False)
    evidence: Evidence = field(default_factory=Evidence, compare=False)

    @classmethod
    def read(cls, path: str | Path) -> RunSide:
        """A finished, complete run; anything else is bad input naming the run."""
        run = RunDir.existing(path)
        summary = run.read_summary()
        if problem := incomplete_message(summary):
            raise RobustEvalError(f"cannot compare {run.path}: {problem}")
        records = run.records()
        return cls(run.path, summary, run.read_manifest() or {}, per_sample_correctness(records),
                   Evidence.from_records(records))

    @property
    def model_ids(self) -> list[str]:
        return [m["id"] for m in self.summary.get("models", [])]

    def metrics(self, model: str) -> dict[str, float]:
        """A model's metrics as floats (null → NaN)."""
        entry = next(m for m in self.summary["models"] if m["id"] == model)
        return {k: math.nan if v is None else float(v) for k, v in (entry.get("metrics") or {}).items()}

    def config(self) -> Mapping[str, Any]:
        return self.manifest.get("config") or self.summary.get("config") or {}

    @cached_property
    def declarations(self) -> Declarations:
        """The run's metric declarations (directions), as its summary carries them."""
        return Declarations.of_summary(self.summary)


@dataclass(frozen=True)
class Delta:
    """One metric of one compared pair; ``ci`` is the 95% interval of ``change`` (None: no per-sample results)."""

    base_model: str
    new_model: str
    metric: str
    base: float
    new: float
    lower_is_better: bool  # the metric's declared direction in both runs
    ci: tuple[float, float] | None = None
    paired: bool | None = None

    @property
    def change(self) -> float:
        return self.new - self.base

    @property
    def drop(self) -> float:
        """How much worse the new model is, direction-aware (the runs' declarations)."""
        return drop(self.base, self.new, lower_is_better=self.lower_is_better)

    @property
    def verdict(self) -> str:
        """``worse`` / ``better`` when the interval excludes 0, ``within noise`` when it holds 0, else ``""``."""
        if self.ci is None or math.isnan(self.change):
            return ""
        if self.ci[0] <= 0.0 <= self.ci[1]:
            return "within noise"
        return "worse" if self.drop > 0 else "better"


@dataclass
class Comparison:
    """Everything the comparison page, ``comparison.json``, the Markdown summary and the gate need."""

    base: RunSide
    new: RunSide
    pairs: list[tuple[str, str]]
    deltas: list[Delta]
    paired: bool
    warnings: list[str]
    config_changes: list[tuple[str, Any, Any]]  # (dotted key, base value, new value)
    setup: list[tuple[str, Any, Any]]  # (what, base, new): data, seed, device, precision, versions, ...

    def model_digests(self) -> list[tuple[str, str, str | None, str | None]]:
        """(base id, new id, base sha256, new sha256) of every pair's model files, as the manifests record them."""
        shas = [s.manifest.get("model_sha256") or {} for s in (self.base, self.new)]
        return [(b, n, shas[0].get(b), shas[1].get(n)) for b, n in self.pairs]

    def has_metric(self, side: RunSide, metric: str) -> bool:
        """Whether any compared model of ``side`` has ``metric``."""
        models = {b if side is self.base else n for b, n in self.pairs}
        return any(metric in side.metrics(m) for m in models)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (NaN → null) for ``comparison.json``."""
        return _nan_to_none({
            "base": _side_json(self.base), "new": _side_json(self.new),
            "pairs": [{"base": b, "new": n} for b, n in self.pairs],
            "paired": self.paired, "warnings": self.warnings,
            "config_changes": [{"key": k, "base": a, "new": b} for k, a, b in self.config_changes],
            "setup": [{"what": w, "base": a, "new": b, "differs": a != b} for w, a, b in self.setup],
            "model_sha256": [{"base_model": b, "new_model": n, "base": x, "new": y}
                             for b, n, x, y in self.model_digests()],
            "deltas": [{"base_model": d.base_model, "new_model": d.new_model, "metric": d.metric, "base": d.base,
                        "new": d.new, "change": d.change, "drop": d.drop, "ci": list(d.ci) if d.ci else None,
                        "paired": d.paired, "verdict": d.verdict} for d in self.deltas],
        })


def compare_runs(base: str | Path, new: str | Path, *, pairs: Sequence[tuple[str, str]] | None = None,
                 confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> Comparison:
    """Compare run ``new`` with run ``base`` (see the module docstring); ``pairs`` replaces matching by id."""
    sides = RunSide.read(base), RunSide.read(new)
    matched = match_models(*sides, pairs)
    reasons = unpaired_reasons(*sides)
    warnings = [f"deltas are unpaired (each run resampled on its own, wider intervals): {'; '.join(reasons)}"] \
        if reasons else []
    options = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    deltas, ragged = [], []
    for b, n in matched:
        before, after = sides[0].metrics(b), sides[1].metrics(n)
        for key in sorted(before.keys() & after.keys()):
            bits = sides[0].correctness.get(key, {}).get(b), sides[1].correctness.get(key, {}).get(n)
            ci, paired = _interval(bits, not reasons, options)
            ragged += [key] if paired is False and not reasons else []
            deltas.append(Delta(b, n, key, before[key], after[key], _lower_is_better(key, *sides), ci, paired))
    if ragged:
        warnings.append(f"{len(ragged)} metric(s) have per-sample results of different lengths in the two runs "
                        f"(e.g. {ragged[0]!r}): their intervals are unpaired")
    changes = config_changes(sides[0].config(), sides[1].config())
    return Comparison(sides[0], sides[1], matched, deltas, not reasons, warnings, changes, setup_rows(*sides))


def _lower_is_better(key: str, base: RunSide, new: RunSide) -> bool:
    """The direction of ``key``; two runs that declare it differently cannot be compared on it."""
    lower = new.declarations.lower_is_better(key)
    if base.declarations.lower_is_better(key) != lower:
        raise RobustEvalError(f"metric {key!r} is declared {'lower' if lower else 'higher'}-is-better in the new run "
                              f"{new.path} but not in the base run {base.path}: the runs cannot be compared on it")
    return lower


def match_models(base: RunSide, new: RunSide, pairs: Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """The compared (base id, new id) pairs: ``pairs`` as given (each id must exist), else every id in common."""
    if pairs:
        for side, model in [(base, b) for b, _ in pairs] + [(new, n) for _, n in pairs]:
            if model not in side.model_ids:
                raise RobustEvalError(f"run {side.path}: {unknown_name_message('model', model, side.model_ids)}")
        return list(dict.fromkeys(pairs))
    common = [m for m in base.model_ids if m in new.model_ids]
    if not common:
        raise RobustEvalError(f"no model in common: base run {base.path} has {base.model_ids}, new run {new.path} "
                              f"has {new.model_ids}; match them with --pair BASE_ID=NEW_ID")
    return [(m, m) for m in common]


def unpaired_reasons(base: RunSide, new: RunSide) -> list[str]:
    """Why the two runs' samples are not the same ones (empty: they are, deltas are paired)."""
    missing = [str(s.path) for s in (base, new) if not (s.manifest.get("data") or {}).get("sha256")]
    if missing:
        return [f"no data digest in the manifest of {', '.join(missing)}"]
    reasons = []
    for what, get in (("data source", lambda s: s.manifest["data"].get("source")),
                      ("subset", lambda s: ((s.config().get("data") or {}).get("subset"))),
                      ("seed", lambda s: s.manifest.get("seed"))):
        if get(base) != get(new):
            reasons.append(f"different {what} ({get(base)!r} vs {get(new)!r})")
    digests = [s.manifest["data"]["sha256"] for s in (base, new)]
    if not reasons and digests[0] != digests[1]:
        reasons.append(f"different data (sha256 {digests[0][:12]}… vs {digests[1][:12]}…)")
    return reasons


def _interval(bits: tuple[np.ndarray | None, np.ndarray | None], same_samples: bool,
              options: Mapping[str, Any]) -> tuple[tuple[float, float] | None, bool | None]:
    """(interval of new - base, whether it is paired) from both models' per-sample correctness."""
    before, after = bits
    if before is None or after is None:
        return None, None
    if same_samples and len(before) == len(after):
        return bootstrap_mean_ci(after.astype(float) - before.astype(float), **options), True
    return bootstrap_difference_ci(before, after, **options), False


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{"a.b.c": leaf}`` (an empty mapping is a leaf)."""
    if isinstance(data, Mapping) and data:
        return {k: v for key, value in data.items()
                for k, v in flatten(value, f"{prefix}.{key}" if prefix else str(key)).items()}
    return {prefix: data}


def config_changes(base: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """Every config key whose value differs (absent on one side: None), sorted by key."""
    before, after = flatten(base), flatten(new)
    return [(k, before.get(k), after.get(k)) for k in sorted(before.keys() | after.keys())
            if before.get(k) != after.get(k)]


def setup_rows(base: RunSide, new: RunSide) -> list[tuple[str, Any, Any]]:
    """(what, base, new) for everything besides the models that can move a metric."""
    def data(side: RunSide, key: str) -> Any:
        return (side.manifest.get("data") or {}).get(key)

    rows = [("config digest", base.summary.get("config_digest"), new.summary.get("config_digest")),
            *((f"data {k}", data(base, k), data(new, k)) for k in ("source", "n", "sha256")),
            *((k, base.manifest.get(k), new.manifest.get(k)) for k in ("seed", "device", "precision", "engine"))]
    versions = [s.manifest.get("versions") or {} for s in (base, new)]
    return rows + [(f"version {k}", versions[0].get(k), versions[1].get(k)) for k in sorted(versions[0] | versions[1])]


def _side_json(side: RunSide) -> dict[str, Any]:
    return {"path": str(side.path), "config_digest": side.summary.get("config_digest"), "models": side.model_ids}
