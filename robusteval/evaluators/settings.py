"""The ``evaluate`` section: which evaluator families run and on which conditions, with their settings.

The engine and the condition builder receive this section (never the whole run configuration);
sections owned by one evaluator (adversarial, calibration, OOD scores) are that evaluator's own
settings class, composed here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from robusteval import validate
from robusteval.data.corruptions import BENCHMARK_CORRUPTIONS, CORRUPTIONS, DEFAULT_NOISE_EPS, EXTRA_CORRUPTIONS
from robusteval.data.ood_sets import OOD_SETS
from robusteval.data.sources import parse_spec
from robusteval.errors import RobustEvalError
from robusteval.evaluators.adversarial import AdversarialSettings
from robusteval.evaluators.calibration import CalibrationSettings
from robusteval.evaluators.ood import OODSettings


def _check_specs(what: str, specs: dict[str, str]) -> None:
    for name, spec in specs.items():
        try:
            parse_spec(spec)
        except RobustEvalError as exc:
            raise RobustEvalError(f"{what} {name!r}: {exc}") from None


@dataclass(frozen=True)
class CorruptionSettings:
    """Common corruptions (generated on the fly, or read from ``files`` in robustbench's layout)."""

    corruptions: tuple[str, ...] = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
    severities: tuple[int, ...] = validate.SEVERITIES
    subset: int | None = 1000
    files: str | None = None
    frost_dir: str | None = None
    """A folder with the reference's frost photographs (frost1.png … frost5.jpg); else procedural textures."""

    def __post_init__(self) -> None:
        for name in self.corruptions:
            CORRUPTIONS.get(name)
        if self.frost_dir is not None and not Path(self.frost_dir).is_dir():
            raise RobustEvalError(f"frost_dir: {self.frost_dir} is not a folder (expected frost1.png … frost5.jpg in it)")
        validate.severities("severities", self.severities)
        validate.positive_int("subset", self.subset, optional=True, must_be=True)


@dataclass(frozen=True)
class NoiseSettings:
    """The uniform-noise resilience curve of Liebenwein et al. (2021); ε in units of the normalised input."""

    eps: tuple[float, ...] = DEFAULT_NOISE_EPS
    subset: int | None = 1000

    def __post_init__(self) -> None:
        if not self.eps or any(not 0 <= e <= 10 for e in self.eps):
            raise RobustEvalError(f"noise eps must be a non-empty list in [0, 10] (units of the normalised "
                                  f"input), got {list(self.eps)}")
        validate.positive_int("subset", self.subset, optional=True, must_be=True)


@dataclass(frozen=True)
class OODConfig:
    """Out-of-distribution sets: synthetic ``sets`` and data ``sources`` (name → data spec)."""

    sets: tuple[str, ...] = ("gaussian_noise", "uniform_noise", "blobs", "pixel_shuffled", "patch_shuffled")
    sources: dict[str, str] = field(default_factory=dict)
    subset: int | None = 1000
    scores: OODSettings = field(default_factory=OODSettings)

    def __post_init__(self) -> None:
        for name in self.sets:
            OOD_SETS.get(name)
        validate.positive_int("subset", self.subset, optional=True, must_be=True)
        _check_specs("OOD source", self.sources)


@dataclass(frozen=True)
class EvaluateSettings:
    """Which evaluator families run; a section set to null (or absent, for optional ones) is off."""

    clean: bool = True
    agreement: bool = True
    calibration: CalibrationSettings | None = field(default_factory=CalibrationSettings)
    corruption: CorruptionSettings | None = None
    noise: NoiseSettings | None = None
    ood: OODConfig | None = None
    shift: dict[str, str] = field(default_factory=dict)
    adversarial: AdversarialSettings | None = None

    def __post_init__(self) -> None:
        _check_specs("shift set", self.shift)
