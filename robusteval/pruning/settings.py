"""Typed, validated pruning settings: what to prune, how far, and how to recover."""
from __future__ import annotations

from dataclasses import dataclass, field

from robusteval import validate
from robusteval.errors import RobustEvalError
from robusteval.pruning.registry import PRUNING_METHODS

SCHEDULES = ("one_shot", "iterative")


def check_ratio(ratio: object, *, what: str = "prune ratio") -> float:
    """Return ``ratio`` as a float in [0, 1) or raise a one-line error."""
    return validate.fraction(what, ratio, what="fraction of weights removed", include_low=True, must_be=True)


@dataclass(frozen=True)
class FinetuneSettings:
    """Recovery fine-tuning: SGD with momentum and a cosine learning rate; ``epochs`` may be fractional.

    The default is a short recovery sized for a CPU: half an epoch, at most ``max_images`` images
    (None: no cap), so every pruned model is compared after the usual recovery step.
    """

    epochs: float = 0.5
    max_images: int | None = 10000
    lr: float = 0.01
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True

    def __post_init__(self) -> None:
        validate.positive_number("finetune epochs", self.epochs, allow_zero=True, must_be=True)
        validate.positive_int("finetune max_images", self.max_images, optional=True, must_be=True)
        for name in ("lr", "momentum", "weight_decay"):
            validate.positive_number(f"finetune {name}", getattr(self, name), allow_zero=name != "lr", must_be=True)
        validate.positive_int("finetune batch_size", self.batch_size, must_be=True)


@dataclass(frozen=True)
class PruneSettings:
    """Which methods and ratios make the family, the schedule, and recovery after pruning.

    ``bn_recalibration`` is True, False or "structured" (only for methods that remove channels).
    ``data_samples_per_class`` sizes the batch of SNIP/GraSP (10 per class as in the SynFlow code).
    ``coreset_max_dim`` caps the dimension of the coreset geometry (see ``coreset.py``).
    ``fisher_prune_every``: fine-tuning steps between two channel removals of ``fisher`` (Crowley et
    al. use 100); ``fisher_flops_penalty``: β of Theis et al.'s cost term, per fraction of the dense
    MACs a removal saves (0: none, as in Crowley et al.). ``at_init``: prune the re-initialised
    architecture (pruning at initialisation, the SynFlow setting), then train it with the recovery budget.
    When recovery fine-tunes, the family gets the control ``dense+ft`` (the dense model with the
    same budget); ``scratch_baseline`` adds, per structured member, its architecture trained
    from scratch with that budget (``<method>+scratch@<ratio>``, Crowley et al. 2018).
    ``latency_budget_s`` bounds latency timing per model (None: always ``latency_repeats`` pairs);
    ``latency_share`` bounds it by the audit's size: at each batch size a model's timed passes (warm-up
    included) process at most that share of ``evaluated_images`` (None: no such bound), which the audit sets
    to the images each model is evaluated on, over its conditions (None: not known, e.g. ``prune`` alone).
    """

    methods: tuple[str, ...] = ("magnitude",)
    ratios: tuple[float, ...] = (0.5, 0.7, 0.9)
    schedule: str = "one_shot"
    iterations: int = 3
    keep_first: bool = True
    keep_last: bool = True
    synflow_rounds: int = 100
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    bn_recalibration: str | bool = "structured"
    bn_batches: int = 20
    seed: int = 0
    data_samples_per_class: int = 10
    coreset_max_dim: int = 64
    measure_latency: bool = True
    latency_repeats: int = 11
    latency_budget_s: float | None = 1.0
    latency_share: float | None = 0.1
    evaluated_images: int | None = None
    scratch_baseline: bool = False
    fisher_prune_every: int = 10
    fisher_flops_penalty: float = 0.0
    at_init: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.methods, str) or not self.methods:
            raise RobustEvalError(f"methods must be a non-empty sequence of names, got {self.methods!r}")
        object.__setattr__(self, "methods", tuple(self.methods))
        for name in self.methods:
            PRUNING_METHODS.get(name)
        if isinstance(self.ratios, (int, float)) or not self.ratios:
            raise RobustEvalError(f"ratios must be a non-empty sequence of numbers in [0, 1), got {self.ratios!r}")
        object.__setattr__(self, "ratios", tuple(check_ratio(r) for r in self.ratios))
        if self.schedule not in SCHEDULES:
            raise RobustEvalError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.bn_recalibration not in (True, False, "structured"):
            raise RobustEvalError(
                f"bn_recalibration must be true, false or 'structured', got {self.bn_recalibration!r}"
            )
        if not isinstance(self.finetune, FinetuneSettings):
            raise RobustEvalError(f"finetune must be FinetuneSettings, got {type(self.finetune).__name__}")
        for name in ("iterations", "synflow_rounds", "bn_batches", "data_samples_per_class",
                     "coreset_max_dim", "latency_repeats", "fisher_prune_every"):
            validate.positive_int(name, getattr(self, name), must_be=True)
        if self.latency_budget_s is not None:
            validate.positive_number("latency_budget_s", self.latency_budget_s, must_be=True)
        if self.latency_share is not None:
            validate.positive_number("latency_share", self.latency_share, must_be=True)
        validate.positive_int("evaluated_images", self.evaluated_images, optional=True, must_be=True)
        validate.positive_number("fisher_flops_penalty", self.fisher_flops_penalty, allow_zero=True, must_be=True)
        if not isinstance(self.at_init, bool):
            raise RobustEvalError(f"at_init must be true or false, got {self.at_init!r}")
        if self.at_init and self.scratch_baseline:
            raise RobustEvalError("scratch_baseline needs at_init: false (members pruned at initialisation are "
                                  "already trained from scratch)")

    def latency_options(self) -> dict:
        """The latency arguments of :func:`robusteval.pruning.stats.model_info` these settings give."""
        return {"measure_latency": self.measure_latency, "latency_repeats": self.latency_repeats,
                "latency_budget_s": self.latency_budget_s, "latency_share": self.latency_share,
                "evaluated": self.evaluated_images}

    def recalibrates_bn(self, structured: bool) -> bool:
        """Whether BatchNorm statistics are recomputed after pruning with a (non-)structured method."""
        return structured if self.bn_recalibration == "structured" else bool(self.bn_recalibration)
