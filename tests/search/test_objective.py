"""The trial objective: pruning stops a bad trial early; results land in user attrs."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from torchcell_search.search.study import create_study_command, worker_command

TINY_FIXED = {"model.num_layers": 1, "model.hidden_channels": 8, "heads": 1,
              "cell_dataset.learnable_embedding_input_channels": 8,
              "model.prediction_head_config.hidden_channels": 8, "model.pooling": "attentional"}


@pytest.mark.slow
def test_median_pruner_stops_a_bad_trial_before_its_last_epoch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    epochs = 4
    create_study_command("prune", url, {
        "space": {"parameters": {**TINY_FIXED, "optimizer.lr": {"choices": [1.0e-3, 5.0]}}},
        "objective": "val/fitness/MSE", "subset": 200, "epochs": epochs, "device": "cpu", "n_trials": 2,
        "pruner": "median", "pruner_startup_trials": 1, "pruner_warmup_epochs": 0,
        "overrides": {"data_module.batch_size": 64, "trainer.lr_schedule": "constant"},
    })
    study = optuna.load_study(study_name="prune", storage=url)
    # a sensible learning rate first, then one far too large (its MSE explodes)
    study.enqueue_trial({"optimizer.lr": 1.0e-3})
    study.enqueue_trial({"optimizer.lr": 5.0})
    worker_command("prune", url)
    good, bad = optuna.load_study(study_name="prune", storage=url).trials
    assert good.state == TrialState.COMPLETE and len(good.intermediate_values) == epochs
    # the bad trial was pruned and its last reported step is before the last epoch
    assert bad.state == TrialState.PRUNED
    assert max(bad.intermediate_values) < epochs - 1
    assert bad.user_attrs["stopped_reason"].startswith("pruned at epoch")


def test_the_studys_direction_picks_the_trials_best_epoch(tmp_path: Path) -> None:
    # --direction minimize on a Pearson objective: the trial's best epoch is the one of the
    # lowest Pearson, not the highest the metric's name would suggest.
    url = f"sqlite:///{tmp_path / 's.db'}"
    create_study_command("dir", url, {
        "space": {"parameters": {**TINY_FIXED}}, "objective": "val/gene_interaction/Pearson",
        "direction": "minimize", "subset": 200, "epochs": 3, "device": "cpu", "n_trials": 1, "pruner": "none",
        "overrides": {"data_module.batch_size": 64},
    })
    worker_command("dir", url)
    (trial,) = optuna.load_study(study_name="dir", storage=url).trials
    values = [row["val/gene_interaction/Pearson"] for row in trial.user_attrs["history"]]
    assert len(set(values)) == len(values)  # distinct values: argmin and argmax differ
    assert trial.user_attrs["best_epoch"] == values.index(min(values))
    assert trial.value == min(values)
