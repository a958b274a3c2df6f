"""The registry of pruning methods, one entry per name users type."""
from __future__ import annotations

from robusteval.pruning.coreset import coreset_importance
from robusteval.pruning.importance import MaskPruning, PruningMethod
from robusteval.pruning.structured import ChannelPruning, l1_filter_importance
from robusteval.pruning.synflow import SynFlowPruning
from robusteval.pruning.unstructured import grasp_scores, magnitude_scores, random_scores, snip_scores
from robusteval.registry import Registry

_METHODS: dict[str, PruningMethod] = {
    "random": MaskPruning(random_scores, scope="layer", reference="random pruning, the same ratio in every layer"),
    "magnitude": MaskPruning(magnitude_scores, scope="global",
                             reference='global |w| thresholding ("WT" in Liebenwein et al. 2021, Lost in Pruning)'),
    "layer_magnitude": MaskPruning(magnitude_scores, scope="layer",
                                   reference="|w| per layer (Han et al. 2015)"),
    "snip": MaskPruning(snip_scores, scope="global", needs_data=True,
                        reference="Lee et al. 2019, SNIP: single-shot network pruning based on connection sensitivity"),
    "grasp": MaskPruning(grasp_scores, scope="global", needs_data=True,
                         reference="Wang et al. 2020, Picking winning tickets before training by preserving gradient flow"),
    "synflow": SynFlowPruning(),
    "l1_filter": ChannelPruning(l1_filter_importance,
                                reference="Li et al. 2017, Pruning filters for efficient ConvNets"),
    "coreset_filter": ChannelPruning(coreset_importance,
                                     reference="Tukan et al. 2022, Pruning neural networks via coresets and convex geometry"),
}
PRUNING_METHODS: Registry[PruningMethod] = Registry("pruning method")
for _name, _method in _METHODS.items():
    PRUNING_METHODS.add(_name, _method)
