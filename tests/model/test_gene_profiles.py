"""Profile-input genes (model.gene_inputs=profile): train-only inputs, whole-gene dropout without leaks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from torchcell_search.config import RunConfig
from torchcell_search.data.types import Dataset
from torchcell_search.errors import ConfigError
from torchcell_search.model import build_model
from torchcell_search.model.baselines import evaluate_baselines
from torchcell_search.model.gene_profiles import GO_COMPONENTS, NUM_ANNOTATIONS, GeneProfiles, gene_annotations, gene_profiles
from torchcell_search.search.trainer import load_model, predict_genes, prepare_data, train

SMALL = {
    "model.kind": "perturbation_set", "model.gene_inputs": "profile", "model.num_layers": 1,
    "model.hidden_channels": 16, "cell_dataset.learnable_embedding_input_channels": 16,
    "model.prediction_head_config.hidden_channels": 16, "trainer.device": "cpu",
}


@pytest.fixture(scope="module")
def gene_split():
    return prepare_data("demo", subset=None, split="gene", seed=0, cache_dir=None)


def test_profiles_read_train_labels_only(gene_split):
    dataset, split = gene_split
    profiles = gene_profiles(dataset, split)
    held = torch.zeros(len(dataset.table), dtype=torch.bool)
    held[split.val] = held[split.test] = True
    noise = torch.as_tensor(np.random.default_rng(0).normal(size=len(held)), dtype=torch.float32)
    table = dataclasses.replace(dataset.table, gene_interaction=torch.where(held, noise, dataset.table.gene_interaction))
    again = gene_profiles(Dataset(dataset.name, dataset.graph, table, dataset.info), split)
    for name in GeneProfiles.FIELDS:
        assert torch.equal(getattr(again, name), getattr(profiles, name)), name
    # Held-out genes of the gene split have no profile row; every train gene has one.
    train_genes = dataset.table.genes[split.train].unique()
    assert torch.equal(profiles.ids, train_genes)
    moved = dataclasses.replace(dataset.table, gene_interaction=torch.where(~held, noise, dataset.table.gene_interaction))
    assert not torch.equal(gene_profiles(Dataset(dataset.name, dataset.graph, moved, dataset.info), split).matrix,
                           profiles.matrix)


def test_a_hidden_genes_records_reach_no_input_and_no_prediction(gene_split, monkeypatch):
    # Rewriting every cell of a hidden gene's row and column leaves every gene's input and
    # every pair's prediction (borrowed entries included) as they were.
    dataset, split = gene_split
    model = build_model(dataset.graph, RunConfig().with_overrides(SMALL).model).eval()
    profiles = gene_profiles(dataset, split)
    model.set_gene_profiles(profiles)
    P = len(profiles.ids)
    visible = torch.ones(P + 1, dtype=torch.bool)
    visible[P] = False
    visible[3] = False
    monkeypatch.setattr(model, "_visible_profiles", lambda: visible)
    genes = dataset.table.genes[split.train]
    before_input, before = model._gene_input(model._shown(visible)), model(genes, None).pred
    changed = profiles.matrix.clone()
    changed[3, :] = 7.0
    changed[:, 3] = -7.0
    observed = profiles.observed.clone()
    observed[3, :] = observed[:, 3] = True
    model.set_gene_profiles(dataclasses.replace(profiles, matrix=changed, observed=observed))
    torch.testing.assert_close(model._gene_input(model._shown(visible)), before_input, rtol=0, atol=0)
    torch.testing.assert_close(model(genes, None).pred, before, rtol=0, atol=0)
    visible[3] = True  # shown, the same rewrite moves inputs and predictions
    assert not torch.allclose(model._gene_input(model._shown(visible)), before_input)
    assert not torch.allclose(model(genes, None).pred, before)


@pytest.mark.parametrize("kind", ["perturbation_set", "hetero_cell"])
def test_training_scores_only_records_with_a_hidden_gene(gene_split, kind):
    from torchcell_search.data.masks import MaskBuilder

    dataset, split = gene_split
    model = build_model(dataset.graph, RunConfig().with_overrides({**SMALL, "model.kind": kind,
                                                                   "model.pooling": "attentional"}).model)
    model.set_gene_profiles(gene_profiles(dataset, split))
    genes = dataset.table.genes[split.train[:512 if kind == "perturbation_set" else 16]]
    masks = MaskBuilder(dataset.graph).masks(genes) if kind == "hetero_cell" else None
    torch.manual_seed(0)
    out = model.train()(genes, masks)
    assert out.scored is not None and 0 < out.scored.float().mean() < 1
    torch.manual_seed(0)
    visible = model._visible_profiles()  # the same draw
    rows = model.gene_profile_rows[genes]
    assert torch.equal(out.scored, ~visible[rows].all(1))
    assert model.eval()(genes, masks).scored is None
    embeddings = model.train().gene_embeddings()  # the oversmoothing check: every train profile shown
    torch.testing.assert_close(embeddings, model.eval().gene_embeddings())


@pytest.mark.quality
def test_trains_on_the_gene_split_and_predicts_from_a_checkpoint(gene_split):
    dataset, split = gene_split
    wide = {"model.hidden_channels": 64, "cell_dataset.learnable_embedding_input_channels": 64,
            "model.prediction_head_config.hidden_channels": 64, "trainer.max_epochs": 6}
    result = train(dataset, split, RunConfig().with_overrides({**SMALL, **wide}))
    # Held-out genes (no profile of their own) beat every baseline on the same split: the
    # network rebuilds their profiles from lenders, neighbours and annotations.
    baselines = evaluate_baselines(dataset, split, seed=0)
    best_baseline = max(m["val/gene_interaction/Pearson"] for m in baselines.values())
    assert result.best["val/gene_interaction/Pearson"] > best_baseline + 0.05
    model, standardiser = load_model(result.best_checkpoint, dataset.graph)
    pred = predict_genes(model, standardiser, dataset, dataset.table.genes[split.test])
    np.testing.assert_allclose(pred, result.predictions["test"], rtol=1e-5, atol=1e-6)
    absent = torch.nonzero(model.gene_profile_rows == len(model.gene_profile_ids)).flatten()
    assert len(absent) > 0  # genes with no train record (held out, or in no record) still get predictions
    pairs = torch.stack([absent[:8], dataset.table.genes[split.train[:8], 1]], 1)
    assert np.isfinite(predict_genes(model, standardiser, dataset, pairs)).all()


@pytest.mark.parametrize("dropout", [0.0, 1.0])
def test_profile_inputs_need_a_dropout_strictly_between_0_and_1(gene_split, dropout):
    dataset, _ = gene_split
    with pytest.raises(ConfigError, match="gene_profile_dropout"):
        build_model(dataset.graph, RunConfig().with_overrides({**SMALL, "model.gene_profile_dropout": dropout}).model)


def test_real_annotations_are_go_components_and_smf(real_dataset):
    dataset = real_dataset
    first = gene_annotations(dataset)
    assert first.shape == (dataset.graph.num_genes, NUM_ANNOTATIONS)
    np.testing.assert_allclose(first[:, :GO_COMPONENTS].std(0), 1.0, rtol=1e-4)
    known = first[:, GO_COMPONENTS + 1] == 1
    assert 0.5 < known.mean() < 1.0 and np.all(first[~known, GO_COMPONENTS] == 0)
    np.testing.assert_array_equal(gene_annotations(dataset), first)  # a fixed start vector: the same components


def test_smf_lenders_are_the_train_genes_of_closest_fitness_never_the_gene_itself(gene_split):
    dataset, split = gene_split
    profiles = gene_profiles(dataset, split)
    smf = dataset.info["single_mutant_fitness"].double()
    ids = profiles.ids
    for gene in (int(ids[0]), int(torch.nonzero(profiles.lenders[:, 1, 0] < len(ids)).flatten()[-1])):
        rows = profiles.lenders[gene, 1]
        rows = rows[rows < len(ids)]
        lenders = ids[rows]
        assert gene not in lenders.tolist()
        others = ids[(ids != gene) & torch.isfinite(smf[ids])]
        distance = (smf[others] - smf[gene]).abs()
        assert (smf[lenders] - smf[gene]).abs().max() <= distance.sort().values[len(rows) - 1] + 1e-12
        weights = profiles.lender_weights[gene, 1, : len(rows)].double()
        torch.testing.assert_close(weights, torch.exp(-(smf[lenders] - smf[gene]) ** 2 / 0.02), rtol=1e-5, atol=1e-6)
