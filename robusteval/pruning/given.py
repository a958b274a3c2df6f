"""Members not pruned here: a given model (the dense reference, or a candidate pruned elsewhere) with its
measured costs, and the run directory's registration of every member's card."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from robusteval.card import Costs, MemberCard
from robusteval.device import model_device
from robusteval.errors import RobustEvalError, describe
from robusteval.models.size import is_opaque, opaque_size
from robusteval.pruning.family import FamilyMember
from robusteval.pruning.settings import PruneSettings
from robusteval.pruning.stats import model_info
from robusteval.results import RunDir


def plain_member(model: nn.Module, model_id: str, role: str, example: torch.Tensor, *,
                 timing: PruneSettings | None, dense: nn.Module | None = None) -> FamilyMember:
    """A given (not pruned here) model with its costs; ``role`` ("dense" or "given") is also its method.
    Opaque models (TorchScript, export, ONNX) have no layers to hook, so their size comes from their graph or
    a traced forward (:mod:`robusteval.models.size`). ``timing``: the settings its latency is timed with
    (:meth:`PruneSettings.latency_options`; None: not timed)."""
    options = {"measure_latency": False} if timing is None else timing.latency_options()
    try:
        info = model_info(model, example.to(model_device(model)), dense=dense, **options)
        if is_opaque(model):
            info = info | opaque_size(model, example.to(model_device(model)))
            if dense is not None:
                info = info | reductions(info, dense, example)
    except RobustEvalError:
        raise
    except Exception as exc:  # the model's own code failed on a batch size the probe did not try
        what = "MACs on a batch of 1" + (", latency on batches of 1 and 128" if options["measure_latency"] else "")
        raise RobustEvalError(f"model {model_id!r} failed while its costs were measured ({what}): "
                              f"{describe(exc)}") from exc
    card = MemberCard(model_id, role, role, float(info["sparsity"] or 0.0), Costs.from_json(info),
                      warnings=tuple(info.get("latency_warnings", ())), structured=False)
    return FamilyMember(card, model)


def paired_reference(reference: FamilyMember, given: FamilyMember) -> FamilyMember:
    """The reference member with the latency timed in pairs with the given model (timed once, not twice)."""
    timed = given.card.costs
    costs = dataclasses.replace(reference.card.costs, latency_ms=timed.dense_latency_ms,
                                latency_iqr_ms=timed.dense_latency_iqr_ms, latency_runs=timed.latency_runs,
                                latency_device=timed.latency_device, sparse_runtime=False)
    return FamilyMember(reference.card.replace(costs=costs), reference.model)


def reductions(info: dict, dense: nn.Module, example: torch.Tensor) -> dict:
    """``params_reduction`` and ``macs_reduction`` of an opaque model relative to ``dense`` (eager or opaque)."""
    x = example.to(model_device(dense))
    reference = opaque_size(dense, x) if is_opaque(dense) else model_info(dense, x, measure_latency=False)
    params, macs = reference["params"], reference["macs"]
    return {"params_reduction": 1.0 - info["params"] / params if params else None,
            "macs_reduction": 1.0 - info["macs"] / macs if macs and info["macs"] is not None else None}


def register(run: RunDir, member: FamilyMember) -> None:
    """Write the member's card to the run's models.jsonl, once."""
    if member.id not in {c.id for c in run.models()}:
        run.add_model(member.card)
