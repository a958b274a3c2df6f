"""The metric contract: one key grammar, and per metric its direction, unit and label.

Every stage speaks it. A **key** names one number of one model, ``<family>/<condition path>/<name>``:
``clean/accuracy``, ``corruption/fog/3/accuracy``, ``noise/0.1/accuracy``,
``adversarial/linf_pgd/0.00784/accuracy``, ``adversarial/transfer/linf_pgd/0.00784/accuracy``,
``calibration/ece``, ``agreement/noise/0.1/top1``, ``ood/blobs/auroc_msp``, ``shift/cifar10.1/accuracy``.
:class:`MetricKey` formats and parses it; the helpers below (:func:`corruption_point`,
:func:`noise_point`, :func:`attack_point`, ...) are the only code that reads keys apart.

A metric's direction, unit and label are data (:mod:`robusteval.declarations`), stored in each run's
``summary.json``; analysis, report and gate read them from the run.
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["BENCHMARK_CORRUPTIONS", "CURVE_PANELS", "FAMILIES", "AttackPoint", "MetricKey", "attack_point",
           "class_key", "class_point", "corruption_condition", "corruption_key", "corruption_of", "corruption_point",
           "family_of", "key_matches", "metric_key", "noise_condition", "noise_key", "noise_point", "ood_point",
           "reference_value", "shift_point"]

FAMILIES: dict[str, str] = {
    "clean": "clean accuracy",
    "corruption": "corruption accuracy",
    "noise": "noise accuracy",
    "adversarial": "adversarial accuracy",
    "calibration": "calibration (ECE)",
    "ood": "OOD detection (AUROC)",
    "agreement": "agreement with dense",
}
"""Metric family → human label of its headline; the order is the verdict table's column order."""

CURVE_PANELS: dict[str, tuple[str, ...]] = {
    "clean": ("clean/accuracy", "clean/top5", "clean/loss"),
    "corruption": ("corruption/mean_accuracy", "corruption/mce", "corruption/relative_mce"),
    "noise": ("noise/auc/accuracy", "noise/mean_accuracy"),
    "adversarial": ("$adversarial", "adversarial/min_norm/*/median"),
    "calibration": ("calibration/ece", "calibration/nll", "calibration/brier"),
    "ood": ("ood/mean_auroc_msp", "ood/*/fpr95_msp"),
    "agreement": ("agreement/top1", "agreement/kl", "agreement/dense_correct_pruned_wrong"),
    "distribution shift": ("shift/*/accuracy",),
}
"""Curves the report draws per family: key patterns (:func:`key_matches`; ``$adversarial`` is the
family's headline), the first three present."""

BENCHMARK_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
"""The 15 corruptions of CIFAR-10-C / ImageNet-C, in the paper's order; ``corruption/mce`` averages these only."""

_NUMBER = re.compile(r"^[0-9][0-9.eE+-]*$")  # a severity or ε component (``auc`` in ``noise/auc/...`` is not one)


def reference_value(key: str, reference: Mapping[str, float]) -> float | None:
    """The reference model's value of ``key`` (None when it has none): agreement metrics are the
    identity, since the reference agrees with itself (top-1 agreement 1, distances and flips 0)."""
    if key in reference:
        return reference[key]
    if key.startswith("agreement/"):
        return 1.0 if key.endswith("top1") else 0.0
    return None


@dataclass(frozen=True)
class MetricKey:
    """``family/condition.../name``; ``condition`` is the path between (empty for ``clean/accuracy``)."""

    family: str
    condition: tuple[str, ...]
    name: str

    def __str__(self) -> str:
        return "/".join((self.family, *self.condition, self.name))

    @classmethod
    def parse(cls, key: str) -> MetricKey:
        parts = key.split("/")
        if len(parts) < 2 or not all(parts):
            raise ValueError(f"expected a metric key 'family/.../name', got {key!r}")
        return cls(parts[0], tuple(parts[1:-1]), parts[-1])


def family_of(key: str) -> str:
    """The family of a key, its first component (``corruption`` of ``corruption/fog/3/accuracy``)."""
    return key.split("/", 1)[0]


def metric_key(evaluator: str, condition: str, family: str, name: str) -> str:
    """The key of ``name`` computed by ``evaluator`` on ``condition`` (of ``family``): a condition's own
    metrics live under its key, the others under the evaluator's name.

    ``accuracy`` on ``corruption/fog/3`` → ``corruption/fog/3/accuracy``; ``calibration`` on ``clean`` →
    ``calibration/ece``; ``agreement`` on ``noise/0.1`` → ``agreement/noise/0.1/top1``.
    """
    if evaluator in ("accuracy", family):
        return f"{condition}/{name}"
    if condition == "clean":
        return f"{evaluator}/{name}"
    return f"{evaluator}/{condition}/{name}"


