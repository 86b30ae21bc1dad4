"""The perturbation table: roles, labels, derived fitness and unknown genes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from datafiles import make_official_data_dir, write_gz

from torchcell_search.data.cell_graph import build_cell_graph
from torchcell_search.data.perturbations import build_perturbation_table
from torchcell_search.errors import DataError


def test_mirror_fitness_is_derived_from_smf_and_flagged(tiny_data_dir: Path) -> None:
    table, info = build_perturbation_table(tiny_data_dir, build_cell_graph(tiny_data_dir))
    # Query/array order is the SGA role and is kept.
    assert table.genes.tolist() == [[0, 1], [1, 0], [2, 3], [4, 0]]
    assert table.gene_interaction.tolist() == pytest.approx([0.1, -0.05, 0.2, 0.0])
    # fitness = eps + SMF_q * SMF_a (SMF 0.8, 0.5, NaN, 1.0, 0.95); NaN where an SMF is missing.
    f = table.fitness.tolist()
    assert f[0] == pytest.approx(0.5) and f[1] == pytest.approx(0.35) and f[3] == pytest.approx(0.76)
    assert math.isnan(f[2])
    assert table.fitness_derived.tolist() == [True, True, False, True]
    # The mirror has no p-values or DMF standard deviations.
    assert bool(torch.isnan(table.gene_interaction_p_value).all()) and bool(torch.isnan(table.fitness_std).all())
    assert info["fitness_derived"] == 3 and info["fitness_missing"] == 1 and info["fitness_measured"] == 0


def test_official_sga_uses_measured_fitness_where_present(tmp_path: Path) -> None:
    root = make_official_data_dir(tmp_path / "official")
    table, info = build_perturbation_table(root, build_cell_graph(root))
    assert table.genes.tolist() == [[0, 1], [2, 3], [4, 0]]
    # Measured DMF rows keep it; the row with an empty DMF derives 0.2 + 0.6 * 1.0.
    assert table.fitness.tolist() == pytest.approx([0.52, 0.8, 0.66])
    assert table.fitness_derived.tolist() == [False, True, False]
    assert table.gene_interaction_p_value.tolist() == pytest.approx([0.01, 0.2, 0.5])
    assert table.fitness_std[0].item() == pytest.approx(0.03) and math.isnan(table.fitness_std[1].item())
    assert info["fitness_measured"] == 2 and info["fitness_derived"] == 1


def _eps_rows(n_good: int, n_unknown: int) -> str:
    rows = ["query_orf\tarray_orf\tepsilon"] + ["YAL001C\tYAL002W\t0.1"] * n_good + ["NOTAGENE\tYAL002W\t0.3"] * n_unknown
    return "\n".join(rows) + "\n"


def test_few_unknown_genes_are_dropped_and_counted(tiny_data_dir: Path) -> None:
    write_gz(tiny_data_dir / "costanzo2016" / "nxn_metabolic_epsilon.tsv.gz", _eps_rows(40, 1))
    table, info = build_perturbation_table(tiny_data_dir, build_cell_graph(tiny_data_dir))
    assert len(table) == 40
    assert info["rows_dropped_unknown_gene"] == 1 and info["unknown_gene_names"] == ["NOTAGENE"]


def test_many_unknown_genes_raise(tiny_data_dir: Path) -> None:
    write_gz(tiny_data_dir / "costanzo2016" / "nxn_metabolic_epsilon.tsv.gz", _eps_rows(10, 2))
    with pytest.raises(DataError, match=r"2 of 12 rows \(16.7%\) name genes the cell graph lacks, e.g. NOTAGENE"):
        build_perturbation_table(tiny_data_dir, build_cell_graph(tiny_data_dir))


@pytest.mark.slow
@pytest.mark.real_data
def test_real_table_counts(real_dataset) -> None:
    t = real_dataset.table
    assert len(t) == 350_296
    assert int((~torch.isnan(t.gene_interaction)).sum()) == 350_296
    # 22,147 records involve one of the 40 genes without any SMF: no derivable fitness.
    assert int((~torch.isnan(t.fitness)).sum()) == 328_149
    assert int(t.fitness_derived.sum()) == 328_149
    assert t.genes.dtype == torch.long and int(t.genes.min()) >= 0
    assert int(t.genes.max()) < real_dataset.graph.num_genes
