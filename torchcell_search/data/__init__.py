"""Readers of the real formats, the cell graph, perturbation table, splits, masks and demo data."""

from torchcell_search.data.types import (
    GPR,
    LABELS,
    METABOLISM,
    PHYSICAL,
    REGULATORY,
    CellGraph,
    Dataset,
    PerturbationMasks,
    PerturbationTable,
    Split,
)

__all__ = [
    "GPR",
    "LABELS",
    "METABOLISM",
    "PHYSICAL",
    "REGULATORY",
    "CellGraph",
    "Dataset",
    "PerturbationMasks",
    "PerturbationTable",
    "Split",
]
