"""The Python API: ``audit`` (load → family → evaluate → attack → summary, then report and gate) and ``prune``.

Each run is a :class:`~robusteval.session.Session`; the stages below take it and their own inputs."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

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
from robusteval.finish import Finish
from robusteval.gate import GateResult, Rule
from robusteval.models.loading import file_sha256, load_model
from robusteval.models.pruned_state import folded_copy, has_prune_hooks
from robusteval.models.sources import resolve_model
from robusteval.models.wrap import check_model, has_gradients, with_logits, with_normalization
from robusteval.provenance import previous_manifest, start_manifest, state_sha256
from robusteval.card import GIVEN
from robusteval.pruning import FamilyMember, PruneSettings
from robusteval.pruning.given import paired_reference, plain_member, register
from robusteval.records import DENSE_ID
from robusteval.results import RunDir
from robusteval.session import Session, torch_settings


@dataclass
class Run:
    """A finished run: its directory and summary (``summary["models"][i]["metrics"]``); ``gate``: the gate's
    result when the audit was gated (``gate.passed``, ``gate.failures``), else None."""

    path: Path
    summary: dict[str, Any]
    gate: GateResult | None = None

    def metrics(self, model_id: str = DENSE_ID) -> dict[str, float]:
        for entry in self.summary["models"]:
            if entry["id"] == model_id:
                return entry["metrics"]
        raise KeyError(model_id)


def default_out() -> Path:
    return Path("reports") / datetime.now().strftime("%Y%m%d-%H%M%S")


def audit(model: str | Path | nn.Module, *, config: AuditConfig | None = None, out: str | Path | None = None,
          reference: str | Path | nn.Module | None = None, progress: bool = True,
          command: list[str] | None = None, report: bool = False,
          gate: str | Path | Sequence[Rule] | None = None, junit: str | Path | None = None) -> Run:
    """Prune ``model`` into a family (when ``config.pruning`` is set), evaluate every member and
    write the run directory ``out``. With ``reference``, ``model`` is an already pruned model
    compared against the dense ``reference`` (no pruning). Then, as the CLI: ``report`` writes
    report.html (the verdict table printed); ``gate`` (a rules YAML, a preset name or rules, read
    before any work) gates the run, ``junit`` gets its JUnit XML, and ``Run.gate`` holds the result:
    a failed gate does not raise (``run.gate.raise_on_failure()`` does, as the CLI's exit 1)."""
    config = config or AuditConfig()
    finish = Finish.of(report, gate, junit)
    with _session(config, out, progress, command) as session:
        run = _audit(session, model, reference)
    analysis = config.analysis
    return dataclasses.replace(run, gate=finish.apply(run.path, analysis.tolerance, analysis.tolerances))


@contextmanager
def _session(config: AuditConfig, out: str | Path | None, progress: bool,
             command: list[str] | None) -> Iterator[Session]:
    """The session of a run writing ``out``, with torch's threads set for it and restored afterwards."""
    with torch_settings(config.threads):
        device = _setup(config)
        with RunDir(out or default_out()).writing() as run:
            yield Session(run, config, device, config.digest(), progress, tuple(command or ()))


def _audit(session: Session, model: str | Path | nn.Module, reference: str | Path | nn.Module | None) -> Run:
    """load → family → evaluate → attack → summary, each stage given its own settings section."""
    config = session.config
    clean = _evaluation_data(config)
    dense, shas, candidate = _load_models(session, model, reference, clean)
    # every data source is read before anything is written
    conditions = build_conditions(config.evaluate, clean, seed=config.data.seed, subset=config.data.subset,
                                  download=config.data.download, model_std=config.model.std,
                                  frost=(previous_manifest(session.run) or {}).get("frost"))
    start_manifest(session, clean, shas, frost=frost_source(conditions))
    with _executor(config, session.run, session.device) as executor:
        session = dataclasses.replace(session, executor=executor)
        evaluated = sum(len(c) for c in conditions)  # sizes the latency timing (pruning.latency_share)
        models = [ModelEntry(m.id, m.model) for m in _family(session, dense, candidate, clean, evaluated)]
        sample = _attack_sample(clean, config.evaluate.adversarial)  # attacked, and transfer examples made from
        conditions += _transfer(session, dense, clean, sample)
        _evaluate(session, models, clean, conditions)
        _attack(session, models, sample)
        plan = ([m.id for m in models], [c.key for c in conditions] + (["adversarial"] if sample is not None else []))
        return Run(session.run.path, _summary(session, plan, time.time() - session.started))


def _evaluate(session: Session, models: list[ModelEntry], clean: LabeledArrays, conditions: list) -> None:
    """Every condition on every model, then the sample images the report shows."""
    config = session.config
    run_conditions(models, conditions, session.run, config.evaluate, _engine(session), session.executor)
    save_samples(session.run, clean, conditions, baseline_id(config.analysis.baseline, session.run.models()))


def _attack(session: Session, models: list[ModelEntry], sample: tuple[torch.Tensor, torch.Tensor] | None) -> None:
    """Every model attacked on the same ``sample`` (None: no attacks)."""
    if sample is not None:
        run_attacks(models, *sample, session.run, session.config.evaluate.adversarial, _engine(session),
                    session.executor)


def _engine(session: Session) -> EngineSettings:
    """The engine's settings, and what every record carries about the run."""
    data, config = session.config.data, session.config
    return EngineSettings(data.batch_size, data.shard_size, session.progress,
                          (("config", session.digest), ("seed", data.seed), ("device", str(session.device)),
                           ("precision", config.precision)),
                          precision=config.precision, channels_last=config.channels_last)


def _transfer(session: Session, dense: nn.Module, clean: LabeledArrays,
              sample: tuple[torch.Tensor, torch.Tensor] | None) -> list:
    """The transfer conditions: adversarial examples crafted on ``dense`` from the attack ``sample``."""
    adv = session.config.evaluate.adversarial
    if sample is None or adv is None or not adv.transfer or not has_gradients(dense):
        return []
    return transfer_conditions(session.run, dense, *sample, clean.classes, adv)


def _evaluation_data(config: AuditConfig) -> LabeledArrays:
    clean = load_source(config.data.source, subset=config.data.subset, seed=config.data.seed,
                        download=config.data.download)
    if clean.logit_indices is not None and config.evaluate.adversarial is not None:
        raise RobustEvalError(f"{config.data.source} is a {clean.num_classes}-class subset of {clean.num_logits} "
                              "classes: adversarial attacks need the model's own label space; evaluate it as "
                              "evaluate.shift, or set evaluate.adversarial to null")
    return clean


def _attack_sample(clean: LabeledArrays, settings: AdversarialSettings | None
                   ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The images (and labels) every model is attacked on, and transfer examples are crafted from (None: no
    attacks)."""
    if settings is None:
        return None
    idx = select_sample(len(clean), settings=settings).numpy()
    return clean.images(idx), clean.labels(idx)


def _load_models(session: Session, model: str | Path | nn.Module, reference: str | Path | nn.Module | None,
                 clean: LabeledArrays) -> tuple[nn.Module, dict[str, str], tuple[str, nn.Module] | None]:
    """The dense model, every model's sha256 and, with ``reference``, the given pruned model (id, module)."""
    dense, dense_sha = _load(session, reference if reference is not None else model, clean, "model")
    if reference is None:
        return dense, {DENSE_ID: dense_sha}, None
    given, sha = _load(session, model, clean, "pruned model")
    return dense, {DENSE_ID: dense_sha, _candidate_id(model): sha}, (_candidate_id(model), given)


def _summary(session: Session, plan: tuple[list[str], list[str]], seconds: float | None) -> dict:
    return write_summary(session.run, digest=session.digest, baseline=session.config.analysis.baseline,
                         seconds=seconds, plan=plan, declarations=evaluator_declarations())


def demo(*, config: AuditConfig, out: str | Path, progress: bool = True, command: list[str] | None = None,
         report: bool = False) -> Run:
    """The embedded default: audit the bundled ResNet-20 (``config`` is usually ``configs/quick.yaml``)."""
    from robusteval.models.bundled import BUNDLED_ARCH, BUNDLED_MODEL

    model_settings = dataclasses.replace(config.model, arch=BUNDLED_ARCH, mean=None, std=None)
    return audit(BUNDLED_MODEL, config=config.replace(model=model_settings), out=out, progress=progress,
                 command=command, report=report)


def prune(model: str | Path | nn.Module, *, config: AuditConfig, out: str | Path | None = None,
          progress: bool = True, command: list[str] | None = None) -> Run:
    """Build and save the pruned family only (``<out>/models/<id>.pt2``); summary.json lists it."""
    if config.pruning is None:
        raise RobustEvalError("prune needs pruning methods and ratios (--methods, --ratios or a config)")
    with _session(config, out, progress, command) as session:
        clean = load_source(config.data.source, subset=config.data.subset, seed=config.data.seed,
                            download=config.data.download)
        dense, sha = _load(session, model, clean, "model")
        start_manifest(session, clean, {DENSE_ID: sha})
        with _executor(config, session.run, session.device) as executor:
            session = dataclasses.replace(session, executor=executor)
            ids = [m.id for m in _family(session, dense, None, clean)]
        return Run(session.run.path, _summary(session, (ids, []), None))


def _setup(config: AuditConfig) -> torch.device:
    """The device the run uses (with its precision, and the engine's use of it, checked there)."""
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


def _load(session: Session, model: str | Path | nn.Module, clean: LabeledArrays, name: str
          ) -> tuple[nn.Module, str]:
    """Load (or take) a model (weights are read to CPU), wrap normalisation, move it to the session's device
    (an onnxruntime model stays on CPU), probe it against the data; returns (model, sha256)."""
    config = session.config
    if isinstance(model, nn.Module):  # pruning hooks are folded in a copy: the caller's module stays as it is
        loaded = folded_copy(model) if has_prune_hooks(model) else model
        loaded, sha = loaded.eval(), state_sha256(loaded)
    else:
        source = resolve_model(model)
        path = source.path
        loaded = load_model(source, arch=config.model.arch, num_classes=clean.num_logits,
                            trust_pickle=config.model.trust_pickle, checkpoint_key=config.model.checkpoint_key)
        sha = file_sha256(path) if path.is_file() else ""
        name = source.label
    loaded = with_logits(with_normalization(loaded, config.model.mean, config.model.std), clean.image_shape)
    loaded = _placed(loaded, session.device, config.channels_last)
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


def _candidate_id(model: str | Path | nn.Module) -> str:
    """A given pruned model is named after its file (never "dense", the reference's id)."""
    stem = "candidate" if isinstance(model, nn.Module) else Path(model).stem
    return "candidate" if stem == DENSE_ID else stem


def _family(session: Session, dense: nn.Module, candidate: tuple[str, nn.Module] | None,
            clean: LabeledArrays, evaluated: int | None = None) -> Iterator[FamilyMember]:
    """The dense member, then the pruned members (built here or by the session's executor's workers, or
    reloaded from the run directory), each registered in the run directory as it comes; ``evaluated``: the
    images each model will be evaluated on (None: not evaluated), which latency timing is proportionate to."""
    for member in _members(session, dense, candidate, clean, evaluated):
        register(session.run, member)
        yield member


def _members(session: Session, dense: nn.Module, candidate: tuple[str, nn.Module] | None,
             clean: LabeledArrays, evaluated: int | None) -> Iterator[FamilyMember]:
    config, run, progress, executor = session.config, session.run, session.progress, session.executor
    example = clean.images(slice(0, 2))
    settings = dataclasses.replace(config.pruning or PruneSettings(), evaluated_images=evaluated)
    if candidate is not None:
        given = plain_member(candidate[1], candidate[0], GIVEN, example, timing=settings, dense=dense)
        yield paired_reference(plain_member(dense, DENSE_ID, "dense", example, timing=None), given)
        yield given
        return
    if config.pruning is None:  # evaluate only: no latency timing, the quickest sanity check
        yield plain_member(dense, DENSE_ID, "dense", example, timing=None)
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
    yield from executor.build_family(dense, settings=settings, example_input=example, train_data=train,
                                     run=run, progress=progress)
