"""Build and check the family {dense} ∪ {method × ratio} of pruned models (saved and reused through
:mod:`robusteval.pruning.member`)."""
from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from robusteval.card import Costs, MemberCard
from robusteval.records import CONTROL_ID, DENSE_ID, SCRATCH_SUFFIX
from robusteval.data.arrays import LabeledArrays
from robusteval.device import model_device
from robusteval.errors import RobustEvalError
from robusteval.pruning.at_init import reinitialised, training_notes
from robusteval.pruning.importance import PruneContext
from robusteval.pruning.masks import prunable_layers
from robusteval.pruning.member import ExportedModel, FamilyMember, member_fingerprint, reused, save_member
from robusteval.pruning.methods import PRUNING_METHODS
from robusteval.pruning.recovery import finetune, recalibrate_bn
from robusteval.pruning.settings import FinetuneSettings, PruneSettings, check_ratio
from robusteval.pruning.stats import model_info

def member_id(method: str, ratio: float) -> str:
    """A grid entry's id (its card's, and its archive's name): the dense model's and the control's are their
    methods, any other member's ``method@ratio``."""
    return method if method in (DENSE_ID, CONTROL_ID) else f"{method}@{ratio:g}"


def _data_batch(data: LabeledArrays, settings: PruneSettings, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    part = data.stratified(settings.data_samples_per_class * data.num_classes, seed=settings.seed)
    return part.images(slice(None)).to(device), part.labels(slice(None)).to(device)


def _cycle_ratios(ratio: float, settings: PruneSettings) -> list[float]:
    """One-shot: [ratio]; iterative: kept fraction (1 - ratio)^(i/n) after cycle i of n."""
    if settings.schedule == "one_shot":
        return [ratio]
    n = settings.iterations
    return [1.0 - (1.0 - ratio) ** ((i + 1) / n) for i in range(n)]


def _check_forward(model: nn.Module, x: torch.Tensor, shape: torch.Size, what: str) -> None:
    with torch.no_grad():
        out = model(x)
    if out.shape != shape:
        raise RobustEvalError(f"{what}: pruned model outputs shape {tuple(out.shape)}, dense outputs {tuple(shape)}")
    if not torch.isfinite(out).all():
        raise RobustEvalError(f"{what}: pruned model outputs NaN or infinite values")


def prune_model(
    dense: nn.Module,
    method: str,
    ratio: float,
    *,
    settings: PruneSettings,
    example_input: torch.Tensor,
    train_data: LabeledArrays | None,
) -> FamilyMember:
    """Prune a copy of ``dense`` with ``method`` to ``ratio``, recover, check and describe it."""
    spec = PRUNING_METHODS.get(method)
    ratio = check_ratio(ratio)
    what = f"{method} at ratio {ratio:g}"
    start = time.perf_counter()
    model = (reinitialised(copy.deepcopy(dense), settings.seed) if settings.at_init else copy.deepcopy(dense)).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    x = example_input.to(next(model.parameters()).device)
    with torch.no_grad():
        dense_shape = model(x).shape
    ctx = PruneContext(example_input=x, settings=settings, train_data=train_data,
                       layers=prunable_layers(model, x, keep_first=settings.keep_first, keep_last=settings.keep_last),
                       generator=torch.Generator().manual_seed(settings.seed))
    if spec.needs_data:
        if train_data is None:
            raise RobustEvalError(f"pruning method {method!r} needs training data, got none (pass --train-data)")
        ctx.batch = _data_batch(train_data, settings, x.device)
    ft = settings.finetune
    recal = settings.recalibrates_bn(spec.structured)
    warnings = _recovery_warnings(settings, recal, train_data)
    bn_done, steps = False, 0
    for cycle, cycle_ratio in enumerate(_cycle_ratios(ratio, settings)):
        if cycle_ratio > 0:
            spec.prune(model, cycle_ratio, ctx)
        if train_data is not None:
            cycle_steps, cycle_bn = _recover(model, train_data, settings, cycle, recal=recal, layers=ctx.layers,
                                             masks=ctx.masks)
            steps, bn_done = steps + cycle_steps, bn_done or cycle_bn
    _freeze(model)
    seconds = time.perf_counter() - start
    _check_forward(model, x, dense_shape, what)
    info = model_info(model, x, dense=dense, prunable=list(ctx.layers), **settings.latency_options())
    warnings += info.get("latency_warnings", [])
    warnings += [f"layer {name} is fully pruned (layer collapse)" for name in info["collapsed_layers"]]
    card = MemberCard(member_id(method, ratio), "pruned", method, ratio, Costs.from_json(info),
                      _recovery_info(steps, bn_done, ft, train_data) | training_notes(settings, ctx), tuple(warnings),
                      structured=spec.structured, citation=spec.reference, schedule=settings.schedule,
                      prune_seconds=seconds)
    return FamilyMember(card, model)


def _recovery_warnings(settings: PruneSettings, recal: bool, train_data: LabeledArrays | None) -> list[str]:
    """What the recovery settings ask for and cannot get (no training data), or get weakly."""
    ft, warnings = settings.finetune, []
    if ft.epochs > 0 and train_data is None:
        warnings.append(f"fine-tuning ({ft.epochs:g} epochs) skipped: no training data")
    if recal and train_data is None:
        warnings.append("BatchNorm re-calibration skipped: no training data")
    if settings.schedule == "iterative" and ft.epochs == 0:
        warnings.append("iterative schedule without fine-tuning between cycles")
    return warnings


def _recover(model: nn.Module, train_data: LabeledArrays, settings: PruneSettings, cycle: int, *, recal: bool,
             layers: dict | None = None, masks: dict | None = None) -> tuple[int, bool]:
    """One recovery cycle: fine-tune (masks held at zero), then BatchNorm re-calibration when ``recal``."""
    steps = finetune(model, train_data, settings.finetune, layers=layers, masks=masks, seed=settings.seed + cycle)
    bn = recal and recalibrate_bn(model, train_data, batches=settings.bn_batches,
                                  batch_size=settings.finetune.batch_size, seed=settings.seed + cycle)
    return steps, bn


def _recovery_info(steps: int, bn_done: bool, ft: FinetuneSettings, train_data: LabeledArrays | None) -> dict:
    return {"finetune_epochs": steps * ft.batch_size / len(train_data) if steps and train_data else 0,
            "finetune_steps": steps, "bn_recalibrated": bn_done}


def _freeze(model: nn.Module) -> None:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def _retrained(model: nn.Module, dense: nn.Module, card: MemberCard, *, settings: PruneSettings,
               train_data: LabeledArrays, example_input: torch.Tensor, recal: bool, prunable: list[str] | None = None,
               extra_steps: int = 0) -> FamilyMember:
    """``model`` after the pruned members' recovery budget (as many cycles as their schedule), ``card`` given its
    costs; first ``extra_steps`` constant-rate steps (the training a method did while pruning: an equal budget)."""
    start = time.perf_counter()
    for p in model.parameters():
        p.requires_grad_(True)
    steps = finetune(model, train_data, settings.finetune, steps=extra_steps, seed=settings.seed) if extra_steps else 0
    bn_done = False
    for cycle in range(len(_cycle_ratios(0.5, settings))):
        cycle_steps, cycle_bn = _recover(model, train_data, settings, cycle, recal=recal)
        steps, bn_done = steps + cycle_steps, bn_done or cycle_bn
    _freeze(model)
    info = model_info(model, example_input.to(next(model.parameters()).device), dense=dense, prunable=prunable,
                      **settings.latency_options())
    return FamilyMember(card.replace(costs=Costs.from_json(info), schedule=settings.schedule,
                                     recovery=_recovery_info(steps, bn_done, settings.finetune, train_data),
                                     warnings=tuple(info.get("latency_warnings", ())),
                                     prune_seconds=time.perf_counter() - start), model)


def control_member(dense: nn.Module, *, settings: PruneSettings, example_input: torch.Tensor,
                   train_data: LabeledArrays) -> FamilyMember:
    """The dense model fine-tuned with the pruned members' recovery budget (id ``dense+ft``).

    The control of the pruning literature: without it, what recovery fine-tuning does on its
    own (e.g. adapting to a shifted test set) is credited to pruning.
    """
    card = MemberCard(CONTROL_ID, "control", CONTROL_ID, 0.0, structured=False,
                      citation="the dense model with the same recovery budget")
    return _retrained(copy.deepcopy(dense), dense, card, settings=settings, train_data=train_data,
                      example_input=example_input, recal=settings.recalibrates_bn(False))


def scratch_member(pruned: FamilyMember, dense: nn.Module, *, settings: PruneSettings, example_input: torch.Tensor,
                   train_data: LabeledArrays) -> FamilyMember:
    """The pruned architecture re-initialised and trained from scratch with the same budget.

    Crowley et al., "A Closer Look at Structured Pruning for Neural Network Compression" (2018;
    "nip it in the bud"): a structured method is only worth its cost if it beats this.
    """
    model = reinitialised(copy.deepcopy(pruned.model), settings.seed)
    method = pruned.method + SCRATCH_SUFFIX
    card = MemberCard(member_id(method, pruned.target_ratio), "scratch", method, pruned.target_ratio, structured=True,
                      citation="Crowley et al. 2018: the pruned architecture trained from scratch")
    return _retrained(model, dense, card, settings=settings, train_data=train_data, example_input=example_input,
                      recal=False, prunable=list(pruned.card.costs.layer_sparsity or {}),
                      extra_steps=pruned.card.recovery.get("pruning_steps", 0))


def dense_member(dense: nn.Module, *, settings: PruneSettings, example_input: torch.Tensor) -> FamilyMember:
    """The unpruned reference model as a family member (id "dense")."""
    model = copy.deepcopy(dense).eval()
    x = example_input.to(next(model.parameters()).device)
    layers = prunable_layers(model, x, keep_first=settings.keep_first, keep_last=settings.keep_last)
    info = model_info(model, x, prunable=list(layers), **settings.latency_options())
    costs = dataclasses.replace(Costs.from_json(info), params_reduction=0.0, macs_reduction=0.0)
    if costs.latency_ms is not None:
        costs = dataclasses.replace(costs, speedup=dict.fromkeys(costs.latency_ms, 1.0), speedup_basis="the reference")
    card = MemberCard(DENSE_ID, "dense", DENSE_ID, 0.0, costs, {"finetune_epochs": 0, "bn_recalibrated": False},
                      tuple(info.get("latency_warnings", ())), structured=False, prune_seconds=0.0)
    return FamilyMember(card, model)


def build_family(
    dense: nn.Module,
    *,
    settings: PruneSettings,
    example_input: torch.Tensor,
    train_data: LabeledArrays | None,
    out_dir: Path | None = None,
    progress: bool = True,
) -> Iterator[FamilyMember]:
    """Yield the dense member, the control (``dense+ft``, when recovery fine-tunes), then one member
    per (method, ratio) in the order of ``settings``, each structured one followed by its
    from-scratch baseline when ``settings.scratch_baseline``.

    With ``out_dir`` every member is saved as it is built, and a member saved earlier from the
    same dense weights and settings is reloaded instead of rebuilt.
    """
    fingerprint = member_fingerprint(dense, settings, example_input) if out_dir is not None else ""
    grid = [entry for group in family_groups(settings, train_data) for entry in group]
    built: dict[str, FamilyMember] = {}
    with tqdm(total=len(grid), desc="pruning", disable=not progress) as bar:
        for method, ratio in grid:
            bar.set_postfix_str(member_id(method, ratio))
            member = _member(dense, (method, ratio), built, settings, example_input, train_data, out_dir, fingerprint)
            bar.update()
            yield member


def family_groups(settings: PruneSettings, train_data: LabeledArrays | None) -> list[list[tuple[str, float]]]:
    """The family's (method, ratio) grid in order, in groups that build independently: dense, the
    control, then each (method, ratio) with its from-scratch baseline (which needs its architecture)."""
    trains = train_data is not None and settings.finetune.epochs > 0
    grid = [(DENSE_ID, 0.0)] + [(CONTROL_ID, 0.0)] * trains + [(m, r) for m in settings.methods for r in settings.ratios]
    return [[(m, r)] + [(m + SCRATCH_SUFFIX, r)] * _scratch(m, settings, trains) for m, r in grid]


def build_group(dense: nn.Module, group: list[tuple[str, float]], *, settings: PruneSettings,
                example_input: torch.Tensor, train_data: LabeledArrays | None, out_dir: Path) -> list[FamilyMember]:
    """Build and save one group of :func:`family_groups`, skipping members already saved from the same dense
    weights and settings (reloaded instead), and return its members: the unit of work of a Ray worker."""
    fingerprint = member_fingerprint(dense, settings, example_input)
    built: dict[str, FamilyMember] = {}
    return [_member(dense, entry, built, settings, example_input, train_data, out_dir, fingerprint) for entry in group]


def _member(dense: nn.Module, entry: tuple[str, float], built: dict[str, FamilyMember], settings: PruneSettings,
            example_input: torch.Tensor, train_data: LabeledArrays | None, out_dir: Path | None,
            fingerprint: str) -> FamilyMember:
    """One grid entry, reloaded when saved before, else built (and saved with ``out_dir``); kept in ``built``."""
    mid = member_id(*entry)
    member = reused(out_dir, mid, fingerprint, model_device(dense))
    if member is None:
        member = _build(dense, *entry, built, settings, example_input, train_data)
        member = FamilyMember(member.card.replace(input_shape=(1, *example_input.shape[1:])), member.model)
        if out_dir is not None:
            save_member(member, out_dir, example_input=example_input, fingerprint=fingerprint)
    built[mid] = member
    return member


def _scratch(method: str, settings: PruneSettings, trains: bool) -> bool:
    return trains and settings.scratch_baseline and method not in (CONTROL_ID, DENSE_ID) \
        and PRUNING_METHODS.get(method).structured


def _build(dense: nn.Module, method: str, ratio: float, built: dict[str, FamilyMember], settings: PruneSettings,
           example_input: torch.Tensor, train_data: LabeledArrays | None) -> FamilyMember:
    """Build one grid entry; a from-scratch baseline needs its pruned architecture as a module."""
    if method == DENSE_ID:
        return dense_member(dense, settings=settings, example_input=example_input)
    if method == CONTROL_ID:
        return control_member(dense, settings=settings, example_input=example_input, train_data=train_data)
    if method.endswith(SCRATCH_SUFFIX):
        base = method[: -len(SCRATCH_SUFFIX)]
        pruned = built[member_id(base, ratio)]
        if isinstance(pruned.model, ExportedModel):  # reloaded from disk: rebuild the architecture
            pruned = prune_model(dense, base, ratio, settings=dataclasses.replace(settings, measure_latency=False),
                                 example_input=example_input, train_data=train_data)
        return scratch_member(pruned, dense, settings=settings, example_input=example_input, train_data=train_data)
    return prune_model(dense, method, ratio, settings=settings, example_input=example_input, train_data=train_data)
