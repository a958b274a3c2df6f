"""Evaluators: each declares its metrics and registers where it runs beside its definition.

Importing the package imports every evaluator, so the metric contract (:mod:`robusteval.metrics`)
knows every declared metric and :func:`robusteval.evaluators.base.evaluators_for` every evaluator.
"""
from robusteval.evaluators import accuracy, adversarial, agreement, calibration, ood  # noqa: F401
