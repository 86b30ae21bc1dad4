"""Splits, subsets, split persistence and the label standardiser."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchcell_search.data.demo import make_demo_dataset
from torchcell_search.data.splits import (
    Standardiser,
    load_split,
    make_split,
    save_split,
    split_cache_path,
    subset_indices,
)
from torchcell_search.data.types import PerturbationTable, Split
from torchcell_search.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def table() -> PerturbationTable:
    return make_demo_dataset(seed=0).table


def _assert_partition(split: Split, n: int) -> None:
    parts = [split.train, split.val, split.test]
    # disjoint, sorted, and together every record exactly once
    allidx = torch.cat(parts)
    assert torch.equal(torch.sort(allidx).values, torch.arange(n))
    for p in parts:
        assert p.dtype == torch.long and torch.equal(p, torch.sort(p).values)


@pytest.mark.parametrize("kind", ["random", "pair", "gene"])
def test_split_is_a_partition_near_the_requested_fractions(table: PerturbationTable, kind: str) -> None:
    split = make_split(table, kind, seed=0)
    _assert_partition(split, len(table))
    n = len(table)
    assert split.kind == kind and split.seed == 0
    # gene splits hit the fractions only in expectation
    tol = 0.01 if kind != "gene" else 0.06
    assert abs(len(split.train) / n - 0.8) < tol
    assert abs(len(split.val) / n - 0.1) < tol
    assert abs(len(split.test) / n - 0.1) < tol


@pytest.mark.parametrize("kind", ["random", "pair", "gene"])
def test_split_is_deterministic_per_seed(table: PerturbationTable, kind: str) -> None:
    a, b, c = (make_split(table, kind, seed=s) for s in (3, 3, 4))
    assert all(torch.equal(x, y) for x, y in zip((a.train, a.val, a.test), (b.train, b.val, b.test)))
    assert not torch.equal(a.test, c.test)


def test_pair_split_keeps_both_orientations_together(table: PerturbationTable) -> None:
    split = make_split(table, "pair", seed=0)

    def pairs(idx: torch.Tensor) -> set[tuple[int, int]]:
        g = table.genes[idx]
        return set(map(tuple, torch.sort(g, dim=1).values.tolist()))

    tr, va, te = pairs(split.train), pairs(split.val), pairs(split.test)
    # no unordered pair on two sides
    assert not (tr & va) and not (tr & te) and not (va & te)
    # and the random split does put some pairs on two sides, so the test has teeth
    rs = make_split(table, "random", seed=0)
    assert pairs(rs.train) & pairs(rs.test)


def test_gene_split_holds_genes_out(table: PerturbationTable) -> None:
    split = make_split(table, "gene", seed=0)
    train_genes = set(table.genes[split.train].flatten().tolist())
    val_genes = set(table.genes[split.val].flatten().tolist()) - train_genes
    test_records = table.genes[split.test].tolist()
    # every test record involves a gene never seen in training
    assert all(q not in train_genes or a not in train_genes for q, a in test_records)
    # every val record involves a held-out gene, and no val-only gene reaches train
    assert all(q not in train_genes or a not in train_genes for q, a in table.genes[split.val].tolist())
    assert val_genes and not (val_genes & train_genes)
    test_only = set(table.genes[split.test].flatten().tolist()) - train_genes - set(
        table.genes[split.val].flatten().tolist()
    )
    assert test_only  # there are genes seen only in test


def test_split_fractions_without_test_side(table: PerturbationTable) -> None:
    split = make_split(table, "random", seed=0, fractions=(0.9, 0.1, 0.0))
    assert len(split.test) == 0
    _assert_partition(split, len(table))


def test_split_rejects_unknown_kind_and_bad_fractions(table: PerturbationTable) -> None:
    with pytest.raises(ConfigError, match="'chromosome'"):
        make_split(table, "chromosome", seed=0)
    with pytest.raises(ConfigError, match="fractions"):
        make_split(table, "random", seed=0, fractions=(0.5, 0.1, 0.1))
    with pytest.raises(ConfigError, match="fractions"):
        make_split(table, "random", seed=0, fractions=(1.2, -0.1, -0.1))


def test_split_rejects_empty_table(table: PerturbationTable) -> None:
    with pytest.raises(DataError, match="no records"):
        make_split(table.select(torch.empty(0, dtype=torch.long)), "random", seed=0)


def test_subset_indices_are_reproducible_sorted_and_distinct() -> None:
    a = subset_indices(1000, 100, seed=7)
    assert torch.equal(a, subset_indices(1000, 100, seed=7))
    assert not torch.equal(a, subset_indices(1000, 100, seed=8))
    assert torch.equal(a, torch.sort(a).values) and a.unique().numel() == 100
    assert int(a.min()) >= 0 and int(a.max()) < 1000
    assert torch.equal(subset_indices(5, 5, seed=0), torch.arange(5))


@pytest.mark.parametrize("n", [0, 11])
def test_subset_indices_reject_bad_sizes(n: int) -> None:
    with pytest.raises(ConfigError, match=f"subset {n}"):
        subset_indices(10, n, seed=0)


def test_split_round_trips_through_the_cache(table: PerturbationTable, tmp_path: Path) -> None:
    split = make_split(table, "pair", seed=5)
    path = split_cache_path(tmp_path, "abc/def", "pair", 5, 1000)
    assert path.parent == tmp_path / "splits" and "/" not in path.name and "n1000" in path.name
    save_split(split, path)
    loaded = load_split(path)
    assert loaded.kind == "pair" and loaded.seed == 5
    assert torch.equal(loaded.train, split.train) and torch.equal(loaded.test, split.test)
    # no temporary files are left next to it
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_load_split_reports_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_split(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="unreadable"):
        load_split(bad)
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="not a"):
        load_split(tmp_path / "other.pt")


def test_split_cache_path_rejects_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        split_cache_path(tmp_path, "demo", "bogus", 0, None)


def test_standardiser_round_trip_and_nan_handling() -> None:
    nan = float("nan")
    y = torch.tensor([[1.0, 0.0], [3.0, nan], [5.0, 2.0], [nan, 4.0]])
    s = Standardiser.fit(y)
    # statistics over present values only (population std)
    assert torch.allclose(s.mean, torch.tensor([3.0, 2.0]))
    assert torch.allclose(s.std, torch.tensor([(8 / 3) ** 0.5, (8 / 3) ** 0.5]))
    z = s.transform(y)
    assert torch.equal(z.isnan(), y.isnan())
    assert torch.allclose(z[~z.isnan()].reshape(-1)[:1], torch.tensor([-(3 / 2) ** 0.5]))
    assert torch.allclose(s.inverse(z), y, equal_nan=True, atol=1e-6)
    # works on any leading shape, e.g. a (B, 2) batch of predictions
    assert s.inverse(torch.zeros(7, 2)).shape == (7, 2)


def test_standardiser_floors_a_constant_label() -> None:
    s = Standardiser.fit(torch.tensor([[1.0, 2.0], [1.0, 3.0]]))
    assert float(s.std[0]) == pytest.approx(1e-8)
    assert torch.isfinite(s.transform(torch.tensor([[1.0, 2.0]]))).all()


def test_standardiser_state_dict_round_trip() -> None:
    s = Standardiser.fit(torch.tensor([[0.5, -0.1], [0.9, 0.2], [0.7, 0.0]]))
    d = s.state_dict()
    assert all(isinstance(x, float) for x in d["mean"] + d["std"])
    r = Standardiser.from_state_dict(d)
    assert torch.equal(r.mean, s.mean) and torch.equal(r.std, s.std)


def test_standardiser_rejects_bad_input() -> None:
    with pytest.raises(DataError, match="gene_interaction"):
        Standardiser.fit(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(DataError, match="shape"):
        Standardiser.fit(torch.zeros(3))
    with pytest.raises(DataError, match="standardiser state"):
        Standardiser.from_state_dict({"mean": [0.0, 0.0], "std": [1.0, 0.0]})
    with pytest.raises(DataError, match="standardiser state"):
        Standardiser.from_state_dict({"mean": [0.0]})
