"""Pruning core: importance scores, masks or real channel removal, recovery, cost statistics, families."""
from robusteval.pruning.family import build_family, dense_member, prune_model
from robusteval.pruning.member import ExportedModel, FamilyMember, load_member, save_member
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
