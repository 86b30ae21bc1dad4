"""HeteroCell, its layers and pooling options, losses and baselines.

``build_model(graph, cfg)`` is the entry point; :class:`HeteroCell` runs a batch of
deletions in one batched pass (see :mod:`torchcell_search.model.hetero_cell`).
"""

from torchcell_search.model.baselines import evaluate_baselines
from torchcell_search.model.hetero_cell import HeteroCell, ModelOutput, build_model
from torchcell_search.model.losses import CompositeLoss

__all__ = ["CompositeLoss", "HeteroCell", "ModelOutput", "build_model", "evaluate_baselines"]
