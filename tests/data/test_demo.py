"""The synthetic demo data set: determinism, schema, and the planted label model."""

from __future__ import annotations

import pytest
import torch

from torchcell_search.data.demo import make_demo_dataset
from torchcell_search.data.types import GPR, METABOLISM, PHYSICAL, REGULATORY, Dataset
from torchcell_search.errors import ConfigError


@pytest.fixture(scope="module")
def demo() -> Dataset:
    return make_demo_dataset(seed=0)


def _tensors(ds: Dataset) -> dict[str, torch.Tensor]:
    g, t = ds.graph, ds.table
    out = {f"table.{k}": v for k, v in vars(t).items()}
    out["clause_reaction"] = g.gpr_clause_reaction
    out["clause_genes"] = g.gpr_clause_genes
    out["essential"] = g.essential
    for et in (PHYSICAL, REGULATORY):
        out[str(et)] = g.data[et].edge_index
    out[str(GPR)] = g.data[GPR].hyperedge_index
    out[str(METABOLISM)] = g.data[METABOLISM].hyperedge_index
    out["stoichiometry"] = g.data[METABOLISM].stoichiometry
    return out


def test_demo_same_seed_gives_identical_tensors(demo: Dataset) -> None:
    again = make_demo_dataset(seed=0)
    a, b = _tensors(demo), _tensors(again)
    for key in a:
        # every tensor must match bit for bit, NaN positions included
        assert torch.equal(a[key].isnan() if a[key].is_floating_point() else a[key],
                           b[key].isnan() if b[key].is_floating_point() else b[key]), key
        if a[key].is_floating_point():
            assert torch.allclose(a[key], b[key], equal_nan=True, rtol=0, atol=0), key


def test_demo_different_seed_gives_different_data(demo: Dataset) -> None:
    other = make_demo_dataset(seed=1)
    # a different seed changes both the records and the graph
    assert not torch.equal(demo.table.genes, other.table.genes)
    a, b = demo.graph.data[PHYSICAL].edge_index, other.graph.data[PHYSICAL].edge_index
    assert a.shape != b.shape or not torch.equal(a, b)


def test_demo_is_labelled_synthetic(demo: Dataset) -> None:
    assert demo.name == "demo"
    assert demo.info["synthetic"] is True
    assert "synthetic" in demo.info["description"]
    assert demo.graph.gene_ids[:2] == ["DEMO0001", "DEMO0002"]
    assert len(demo.table) == 3000 and demo.graph.num_genes == 120


def test_demo_graph_schema_and_index_ranges(demo: Dataset) -> None:
    g = demo.graph
    d = g.data
    N, R, M = g.num_genes, g.num_reactions, g.num_metabolites
    phys = d[PHYSICAL].edge_index
    # physical edges: valid, no self loops, every edge stored in both directions
    assert phys.dtype == torch.long and phys.min() >= 0 and phys.max() < N
    assert not bool((phys[0] == phys[1]).any())
    fwd = set(map(tuple, phys.t().tolist()))
    assert fwd == {(b, a) for a, b in fwd} and len(fwd) == phys.shape[1]
    reg = d[REGULATORY].edge_index
    assert reg.shape[0] == 2 and reg.shape[1] > 0 and reg.min() >= 0 and reg.max() < N
    gpr = d[GPR].hyperedge_index
    assert gpr[0].max() < N and gpr[1].max() < R and gpr.min() >= 0
    met = d[METABOLISM].hyperedge_index
    assert met[0].max() < M and met[1].max() < R and met.min() >= 0
    st = d[METABOLISM].stoichiometry
    assert st.shape == (met.shape[1],) and bool((st != 0).all())
    # every reaction consumes and produces something (signed stoichiometry)
    for r in range(R):
        coeffs = st[met[1] == r]
        assert bool((coeffs < 0).any()) and bool((coeffs > 0).any())
    assert g.essential.dtype == torch.bool and g.essential.shape == (N,) and 0 < int(g.essential.sum()) < N


def test_demo_gpr_rules_have_isoenzymes_complexes_and_match_incidence(demo: Dataset) -> None:
    g = demo.graph
    clauses: dict[int, list[set[int]]] = {}
    members: dict[int, set[int]] = {}
    for c, gene in g.gpr_clause_genes.t().tolist():
        members.setdefault(c, set()).add(gene)
    for c, r in enumerate(g.gpr_clause_reaction.tolist()):
        clauses.setdefault(r, []).append(members[c])
    # isoenzymes: a reaction with several clauses; complexes: a clause with several genes
    assert any(len(cs) > 1 for cs in clauses.values())
    assert any(len(c) > 1 for cs in clauses.values() for c in cs)
    # some reactions have no rule at all
    assert len(clauses) < g.num_reactions
    # the GPR incidence lists exactly the genes named in each reaction's rule
    inc = {(gene, r) for gene, r in g.data[GPR].hyperedge_index.t().tolist()}
    named = {(gene, r) for r, cs in clauses.items() for c in cs for gene in c}
    assert inc == named


def test_demo_labels_follow_multiplicative_model(demo: Dataset) -> None:
    t = demo.table
    smf = demo.info["single_mutant_fitness"]
    q, a = t.genes[:, 0], t.genes[:, 1]
    present = ~t.fitness.isnan()
    # epsilon = f_ab - f_a * f_b wherever fitness is present
    eps = t.fitness[present] - smf[q[present]] * smf[a[present]]
    assert torch.allclose(eps, t.gene_interaction[present], atol=1e-5)
    # missing fitness exactly where a single-mutant fitness is unknown; epsilon always present
    assert torch.equal(~present, smf[q].isnan() | smf[a].isnan())
    assert 0 < int((~present).sum()) < len(t)
    assert not bool(t.gene_interaction.isnan().any())
    assert not bool(t.fitness_derived.any())


def test_demo_records_are_ordered_nonessential_pairs_some_in_both_orientations(demo: Dataset) -> None:
    t = demo.table
    g = t.genes
    assert g.dtype == torch.long and g.shape == (3000, 2)
    assert not bool((g[:, 0] == g[:, 1]).any())
    assert not bool(demo.graph.essential[g].any())
    ordered = set(map(tuple, g.tolist()))
    both = sum((b, a) in ordered for a, b in ordered)
    # a sizable minority of pairs is measured in both orientations
    assert 0.1 * len(ordered) < both < len(ordered)


def test_demo_interactions_depend_on_the_graph(demo: Dataset) -> None:
    t = demo.table
    phys = {tuple(e) for e in demo.graph.data[PHYSICAL].edge_index.t().tolist()}
    is_nbr = torch.tensor([tuple(p) in phys for p in t.genes.tolist()])
    # physical neighbours interact more negatively than random pairs
    assert t.gene_interaction[is_nbr].mean() < t.gene_interaction[~is_nbr].mean() - 0.02


def test_demo_rejects_too_small_sizes() -> None:
    with pytest.raises(ConfigError, match="num_genes"):
        make_demo_dataset(num_genes=5)
    with pytest.raises(ConfigError, match="num_records"):
        make_demo_dataset(num_records=0)


def test_demo_small_sizes_still_build() -> None:
    ds = make_demo_dataset(seed=2, num_genes=60, num_records=200)
    assert len(ds.table) == 200 and ds.graph.num_genes == 60
