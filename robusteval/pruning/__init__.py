"""Pruning core: importance scores, masks or real channel removal, recovery, cost statistics, families."""
from robusteval.pruning.family import (
    ExportedModel,
    FamilyMember,
    build_family,
    dense_member,
    load_member,
    prune_model,
    save_member,
)
from robusteval.pruning.masks import fold_masks, masks_from_scores, prunable_layers
from robusteval.pruning.methods import PRUNING_METHODS
from robusteval.pruning.settings import FinetuneSettings, PruneSettings
from robusteval.pruning.stats import model_info

__all__ = [
    "PRUNING_METHODS",
    "ExportedModel",
    "FamilyMember",
    "FinetuneSettings",
    "PruneSettings",
    "build_family",
    "dense_member",
    "fold_masks",
    "load_member",
    "masks_from_scores",
    "model_info",
    "prunable_layers",
    "prune_model",
    "save_member",
]
