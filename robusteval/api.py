"""The Python API: ``audit`` (load → prune → evaluate → results → report) and ``prune``."""
from __future__ import annotations

import dataclasses
import hashlib
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robusteval import __version__
from robusteval.analysis import baseline_id, write_summary
from robusteval.analysis.exemplars import save_samples
from robusteval.conditions import build_conditions, frost_source
from robusteval.config import AuditConfig
from robusteval.data.arrays import LabeledArrays, match_sources
from robusteval.data.sources import load_source
from robusteval.device import check_autocast, resolve_device
from robusteval.engine import EngineSettings, ModelEntry, run_attacks, run_conditions, transfer_conditions
from robusteval.engine import Executor, LocalExecutor
from robusteval.engine.ray import check_available, ray_executor
from robusteval.errors import RobustEvalError, describe, warn
from robusteval.evaluators.adversarial import AdversarialSettings, select_sample
from robusteval.evaluators.base import evaluator_declarations
from robusteval.models.loading import file_sha256, load_model
from robusteval.models.pruned_state import folded_copy, has_prune_hooks
from robusteval.models.sources import resolve_model
from robusteval.models.wrap import check_model, has_gradients, with_logits, with_normalization
from robusteval.card import GIVEN
from robusteval.pruning import FamilyMember, PruneSettings
from robusteval.pruning.given import paired_reference, plain_member, register
from robusteval.records import DENSE_ID
from robusteval.results import RunDir

#: the dependencies whose installed versions the manifest records (robusteval's own: ``__version__``)
PACKAGES = ("torch", "torchvision", "foolbox", "robustbench", "pyautoattack", "torch-pruning",
            "numpy", "scipy")


@dataclass
class Run:
    """A finished run: its directory and summary (``summary["models"][i]["metrics"]``)."""

    path: Path
    summary: dict[str, Any]

    def metrics(self, model_id: str = DENSE_ID) -> dict[str, float]:
        for entry in self.summary["models"]:
            if entry["id"] == model_id:
                return entry["metrics"]
        raise KeyError(model_id)


def default_out() -> Path:
    return Path("reports") / datetime.now().strftime("%Y%m%d-%H%M%S")


def audit(model: str | Path | nn.Module, *, config: AuditConfig | None = None, out: str | Path | None = None,
          reference: str | Path | nn.Module | None = None, progress: bool = True,
          command: list[str] | None = None) -> Run:
    """Prune ``model`` into a family (when ``config.pruning`` is set), evaluate every member and
    write the run directory ``out``. With ``reference``, ``model`` is an already pruned model
    compared against the dense ``reference`` (no pruning)."""
    config = config or AuditConfig()
    device = _setup(config)
    with RunDir(out or default_out()).writing() as run:
        return _audit(run, model, config, reference, progress, command, device)


def _audit(run: RunDir, model: str | Path | nn.Module, config: AuditConfig,
           reference: str | Path | nn.Module | None, progress: bool, command: list[str] | None,
           device: torch.device) -> Run:
    """load → prune → evaluate → attack → summary, each stage given its own settings section."""
    started, data = time.time(), config.data
    clean = _evaluation_data(config)
    dense, shas, candidate = _load_models(model, reference, config, clean, device)
    # every data source is read before anything is written
    conditions = build_conditions(config.evaluate, clean, seed=data.seed, subset=data.subset,
                                  download=data.download, model_std=config.model.std,
                                  frost=(_previous_manifest(run) or {}).get("frost"))
    _start_manifest(run, config, clean, shas, command, device, frost=frost_source(conditions))
    with _executor(config, run, device) as executor:
        return _evaluate(run, config, (dense, candidate), clean, conditions, executor, progress, started, device)


def _evaluate(run: RunDir, config: AuditConfig, given: tuple[nn.Module, tuple[str, nn.Module] | None],
              clean: LabeledArrays, conditions: list, executor: Executor, progress: bool, started: float,
              device: torch.device) -> Run:
    """prune → evaluate → attack → summary on ``executor``."""
    adv, data = config.evaluate.adversarial, config.data
    dense, candidate = given
    members = list(_family(dense, candidate, config, clean, run, progress, executor))
    models = [ModelEntry(m.id, m.model) for m in members]
    engine = EngineSettings(data.batch_size, data.shard_size, progress,
                            (("config", config.digest()), ("seed", data.seed), ("device", str(device)),
                             ("precision", config.precision)),
                            precision=config.precision, channels_last=config.channels_last)
    sample = None if adv is None else _attack_sample(clean, adv)  # attacked, and transfer examples made from
    if sample is not None and adv.transfer and has_gradients(dense):
        conditions += transfer_conditions(run, dense, *sample, clean.classes, adv)
    run_conditions(models, conditions, run, config.evaluate, engine, executor)
    save_samples(run, clean, conditions, baseline_id(config.analysis.baseline, [m.id for m in members], DENSE_ID))
    if sample is not None:
        run_attacks(models, *sample, run, adv, engine, executor)
    plan = ([m.id for m in members], [c.key for c in conditions] + (["adversarial"] if adv is not None else []))
    return Run(run.path, _summary(run, config, time.time() - started, plan))