def corruption_condition(name: str, severity: int) -> str:
    """The condition key of corruption ``name`` at ``severity`` (``corruption/fog/3``)."""
    return f"corruption/{name}/{severity}"


def noise_condition(eps: float) -> str:
    """The condition key of uniform noise of radius ``eps`` (``noise/0.15``)."""
    return f"noise/{eps:g}"


def corruption_key(name: str, severity: int, metric: str = "accuracy") -> str:
    """The key of ``metric`` on corruption ``name`` at ``severity``."""
    return f"{corruption_condition(name, severity)}/{metric}"


def noise_key(eps: float, metric: str = "accuracy") -> str:
    """The key of ``metric`` under uniform noise of radius ``eps`` (e.g. ``noise/0.15/accuracy``)."""
    return f"{noise_condition(eps)}/{metric}"


def _split(key: str, family: str, depth: int) -> list[str] | None:
    parts = key.split("/")
    return parts[1:] if len(parts) == depth + 1 and parts[0] == family and all(parts) else None


def corruption_point(key: str, metric: str = "accuracy") -> tuple[str, int] | None:
    """(corruption, severity) of ``corruption/<name>/<severity>/<metric>``, else None."""
    parts = _split(key, "corruption", 3)
    if parts is None or parts[2] != metric or not _NUMBER.match(parts[1]):
        return None
    severity = float(parts[1])
    return (parts[0], int(severity)) if severity.is_integer() else None


def noise_point(key: str) -> tuple[float, str] | None:
    """(ε, metric) of ``noise/<ε>/<metric>`` (the metric may have several parts), else None
    (``noise/auc/accuracy`` is no point)."""
    family, _, rest = key.partition("/")
    eps, _, metric = rest.partition("/")
    return (float(eps), metric) if family == "noise" and metric and _NUMBER.match(eps) else None


@dataclass(frozen=True)
class AttackPoint:
    attack: str
    eps: float
    transfer: bool


def attack_point(key: str) -> AttackPoint | None:
    """The attack and ε of ``adversarial/[transfer/]<attack>/<ε>/accuracy``, else None."""
    parts = key.split("/")
    transfer = len(parts) == 5 and parts[1] == "transfer"
    if transfer:
        parts = [parts[0], *parts[2:]]
    if len(parts) != 4 or parts[0] != "adversarial" or parts[3] != "accuracy" or not _NUMBER.match(parts[2]):
        return None
    return AttackPoint(parts[1], float(parts[2]), transfer)


def ood_point(key: str) -> tuple[str, str] | None:
    """(OOD set, metric) of ``ood/<set>/<metric>``, else None."""
    parts = _split(key, "ood", 2)
    return (parts[0], parts[1]) if parts is not None else None


def shift_point(key: str) -> tuple[str, str] | None:
    """(shift set, metric) of ``shift/<set>/<metric>``, else None."""
    parts = _split(key, "shift", 2)
    return (parts[0], parts[1]) if parts is not None else None


def key_matches(key: str, pattern: str) -> bool:
    """Whether ``key`` is ``pattern``, lies under it (``calibration/`` or ``calibration`` covers
    ``calibration/ece``) or matches it as a glob (``ood/*/fpr95_*``)."""
    return key == pattern or key.startswith(pattern.rstrip("/") + "/") or fnmatch.fnmatchcase(key, pattern)


_CLASS = "class"


def _component(name: str) -> str:
    """A class name as one key component: ``%`` and ``/`` percent-encoded, an empty name as ``%00``."""
    return name.replace("%", "%25").replace("/", "%2F") or "%00"


def class_key(condition: str, class_name: str, metric: str = "accuracy") -> str:
    """The key of ``metric`` restricted to one class on ``condition`` (``clean/class/cat/accuracy``;
    ``corruption/fog/class/cat/accuracy`` for a corruption's mean over severities)."""
    return f"{condition}/{_CLASS}/{_component(class_name)}/{metric}"


def class_point(key: str, metric: str = "accuracy") -> tuple[str, str] | None:
    """(condition, class name) of a :func:`class_key`, else None."""
    parts = key.split("/")
    if len(parts) < 4 or parts[-3] != _CLASS or parts[-1] != metric or not all(parts):
        return None
    name = parts[-2]
    name = "" if name == "%00" else name.replace("%2F", "/").replace("%25", "%")
    return "/".join(parts[:-3]), name


def corruption_of(condition: str) -> tuple[str, int] | None:
    """(corruption, severity) of a condition key ``corruption/<name>/<severity>``, else None."""
    return corruption_point(f"{condition}/accuracy")
