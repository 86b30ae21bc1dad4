"""Readers of the real formats, on tiny files written in the documented layouts."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datafiles import (
    SGA_HEADER,
    SGA_ROWS,
    TAB3_HEADER,
    TAB3_ROWS,
    TINY_GEM_YAML,
    make_official_data_dir,
    write_gz,
    write_smf_xlsx,
    write_text,
    write_tiny_sbml,
)

from torchcell_search.data import readers
from torchcell_search.data.gene_names import GeneNames, is_orf_name
from torchcell_search.errors import DataError

# --- Costanzo ---------------------------------------------------------------------------------


def test_sga_pairwise_strips_allele_suffixes_and_keeps_labels(tmp_path: Path) -> None:
    df = readers.read_sga_pairwise(write_text(tmp_path / "SGA_NxN.txt", SGA_HEADER + SGA_ROWS))
    # The ORF is the text before the first "_" of the strain id, roles in file order.
    assert df["query_orf"].tolist() == ["YAL001C", "YAL003W", "YAL007C"]
    assert df["array_orf"].tolist() == ["YAL002W", "YAL005C", "YAL001C"]
    assert list(df.columns) == [
        "query_orf", "array_orf", "epsilon", "p_value", "query_smf", "array_smf", "dmf", "dmf_std", "arraytype_temp",
    ]
    assert df["epsilon"].tolist() == [0.1, 0.2, -0.1]
    assert df["arraytype_temp"].tolist() == ["DMA30", "TSA30", "DMA26"]
    # Empty DMF cells are NaN, never zero.
    assert math.isnan(df["dmf"][1]) and math.isnan(df["dmf_std"][1])
    assert df["dmf"][0] == pytest.approx(0.52)


def test_sga_pairwise_rejects_missing_epsilon_column(tmp_path: Path) -> None:
    header = SGA_HEADER.replace("Genetic interaction score (ε)", "Score")
    with pytest.raises(DataError, match=r"SGA_NxN.txt: missing column 'Genetic interaction score"):
        readers.read_sga_pairwise(write_text(tmp_path / "SGA_NxN.txt", header + SGA_ROWS))


def test_epsilon_table_reads_three_columns(tmp_path: Path) -> None:
    p = write_gz(tmp_path / "eps.tsv.gz", "query_orf\tarray_orf\tepsilon\nyal001c\tYAL002W\t-0.5\nYAL002W\tYAL001C\t0.25\n")
    df = readers.read_epsilon_table(p)
    # Names are upper-cased; epsilon is float.
    assert df["query_orf"].tolist() == ["YAL001C", "YAL002W"]
    assert df["epsilon"].dtype == np.float64 and df["epsilon"].tolist() == [-0.5, 0.25]


@pytest.mark.parametrize(
    "content, message",
    [
        ("query_orf\tarray_orf\tepsilon\nYAL001C\tYAL002W\tstrong\n", r"column 'epsilon' has a non-numeric value 'strong' \(data row 1\)"),
        ("query_orf\tarray_orf\teps\nYAL001C\tYAL002W\t0.1\n", r"missing column 'epsilon'"),
        ("query_orf\tarray_orf\tepsilon\n", r"table has no rows"),
        ("", r"file is empty"),
    ],
    ids=["non-numeric", "wrong-column", "header-only", "empty-file"],
)
def test_epsilon_table_bad_input_raises_one_line(tmp_path: Path, content: str, message: str) -> None:
    p = write_gz(tmp_path / "eps.tsv.gz", content)
    with pytest.raises(DataError, match=message) as e:
        readers.read_epsilon_table(p)
    # The message names the file and fits on one line.
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_corrupt_gzip_raises_data_error(tmp_path: Path) -> None:
    p = tmp_path / "eps.tsv.gz"
    p.write_bytes(gzip.compress(b"query_orf\tarray_orf\tepsilon\n" + b"YAL001C\tYAL002W\t0.1\n" * 5000)[:300])
    with pytest.raises(DataError, match="eps.tsv.gz: cannot read epsilon table"):
        readers.read_epsilon_table(p)
    p.write_bytes(b"\x1f\x8bnot gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        readers.read_epsilon_table(p)


def test_missing_file_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.tsv.gz: file not found"):
        readers.read_epsilon_table(tmp_path / "nope.tsv.gz")
    with pytest.raises(DataError, match="file not found"):
        readers.read_smf(tmp_path / "nope.xlsx")


def test_smf_uses_30_degrees_then_26_then_nan(tmp_path: Path) -> None:
    smf = readers.read_smf(write_smf_xlsx(tmp_path / "smf.xlsx")).set_index("orf")
    # YAL001C: mean of its two strains at 30 degrees.
    assert smf.loc["YAL001C", "smf"] == pytest.approx(0.8)
    assert smf.loc["YAL001C", "smf_std"] == pytest.approx(0.03)
    # YAL002W: 30 degrees empty everywhere -> the 26 degree value.
    assert smf.loc["YAL002W", "smf"] == pytest.approx(0.5) and smf.loc["YAL002W", "temperature"] == 26
    # YAL003W: empty at both temperatures -> NaN, kept as a row.
    assert math.isnan(smf.loc["YAL003W", "smf"]) and smf.loc["YAL003W", "temperature"] == 0
    # temperature=26 prefers the other column.
    assert readers.read_smf(tmp_path / "smf.xlsx", temperature=26).set_index("orf").loc["YAL001C", "smf"] == pytest.approx(0.725)


def test_smf_corrupt_xlsx_and_missing_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(b"PK\x03\x04 this is not a workbook")
    with pytest.raises(DataError, match="bad.xlsx: not a readable xlsx file"):
        readers.read_smf(bad)
    p = tmp_path / "cols.xlsx"
    pd.DataFrame({"Strain ID": ["YAL001C_dma1"], "Single mutant fitness (30°)": [0.9]}).to_excel(p, index=False)
    with pytest.raises(DataError, match="missing column 'Systematic gene name'"):
        readers.read_smf(p)


def test_smf_non_numeric_value(tmp_path: Path) -> None:
    p = write_smf_xlsx(tmp_path / "smf.xlsx", [("YAL001C_dma1", "YAL001C", "tfc3", 0.9, 0.1, "high", 0.1)])
    with pytest.raises(DataError, match=r"non-numeric value 'high'"):
        readers.read_smf(p)


# --- gene names ---------------------------------------------------------------------------------


def test_gene_names_resolve_standard_systematic_and_unknown(tmp_path: Path) -> None:
    p = write_text(tmp_path / "SGDgeneNames.tsv", "Systematic_name\tStandard_name\nYAL001C\tTFC3\nYHR211W\tFLO5\nYPR010C-A\t\n")
    names = GeneNames.from_file(p)
    assert len(names) == 3 and "YPR010C-A" in names
    # Standard names resolve case-insensitively; systematic names resolve to themselves.
    assert names.to_orf("tfc3") == "YAL001C" and names.to_orf("flo5") == "YHR211W"
    assert names.to_orf("ypr010c-a") == "YPR010C-A"
    # An ORF-shaped name SGD lacks resolves to itself (the caller adds it); others to None.
    assert names.to_orf("YBL005W-A") == "YBL005W-A"
    assert names.to_orf("HRA1") is None and names.to_orf("tA(AGC)D") is None
    assert is_orf_name("Q0045") and not is_orf_name("SNR190")


def test_gene_names_repeated_systematic_name_raises(tmp_path: Path) -> None:
    p = write_text(tmp_path / "SGDgeneNames.tsv", "Systematic_name\tStandard_name\nYAL001C\tTFC3\nYAL001C\tX\n")
    with pytest.raises(DataError, match="'YAL001C' appears twice"):
        GeneNames.from_file(p)


# --- edges --------------------------------------------------------------------------------------


def test_biogrid_tab3_keeps_physical_s288c_rows(tmp_path: Path) -> None:
    p = write_text(tmp_path / "BIOGRID-ORGANISM-x.tab3.txt", TAB3_HEADER + TAB3_ROWS)
    df = readers.read_biogrid_tab3(p)
    # Rows 1, 3 (symbol fallback for '-') and 5 remain; genetic and cross-species rows go.
    assert df.values.tolist() == [["YAL001C", "YAL002W"], ["VPS8", "YAL003W"], ["YAL002W", "YAL001C"]]


def test_biogrid_tab3_missing_system_type(tmp_path: Path) -> None:
    p = write_text(tmp_path / "b.tab3.txt", TAB3_HEADER.replace("Experimental System Type", "Kind") + TAB3_ROWS)
    with pytest.raises(DataError, match="missing column 'Experimental System Type'"):
        readers.read_biogrid_tab3(p)


def test_physical_edges_mirror_format(tmp_path: Path) -> None:
    df = readers.read_physical_edges(write_gz(tmp_path / "p.tsv.gz", "gene_a\tgene_b\nQ0045\tQ0085\n"))
    assert df.values.tolist() == [["Q0045", "Q0085"]]


def test_yeastract_matrix_to_edge_list(tmp_path: Path) -> None:
    p = write_gz(tmp_path / "y.tsv.gz", "SystematicName\tFLO8\tYAL005C\nYAL002W\t1\t0\nYAL003W\t1\t1\n")
    df = readers.read_yeastract(p)
    # One row per 1 entry, TF names kept as written (resolution happens later).
    assert df.values.tolist() == [["FLO8", "YAL002W"], ["FLO8", "YAL003W"], ["YAL005C", "YAL003W"]]


def test_yeastract_rejects_values_other_than_0_1(tmp_path: Path) -> None:
    p = write_gz(tmp_path / "y.tsv.gz", "SystematicName\tFLO8\nYAL002W\t2\n")
    with pytest.raises(DataError, match="entry 2.0 for TF 'FLO8' .* is not 0 or 1"):
        readers.read_yeastract(p)
    p = write_gz(tmp_path / "z.tsv.gz", "Target\tFLO8\nYAL002W\t1\n")
    with pytest.raises(DataError, match="missing column 'SystematicName'"):
        readers.read_yeastract(p)


def test_gene_list_skips_blanks_and_comments(tmp_path: Path) -> None:
    p = write_text(tmp_path / "ess.txt", "# essential\nYAL001C\n\nYAL003W extra\nYAL001C\n")
    assert readers.read_gene_list(p) == ["YAL001C", "YAL003W"]
    with pytest.raises(DataError, match="gene list is empty"):
        readers.read_gene_list(write_text(tmp_path / "empty.txt", "\n# nothing\n"))


# --- Yeast-GEM ----------------------------------------------------------------------------------


def test_gem_yaml_reactions_metabolites_stoichiometry(tmp_path: Path) -> None:
    gem = readers.read_gem_yaml(write_text(tmp_path / "yeast-GEM.yml", TINY_GEM_YAML))
    assert gem.reactions["reaction_id"].tolist() == ["r1", "r2", "r3", "r4"]
    assert gem.reactions["gpr"].tolist()[2] == ""
    assert gem.metabolites == ["m1", "m2", "m3"]
    # Signed coefficients: negative = consumed.
    assert gem.stoichiometry.values.tolist()[:2] == [["m1", "r1", -1.0], ["m2", "r1", 2.0]]


def test_gem_sbml_gz_matches_yaml(tmp_path: Path) -> None:
    sbml = readers.read_gem_sbml(write_tiny_sbml(tmp_path / "yeast-GEM.xml.gz"))
    yml = readers.read_gem_yaml(write_text(tmp_path / "yeast-GEM.yml", TINY_GEM_YAML))
    # The two formats of the same model give the same reactions, rules and coefficients.
    assert sbml.reactions["reaction_id"].tolist() == yml.reactions["reaction_id"].tolist()
    assert [readers.parse_gpr(r) for r in sbml.reactions["gpr"]] == [readers.parse_gpr(r) for r in yml.reactions["gpr"]]
    key = ["reaction", "metabolite"]
    assert sbml.stoichiometry.sort_values(key).values.tolist() == yml.stoichiometry.sort_values(key).values.tolist()


def test_gem_corrupt_files_raise(tmp_path: Path) -> None:
    bad_gz = tmp_path / "yeast-GEM.xml.gz"
    bad_gz.write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(DataError, match="corrupt gzip"):
        readers.read_gem_sbml(bad_gz)
    bad_yml = write_text(tmp_path / "yeast-GEM.yml", "- reactions: [unclosed\n")
    with pytest.raises(DataError, match="cannot parse Yeast-GEM YAML"):
        readers.read_gem_yaml(bad_yml)
    no_sections = write_text(tmp_path / "other.yml", "a: 1\n")
    with pytest.raises(DataError, match="lacks 'reactions'"):
        readers.read_gem_yaml(no_sections)


# --- GPR ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule, clauses",
    [
        ("", []),
        ("A", [{"A"}]),
        ("A or B", [{"A"}, {"B"}]),  # isoenzymes
        ("A and B", [{"A", "B"}]),  # complex
        ("(A and B) or C", [{"A", "B"}, {"C"}]),
        ("A and (B or C)", [{"A", "B"}, {"A", "C"}]),
        ("((A or B) and (C or (D and E)))", [{"A", "C"}, {"A", "D", "E"}, {"B", "C"}, {"B", "D", "E"}]),
        ("A & B | C", [{"A", "B"}, {"C"}]),
        ("A AND B OR A", [{"A"}]),  # absorption: {A} covers {A, B}
        ("A or A", [{"A"}]),
    ],
)
def test_parse_gpr_dnf(rule: str, clauses: list[set[str]]) -> None:
    assert readers.parse_gpr(rule) == [frozenset(c) for c in clauses]


@pytest.mark.parametrize("rule", ["(A and B", "A and", "or B", "A B", "()", "A and B)"])
def test_parse_gpr_malformed_names_reaction(rule: str) -> None:
    with pytest.raises(DataError, match="reaction r_0042: malformed GPR rule"):
        readers.parse_gpr(rule, reaction="r_0042")


# --- layout -------------------------------------------------------------------------------------


def test_locate_inputs_official_files_in_the_directory(tmp_path: Path) -> None:
    files = readers.locate_inputs(make_official_data_dir(tmp_path / "official"))
    assert files.physical_format == "biogrid_tab3"
    assert [p.name for p in files.sga] == ["SGA_NxN.txt"] and files.epsilon is None
    assert files.gem.name == "yeast-GEM.xml"


def test_locate_inputs_missing_directory_and_file(tmp_path: Path, tiny_data_dir: Path) -> None:
    with pytest.raises(DataError, match=f"data directory {tmp_path / 'absent'} does not exist"):
        readers.locate_inputs(tmp_path / "absent")
    (tiny_data_dir / "graph" / "yeast-GEM.yml").unlink()
    with pytest.raises(DataError, match="no Yeast-GEM model file"):
        readers.locate_inputs(tiny_data_dir)


@pytest.mark.real_data
def test_real_readers_counts(real_data_dir: Path) -> None:
    files = readers.locate_inputs(real_data_dir)
    eps = readers.read_epsilon_table(files.epsilon)
    assert len(eps) == 350_296
    assert len(readers.read_physical_edges(files.physical)) == 161_026
    assert len(readers.read_yeastract(files.regulatory)) == 11_486
    smf = readers.read_smf(files.smf)
    genes = set(eps["query_orf"]) | set(eps["array_orf"])
    # 40 genes of the epsilon table have no SMF at either temperature (data README).
    assert int(smf[smf["orf"].isin(genes)]["smf"].isna().sum()) == 40
