"""Baselines on small synthetic tables with planted additive, low-rank and role structure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from torchcell_search.data.types import Dataset, PerturbationTable, Split
from torchcell_search.errors import ConfigError, DataError
from torchcell_search.metrics import regression_metrics
from torchcell_search.model.baselines import BASELINES, BaselineConfig, evaluate_baselines, fit_baseline

G = 40  # genes
# Small rank keeps the synthetic fits fast; the planted structure has rank <= 3.
_CFG = BaselineConfig(rank=8)


def _table(y: np.ndarray, genes: np.ndarray) -> PerturbationTable:
    R = len(genes)
    lab = torch.as_tensor(y, dtype=torch.float32)
    nan = torch.full((R,), math.nan)
    return PerturbationTable(
        genes=torch.as_tensor(genes, dtype=torch.long),
        fitness=lab[:, 0].clone(),
        gene_interaction=lab[:, 1].clone(),
        fitness_derived=torch.zeros(R, dtype=torch.bool),
        gene_interaction_p_value=nan.clone(),
        fitness_std=nan.clone(),
    )


def _all_pairs(rng: np.random.Generator, frac: float = 0.7) -> np.ndarray:
    """A random subset of ordered (query, array) pairs, q != a."""
    q, a = np.meshgrid(np.arange(G), np.arange(G), indexing="ij")
    pairs = np.stack([q.ravel(), a.ravel()], 1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    keep = rng.random(len(pairs)) < frac
    return pairs[keep]


def _split(R: int, seed: int = 0) -> Split:
    perm = torch.randperm(R, generator=torch.Generator().manual_seed(seed))
    n_tr, n_va = int(0.7 * R), int(0.15 * R)
    return Split("random", seed, perm[:n_tr], perm[n_tr : n_tr + n_va], perm[n_tr + n_va :])


def _test_pearson(name: str, table: PerturbationTable, split: Split, label: str = "gene_interaction") -> float:
    model = fit_baseline(name, table, split, seed=0, cfg=_CFG)
    m = regression_metrics(model.predict(table.genes[split.test]), table.labels()[split.test], "test")
    return m[f"test/{label}/Pearson"]


def test_additive_recovers_planted_gene_effects() -> None:
    rng = np.random.default_rng(0)
    genes = _all_pairs(rng)
    effect = rng.normal(size=(G, 2))
    y = 0.5 + effect[genes[:, 0]] + effect[genes[:, 1]] + 0.3 * rng.normal(size=(len(genes), 2))
    table, split = _table(y, genes), _split(len(genes))
    model = fit_baseline("additive", table, split)
    # The fitted per-gene effects (original scale) track the planted ones up to a shift.
    fitted = (model.scale[:, None] * model.query_bias[:, :G]).T.numpy()  # compact index = gene id here
    for t in range(2):
        assert np.corrcoef(fitted[:, t], effect[:, t])[0, 1] > 0.98
    # Held-out records are predicted well: noise-free signal has variance 2, noise 0.09.
    assert _test_pearson("additive", table, split) > 0.9


def test_additive_role_independent_and_matches_least_squares() -> None:
    rng = np.random.default_rng(1)
    genes = _all_pairs(rng, 0.5)
    y = rng.normal(size=(len(genes), 2))
    table, split = _table(y, genes), _split(len(genes))
    cfg = BaselineConfig(ridge_alphas=(5.0,))
    model = fit_baseline("additive", table, split, cfg=cfg)
    # Closed form by dense least squares on the z-scored train labels.
    tr = split.train.numpy()
    X = np.zeros((len(tr), G + 1))
    X[:, 0] = 1
    np.add.at(X, (np.arange(len(tr)), 1 + genes[tr, 0]), 1)
    np.add.at(X, (np.arange(len(tr)), 1 + genes[tr, 1]), 1)
    pen = 5.0 * np.eye(G + 1)
    pen[0, 0] = 0
    for t in range(2):
        z = (y[tr, t] - y[tr, t].mean()) / y[tr, t].std(ddof=1)
        coef = np.linalg.solve(X.T @ X + pen, X.T @ z)
        assert np.allclose(model.query_bias[t, :G].numpy(), coef[1:], atol=1e-8)
        assert float(model.offset[t]) == pytest.approx(coef[0], abs=1e-8)
    # Same effect whichever role a gene plays.
    swapped = table.genes[:5].flip(1)
    assert torch.allclose(model.predict(table.genes[:5]), model.predict(swapped))


def test_mf_beats_additive_on_planted_low_rank_interaction() -> None:
    rng = np.random.default_rng(2)
    genes = _all_pairs(rng, 0.8)
    u = rng.normal(size=(G, 3))
    bias = rng.normal(size=G)
    inter = (u[genes[:, 0]] * u[genes[:, 1]]).sum(1)  # symmetric rank-3 interaction
    eps = 0.3 * (bias[genes[:, 0]] + bias[genes[:, 1]]) + inter + 0.3 * rng.normal(size=len(genes))
    y = np.stack([1 + 0.1 * rng.normal(size=len(genes)), eps], 1)
    table, split = _table(y, genes), _split(len(genes))
    p_add = _test_pearson("additive", table, split)
    p_mf = _test_pearson("matrix_factorisation", table, split)
    p_blind = _test_pearson("matrix_factorisation_role_blind", table, split)
    # Additive effects cannot express <u_q, u_a>; both factorisations can.
    assert p_add < 0.5
    assert p_mf > 0.8 and p_blind > 0.8


def test_role_aware_beats_role_blind_on_planted_role_effect() -> None:
    rng = np.random.default_rng(3)
    genes = _all_pairs(rng, 0.8)
    bq, ba = rng.normal(size=G), rng.normal(size=G)  # independent query and array effects
    u, v = rng.normal(size=(G, 2)), rng.normal(size=(G, 2))  # asymmetric interaction
    eps = bq[genes[:, 0]] + ba[genes[:, 1]] + (u[genes[:, 0]] * v[genes[:, 1]]).sum(1)
    eps = eps + 0.3 * rng.normal(size=len(genes))
    y = np.stack([np.full(len(genes), 1.0), eps], 1)
    table, split = _table(y, genes), _split(len(genes))
    p_aware = _test_pearson("matrix_factorisation", table, split)
    p_blind = _test_pearson("matrix_factorisation_role_blind", table, split)
    assert p_aware > 0.85
    assert p_aware > p_blind + 0.1


def test_unseen_genes_get_zero_effects() -> None:
    rng = np.random.default_rng(4)
    genes = _all_pairs(rng, 0.6)
    effect = rng.normal(size=(G, 2))
    y = effect[genes[:, 0]] + effect[genes[:, 1]] + 0.1 * rng.normal(size=(len(genes), 2))
    held = genes.max(1) >= G - 5  # genes 35..39 never in train
    idx = torch.arange(len(genes))
    train, rest = idx[torch.as_tensor(~held)], idx[torch.as_tensor(held)]
    split = Split("gene", 0, train, rest[: len(rest) // 2], rest[len(rest) // 2 :])
    table = _table(y, genes)
    for name in BASELINES:
        model = fit_baseline(name, table, split)
        # Two unseen genes (or an index beyond the table): only the intercept is left, the
        # same for every such pair, mean + scale * offset.
        both_unseen = torch.tensor([[G - 1, G - 2], [G - 3, 10_000], [-1, G - 4]])
        intercept = (model.mean + model.scale * model.offset).float()
        assert torch.allclose(model.predict(both_unseen), intercept.expand(3, 2), atol=1e-5), name
        # The intercept stays near the train mean (it is not an unseen gene's effect).
        mean = table.labels()[train].mean(0)
        assert torch.allclose(intercept, mean, atol=0.3 * float(table.labels()[train].std())), name
        # One seen gene: mean + that gene's effects only, whichever role the unseen one has.
        if name != "matrix_factorisation":
            a = model.predict(torch.tensor([[3, G - 1]]))
            b = model.predict(torch.tensor([[3, G - 2]]))
            assert torch.allclose(a, b), name


def test_nan_labels_are_skipped() -> None:
    rng = np.random.default_rng(5)
    genes = _all_pairs(rng, 0.6)
    effect = rng.normal(size=(G, 2))
    y = effect[genes[:, 0]] + effect[genes[:, 1]] + 0.1 * rng.normal(size=(len(genes), 2))
    split = _split(len(genes))
    clean = fit_baseline("additive", _table(y, genes), split)
    y_nan = y.copy()
    extra = np.arange(0, len(genes), 3)
    # Extra records whose fitness is NaN and whose gene_interaction is garbage-free duplicates.
    y_nan[extra, 0] = np.nan
    model = fit_baseline("additive", _table(y_nan, genes), split)
    pred = model.predict(torch.as_tensor(genes))
    assert torch.isfinite(pred).all()
    # gene_interaction is unaffected by NaN fitness; fitness is fitted from the rest.
    assert torch.allclose(pred[:, 1], clean.predict(torch.as_tensor(genes))[:, 1], atol=1e-5)
    assert np.corrcoef(pred[:, 0].numpy(), (effect[genes[:, 0], 0] + effect[genes[:, 1], 0]))[0, 1] > 0.95
    for name in BASELINES[1:]:
        assert torch.isfinite(fit_baseline(name, _table(y_nan, genes), split).predict(torch.as_tensor(genes))).all()


def test_evaluate_baselines_names_and_determinism() -> None:
    rng = np.random.default_rng(6)
    genes = _all_pairs(rng, 0.5)
    y = rng.normal(size=(len(genes), 2))
    table = _table(y, genes)
    ds = Dataset(name="synthetic", graph=None, table=table)  # type: ignore[arg-type]
    split = _split(len(genes))
    cfg = BaselineConfig(rank=8, max_iterations=8)
    a = evaluate_baselines(ds, split, seed=3, cfg=cfg)
    b = evaluate_baselines(ds, split, seed=3, cfg=cfg)
    assert sorted(a) == sorted(BASELINES)
    expected = {f"{s}/{lab}/{m}" for s in ("train", "val", "test") for lab in ("fitness", "gene_interaction") for m in ("MSE", "Pearson", "Spearman")}
    combined = {f"{s}/combined/{m}" for s in ("train", "val", "test") for m in ("MSE", "Pearson")}
    assert set(a["additive"]) == expected | combined | {"seconds"}
    # the combined metrics are the trials': both labels z-scored with the train statistics, pooled
    labels = table.labels()
    train = labels[split.train]
    mean, std = train.nanmean(0), (train - train.nanmean(0)).pow(2).nanmean(0).sqrt()
    pred = fit_baseline("additive", table, split, seed=3, cfg=cfg).predict(table.genes[split.test])
    z = lambda x: ((x - mean) / std).reshape(-1).double().numpy()  # noqa: E731
    assert a["additive"]["test/combined/Pearson"] == pytest.approx(
        np.corrcoef(z(pred), z(labels[split.test]))[0, 1], rel=1e-5)
    # Same seed, same numbers (timings aside).
    for name in BASELINES:
        a[name].pop("seconds"), b[name].pop("seconds")
        assert a[name] == b[name]


def test_bad_input_raises() -> None:
    rng = np.random.default_rng(7)
    genes = _all_pairs(rng, 0.3)
    table = _table(rng.normal(size=(len(genes), 2)), genes)
    with pytest.raises(ConfigError, match="unknown baseline"):
        fit_baseline("knn", table, _split(len(genes)))
    empty = Split("random", 0, torch.empty(0, dtype=torch.long), torch.arange(3), torch.arange(3, 6))
    with pytest.raises(DataError, match="train split is empty"):
        fit_baseline("additive", table, empty)
