"""The small importance interface every pruning method is written against.

A method scores either single weights (:data:`WeightImportance`, turned into masks by
:func:`robusteval.pruning.masks.masks_from_scores`) or whole output channels
(:data:`ChannelImportance`, turned into real channel removal by ``structured.py``). Higher
scores mean "keep".
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from robusteval.pruning.masks import Masks, apply_masks, masks_from_scores

if TYPE_CHECKING:
    from robusteval.data.arrays import LabeledArrays
    from robusteval.pruning.settings import PruneSettings
    from robusteval.pruning.structured import ChannelGroup


@dataclass
class PruneContext:
    """What a method may use besides the model: inputs, data, settings and state between cycles."""

    example_input: torch.Tensor
    settings: PruneSettings
    layers: dict[str, nn.Module]
    batch: tuple[torch.Tensor, torch.Tensor] | None = None
    generator: torch.Generator = field(default_factory=torch.Generator)
    masks: Masks | None = None
    base_channels: dict[str, int] = field(default_factory=dict)
    train_data: LabeledArrays | None = None
    train_steps: int = 0
    """Optimizer steps a method itself trained while pruning (Fisher pruning's interleaved fine-tuning)."""


WeightImportance = Callable[[nn.Module, PruneContext], dict[str, torch.Tensor]]
"""Scores shaped like each prunable weight in ``ctx.layers``."""

ChannelImportance = Callable[["ChannelGroup", PruneContext], torch.Tensor]
"""One score per output channel of a group's producer layer."""


class PruningMethod(ABC):
    """A named way to prune a model in place to a target ratio (absolute, not incremental)."""

    structured: bool = False
    needs_data: bool = False
    reference: str = ""

    @abstractmethod
    def prune(self, model: nn.Module, ratio: float, ctx: PruneContext) -> None:
        """Prune ``model`` in place so that ``ratio`` of its prunable weights/channels are gone."""


class MaskPruning(PruningMethod):
    """Unstructured pruning: score every weight, keep the top ones (global or per layer)."""

    def __init__(self, scores: WeightImportance, *, scope: str, needs_data: bool = False, reference: str) -> None:
        self.scores = scores
        self.scope = scope
        self.needs_data = needs_data
        self.reference = reference

    def prune(self, model: nn.Module, ratio: float, ctx: PruneContext) -> None:
        scores = self.scores(model, ctx)
        ctx.masks = masks_from_scores(scores, ratio, scope=self.scope, previous=ctx.masks)
        apply_masks(ctx.layers, ctx.masks)
