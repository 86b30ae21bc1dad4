"""load_dataset: demo, real directories and the content-hash cache."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from torchcell_search.data.dataset import default_cache_dir, load_dataset
from torchcell_search.data.types import PHYSICAL, Dataset
from torchcell_search.errors import DataError


def test_second_load_hits_the_cache_and_round_trips(tiny_data_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = load_dataset(tiny_data_dir, cache_dir=cache)
    second = load_dataset(tiny_data_dir, cache_dir=cache)
    assert not first.info["cache"]["hit"] and second.info["cache"]["hit"]
    assert len(list(cache.glob("dataset-*.pt"))) == 1
    # The cached copy equals the built one.
    assert torch.equal(first.table.genes, second.table.genes)
    assert torch.equal(first.table.fitness.nan_to_num(-9), second.table.fitness.nan_to_num(-9))
    assert torch.equal(first.graph.data[PHYSICAL].edge_index, second.graph.data[PHYSICAL].edge_index)
    assert second.graph.gene_ids == first.graph.gene_ids and second.graph.info == first.graph.info
    assert second.name == str(tiny_data_dir)


def test_changed_input_rebuilds(tiny_data_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = load_dataset(tiny_data_dir, cache_dir=cache)
    eps = tiny_data_dir / "costanzo2016" / "nxn_metabolic_epsilon.tsv.gz"
    with gzip.open(eps, "wt") as f:
        f.write("query_orf\tarray_orf\tepsilon\nYAL001C\tYAL002W\t0.3\n")
    second = load_dataset(tiny_data_dir, cache_dir=cache)
    # A new key, a rebuild, and the new value.
    assert second.info["cache"]["key"] != first.info["cache"]["key"] and not second.info["cache"]["hit"]
    assert second.table.gene_interaction.tolist() == pytest.approx([0.3])


def test_failed_build_leaves_no_cache_file(tiny_data_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (tiny_data_dir / "costanzo2016" / "nxn_metabolic_epsilon.tsv.gz").write_bytes(b"\x1f\x8b\x08 broken")
    with pytest.raises(DataError, match="cannot read epsilon table"):
        load_dataset(tiny_data_dir, cache_dir=cache)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_damaged_cache_file_is_rebuilt(tiny_data_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = Path(load_dataset(tiny_data_dir, cache_dir=cache).info["cache"]["path"])
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="ignoring unreadable cache file"):
        again = load_dataset(tiny_data_dir, cache_dir=cache)
    assert not again.info["cache"]["hit"] and len(again.table) == 4
    assert load_dataset(tiny_data_dir, cache_dir=cache).info["cache"]["hit"]


def test_missing_directory_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path / "nowhere", cache_dir=tmp_path)
    assert str(e.value) == f"data directory {tmp_path / 'nowhere'} does not exist"


def test_default_cache_dir_is_under_home() -> None:
    assert default_cache_dir() == Path.home() / ".cache" / "torchcell-search"


def test_demo_dataset_loads() -> None:
    ds = load_dataset("demo")
    assert isinstance(ds, Dataset) and len(ds.table) > 0


@pytest.mark.slow
@pytest.mark.real_data
def test_real_dataset_second_load_hits_cache(real_dataset, real_data_dir: Path) -> None:
    cache = Path(real_dataset.info["cache"]["path"]).parent
    again = load_dataset(real_data_dir, cache_dir=cache)
    assert again.info["cache"]["hit"] and len(again.table) == len(real_dataset.table)
