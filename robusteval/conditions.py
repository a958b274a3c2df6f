"""Conditions: the inputs every model of the family sees (clean, corrupted, noisy, OOD, shifted).

A condition is a data set plus an optional deterministic transform of each batch. Inputs of
batch ``i`` are seeded by (condition, batch index), so every model and every rerun sees the
same images. Which evaluators read a condition's logits depends on its family
(:func:`robusteval.evaluators.base.evaluators_for`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from robusteval.data.arrays import LabeledArrays, match_sources
from robusteval.data.cifar_c import available_corruption_files, corruption_dataset, load_corruption_files
from robusteval.data.corruptions import (condition_seed, corrupt, describe, imagenet_c_save, parameter_set,
                                         uniform_noise)
from robusteval.data.frost_photos import reference_frost_photos
from robusteval.data.ood_sets import make_ood_batch
from robusteval.data.sources import load_source
from robusteval.device import pinned, to_device
from robusteval.errors import RobustEvalError, warn
from robusteval.metrics import corruption_condition, noise_condition

if TYPE_CHECKING:
    from robusteval.evaluators.settings import CorruptionSettings, EvaluateSettings

Transform = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class Condition:
    """``key`` names it in records (``clean``, ``corruption/fog/3``, ``noise/0.1``, ``ood/blobs``)."""

    key: str
    family: str
    data: LabeledArrays
    transform: Transform | None = None
    labelled: bool = True
    note: str = ""
    meta: dict[str, object] = field(default_factory=dict)
    space: LabeledArrays | None = None  # whose label space logits are read in (default: ``data``'s)

    def __len__(self) -> int:
        return len(self.data)

    def restrict(self, logits: torch.Tensor) -> torch.Tensor:
        """A model's logits in the condition's label space (a class subset's columns, see LabeledArrays)."""
        return (self.space or self.data).restrict(logits)

    def inputs(self, start: int, stop: int, batch_index: int, device: torch.device | None = None) -> torch.Tensor:
        """Images ``start:stop`` (batch ``batch_index``), transformed on ``device`` (default CPU): an
        accelerator makes corrupted and synthetic inputs itself, from the same seeded CPU draws."""
        x = self.data.images(slice(start, stop))
        if device is not None and device.type != "cpu":
            x = to_device(pinned(x, device.type == "cuda"), device)
        return x if self.transform is None else self.transform(x, batch_index)

    def labels(self, start: int, stop: int) -> torch.Tensor:
        if not self.labelled:
            return torch.full((stop - start,), -1, dtype=torch.long)
        return self.data.labels(slice(start, stop))


def build_conditions(ev: EvaluateSettings, clean: LabeledArrays, *, seed: int, subset: int | None = None,
                     download: bool = True, model_std: Sequence[float] | None = None,
                     frost: str | None = None) -> list[Condition]:
    """Every condition the ``evaluate`` section asks for, clean first (OOD needs each model's clean
    logits); ``seed`` draws subsets and generated inputs, ``subset`` sizes shift sets like the clean data;
    ``model_std`` is the std the model normalises its input by (``--std``; None: the data's, see noise);
    ``frost`` is what generated frost was made with so far (:func:`frost_source`; None: a new run)."""
    conditions = [Condition("clean", "clean", clean, note="the evaluation data as given")]
    if ev.corruption is not None:
        conditions += _corruption_conditions(ev.corruption, clean, seed, download, frost)
    if ev.noise is not None:
        conditions += _noise_conditions(ev.noise.eps, clean.stratified(ev.noise.subset, seed), clean, model_std, seed)
    if ev.ood is not None:
        base = clean.stratified(ev.ood.subset, seed)
        for name in ev.ood.sets:
            conditions.append(Condition(f"ood/{name}", "ood", base, _ood_transform(name, seed), labelled=False,
                                        note="synthetic, made from the evaluation images"))
        for name, spec in ev.ood.sources.items():
            data = load_source(spec, subset=ev.ood.subset, seed=seed, download=download)
            _check_same_shape(data, clean, f"OOD set {name!r}")
            conditions.append(Condition(f"ood/{name}", "ood", data, labelled=False, note=f"data source {spec}",
                                        space=clean))
    for name, spec in ev.shift.items():
        data = load_source(spec, subset=subset, seed=seed, download=download)
        if message := match_sources(data, clean, f"shift set {name!r}", "the evaluation data"):
            warn(message)
        conditions.append(Condition(f"shift/{name}", "shift", data, note=f"data source {spec}"))
    return conditions


def _corruption_conditions(settings: CorruptionSettings, clean: LabeledArrays, seed: int,
                           download: bool, frost: str | None) -> list[Condition]:
    base = clean.stratified(settings.subset, seed)
    files = Path(settings.files) if settings.files else None
    dataset = corruption_dataset(clean.num_logits) if files else ""
    on_disk = set(available_corruption_files(files, dataset)) if files else set()
    table = parameter_set(*clean.image_shape[1:])
    frost_dir = _frost_dir(settings, on_disk, download, frost)
    out = []
    for name in settings.corruptions:
        for severity in settings.severities:
            key = corruption_condition(name, severity)
            meta = {"corruption": name, "severity": severity}
            if name in on_disk:
                data = load_corruption_files(files, name, severity, dataset=dataset, subset=settings.subset,
                                             seed=seed).stratified(settings.subset, seed)
                out.append(Condition(key, "corruption", data, note=f"precomputed files in {files}",
                                     meta=meta | {"source": "files"}))
            else:
                note = f"generated on the fly ({table} parameters): {describe(name)}"
                if name == "frost" and frost_dir:
                    note = f"generated on the fly ({table} parameters): the reference's frost photographs " \
                           f"from {frost_dir}"
                if table == "imagenet":
                    note += "; then uint8 and JPEG quality 85, as ImageNet-C is saved"
                transform = _corruption_transform(name, severity, seed, frost_dir, table == "imagenet")
                extra = {"frost": _frost_kind(settings, frost_dir)} if name == "frost" else {}
                out.append(Condition(key, "corruption", base, transform,
                                     note=note, meta=meta | {"source": "generated", "parameters": table} | extra))
    return out


def _frost_dir(settings: CorruptionSettings, on_disk: set[str], download: bool, frost: str | None) -> str | None:
    """The frost photographs frost is generated with: ``frost_dir``, else the reference's in the cache
    (downloaded once when missing and allowed), else None (procedural textures). A resumed run keeps
    what it began with (``frost``), so that every model sees the same frost images."""
    if settings.frost_dir or "frost" not in settings.corruptions or "frost" in on_disk or frost == "procedural":
        return settings.frost_dir
    folder = reference_frost_photos(download=download)
    if folder is None and frost == "photographs":
        raise RobustEvalError("this run made frost with the reference photographs, which are no longer in the "
                              "cache and cannot be downloaded: set evaluate.corruption.frost_dir to a copy, or "
                              "use a new --out")
    return None if folder is None else str(folder)


def _frost_kind(settings: CorruptionSettings, frost_dir: str | None) -> str:
    """What a generated frost condition is made with, as the manifest records it (``frost``)."""
    return "frost_dir" if settings.frost_dir else "photographs" if frost_dir else "procedural"


def frost_source(conditions: Sequence[Condition]) -> str | None:
    """What the generated frost conditions are made with (None: no generated frost)."""
    return next((c.meta["frost"] for c in conditions if "frost" in c.meta), None)


def _corruption_transform(name: str, severity: int, seed: int, frost_dir: str | None, saved: bool) -> Transform:
    """``saved``: end as ImageNet-C's files do (uint8, JPEG quality 85; ``imagenet_c_save``)."""
    def transform(x: torch.Tensor, i: int) -> torch.Tensor:
        out = corrupt(x, name, severity, seed=condition_seed(name, severity, i, seed), frost_dir=frost_dir)
        return imagenet_c_save(out) if saved else out
    return transform


_STD_SAMPLE = 1000


def _noise_conditions(grid: Sequence[float], base: LabeledArrays, clean: LabeledArrays,
                      model_std: Sequence[float] | None, seed: int) -> list[Condition]:
    """The ε-ball of Liebenwein et al. (2021) in its units: ε on the normalised input (x − mean)/std, unclipped.
    The std is the model's own (``--std``) when robusteval normalises for it, else the evaluation data's
    (measured on a seeded class-balanced sample of at most ``_STD_SAMPLE`` images)."""
    if model_std:
        std, source = tuple(model_std), "the model's --std"
    else:
        std, source = clean.stratified(_STD_SAMPLE, 0).channel_std(), "the data's"
    units = _noise_units(std, source)
    out = []
    for eps in grid:
        key = noise_condition(eps)
        out.append(Condition(key, "noise", base, _noise_transform(key, eps, std, seed),
                             note=f"x + 2ε·std·(U − ½), unclipped: {units}", meta={"eps": eps, "units": units}))
    return out


def _noise_units(std: Sequence[float], source: str) -> str:
    """What noise ε means, in one line (records, summary.json and the report carry it)."""
    return (f"ε in units of the normalised input (x − mean)/std, std = "
            f"({', '.join(f'{s:.4g}' for s in std)}) per channel, {source}")


def _noise_transform(key: str, eps: float, std: tuple[float, ...], seed: int) -> Transform:
    return lambda x, i: uniform_noise(x, eps, seed=condition_seed(key, 0, i, seed), std=std)


def _ood_transform(name: str, seed: int) -> Transform:
    return lambda x, i: make_ood_batch(name, x, seed=condition_seed(f"ood/{name}", 0, i, seed))


def _check_same_shape(data: LabeledArrays, clean: LabeledArrays, what: str) -> None:
    if data.image_shape != clean.image_shape:
        raise RobustEvalError(f"{what}: images of shape {data.image_shape}, expected {clean.image_shape} "
                              "like the evaluation data")


def transfer_condition(key: str, x_adv: torch.Tensor, y: torch.Tensor, classes: tuple[str, ...]) -> Condition:
    """Adversarial examples crafted on the dense model, fed to every model (transfer attack)."""
    data = LabeledArrays(x_adv.numpy().astype(np.float32), y.numpy().astype(np.int64), classes, key)
    return Condition(key, "transfer", data, note="crafted on the dense model")
