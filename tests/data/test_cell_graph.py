"""The cell graph built from the tiny data directories and from the real mirror."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datafiles import make_official_data_dir

from torchcell_search.data.cell_graph import build_cell_graph
from torchcell_search.data.types import GPR, METABOLISM, PHYSICAL, REGULATORY

TINY_IDS = ["YAL001C", "YAL002W", "YAL003W", "YAL005C", "YAL007C", "YBL005W-A"]


@pytest.fixture
def tiny_graph(tiny_data_dir: Path):
    return build_cell_graph(tiny_data_dir)


def test_gene_nodes_are_sgd_then_added_orfs(tiny_graph) -> None:
    # SGD order first; YBL005W-A (named only by an edge) is added and counted.
    assert tiny_graph.gene_ids == TINY_IDS
    assert tiny_graph.info["genes_added"] == 1
    assert tiny_graph.info["genes_added_by_source"]["physical"] == 1


def test_physical_edges_both_directions_no_self_loops_no_duplicates(tiny_graph) -> None:
    ei = tiny_graph.data[PHYSICAL].edge_index
    # Undirected (0,1), (0,5), (1,2): stored forward then reversed.
    assert ei.tolist() == [[0, 0, 1, 1, 5, 2], [1, 5, 2, 0, 0, 1]]
    assert tiny_graph.info["physical_self_loops_dropped"] == 1
    assert tiny_graph.info["physical_duplicates_dropped"] == 1
    assert tiny_graph.info["physical_edges_undirected"] == 3


def test_regulatory_edges_resolve_standard_names_and_report_unmapped(tiny_graph) -> None:
    # TFC3 (standard name) -> YAL001C; the HRA1 target maps to no ORF and costs one edge.
    assert tiny_graph.data[REGULATORY].edge_index.tolist() == [[0, 0, 3], [1, 2, 2]]
    assert tiny_graph.info["names_unmapped"]["regulatory"] == 1
    assert tiny_graph.info["names_unmapped_examples"]["regulatory"] == ["HRA1"]
    assert tiny_graph.info["regulatory_edges_dropped_unmapped"] == 1


def test_gpr_incidence_and_dnf_clauses(tiny_graph) -> None:
    assert tiny_graph.num_reactions == 4 and tiny_graph.num_metabolites == 3
    # Every gene named in a rule, per reaction (r3 has no rule).
    assert tiny_graph.data[GPR].hyperedge_index.tolist() == [[0, 1, 2, 3, 0, 2, 4], [0, 0, 1, 1, 3, 3, 3]]
    # r1: {A,B}; r2: {C} | {D}; r4: {A,C} | {E}.
    assert tiny_graph.gpr_clause_reaction.tolist() == [0, 1, 1, 3, 3]
    assert tiny_graph.gpr_clause_genes.tolist() == [[0, 0, 1, 2, 3, 3, 4], [0, 1, 2, 3, 0, 2, 4]]
    assert tiny_graph.info["reactions_with_gpr"] == 3


def test_metabolism_hyperedges_with_signed_stoichiometry(tiny_graph) -> None:
    hi = tiny_graph.data[METABOLISM].hyperedge_index
    st = tiny_graph.data[METABOLISM].stoichiometry
    assert hi.tolist() == [[0, 1, 1, 2, 2, 0], [0, 0, 1, 1, 2, 3]]
    assert st.tolist() == [-1.0, 2.0, -1.0, 1.0, -1.0, 1.0]
    assert tiny_graph.data["reaction"].node_ids == ["r1", "r2", "r3", "r4"]


def test_essential_mask(tiny_graph) -> None:
    assert tiny_graph.essential.tolist() == [False, False, True, False, False, False]


def test_official_formats_build_the_same_kind_of_graph(tmp_path: Path) -> None:
    g = build_cell_graph(make_official_data_dir(tmp_path / "official"))
    # BioGRID tab3: physical rows only, VPS8 resolved, the reversed duplicate dropped.
    assert g.data[PHYSICAL].edge_index.tolist() == [[0, 1, 1, 2], [1, 2, 0, 1]]
    assert g.info["sources"]["physical_format"] == "biogrid_tab3"
    assert g.gpr_clause_reaction.tolist() == [0, 1, 1, 3, 3]
    assert g.data[METABOLISM].stoichiometry.numel() == 6


@pytest.mark.slow
@pytest.mark.real_data
def test_real_cell_graph_counts(real_dataset) -> None:
    g = real_dataset.graph
    ei = g.data[PHYSICAL].edge_index
    # 161,026 undirected BioGRID edges, stored both ways, no self loops.
    assert ei.shape == (2, 322_052) and not bool((ei[0] == ei[1]).any())
    assert g.info["physical_edges_undirected"] == 161_026
    assert g.data[REGULATORY].edge_index.shape[1] >= 11_000
    assert g.num_reactions == 4131 and g.num_metabolites == 2806
    assert g.info["reactions_with_gpr"] >= 2709
    assert int(torch.unique(g.gpr_clause_reaction).numel()) == g.info["reactions_with_gpr"]
    # Gene universe: every SGD gene plus the added ORFs, each counted.
    assert g.num_genes == g.info["genes_sgd"] + g.info["genes_added"]
    assert g.info["genes_sgd"] >= 6603
    assert int(g.essential.sum()) > 1000
