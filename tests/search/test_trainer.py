"""The trainer: per-epoch metrics of both labels, best-epoch test metrics, resume, divergence."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from torchcell_search.cli import main
from torchcell_search.config import RunConfig
from torchcell_search.data.types import Dataset, LABELS
from torchcell_search.errors import ConfigError
from torchcell_search.metrics import combined_metrics, regression_metrics
from torchcell_search.search.trainer import (
    EpochRecord,
    load_model,
    objective_direction,
    predict_genes,
    prepare_data,
    train,
)

# A small, fast configuration: the trainer's logic does not depend on model size.
_SMALL = {
    "cell_dataset.learnable_embedding_input_channels": 16,
    "model.hidden_channels": 16,
    "model.prediction_head_config.hidden_channels": 16,
    "model.num_layers": 2,
    "model.pooling": "attentional",
    "trainer.max_epochs": 3,
    "data_module.batch_size": 64,
    "trainer.device": "cpu",
}


@pytest.fixture(scope="module")
def demo():
    return prepare_data("demo", subset=400, split="random", seed=0, cache_dir=None)


def _cfg(**extra):
    return RunConfig().with_overrides({**_SMALL, **extra})


def test_every_epoch_reports_both_labels_on_train_and_val(demo):
    dataset, split = demo
    records: list[EpochRecord] = []
    result = train(dataset, split, _cfg(), epoch_callback=records.append)
    # one record per epoch, each with MSE/Pearson/Spearman for both labels on train and val
    assert [r.epoch for r in records] == [0, 1, 2]
    for record in records:
        for part in ("train", "val"):
            for label in LABELS:
                for metric in ("MSE", "Pearson", "Spearman"):
                    assert math.isfinite(record.metrics[f"{part}/{label}/{metric}"])
        assert record.metrics["embedding/mean_pairwise_distance"] > 0
        assert set(record.histograms) == {"val/fitness", "val/gene_interaction"}
    assert len(result.history) == 3 and result.stopped_reason is None


def test_test_metrics_come_from_the_best_val_epoch_model(demo):
    dataset, split = demo
    result = train(dataset, split, _cfg())
    best_row = result.history[result.best_epoch]
    # the best epoch is the argmax of the objective, and `best` holds that epoch's values
    values = [row["val/gene_interaction/Pearson"] for row in result.history]
    assert result.best_epoch == int(np.argmax(values))
    assert result.best["val/gene_interaction/Pearson"] == best_row["val/gene_interaction/Pearson"]
    # reloading the best checkpoint reproduces the stored test metrics
    model, standardiser = load_model(result.best_checkpoint, dataset.graph)
    pred = predict_genes(model, standardiser, dataset, dataset.table.genes[split.test])
    again = regression_metrics(pred, dataset.table.labels()[split.test], "test")
    again.update(combined_metrics(pred, dataset.table.labels()[split.test], standardiser.mean, standardiser.std, "test"))
    for key, value in result.test.items():
        assert again[key] == pytest.approx(value, rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(pred, result.predictions["test"], rtol=1e-5, atol=1e-6)


def test_same_seed_gives_identical_history(demo):
    dataset, split = demo
    a = train(dataset, split, _cfg(**{"trainer.max_epochs": 2}))
    b = train(dataset, split, _cfg(**{"trainer.max_epochs": 2}))
    drop = ("epoch_seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in a.history] == [
        {k: v for k, v in r.items() if k not in drop} for r in b.history
    ]


def test_resuming_from_a_checkpoint_matches_an_uninterrupted_run(demo):
    dataset, split = demo
    cfg = _cfg(**{"model.dropout": 0.1})
    checkpoints = []
    full = train(dataset, split, cfg, checkpoint_callback=checkpoints.append)
    resumed = train(dataset, split, cfg, checkpoint=checkpoints[0])
    drop = ("epoch_seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed.history] == [
        {k: v for k, v in r.items() if k not in drop} for r in full.history
    ]
    assert resumed.test == full.test


def test_a_checkpoint_of_another_configuration_is_refused(demo):
    dataset, split = demo
    checkpoints = []
    train(dataset, split, _cfg(**{"trainer.max_epochs": 1}), checkpoint_callback=checkpoints.append)
    with pytest.raises(ConfigError, match="different configuration"):
        train(dataset, split, _cfg(**{"trainer.max_epochs": 1, "optimizer.lr": 0.5}), checkpoint=checkpoints[0])


def test_a_non_finite_loss_ends_the_run_with_its_reason(demo):
    dataset, split = demo
    table = dataset.table
    broken = table.select(torch.arange(len(table)))
    # An unscaled outlier label squares past float32's range: the loss overflows to inf.
    broken.gene_interaction[split.train] = 1e30
    cfg = _cfg(**{"regression_task.standardize_labels": False})
    result = train(Dataset(dataset.name, dataset.graph, broken), split, cfg)
    assert result.stopped_reason is not None and result.stopped_reason.startswith("non_finite_loss")
    assert result.history == []


def test_callback_exceptions_propagate_so_the_search_can_prune(demo):
    dataset, split = demo

    class Stop(Exception):
        pass

    def stop_at_one(record: EpochRecord) -> None:
        if record.epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train(dataset, split, _cfg(), epoch_callback=stop_at_one)


def test_objective_direction_follows_the_metric_name():
    assert objective_direction("val/gene_interaction/Pearson") == "maximize"
    assert objective_direction("val/fitness/Spearman") == "maximize"
    assert objective_direction("val/fitness/MSE") == "minimize"


def test_train_command_json(capsys):
    status = main(["train", "--data", "demo", "--subset", "300", "--epochs", "2", "--json",
                   *[f"--set={k}={v}" for k, v in _SMALL.items() if k != "trainer.max_epochs"]])
    assert status == 0
    out = json.loads(capsys.readouterr().out)
    assert {"best_epoch", "best", "test", "history"} <= set(out)
    assert len(out["history"]) == 2
    assert "test/gene_interaction/Pearson" in out["test"]


def test_train_command_rejects_unknown_keys_with_exit_2(capsys):
    assert main(["train", "--set", "model.depth=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.depth" in err


@pytest.mark.parametrize("kind", ["hetero_cell", "perturbation_set"])
def test_default_demo_run_learns_the_planted_interactions(capsys, kind):
    # The must-show of `torchcell-search train --data demo --json`: its defaults (6 epochs,
    # SGA roles on) fit the demo's planted gene_interaction structure (hetero_cell ~75 s).
    status = main(["train", "--data", "demo", "--json", "--device", "cpu", f"--set=model.kind={kind}"])
    assert status == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["history"]) == 6
    assert out["best"]["val/gene_interaction/Pearson"] >= 0.5
    assert out["test"]["test/gene_interaction/Pearson"] >= 0.4
