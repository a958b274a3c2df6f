"""The typed, validated run configuration (YAML files in ``configs/``, presets by name: :mod:`robusteval.presets`).

Each section is a frozen dataclass; sections owned by a subsystem (pruning, the ``evaluate``
section and its evaluators' settings) are that subsystem's own settings class, composed here. Unknown
keys, wrong types and bad values are one-line errors naming the key.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from robusteval import validate
from robusteval.analysis import BASELINES, DEFAULT_TOLERANCE, check_tolerances
from robusteval.data.sources import SPLIT_SOURCES, parse_spec
from robusteval.device import check_device_spec, check_precision
from robusteval.engine.executor import EngineConfig
from robusteval.errors import RobustEvalError
from robusteval.evaluators.base import DEFAULT_BATCH_SIZE
from robusteval.evaluators.settings import CorruptionSettings, EvaluateSettings, NoiseSettings, OODConfig
from robusteval.files import read_yaml_file
from robusteval.presets import preset_dir, resolve
from robusteval.pruning.settings import PruneSettings
from robusteval.registry import unknown_name_message

__all__ = ["CONFIG_DIR", "AnalysisSettings", "AuditConfig", "CorruptionSettings", "DataSettings", "EvaluateSettings",
           "ModelSettings", "NoiseSettings", "OODConfig", "config_from_dict", "load_config", "read_config_file"]

#: the presets' folder (the packaged copy of an install, else the checkout's ``configs/``)
CONFIG_DIR = preset_dir()


@dataclass(frozen=True)
class DataSettings:
    """Evaluation data (``source``), training data for pruning/recovery (``train``), batching.

    ``train: auto`` takes the training split of a built-in source (``bundled`` → ``bundled:train``,
    ``cifar10`` → ``cifar10:train``, …) and none for sources read from a path (give it explicitly).
    """

    def train_spec(self) -> str | None:
        """The training data spec that ``train`` stands for."""
        if self.train != "auto":
            return self.train
        kind = self.source.partition(":")[0]
        return f"{kind}:train" if kind in SPLIT_SOURCES else None

    source: str = "bundled"
    train: str | None = "auto"
    subset: int | None = None
    seed: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE
    shard_size: int = 1000
    download: bool = True

    def __post_init__(self) -> None:
        for name in ("subset", "batch_size", "shard_size"):
            validate.positive_int(name, getattr(self, name), optional=name == "subset", must_be=True)
        validate.non_negative_int("seed", self.seed, must_be=True)
        for spec in (self.source, self.train):
            if spec not in (None, "auto"):
                parse_spec(spec)


@dataclass(frozen=True)
class ModelSettings:
    """How to read the model file: architecture for weight-only files, input normalisation, and
    ``checkpoint_key``, the checkpoint entry holding the weights (e.g. ``state_dict_ema``; default: found)."""

    arch: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    trust_pickle: bool = False
    checkpoint_key: str | None = None


@dataclass(frozen=True)
class AnalysisSettings:
    """Tolerance δ for prune potential (absolute, metric units), per-metric overrides, and the baseline.

    ``baseline``: what drops are measured against: ``auto`` (default) is the control ``dense+ft``
    (the dense model with the pruned members' recovery budget) when recovery fine-tunes, else
    the untouched ``dense``; ``dense`` or ``dense+ft`` force one.
    """

    tolerance: float = DEFAULT_TOLERANCE
    tolerances: dict[str, float] = field(default_factory=dict)
    baseline: str = "auto"

    def __post_init__(self) -> None:
        if self.baseline not in BASELINES:
            raise RobustEvalError(f"baseline must be one of {', '.join(BASELINES)}, got {self.baseline!r}")
        check_tolerances(self.tolerance, self.tolerances)


@dataclass(frozen=True)
class AuditConfig:
    """A whole run. ``pruning: null`` evaluates the given model alone. An unset (None)
    ``evaluate.adversarial.batch_size`` becomes ``data.batch_size`` here, once. ``device`` stays as
    written (``auto``); the manifest and every record say the device it resolved to. ``engine`` says
    where the work runs (:mod:`robusteval.engine.executor`)."""

    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    pruning: PruneSettings | None = None
    evaluate: EvaluateSettings = field(default_factory=EvaluateSettings)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    threads: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False
    engine: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        validate.positive_int("threads", self.threads, optional=True, must_be=True)
        check_device_spec(self.device)
        check_precision(self.precision)
        adversarial = self.evaluate.adversarial
        if adversarial is not None and adversarial.batch_size is None:  # the evaluation batch size
            adversarial = dataclasses.replace(adversarial, batch_size=self.data.batch_size)
            object.__setattr__(self, "evaluate", dataclasses.replace(self.evaluate, adversarial=adversarial))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A short hash of the configuration, recorded with every result; equal configs hash equally.
        ``engine`` and ``device`` are left out: where the work runs is not what is measured, so a run
        resumes on the other engine or on another device (a run started on a GPU finishes on CPU); each
        record says its device."""
        fields = {k: v for k, v in self.to_dict().items() if k not in ("engine", "device")}
        text = json.dumps(_canonical(fields), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def replace(self, **sections: Any) -> AuditConfig:
        return dataclasses.replace(self, **sections)


def _canonical(value: Any) -> Any:
    """``epochs: 1`` from YAML (1.0) and ``epochs=1`` from Python compare equal, so write them alike."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def load_config(path: str | Path | None) -> AuditConfig:
    """Read a YAML config; a bare name (``quick``) is a preset (``configs/<name>.yaml``); None → defaults."""
    if path is None:
        return AuditConfig()
    data, where = read_config_file(path)
    return config_from_dict(data, where=where)


def read_config_file(path: str | Path) -> tuple[dict[str, Any], str]:
    """The raw mapping of a YAML config (or preset name) and where it came from, before validation."""
    p = resolve(path, "config file")
    data = read_yaml_file(p, "config file") or {}
    if not isinstance(data, dict):
        raise RobustEvalError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data, str(p)


def config_from_dict(data: Any, where: str = "config") -> AuditConfig:
    return _build(AuditConfig, data, where)


def _loc(where: str, path: str) -> str:
    """'file: section.key' for messages (``where`` may itself contain ':', e.g. a flag's value)."""
    return f"{where}: {path}" if path else where


def _build(cls: type, data: Any, where: str, path: str = "") -> Any:
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise RobustEvalError(f"{_loc(where, path)}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise RobustEvalError(f"{_loc(where, path)}: {unknown_name_message('key', str(key), names)}")
        kwargs[key] = _convert(hints[key], value, where, f"{path}.{key}" if path else str(key))
    try:
        return cls(**kwargs)
    except (RobustEvalError, TypeError, ValueError) as exc:
        raise RobustEvalError(f"{_loc(where, path)}: {exc}") from None


def _convert(tp: Any, value: Any, where: str, path: str) -> Any:
    loc = _loc(where, path)
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(option, value, where, path)
            except RobustEvalError as exc:
                errors.append(str(exc))
        raise RobustEvalError(errors[0] if len(errors) == 1 else f"{loc}: unexpected value {value!r}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, {} if value is None else value, where, path)
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise RobustEvalError(f"{loc}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1]
        return tuple(_convert(item, v, where, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise RobustEvalError(f"{loc}: expected a mapping, got {value!r}")
        k_tp, v_tp = typing.get_args(tp)
        return {_convert(k_tp, k, where, path): _convert(v_tp, v, where, f"{path}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if typing.get_origin(tp) is typing.Literal or tp is Any:
        return value
    if isinstance(tp, type) and isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise RobustEvalError(f"{loc}: expected {getattr(tp, '__name__', tp)}, got {value!r}")
