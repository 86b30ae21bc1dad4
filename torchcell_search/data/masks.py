"""Per-sample keep-masks of a batch of gene deletions, from incidence precomputed once.

A sample is a set of deleted genes (a row of ``genes``, ``-1`` = padding). Its masks say
which nodes and edges of the one wildtype :class:`~torchcell_search.data.types.CellGraph`
survive (DESIGN.md, "Cell graph"):

- a deleted gene's node and every physical / regulatory edge touching it are removed;
- a reaction is lost when every clause of its GPR rule (in disjunctive normal form)
  contains a deleted gene: isoenzymes (``A or B``) keep it while one branch survives, a
  complex (``A and B``) loses it with any subunit; reactions without a rule are never lost;
- GPR incidence columns of deleted genes are dropped, and all GPR columns of lost reactions;
- a lost reaction drops its metabolite incidences (its METABOLISM columns). Metabolites
  themselves are never deleted.

:class:`MaskBuilder` does this with scatter/gather ops over the whole batch; the cost is
dominated by writing the ``(B, E)`` outputs. :func:`reference_masks` is the slow,
obviously correct per-sample version that the tests compare against.
"""

from __future__ import annotations

import torch

from torchcell_search.data.types import (
    GPR,
    METABOLISM,
    PHYSICAL,
    REGULATORY,
    CellGraph,
    PerturbationMasks,
)
from torchcell_search.errors import DataError

__all__ = ["MaskBuilder", "reference_masks"]


