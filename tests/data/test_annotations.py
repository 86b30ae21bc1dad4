"""Gene inputs without any pair: GO annotations (real SGD GAF + GO OBO) and single-mutant fitness."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest

from datafiles import TINY_GENES
from torchcell_search.data.annotations import read_gene_inputs, read_go
from torchcell_search.errors import DataError


def _obo_parents(obo: Path, term: str) -> set[str]:
    """``is_a`` parents of ``term`` read from the OBO text by hand (not through obonet)."""
    with gzip.open(obo, "rt", encoding="utf-8") as f:
        text = f.read()
    block = text.split(f"\nid: {term}\n", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^is_a: (GO:\d+)", block, flags=re.M))


def test_real_go_annotations_are_propagated_to_ancestors(real_data_dir: Path) -> None:
    gaf, obo = real_data_dir / "graph" / "gene_association.sgd.gz", real_data_dir / "graph" / "gene_ontology.1_2.obo.gz"
    genes = ["YAL002W", "YAL001C", "NOT_A_GENE"]
    matrix, terms = read_go(gaf, obo, genes)
    vps8 = {terms[j] for j in matrix[0].indices}
    # annotated directly in the GAF (VPS8: protein targeting to vacuole)
    assert "GO:0006623" in vps8
    # its is_a parents, and the process root, by the true-path rule
    assert _obo_parents(obo, "GO:0006623") <= vps8
    assert {"GO:0008150", "GO:0005575", "GO:0003674"} <= vps8
    assert matrix[1].nnz > 0 and matrix[2].nnz == 0  # TFC3 annotated; an unknown name has nothing
    assert set(np.unique(matrix.data)) == {1.0}


def test_a_broken_obo_is_a_data_error(tmp_path: Path, real_data_dir: Path) -> None:
    bad = tmp_path / "bad.obo"
    bad.write_text("[Term]\nid: GO:1\nis_a GO:2 broken line without colon\n[Term\n")
    with pytest.raises(DataError, match="bad.obo"):
        read_go(real_data_dir / "graph" / "gene_association.sgd.gz", bad, ["YAL001C"])


def test_smf_comes_from_the_strain_table_and_missing_go_is_empty(tiny_data_dir: Path) -> None:
    inputs = read_gene_inputs(tiny_data_dir, TINY_GENES)
    np.testing.assert_allclose(inputs.smf, [0.8, 0.5, np.nan, 1.0, 0.95])
    assert inputs.go.shape == (5, 0) and inputs.terms == []


def test_two_demo_seeds_each_get_their_own_planted_smf() -> None:
    # Same gene count, same ids, no data directory: only the planted SMF tells them apart,
    # so a cache keyed by gene count alone handed the second seed the first one's SMF.
    from torchcell_search.data.annotations import dataset_gene_inputs
    from torchcell_search.data.demo import make_demo_dataset

    first, second = make_demo_dataset(seed=0), make_demo_dataset(seed=1)
    for dataset in (first, second, first):
        planted = dataset.info["single_mutant_fitness"].double().numpy()
        np.testing.assert_array_equal(dataset_gene_inputs(dataset).smf, planted)
