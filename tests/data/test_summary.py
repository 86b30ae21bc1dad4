"""data_summary / format_summary and the `data summary` command, including bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Callable

import pytest

from torchcell_search.cli import main
from torchcell_search.data.summary import data_summary, format_summary


def test_summary_counts_tiny(tiny_data_dir: Path, tmp_path: Path) -> None:
    s = data_summary(tiny_data_dir, cache_dir=tmp_path / "cache")
    assert s["nodes"] == {"gene": 6, "reaction": 4, "metabolite": 3}
    assert s["edges"]["physical_edges_undirected"] == 3 and s["edges"]["physical_edges_directed"] == 6
    assert s["edges"]["regulatory_edges"] == 3
    assert s["reactions_with_gpr"] == 3 and s["records"] == 4
    assert s["labels"] == {"fitness": 3, "gene_interaction": 4}
    assert s["fitness_derived_share"] == 1.0
    assert s["genes_added"] == 1 and s["names_unmapped"]["regulatory"] == 1
    text = format_summary(s)
    assert "physical_edges_undirected  3" in text and "records" in text


def test_cli_json(tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["data", "summary", "--data", str(tiny_data_dir), "--json", "--cache-dir", str(tmp_path / "c")])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["records"] == 4


def _gz(text: str) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        with gzip.open(root / "costanzo2016" / "nxn_metabolic_epsilon.tsv.gz", "wt") as f:
            f.write(text)
    return write


def _raw(rel: str, data: bytes) -> Callable[[Path], None]:
    return lambda root: (root / rel).write_bytes(data)


BAD_INPUTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing-file": (lambda root: (root / "graph" / "SGDgeneNames.tsv").unlink(), "no SGD gene name file"),
    "wrong-columns": (_gz("query\tarray\tepsilon\nYAL001C\tYAL002W\t0.1\n"), "missing column 'query_orf'"),
    "non-numeric-epsilon": (_gz("query_orf\tarray_orf\tepsilon\nYAL001C\tYAL002W\tx\n"), "non-numeric value 'x'"),
    "empty-table": (_gz("query_orf\tarray_orf\tepsilon\n"), "table has no rows"),
    "corrupt-gzip": (_raw("graph/biogrid_4.4.235_physical_orf.tsv.gz", b"\x1f\x8b\x08junk"), "cannot read physical interaction list"),
    "corrupt-xlsx": (_raw("costanzo2016/strain_ids_and_single_mutant_fitness.xlsx", b"PK\x03\x04junk"), "not a readable xlsx file"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_cli_bad_input_exits_2_with_one_line(
    case: str, tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damage, message = BAD_INPUTS[case]
    damage(tiny_data_dir)
    rc = main(["data", "summary", "--data", str(tiny_data_dir), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2
    # Exactly one line on stderr, naming the problem; no traceback.
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_cli_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["data", "summary", "--data", str(tmp_path / "nonexistent")])
    assert rc == 2
    assert capsys.readouterr().err == f"torchcell-search: error: data directory {tmp_path / 'nonexistent'} does not exist\n"


@pytest.mark.slow
@pytest.mark.real_data
def test_real_summary(real_dataset) -> None:
    from torchcell_search.data.summary import summarize_dataset

    s = summarize_dataset(real_dataset)
    assert s["edges"]["physical_edges_undirected"] == 161_026
    assert s["nodes"]["reaction"] == 4131 and s["nodes"]["metabolite"] == 2806
    assert s["records"] == 350_296
    assert s["labels"] == {"fitness": 328_149, "gene_interaction": 350_296}
    assert s["reactions_with_gpr"] >= 2709