class _CSR:
    """Rows (genes) -> lists of column ids (edges, incidence columns or clauses)."""

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, num_rows: int) -> None:
        order = torch.argsort(rows, stable=True)
        self.col = cols[order].contiguous()  # (nnz,)
        counts = torch.bincount(rows, minlength=num_rows)
        self.ptr = torch.zeros(num_rows + 1, dtype=torch.long)
        self.ptr[1:] = torch.cumsum(counts, 0)  # (num_rows + 1,)

    def to(self, device: torch.device | str) -> "_CSR":
        self.col, self.ptr = self.col.to(device), self.ptr.to(device)
        return self

    def expand(self, sample: torch.Tensor, row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All ``(sample, col)`` pairs for the given ``(sample, row)`` pairs, flattened."""
        start, end = self.ptr[row], self.ptr[row + 1]
        counts = end - start  # (P,)
        total = int(counts.sum())
        if total == 0:
            empty = torch.empty(0, dtype=torch.long, device=row.device)
            return empty, empty
        rep_sample = torch.repeat_interleave(sample, counts)  # (T,)
        first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)  # (T,)
        pos = torch.arange(total, device=row.device) - first + torch.repeat_interleave(start, counts)
        return rep_sample, self.col[pos]


class MaskBuilder:
    """Precomputed incidence of a cell graph, turning gene deletions into keep-masks.

    Example:
        >>> from torchcell_search.data.demo import make_demo_dataset
        >>> graph = make_demo_dataset().graph
        >>> m = MaskBuilder(graph).masks(torch.tensor([[0, 1], [2, -1]]))
        >>> tuple(m.gene.shape), bool(m.gene[0, 0]), bool(m.gene[1, 1])
        ((2, 300), False, True)

    Args:
        graph: The wildtype cell graph (its tensors are read once; the graph is not kept).

    Shapes:
        - input ``genes``: ``(B, k)`` long, ``-1`` = padding (no deletion)
        - output masks: ``gene (B, N_gene)``, ``reaction (B, N_reaction)``,
          ``metabolite (B, N_metabolite)``, ``edges[t] (B, E_t)`` for each edge type ``t``
    """

    def __init__(self, graph: CellGraph) -> None:
        data = graph.data
        self.num_genes = graph.num_genes
        self.num_reactions = graph.num_reactions
        self.num_metabolites = graph.num_metabolites
        N = self.num_genes
        self._edge_csr: dict[tuple[str, str, str], _CSR] = {}
        self._num_edges: dict[tuple[str, str, str], int] = {}
        for et in (PHYSICAL, REGULATORY):
            ei = data[et].edge_index.long()  # (2, E)
            E = ei.shape[1]
            eid = torch.arange(E)
            # A gene's incident edges: those it starts or ends (a self loop is listed twice).
            self._edge_csr[et] = _CSR(torch.cat([ei[0], ei[1]]), torch.cat([eid, eid]), N)
            self._num_edges[et] = E
        gpr = data[GPR].hyperedge_index.long()  # (2, K)
        self._num_gpr = gpr.shape[1]
        self._gpr_csr = _CSR(gpr[0], torch.arange(self._num_gpr), N)
        self._gpr_reaction = gpr[1].contiguous()  # (K,)
        met = data[METABOLISM].hyperedge_index.long()  # (2, M)
        self._met_reaction = met[1].contiguous()  # (M,)
        self._clause_reaction = graph.gpr_clause_reaction.long().contiguous()  # (C,)
        cg = graph.gpr_clause_genes.long()  # (2, L)
        self._clause_csr = _CSR(cg[1], cg[0], N)  # gene -> clauses that need it
        self._num_clauses = int(self._clause_reaction.shape[0])
        # Clauses per reaction; reactions without a rule (0 clauses) are never lost.
        self._clauses_per_reaction = torch.bincount(self._clause_reaction, minlength=self.num_reactions)
        self.device = torch.device("cpu")

    def to(self, device: torch.device | str) -> "MaskBuilder":
        """Move the precomputed incidence to ``device`` (masks are built there); returns self."""
        self.device = torch.device(device)
        for csr in (*self._edge_csr.values(), self._gpr_csr, self._clause_csr):
            csr.to(self.device)
        self._gpr_reaction = self._gpr_reaction.to(self.device)
        self._met_reaction = self._met_reaction.to(self.device)
        self._clause_reaction = self._clause_reaction.to(self.device)
        self._clauses_per_reaction = self._clauses_per_reaction.to(self.device)
        return self

    def masks(self, genes: torch.Tensor) -> PerturbationMasks:
        """Keep-masks for a batch of deletion sets.

        Args:
            genes: ``(B, k)`` long gene indices deleted per sample; ``-1`` = padding.
                Repeated genes within a row are allowed.

        Returns:
            :class:`~torchcell_search.data.types.PerturbationMasks` on this builder's device.

        Raises:
            DataError: ``genes`` is not a 2-D integer tensor or holds an index outside
                ``[-1, N_gene)``.
        """
        genes = _check_genes(genes, self.num_genes).to(self.device)
        B = genes.shape[0]
        N, dev = self.num_genes, self.device
        valid = genes >= 0  # (B, k)
        sample = torch.arange(B, device=dev).unsqueeze(1).expand_as(genes)[valid]  # (P,)
        row = genes[valid]  # (P,)

        gene_keep = torch.ones(B, N, dtype=torch.bool, device=dev)
        gene_keep[sample, row] = False

        edges: dict[tuple[str, str, str], torch.Tensor] = {}
        for et, csr in self._edge_csr.items():
            keep = torch.ones(B, self._num_edges[et], dtype=torch.bool, device=dev)
            s, e = csr.expand(sample, row)
            keep[s, e] = False
            edges[et] = keep

        # A clause breaks when any of its genes is deleted; a reaction with rules is lost
        # when all its clauses are broken.
        broken = torch.zeros(B, self._num_clauses, dtype=torch.bool, device=dev)
        s, c = self._clause_csr.expand(sample, row)
        broken[s, c] = True
        n_broken = torch.zeros(B, self.num_reactions, dtype=torch.long, device=dev)
        n_broken.index_add_(1, self._clause_reaction, broken.long())  # (B, N_reaction)
        lost = (n_broken == self._clauses_per_reaction) & (self._clauses_per_reaction > 0)
        reaction_keep = ~lost

        gpr_keep = reaction_keep[:, self._gpr_reaction]  # (B, K)
        s, col = self._gpr_csr.expand(sample, row)
        gpr_keep[s, col] = False
        edges[GPR] = gpr_keep
        edges[METABOLISM] = reaction_keep[:, self._met_reaction]  # (B, M)

        return PerturbationMasks(
            gene=gene_keep,
            reaction=reaction_keep,
            metabolite=torch.ones(B, self.num_metabolites, dtype=torch.bool, device=dev),
            edges={k: edges[k] for k in (PHYSICAL, REGULATORY, GPR, METABOLISM)},
        )


def _check_genes(genes: torch.Tensor, num_genes: int) -> torch.Tensor:
    if not isinstance(genes, torch.Tensor) or genes.dim() != 2:
        shape = tuple(genes.shape) if isinstance(genes, torch.Tensor) else type(genes).__name__
        raise DataError(f"genes: expected a (B, k) tensor of gene indices, got {shape}")
    if genes.dtype.is_floating_point or genes.dtype == torch.bool or genes.is_complex():
        raise DataError(f"genes: expected an integer tensor, got dtype {genes.dtype}")
    if genes.numel():
        lo, hi = int(genes.min()), int(genes.max())
        if lo < -1 or hi >= num_genes:
            bad = lo if lo < -1 else hi
            raise DataError(f"genes: index {bad} outside [-1, {num_genes}) for a graph of {num_genes} genes")
    return genes.long()


def reference_masks(graph: CellGraph, genes: torch.Tensor) -> PerturbationMasks:
    """Slow, per-sample reference of :meth:`MaskBuilder.masks` (python sets, rule evaluation).

    Args:
        graph: The wildtype cell graph.
        genes: ``(B, k)`` long gene indices deleted per sample; ``-1`` = padding.

    Returns:
        The same :class:`~torchcell_search.data.types.PerturbationMasks` as
        ``MaskBuilder(graph).masks(genes)``, on the CPU.

    Raises:
        DataError: as :meth:`MaskBuilder.masks`.
    """
    genes = _check_genes(genes, graph.num_genes).cpu()
    data = graph.data
    clauses: dict[int, list[set[int]]] = {}
    clause_sets: dict[int, set[int]] = {}
    for c, g in graph.gpr_clause_genes.t().tolist():
        clause_sets.setdefault(c, set()).add(g)
    for c, r in enumerate(graph.gpr_clause_reaction.tolist()):
        clauses.setdefault(r, []).append(clause_sets.get(c, set()))

    edge_lists = {et: list(zip(*data[et].edge_index.tolist())) for et in (PHYSICAL, REGULATORY)}
    gpr_cols = list(zip(*data[GPR].hyperedge_index.tolist()))
    met_reactions = data[METABOLISM].hyperedge_index[1].tolist()
    out: dict[str, list[list[bool]]] = {"gene": [], "reaction": [], "metabolite": []}
    out_edges: dict[tuple[str, str, str], list[list[bool]]] = {k: [] for k in (PHYSICAL, REGULATORY, GPR, METABOLISM)}
    for row in genes.tolist():
        deleted = {g for g in row if g >= 0}
        out["gene"].append([g not in deleted for g in range(graph.num_genes)])
        # OR over clauses of AND over genes: the rule holds if some clause keeps all its genes.
        rxn_alive = [
            (r not in clauses) or any(not (clause & deleted) for clause in clauses[r])
            for r in range(graph.num_reactions)
        ]
        out["reaction"].append(rxn_alive)
        out["metabolite"].append([True] * graph.num_metabolites)
        for et, pairs in edge_lists.items():
            out_edges[et].append([s not in deleted and d not in deleted for s, d in pairs])
        out_edges[GPR].append([g not in deleted and rxn_alive[r] for g, r in gpr_cols])
        out_edges[METABOLISM].append([rxn_alive[r] for r in met_reactions])

    B = genes.shape[0]

    def _t(rows: list[list[bool]], width: int) -> torch.Tensor:
        return torch.tensor(rows, dtype=torch.bool).reshape(B, width)

    return PerturbationMasks(
        gene=_t(out["gene"], graph.num_genes),
        reaction=_t(out["reaction"], graph.num_reactions),
        metabolite=_t(out["metabolite"], graph.num_metabolites),
        edges={
            PHYSICAL: _t(out_edges[PHYSICAL], data[PHYSICAL].edge_index.shape[1]),
            REGULATORY: _t(out_edges[REGULATORY], data[REGULATORY].edge_index.shape[1]),
            GPR: _t(out_edges[GPR], data[GPR].hyperedge_index.shape[1]),
            METABOLISM: _t(out_edges[METABOLISM], data[METABOLISM].hyperedge_index.shape[1]),
        },
    )
