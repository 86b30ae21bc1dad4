"""The report's layout, for tests and benchmarks: a PyG ``Batch`` of perturbed subgraphs.

:func:`reference_forward` computes what :meth:`HeteroCell.forward
<torchcell_search.model.hetero_cell.HeteroCell.forward>` computes, the way the research
code does it: one ``HeteroData`` per sample (the cell graph's ``edge_subgraph`` by the
edge masks, then ``subgraph`` by the node masks), collated into a ``Batch`` whose nodes
are renumbered, run through the same weights with one slot per node and no masks, then
``to_dense_batch`` for pooling; the wildtype graph runs on its own. With dropout off the
two agree within float tolerance (tests assert 1e-4).

:func:`reference_masks` is the deletion rule of ``DESIGN.md`` written plainly, for tests
and benchmarks that run without ``data.masks.MaskBuilder``.

Not for training: building ``B`` subgraphs per step is the cost the batched path removes.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Batch, HeteroData
from torch_geometric.utils import to_dense_batch

from torchcell_search.data.types import GPR, METABOLISM, PHYSICAL, REGULATORY, CellGraph, PerturbationMasks
from torchcell_search.errors import ConfigError
from torchcell_search.model.hetero_cell import HeteroCell, _Edges, _Keeps

__all__ = ["build_reference_batch", "reference_forward", "reference_masks"]

# In the per-sample graphs the two hypergraph relations are stored as plain bipartite
# edge types, so PyG's collate offsets each row by the right node type.
_GPR = ("gene", "gpr", "reaction")
_STOICH = ("metabolite", "stoich", "reaction")


def reference_masks(graph: CellGraph, genes: Tensor) -> PerturbationMasks:
    """What survives deleting ``genes`` (``(B, k)`` long, ``-1`` pads) from ``graph``.

    A reaction is lost when every clause of its GPR rule names a deleted gene (a reaction
    without a rule is never lost); edges go with their nodes; metabolites stay.
    """
    B, N = genes.size(0), graph.num_genes
    data = graph.data
    gene = torch.ones(B, N, dtype=torch.bool)
    rows = torch.arange(B).unsqueeze(1).expand_as(genes)
    valid = genes >= 0
    gene[rows[valid], genes[valid]] = False
    deleted = (~gene).float()  # (B, N)
    clause, cgene = graph.gpr_clause_genes
    n_clauses = graph.gpr_clause_reaction.numel()
    bad = torch.zeros(B, n_clauses).index_add_(1, clause, deleted[:, cgene]) > 0  # (B, C)
    R = graph.num_reactions
    good = torch.zeros(B, R).index_add_(1, graph.gpr_clause_reaction, (~bad).float())  # (B, R)
    has_rule = torch.zeros(R).index_add_(0, graph.gpr_clause_reaction, torch.ones(n_clauses)) > 0
    rxn = ~(has_rule & (good == 0))
    met = torch.ones(B, graph.num_metabolites, dtype=torch.bool)
    phys, reg = data[PHYSICAL].edge_index, data[REGULATORY].edge_index
    gpr, mr = data[GPR].hyperedge_index, data[METABOLISM].hyperedge_index
    edges = {
        PHYSICAL: gene[:, phys[0]] & gene[:, phys[1]],
        REGULATORY: gene[:, reg[0]] & gene[:, reg[1]],
        GPR: gene[:, gpr[0]] & rxn[:, gpr[1]],
        METABOLISM: rxn[:, mr[1]] & met[:, mr[0]],
    }
    return PerturbationMasks(gene=gene, reaction=rxn, metabolite=met, edges=edges)


def _full_hetero(graph: CellGraph) -> HeteroData:
    data = graph.data
    full = HeteroData()
    for t, n in (("gene", graph.num_genes), ("reaction", graph.num_reactions), ("metabolite", graph.num_metabolites)):
        full[t].node_id = torch.arange(n)
        full[t].num_nodes = n
    full[PHYSICAL].edge_index = data[PHYSICAL].edge_index
    full[REGULATORY].edge_index = data[REGULATORY].edge_index
    full[_GPR].edge_index = data[GPR].hyperedge_index
    full[_STOICH].edge_index = data[METABOLISM].hyperedge_index
    full[_STOICH].stoichiometry = data[METABOLISM].stoichiometry.float()
    return full


def build_reference_batch(graph: CellGraph, masks: PerturbationMasks) -> Batch:
    """A PyG ``Batch`` of the ``B`` perturbed subgraphs ``masks`` describe."""
    full = _full_hetero(graph)
    masks = masks.to("cpu")
    samples = []
    for b in range(masks.gene.size(0)):
        edge_keep = {
            PHYSICAL: masks.edges[PHYSICAL][b],
            REGULATORY: masks.edges[REGULATORY][b],
            _GPR: masks.edges[GPR][b],
            _STOICH: masks.edges[METABOLISM][b],
        }
        sub = full.edge_subgraph(edge_keep).subgraph(
            {"gene": masks.gene[b], "reaction": masks.reaction[b], "metabolite": masks.metabolite[b]}
        )
        samples.append(sub)
    return Batch.from_data_list(samples)


def reference_forward(
    model: HeteroCell, graph: CellGraph, genes: Tensor, masks: PerturbationMasks, *, batch: Batch | None = None
) -> Tensor:
    """``(B, 2)`` predictions of ``model`` computed in the report's layout.

    Args:
        model: a ``hetero_cell`` model (``perturbation_set`` has no per-sample graph).
        graph: the cell graph ``model`` was built on.
        genes: ``(B, 2)`` long.
        masks: the samples' masks.
        batch: a prebuilt :func:`build_reference_batch` (default: built here).

    Raises:
        ConfigError: ``model`` is a ``perturbation_set`` model.
    """
    if model.cfg.kind != "hetero_cell":
        raise ConfigError(f"reference_forward: model.kind={model.cfg.kind!r} has no per-sample graph layout")
    device = model.gene_embedding.weight.device
    B = genes.size(0)
    batch = (batch if batch is not None else build_reference_batch(graph, masks)).to(device)
    none = _Keeps(None, None, None, None, None, None, None)

    # Wildtype graph on its own, as the research code does.
    x_gene, x_rxn, x_met = model._inputs(None)
    h_w = model._encode(x_gene, x_rxn, x_met, model._edges(), none, all_relations=True)  # (N, 1, H)
    z_w = model.global_aggregator(h_w.transpose(0, 1), None)  # (1, H)

    # The perturbed graphs as one disjoint union, one slot per node.
    edges = _Edges(
        batch[PHYSICAL].edge_index,
        batch[REGULATORY].edge_index,
        batch[_GPR].edge_index,
        batch[_STOICH].edge_index,
        batch[_STOICH].stoichiometry,
        int(batch["reaction"].num_nodes),
    )
    x_gene = model.preprocessor(model.gene_embedding.weight[batch["gene"].node_id]).unsqueeze(1)  # (n, 1, H)
    x_rxn = model.reaction_embedding.weight[batch["reaction"].node_id].unsqueeze(1)
    x_met = model.metabolite_embedding.weight[batch["metabolite"].node_id].unsqueeze(1)
    h = model._encode(x_gene, x_rxn, x_met, edges, none, all_relations=True)[:, 0]  # (n, H)
    dense, mask = to_dense_batch(h, batch["gene"].batch, batch_size=B)  # (B, N_max, H)
    z_pert = model.global_aggregator(dense, mask)  # (B, H)
    return model._readout(z_w, z_pert, h_w[:, 0], genes.to(device), None).pred
