"""Per-sample deletion masks: the vectorised builder against the per-sample reference."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import HeteroData

from torchcell_search.data.demo import make_demo_dataset
from torchcell_search.data.masks import MaskBuilder, reference_masks
from torchcell_search.data.types import GPR, METABOLISM, PHYSICAL, REGULATORY, CellGraph, PerturbationMasks
from torchcell_search.errors import DataError


def _tiny_graph() -> CellGraph:
    """5 genes, 3 reactions, 3 metabolites.

    r0: g0 or g1 (isoenzymes); r1: g2 and g3 (complex); r2: no rule.
    Physical: g0-g1, g1-g2 (both directions); regulatory: g4 -> g0, g4 -> g3.
    """
    d = HeteroData()
    d["gene"].num_nodes = 5
    d["gene"].node_ids = [f"G{i}" for i in range(5)]
    d["reaction"].num_nodes = 3
    d["reaction"].node_ids = ["r0", "r1", "r2"]
    d["metabolite"].num_nodes = 3
    d["metabolite"].node_ids = ["m0", "m1", "m2"]
    d[PHYSICAL].edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    d[REGULATORY].edge_index = torch.tensor([[4, 4], [0, 3]])
    d[GPR].hyperedge_index = torch.tensor([[0, 1, 2, 3], [0, 0, 1, 1]])
    d[METABOLISM].hyperedge_index = torch.tensor([[0, 1, 1, 2, 0, 2], [0, 0, 1, 1, 2, 2]])
    d[METABOLISM].stoichiometry = torch.tensor([-1.0, 1.0, -1.0, 1.0, -1.0, 1.0])
    return CellGraph(
        data=d,
        gpr_clause_reaction=torch.tensor([0, 0, 1]),  # clauses: {g0}, {g1}, {g2, g3}
        gpr_clause_genes=torch.tensor([[0, 1, 2, 2], [0, 1, 2, 3]]),
        essential=torch.zeros(5, dtype=torch.bool),
    )


def _assert_equal(a: PerturbationMasks, b: PerturbationMasks) -> None:
    assert torch.equal(a.gene, b.gene)
    assert torch.equal(a.reaction, b.reaction)
    assert torch.equal(a.metabolite, b.metabolite)
    assert set(a.edges) == set(b.edges) == {PHYSICAL, REGULATORY, GPR, METABOLISM}
    for k in a.edges:
        assert torch.equal(a.edges[k], b.edges[k]), k


def test_masks_isoenzyme_reaction_survives_one_deletion_and_is_lost_with_both() -> None:
    g = _tiny_graph()
    m = MaskBuilder(g).masks(torch.tensor([[0, -1], [0, 1]]))
    # deleting one isoenzyme keeps r0; deleting both loses it
    assert m.reaction[:, 0].tolist() == [True, False]
    # g0's own GPR column goes, g1's column stays while r0 lives
    assert m.edges[GPR][0].tolist() == [False, True, True, True]
    assert m.edges[GPR][1].tolist() == [False, False, True, True]
    # a lost reaction drops its metabolite incidences, nothing else
    assert m.edges[METABOLISM][1].tolist() == [False, False, True, True, True, True]
    assert bool(m.metabolite.all())


def test_masks_complex_reaction_is_lost_with_any_subunit() -> None:
    g = _tiny_graph()
    m = MaskBuilder(g).masks(torch.tensor([[3]]))
    assert m.reaction[0].tolist() == [True, False, True]
    # both subunit columns of the lost complex go, the deleted gene's node too
    assert m.edges[GPR][0].tolist() == [True, True, False, False]
    assert m.gene[0].tolist() == [True, True, True, False, True]
    assert m.edges[METABOLISM][0].tolist() == [True, True, False, False, True, True]


def test_masks_reaction_without_rule_is_never_lost() -> None:
    g = _tiny_graph()
    m = MaskBuilder(g).masks(torch.tensor([[0, 1, 2, 3, 4]]))
    assert m.reaction[0].tolist() == [False, False, True]


def test_masks_remove_incident_gene_gene_edges() -> None:
    g = _tiny_graph()
    m = MaskBuilder(g).masks(torch.tensor([[1, -1], [4, -1], [-1, -1]]))
    # g1 touches every physical edge; g4 is the TF of both regulatory edges
    assert m.edges[PHYSICAL].tolist() == [[False] * 4, [True] * 4, [True] * 4]
    assert m.edges[REGULATORY].tolist() == [[True, True], [False, False], [True, True]]
    # an all-padding row deletes nothing
    assert bool(m.gene[2].all()) and bool(m.reaction[2].all())


def test_masks_match_reference_on_tiny_graph_for_every_pair() -> None:
    g = _tiny_graph()
    pairs = torch.tensor([[a, b] for a in range(-1, 5) for b in range(-1, 5)])
    _assert_equal(MaskBuilder(g).masks(pairs), reference_masks(g, pairs))


@pytest.mark.parametrize("k", [1, 2, 4])
def test_masks_match_reference_on_random_demo_batches(k: int) -> None:
    g = make_demo_dataset(seed=0).graph
    builder = MaskBuilder(g)
    gen = torch.Generator().manual_seed(k)
    # deletions biased to GPR genes so reactions do get lost; ~20% padding
    gpr_genes = g.data[GPR].hyperedge_index[0].unique()
    for _ in range(3):
        genes = gpr_genes[torch.randint(0, len(gpr_genes), (16, k), generator=gen)]
        random = torch.randint(0, g.num_genes, (16, k), generator=gen)
        genes = torch.where(torch.rand(16, k, generator=gen) < 0.3, random, genes)
        genes = torch.where(torch.rand(16, k, generator=gen) < 0.2, torch.full_like(genes, -1), genes)
        fast, ref = builder.masks(genes), reference_masks(g, genes)
        _assert_equal(fast, ref)
    assert not bool(fast.reaction.all())  # the batches exercised reaction loss


def test_masks_shapes_and_dtypes() -> None:
    g = make_demo_dataset(seed=0).graph
    m = MaskBuilder(g).masks(torch.tensor([[0, 1], [2, 3], [4, -1]]))
    assert m.gene.shape == (3, g.num_genes) and m.gene.dtype == torch.bool
    assert m.reaction.shape == (3, g.num_reactions)
    assert m.metabolite.shape == (3, g.num_metabolites)
    assert m.edges[PHYSICAL].shape == (3, g.data[PHYSICAL].edge_index.shape[1])
    assert m.edges[GPR].shape == (3, g.data[GPR].hyperedge_index.shape[1])
    assert m.edges[METABOLISM].shape == (3, g.data[METABOLISM].hyperedge_index.shape[1])
    assert m.to("cpu").gene.shape == m.gene.shape


def test_masks_empty_batch() -> None:
    g = _tiny_graph()
    m = MaskBuilder(g).masks(torch.empty(0, 2, dtype=torch.long))
    assert m.gene.shape == (0, 5) and m.edges[PHYSICAL].shape == (0, 4)


@pytest.mark.parametrize(
    "genes, match",
    [
        (torch.tensor([0, 1]), r"\(B, k\)"),
        (torch.tensor([[0.0, 1.0]]), "integer"),
        (torch.tensor([[0, 5]]), "index 5"),
        (torch.tensor([[-2, 0]]), "index -2"),
    ],
)
def test_masks_reject_bad_gene_indices(genes: torch.Tensor, match: str) -> None:
    with pytest.raises(DataError, match=match):
        MaskBuilder(_tiny_graph()).masks(genes)
