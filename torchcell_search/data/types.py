"""The data layer's value types: the cell graph, the perturbation table, splits, masks.

These are the contracts between ``data/`` and the model, trainer and search packages.
Samples are indices into one :class:`CellGraph` plus per-sample masks, never a
``HeteroData`` per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch_geometric.data import HeteroData

__all__ = [
    "LABELS",
    "PHYSICAL",
    "REGULATORY",
    "GPR",
    "METABOLISM",
    "CellGraph",
    "Dataset",
    "PerturbationMasks",
    "PerturbationTable",
    "Split",
]

#: Label columns, in the order the model predicts them: ``pred[:, 0]`` is fitness.
LABELS: tuple[str, str] = ("fitness", "gene_interaction")

#: Edge types of the cell graph (DESIGN.md, "Cell graph").
PHYSICAL = ("gene", "physical_interaction", "gene")
REGULATORY = ("gene", "regulatory_interaction", "gene")
GPR = ("gene", "gpr", "reaction")
METABOLISM = ("metabolite", "reaction", "metabolite")


@dataclass
class CellGraph:
    """The wildtype yeast cell graph and what a deletion needs to know about it.

    ``data`` is a PyG ``HeteroData`` with

    - node types ``gene`` (``num_nodes``, ``node_ids``: systematic ORFs),
      ``reaction`` (``node_ids``: Yeast-GEM reaction ids) and ``metabolite`` (``node_ids``);
    - ``data[PHYSICAL].edge_index``: ``(2, E_phys)``, each undirected BioGRID edge stored in
      both directions (so ``E_phys`` = 2 x undirected edges); no self loops;
    - ``data[REGULATORY].edge_index``: ``(2, E_reg)``, TF -> target (directed);
    - ``data[GPR].hyperedge_index``: ``(2, K)``, row 0 gene index, row 1 reaction index, one
      column per gene named in the reaction's GPR rule;
    - ``data[METABOLISM].hyperedge_index``: ``(2, M)``, row 0 metabolite index, row 1
      reaction index (the hyperedge), with ``data[METABOLISM].stoichiometry``: ``(M,)``
      signed coefficients (negative: consumed).

    ``gpr_clause_reaction`` and ``gpr_clause_genes`` hold every GPR rule in disjunctive
    normal form: clause ``c`` belongs to reaction ``gpr_clause_reaction[c]`` and needs all
    genes ``g`` with a column ``(c, g)`` in ``gpr_clause_genes`` (shape ``(2, L)``). A
    reaction is lost when every one of its clauses contains a deleted gene; a reaction
    without a rule is never lost.
    """

    data: HeteroData
    gpr_clause_reaction: torch.Tensor  # (C,) long
    gpr_clause_genes: torch.Tensor  # (2, L) long: clause index, gene index
    essential: torch.Tensor  # (N_gene,) bool, from the Yeast Deletion Project list
    info: dict[str, Any] = field(default_factory=dict)  # provenance, unmapped names, counts

    @property
    def gene_ids(self) -> list[str]:
        return list(self.data["gene"].node_ids)

    @property
    def num_genes(self) -> int:
        return int(self.data["gene"].num_nodes)

    @property
    def num_reactions(self) -> int:
        return int(self.data["reaction"].num_nodes)

    @property
    def num_metabolites(self) -> int:
        return int(self.data["metabolite"].num_nodes)


@dataclass
class PerturbationTable:
    """One record per SGA measurement of a double deletion.

    ``genes[r] = (query, array)`` gene node indices: the order is the SGA role and is kept.
    Labels are on their original scale; a label the source lacks is NaN, never invented.
    """

    genes: torch.Tensor  # (R, 2) long: query, array
    fitness: torch.Tensor  # (R,) float32, NaN where missing
    gene_interaction: torch.Tensor  # (R,) float32 (epsilon)
    fitness_derived: torch.Tensor  # (R,) bool: fitness = eps + SMF_q * SMF_a, not measured
    gene_interaction_p_value: torch.Tensor  # (R,) float32, NaN where the source lacks it
    fitness_std: torch.Tensor  # (R,) float32, NaN where the source lacks it

    def __len__(self) -> int:
        return int(self.genes.shape[0])

    def labels(self) -> torch.Tensor:
        """``(R, 2)`` float32 in :data:`LABELS` order (fitness, gene_interaction)."""
        return torch.stack([self.fitness, self.gene_interaction], dim=1)

    def select(self, index: torch.Tensor) -> "PerturbationTable":
        """The records at ``index`` (a long tensor), in that order."""
        return PerturbationTable(
            genes=self.genes[index],
            fitness=self.fitness[index],
            gene_interaction=self.gene_interaction[index],
            fitness_derived=self.fitness_derived[index],
            gene_interaction_p_value=self.gene_interaction_p_value[index],
            fitness_std=self.fitness_std[index],
        )


@dataclass
class Dataset:
    """A cell graph with the perturbation records measured on it."""

    name: str  # "demo", or the data directory as given
    graph: CellGraph
    table: PerturbationTable
    info: dict[str, Any] = field(default_factory=dict)  # unmapped genes, dropped rows, sources


@dataclass
class Split:
    """Disjoint record indices into a :class:`PerturbationTable`."""

    kind: str  # "random" | "pair" | "gene"
    seed: int
    train: torch.Tensor  # (R_train,) long
    val: torch.Tensor
    test: torch.Tensor


@dataclass
class PerturbationMasks:
    """Which nodes and edges survive each sample's deletions (True = kept).

    Shapes, for a batch of ``B`` samples: ``gene`` ``(B, N_gene)``, ``reaction``
    ``(B, N_reaction)``, ``metabolite`` ``(B, N_metabolite)`` (metabolites are never
    deleted; kept for symmetry), and one ``(B, E_t)`` mask per edge type ``t`` in ``edges``
    keyed by the edge-type tuple (:data:`PHYSICAL`, :data:`REGULATORY`, :data:`GPR`,
    :data:`METABOLISM`; for the hyperedge types one entry per incidence column).
    """

    gene: torch.Tensor
    reaction: torch.Tensor
    metabolite: torch.Tensor
    edges: dict[tuple[str, str, str], torch.Tensor]

    def to(self, device: torch.device | str) -> "PerturbationMasks":
        return PerturbationMasks(
            gene=self.gene.to(device),
            reaction=self.reaction.to(device),
            metabolite=self.metabolite.to(device),
            edges={k: v.to(device) for k, v in self.edges.items()},
        )
