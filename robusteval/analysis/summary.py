"""``summary.json``: every model's metrics from its records plus every derived metric, their declarations
(direction, unit, label) and the run's plan."""
from __future__ import annotations

from typing import Any

from robusteval.analysis.class_impact import class_metrics
from robusteval.analysis.derive import derive
from robusteval.analysis.drops import baseline_id
from robusteval.declarations import BUILTIN, Declarations, summary_keys
from robusteval.records import DENSE_ID
from robusteval.results import RunDir, build_summary, missing_results
from robusteval.samples import read_samples


def write_summary(run: RunDir, *, digest: str, baseline: str, seconds: float | None,
                  plan: tuple[list[str], list[str]], declarations: Declarations = BUILTIN) -> dict[str, Any]:
    """Write and return summary.json. ``plan`` (model ids, condition keys) is what the run set out to
    compute, so a missing result shows; ``baseline`` is the ``analysis.baseline`` choice; ``seconds``
    (None: not timed) is appended to the manifest's durations; ``declarations`` covers every metric the
    run holds (the built-in ones unless the run's evaluators declare more) and the summary keeps theirs."""
    records, cards = run.records(), run.models()
    missing = missing_results(*plan, {(r.model, r.condition) for r in records})
    summary = build_summary(DENSE_ID, cards, records,
                            {"config_digest": digest, "complete": not missing, "missing": missing})
    summary["baseline"] = baseline_id(baseline, cards)
    samples = read_samples(run.path)
    per_class = class_metrics(records, samples, summary["baseline"]) if samples is not None else {}
    noise_units = {r.meta["units"] for r in records if r.family == "noise" and "units" in r.meta}
    if noise_units:
        summary["noise_units"] = min(noise_units)  # what ε means in the noise/<ε>/... keys
    derived = derive({m["id"]: m["metrics"] | per_class.get(m["id"], {}) for m in summary["models"]}, DENSE_ID)
    warnings: dict[str, list[str]] = {}
    for rec in records:
        warnings.setdefault(rec.model, []).extend(rec.warnings)
    for entry in summary["models"]:
        entry["metrics"] = derived[entry["id"]]
        entry["warnings"] = list(entry.get("warnings", [])) + warnings.get(entry["id"], [])
    summary["declarations"] = declarations.resolved(summary_keys(summary)).to_json()
    manifest = run.read_manifest() or {}
    if seconds is not None:
        manifest.setdefault("durations", []).append(round(seconds, 1))
        run.write_manifest(manifest)
    run.write_summary(summary)
    return summary