def _evaluation_data(config: AuditConfig) -> LabeledArrays:
    clean = load_source(config.data.source, subset=config.data.subset, seed=config.data.seed,
                        download=config.data.download)
    if clean.logit_indices is not None and config.evaluate.adversarial is not None:
        raise RobustEvalError(f"{config.data.source} is a {clean.num_classes}-class subset of {clean.num_logits} "
                              "classes: adversarial attacks need the model's own label space; evaluate it as "
                              "evaluate.shift, or set evaluate.adversarial to null")
    return clean


def _attack_sample(clean: LabeledArrays, settings: AdversarialSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """The images (and labels) every model is attacked on, and transfer examples are crafted from."""
    idx = select_sample(len(clean), settings=settings).numpy()
    return clean.images(idx), clean.labels(idx)


def _load_models(model: str | Path | nn.Module, reference: str | Path | nn.Module | None, config: AuditConfig,
                 clean: LabeledArrays, device: torch.device
                 ) -> tuple[nn.Module, dict[str, str], tuple[str, nn.Module] | None]:
    """The dense model, every model's sha256 and, with ``reference``, the given pruned model (id, module)."""
    dense, dense_sha = _load(reference if reference is not None else model, config, clean, "model", device)
    if reference is None:
        return dense, {DENSE_ID: dense_sha}, None
    given, sha = _load(model, config, clean, "pruned model", device)
    return dense, {DENSE_ID: dense_sha, _candidate_id(model): sha}, (_candidate_id(model), given)


def _summary(run: RunDir, config: AuditConfig, seconds: float | None, plan: tuple[list[str], list[str]]) -> dict:
    return write_summary(run, digest=config.digest(), baseline=config.analysis.baseline, seconds=seconds, plan=plan,
                         declarations=evaluator_declarations())


def demo(*, config: AuditConfig, out: str | Path, progress: bool = True, command: list[str] | None = None) -> Run:
    """The embedded default: audit the bundled ResNet-20 (``config`` is usually ``configs/quick.yaml``)."""
    from robusteval.models.bundled import BUNDLED_ARCH, BUNDLED_MODEL

    model_settings = dataclasses.replace(config.model, arch=BUNDLED_ARCH, mean=None, std=None)
    return audit(BUNDLED_MODEL, config=config.replace(model=model_settings), out=out, progress=progress,
                 command=command)


def prune(model: str | Path | nn.Module, *, config: AuditConfig, out: str | Path | None = None,
          progress: bool = True, command: list[str] | None = None) -> Run:
    """Build and save the pruned family only (``<out>/models/<id>.pt2``); summary.json lists it."""
    if config.pruning is None:
        raise RobustEvalError("prune needs pruning methods and ratios (--methods, --ratios or a config)")
    device = _setup(config)
    with RunDir(out or default_out()).writing() as run:
        clean = load_source(config.data.source, subset=config.data.subset, seed=config.data.seed,
                            download=config.data.download)
        dense, sha = _load(model, config, clean, "model", device)
        _start_manifest(run, config, clean, {DENSE_ID: sha}, command, device)
        with _executor(config, run, device) as executor:
            ids = [m.id for m in _family(dense, None, config, clean, run, progress, executor)]
        return Run(run.path, _summary(run, config, None, (ids, [])))


def _setup(config: AuditConfig) -> torch.device:
    """CPU threads, and the device the run uses (with its precision checked there)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    check_autocast(device, config.precision)
    check_available(config.engine, device)
    return device


@contextmanager
def _executor(config: AuditConfig, run: RunDir, device: torch.device) -> Iterator[Executor]:
    """Where the work runs: this process or Ray workers."""
    if config.engine.kind == "local":
        yield LocalExecutor()
        return
    with ray_executor(config.engine, run, device) as executor:
        yield executor


def _load(model: str | Path | nn.Module, config: AuditConfig, clean: LabeledArrays, name: str,
          device: torch.device) -> tuple[nn.Module, str]:
    """Load (or take) a model (weights are read to CPU), wrap normalisation, move it to ``device`` (an
    onnxruntime model stays on CPU), probe it against the data; returns (model, sha256)."""
    if isinstance(model, nn.Module):  # pruning hooks are folded in a copy: the caller's module stays as it is
        loaded = folded_copy(model) if has_prune_hooks(model) else model
        loaded, sha = loaded.eval(), _state_sha(loaded)
    else:
        source = resolve_model(model)
        path = source.path
        loaded = load_model(source, arch=config.model.arch, num_classes=clean.num_logits,
                            trust_pickle=config.model.trust_pickle, checkpoint_key=config.model.checkpoint_key)
        sha = file_sha256(path) if path.is_file() else ""
        name = source.label
    loaded = with_logits(with_normalization(loaded, config.model.mean, config.model.std), clean.image_shape)
    loaded = _placed(loaded, device, config.channels_last)
    check_model(loaded, clean.image_shape, clean.num_logits, name)
    return loaded, sha


def _placed(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """``model`` on ``device`` (in channels-last memory format if asked; a module given in Python is moved in
    place, as ``nn.Module.to`` does); onnxruntime models stay on CPU."""
    if not has_gradients(model):
        return model
    try:
        model = model.to(device)
        return model.to(memory_format=torch.channels_last) if channels_last else model
    except Exception as exc:  # TorchScript or exported graphs can pin tensors to a device
        raise RobustEvalError(f"the model cannot be moved to {device}: {describe(exc)}") from exc


def _state_sha(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _candidate_id(model: str | Path | nn.Module) -> str:
    """A given pruned model is named after its file (never "dense", the reference's id)."""
    stem = "candidate" if isinstance(model, nn.Module) else Path(model).stem
    return "candidate" if stem == DENSE_ID else stem


def _family(dense: nn.Module, candidate: tuple[str, nn.Module] | None, config: AuditConfig,
            clean: LabeledArrays, run: RunDir, progress: bool, executor: Executor) -> Iterator[FamilyMember]:
    """The dense member, then the pruned members (built here or by ``executor``'s workers, or reloaded
    from the run directory), each registered in the run directory as it comes."""
    for member in _members(dense, candidate, config, clean, run, progress, executor):
        register(run, member)
        yield member


def _members(dense: nn.Module, candidate: tuple[str, nn.Module] | None, config: AuditConfig,
             clean: LabeledArrays, run: RunDir, progress: bool, executor: Executor
             ) -> Iterator[FamilyMember]:
    example = clean.images(slice(0, 2))
    if candidate is not None:
        budget = (config.pruning or PruneSettings()).latency_budget_s
        given = plain_member(candidate[1], candidate[0], GIVEN, example, latency=budget, dense=dense)
        yield paired_reference(plain_member(dense, DENSE_ID, "dense", example, latency=False), given)
        yield given
        return
    if config.pruning is None:  # evaluate only: no latency timing, the quickest sanity check
        yield plain_member(dense, DENSE_ID, "dense", example, latency=False)
        return
    if not has_gradients(dense):
        raise RobustEvalError("an ONNX model cannot be pruned (it has no torch layers); evaluate it, or audit it "
                              "as the deployed model against its torch original: audit model.onnx --reference dense.pt")
    spec = config.data.train_spec()
    train = load_source(spec, seed=config.data.seed, download=config.data.download) if spec else None
    if train is not None and train.logit_indices is not None:
        raise RobustEvalError(f"training data {spec!r} is a class subset ({train.num_classes} of {train.num_logits} "
                              "classes); train on data labelled in the model's own classes")
    if train is not None and (message := match_sources(train, clean, f"training data {spec!r}", "the evaluation data")):
        warn(message)
    yield from executor.build_family(dense, settings=config.pruning, example_input=example, train_data=train,
                                     run=run, progress=progress)


def _previous_manifest(run: RunDir) -> dict[str, Any] | None:
    """The manifest of the results ``run`` holds already (None: nothing recorded yet, a new run)."""
    return run.read_manifest() if run.models() or run.done() else None


def _start_manifest(run: RunDir, config: AuditConfig, clean: LabeledArrays, model_sha: dict[str, str],
                    command: list[str] | None, device: torch.device, *, frost: str | None = None) -> None:
    """Write the manifest; refuse to mix results of a different config into an existing run (one that
    recorded nothing yet, e.g. stopped by bad input, starts over). ``frost``: what generated frost is
    made with (``photographs``, ``procedural`` or ``frost_dir``), kept by a resumed run."""
    old = _previous_manifest(run)
    if old is not None and old.get("config_digest") != config.digest():
        raise RobustEvalError(f"{run.path} holds results of a different configuration; use a new --out")
    if old is not None and old.get("model_sha256") != model_sha:
        raise RobustEvalError(f"{run.path} holds results of a different model; use a new --out")
    data_hash = hashlib.sha256(np.ascontiguousarray(clean.x).tobytes() + clean.y.tobytes()).hexdigest()
    manifest = old or {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command or [],
        "config_digest": config.digest(),
        "config": config.to_dict(),
        "seed": config.data.seed,
        "device": str(device),
        "precision": config.precision,
        "model_sha256": model_sha,
        "data": {"source": config.data.source, "n": len(clean), "classes": list(clean.classes),
                 "sha256": data_hash},
        "versions": _versions(),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "threads": torch.get_num_threads()},
    }
    manifest["resumed"] = old is not None
    if frost is not None:
        manifest.setdefault("frost", frost)
    manifest["device"] = str(device)  # the latest run's, as the engine: a run may resume on another device
    manifest["engine"] = config.engine.kind  # the latest run's: a run may resume on the other engine
    run.write_manifest(manifest)


def _versions() -> dict[str, str]:
    out = {"robusteval": __version__}  # the code that ran, installed or not
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    out["python"] = sys.version.split()[0]
    return out
