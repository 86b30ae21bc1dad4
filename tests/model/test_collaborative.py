"""Profile features: out of fold on train records, tables for every other pair, no leakage."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from torchcell_search.config import RunConfig
from torchcell_search.data.types import PHYSICAL, Dataset
from torchcell_search.model.collaborative import (
    _FOLDS,
    FEATURES,
    NUM_PROFILE_FEATURES,
    _folds,
    _neighbour_means,
    _raw_features,
    profile_features,
)
from torchcell_search.search.trainer import load_model, predict_genes, prepare_data, train


@pytest.fixture(scope="module")
def demo():
    return prepare_data("demo", subset=None, split="pair", seed=0, cache_dir=None)


def test_neighbour_means_match_the_formula_cell_by_cell():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(12, 15))
    observed = (rng.random((12, 15)) < 0.7).astype(float)
    values *= observed
    got = _neighbour_means(values, observed)
    centred = [(values[i] - values[i][observed[i] > 0].mean()) * observed[i] for i in range(12)]
    sim = np.zeros((12, 12))
    for i in range(12):
        for j in range(12):
            common = (observed[i] > 0) & (observed[j] > 0)
            if i == j or not common.any():
                continue
            x, y = centred[i][common], centred[j][common]
            sim[i, j] = (x @ y) / (np.sqrt((x**2).sum() * (y**2).sum()) + 1e-9) * common.sum() / (common.sum() + 10.0)
    cell = 3, 4
    # 12 rows < 30 neighbours: every other row counts.
    expected = sum(sim[3, j] * centred[j][4] for j in range(12)) / (np.abs(sim[3]) @ observed[:, 4] + 1e-9)
    assert got[cell] == pytest.approx(expected, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("kind", ["random", "pair", "gene"])
def test_a_train_record_never_sees_its_own_label(kind):
    dataset, split = prepare_data("demo", subset=None, split=kind, seed=0, cache_dir=None)
    assert profile_features(dataset, split, seed=0)[0].shape == (len(split.train), NUM_PROFILE_FEATURES)
    features = torch.as_tensor(_raw_features(dataset, split, 0)[0])  # before the global rescaling
    # Rewrite one train pair's labels (both orientations; the record alone on a random
    # split): its own features must not move.
    genes = dataset.table.genes
    q, a = genes[split.train[0]].tolist()
    same_pair = ((genes[:, 0] == q) & (genes[:, 1] == a)) | ((genes[:, 0] == a) & (genes[:, 1] == q))
    if kind == "random":  # records leave one by one: only the record itself is hidden
        same_pair = torch.zeros_like(same_pair)
        same_pair[split.train[0]] = True
    table = dataclasses.replace(dataset.table, gene_interaction=torch.where(same_pair, 5.0, dataset.table.gene_interaction),
                                fitness=torch.where(same_pair, 5.0, dataset.table.fitness))
    changed = torch.as_tensor(_raw_features(Dataset(dataset.name, dataset.graph, table, dataset.info), split, 0)[0])
    rows = torch.isin(split.train, torch.nonzero(same_pair).flatten())
    assert torch.allclose(changed[rows], features[rows], atol=1e-5)
    assert not torch.allclose(changed[~rows], features[~rows], atol=1e-5)  # the others do see it


def _relabel(dataset: Dataset, rows: torch.Tensor, value: float) -> Dataset:
    """The dataset with both labels of the records ``rows`` (boolean) set to ``value``."""
    table = dataclasses.replace(dataset.table, gene_interaction=torch.where(rows, value, dataset.table.gene_interaction),
                                fitness=torch.where(rows, value, dataset.table.fitness))
    return Dataset(dataset.name, dataset.graph, table, dataset.info)


@pytest.mark.parametrize("kind", ["random", "pair", "gene"])
def test_val_and_test_labels_move_no_feature(kind):
    # Every feature (out-of-fold train features and the tables val/test/predict read) is
    # fitted on train labels only: the factorisation's iteration count included.
    dataset, split = prepare_data("demo", subset=None, split=kind, seed=0, cache_dir=None)
    oof, full, _ = _raw_features(dataset, split, 0)
    hidden = torch.zeros(len(dataset.table), dtype=torch.bool)
    hidden[split.val] = hidden[split.test] = True
    rng = np.random.default_rng(1)
    table = dataclasses.replace(
        dataset.table,
        gene_interaction=torch.where(hidden, torch.as_tensor(rng.normal(size=len(hidden)), dtype=torch.float32),
                                     dataset.table.gene_interaction),
        fitness=torch.where(hidden, 5.0, dataset.table.fitness),
    )
    oof2, full2, _ = _raw_features(Dataset(dataset.name, dataset.graph, table, dataset.info), split, 0)
    np.testing.assert_array_equal(oof2, oof)
    np.testing.assert_array_equal(full2, full)
    # The rewrite is not a no-op: moving train labels does move features.
    oof3, _, _ = _raw_features(_relabel(dataset, torch.isin(torch.arange(len(hidden)), split.train[:50]), 5.0), split, 0)
    assert not np.allclose(oof3, oof)


def test_gene_split_a_held_out_genes_other_records_do_not_feed_its_features():
    # Fold shape on the gene split: a train record takes its features from the first fold
    # that holds out one of its genes; none of that gene's other train records may reach
    # them, as none of a test gene's records reach a test record's.
    dataset, split = prepare_data("demo", subset=None, split="gene", seed=0, cache_dir=None)
    genes = dataset.table.genes.numpy()
    train = split.train.numpy()
    folds = _folds(genes, train, "gene", 0)
    assert len(folds) == _FOLDS
    oof = _raw_features(dataset, split, 0)[0]
    checked = 0
    for r in (0, len(train) // 3, len(train) // 2):
        k = next(i for i, held in enumerate(folds) if held[r])
        q, a = genes[train[r]]
        # the gene of record r that fold k holds out (both genes when both are in it)
        in_fold = [g for g in (q, a) if folds[k][np.flatnonzero((genes[train, 0] == g) | (genes[train, 1] == g))].all()]
        assert in_fold
        g = in_fold[0]
        with_g = torch.as_tensor((genes[:, 0] == g) | (genes[:, 1] == g))
        changed = _raw_features(_relabel(dataset, with_g, 5.0), split, 0)[0]
        np.testing.assert_allclose(changed[r], oof[r], atol=1e-6)
        checked += 1
        # records of other folds do read g's records
        other = np.flatnonzero(~folds[k] & ~with_g.numpy()[train])
        assert not np.allclose(changed[other], oof[other], atol=1e-6)
    assert checked == 3


def test_tables_predict_val_pairs_and_zero_unseen_genes(demo):
    dataset, split = demo
    _, tables = profile_features(dataset, split, seed=0)
    val_features = tables(dataset.table.genes[split.val])
    eps = dataset.table.gene_interaction[split.val]
    for k in (0, 1, 2):  # factorisation and both neighbour features carry the planted signal
        r = np.corrcoef(val_features[:, k].numpy(), eps.numpy())[0, 1]
        assert r > 0.3, (k, r)
    # Genes without a train record (the demo's essential genes) read zeros, the train mean.
    no_records = torch.nonzero(tables.lookup == tables.tables.shape[1] - 1).flatten()
    assert len(no_records) > 0
    seen = torch.nonzero(tables.lookup < tables.tables.shape[1] - 1).flatten()[:len(no_records)]
    assert torch.all(tables(torch.stack([no_records, seen[: len(no_records)]], 1)) == 0)


@pytest.mark.quality
def test_a_profile_model_checkpoint_predicts_alone(demo):
    dataset, split = demo
    cfg = RunConfig().with_overrides({
        "model.kind": "perturbation_set", "model.profile_features": True, "model.num_layers": 1,
        "model.hidden_channels": 16, "cell_dataset.learnable_embedding_input_channels": 16,
        "model.prediction_head_config.hidden_channels": 16, "trainer.max_epochs": 3, "trainer.device": "cpu",
    })
    result = train(dataset, split, cfg)
    assert result.best["val/gene_interaction/Pearson"] > 0.5
    model, standardiser = load_model(result.best_checkpoint, dataset.graph)
    pred = predict_genes(model, standardiser, dataset, dataset.table.genes[split.test])
    np.testing.assert_allclose(pred, result.predictions["test"], rtol=1e-5, atol=1e-6)


def test_hetero_cell_reads_profile_features_and_trains_their_projection(demo):
    from torchcell_search.data.masks import MaskBuilder
    from torchcell_search.model import build_model

    dataset, split = demo
    cfg = RunConfig().with_overrides({
        "model.profile_features": True, "model.num_layers": 1, "model.hidden_channels": 8,
        "cell_dataset.learnable_embedding_input_channels": 8, "model.prediction_head_config.hidden_channels": 8,
        "model.pooling": "attentional",
    }).model
    model = build_model(dataset.graph, cfg)
    model.set_profile_tables(profile_features(dataset, split, seed=0)[1])
    genes = dataset.table.genes[split.val[:4]]
    masks = MaskBuilder(dataset.graph).masks(genes)
    from_tables = model(genes, masks)
    given = model(genes, masks, torch.zeros(4, NUM_PROFILE_FEATURES))
    assert not torch.allclose(from_tables.pred, given.pred)
    from_tables.pred.sum().backward()
    assert model.profile_proj.weight.grad.abs().sum() > 0 and model.profile_skip.weight.grad.abs().sum() > 0


def test_a_gene_in_no_record_gets_its_borrowed_profiles_smf_and_a_prediction(demo):
    # The demo's essential genes have no record at all: predict must serve them from their
    # graph neighbours' profiles and their SMF, leaving every other pair's features as they were.
    dataset, split = demo
    _, tables = profile_features(dataset, split, seed=0)
    physical = dataset.graph.data[PHYSICAL].edge_index
    absent = tables.missing(torch.arange(dataset.graph.num_genes))
    assert len(absent) > 0
    smf = dataset.info["single_mutant_fitness"]
    with_partner = [int(g) for g in absent if torch.isfinite(smf[g]) and (physical[0] == g).any()]
    gene = with_partner[0]
    seen = dataset.table.genes[split.train[:20]]
    pairs = torch.cat([torch.stack([torch.full((20,), gene), seen[:, 1]], 1), seen])  # (40, 2)
    before = tables(pairs)
    assert torch.all(before[:20] == 0)  # no row of its own yet: the train mean everywhere
    covered = tables.cover(dataset, pairs)
    after = covered(pairs)
    assert len(covered.missing(pairs)) == 0
    torch.testing.assert_close(after[20:], before[20:], atol=1e-4, rtol=1e-4)  # other pairs unchanged
    smf_column = FEATURES.index("smf_query")
    assert torch.all(after[:20, smf_column] != 0)  # its own SMF
    assert after[:20, FEATURES.index("physical_query")].abs().sum() > 0  # its physical partners' profiles


def test_predict_serves_a_gene_in_no_record_from_a_checkpoint(demo):
    dataset, split = demo
    cfg = RunConfig().with_overrides({
        "model.kind": "perturbation_set", "model.profile_features": True, "model.num_layers": 1,
        "model.hidden_channels": 16, "cell_dataset.learnable_embedding_input_channels": 16,
        "model.prediction_head_config.hidden_channels": 16, "trainer.max_epochs": 1, "trainer.device": "cpu",
    })
    result = train(dataset, split, cfg)
    model, standardiser = load_model(result.best_checkpoint, dataset.graph)
    absent = model.profile_lookup == model.profile_tables.shape[1] - 1
    gene = int(torch.nonzero(absent).flatten()[0])
    pairs = torch.stack([torch.full((8,), gene), dataset.table.genes[split.train[:8], 1]], 1)
    zero_features = model(pairs, None).pred  # before cover: the gene reads the train mean
    pred = predict_genes(model, standardiser, dataset, pairs)
    assert np.isfinite(pred).all() and pred.shape == (8, 2)
    assert not model.profile_lookup[gene] == model.profile_tables.shape[1] - 1  # it has its own row now
    assert not torch.allclose(model(pairs, None).pred, zero_features)


def test_switched_off_inputs_and_profile_dropout_hide_their_columns(demo):
    from torchcell_search.model import build_model
    from torchcell_search.model.collaborative import INPUT_COLUMNS, OWN_PROFILE_COLUMNS

    dataset, _ = demo
    base = {"model.kind": "perturbation_set", "model.profile_features": True, "model.num_layers": 1,
            "model.hidden_channels": 8, "cell_dataset.learnable_embedding_input_channels": 8,
            "model.prediction_head_config.hidden_channels": 8}
    genes = dataset.table.genes[:6]
    profile = torch.randn(6, NUM_PROFILE_FEATURES)
    for name, columns in INPUT_COLUMNS.items():
        torch.manual_seed(0)
        model = build_model(dataset.graph, RunConfig().with_overrides({**base, f"model.input_{name}": False}).model).eval()
        moved = profile.clone()
        moved[:, list(columns)] += 3.0
        torch.testing.assert_close(model(genes, None, moved).pred, model(genes, None, profile).pred)
        other = [c for c in range(NUM_PROFILE_FEATURES) if c not in columns][0]
        moved[:, other] += 3.0
        assert not torch.allclose(model(genes, None, moved).pred, model(genes, None, profile).pred)
    model = build_model(dataset.graph, RunConfig().with_overrides({**base, "model.profile_dropout": 1.0}).model)
    moved = profile.clone()
    moved[:, list(OWN_PROFILE_COLUMNS)] += 3.0
    model.train()
    torch.manual_seed(1)
    a = model(genes, None, moved).pred
    torch.manual_seed(1)
    torch.testing.assert_close(a, model(genes, None, profile).pred)  # hidden in training
    model.eval()
    assert not torch.allclose(model(genes, None, moved).pred, model(genes, None, profile).pred)  # read at inference


def test_a_feature_constant_on_train_is_read_as_zero_not_blown_up():
    # Gene split: a held-out gene's profile neighbours are always empty, so those columns are
    # constant on the train records; a pair of two genes with records must not read them
    # scaled by 1 / (sd ~ 0).
    dataset, split = prepare_data("demo", subset=None, split="gene", seed=0, cache_dir=None)
    train_x, tables = profile_features(dataset, split, seed=0)
    constant = train_x.std(0) == 0
    assert constant.any()
    seen = tables.lookup[dataset.table.genes[split.train[:200]]]
    values = tables.tables[:, seen[:, 0], seen[:, 1]]  # (F, 200)
    assert torch.all(values[constant] == 0)
    assert values.abs().max() < 50


def test_kernel_ridge_weights_match_the_formula_and_lend_only_fit_genes():
    from torchcell_search.model.collaborative import _kernel_ridge_weights

    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 3))
    kernel = x @ x.T + np.eye(7)
    fit = np.array([0, 2, 3, 5])
    got = _kernel_ridge_weights(kernel, fit, 2.0)  # (8, 8)
    expected = kernel[:, fit] @ np.linalg.inv(kernel[np.ix_(fit, fit)] + 2.0 * np.eye(4))
    np.testing.assert_allclose(got[:7, fit], expected, rtol=1e-8, atol=1e-10)
    assert np.all(got[:, [1, 4, 6, 7]] == 0) and np.all(got[7] == 0)  # genes outside the fit lend nothing


def test_smf_similarity_reads_a_genes_fitness_and_gives_unknown_fitness_nothing():
    # Gene split: the SMF-similarity columns of a held-out gene follow its single-mutant
    # fitness (genes about as sick lend their profiles); with its SMF unknown it borrows nothing.
    from torchcell_search.data import annotations

    dataset, split = prepare_data("demo", subset=None, split="gene", seed=0, cache_dir=None)
    columns = [FEATURES.index("smf_similarity_query"), FEATURES.index("smf_similarity_array")]
    genes = dataset.table.genes.numpy()
    held = np.setdiff1d(genes[split.test.numpy()].reshape(-1), genes[split.train.numpy()].reshape(-1))
    smf = dataset.info["single_mutant_fitness"]
    gene = int(next(g for g in held if np.isfinite(float(smf[g]))))
    _, full, lookup = _raw_features(dataset, split, 0)
    row = lookup[gene]
    assert np.abs(full[columns[0], row, :-1]).sum() > 0 and np.abs(full[columns[1], :-1, row]).sum() > 0

    def with_smf(value: float) -> np.ndarray:
        changed = smf.clone()
        changed[gene] = value
        annotations._CACHE.clear()  # the demo's SMF is cached per gene count
        try:
            info = {**dataset.info, "single_mutant_fitness": changed}
            return _raw_features(Dataset(dataset.name, dataset.graph, dataset.table, info), split, 0)[1]
        finally:
            annotations._CACHE.clear()

    moved = with_smf(float(smf[gene]) - 0.3)
    assert not np.allclose(moved[columns[0], row], full[columns[0], row])
    others = [c for c in range(NUM_PROFILE_FEATURES) if c not in columns and not FEATURES[c].startswith("smf")]
    np.testing.assert_allclose(moved[others], full[others], atol=1e-6)  # no other input reads SMF
    unknown = with_smf(float("nan"))
    assert np.all(unknown[columns[0], row] == 0) and np.all(unknown[columns[1], :, row] == 0)
