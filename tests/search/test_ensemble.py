"""Ensembles: which trials are members, their averaged predictions' metrics, predict --ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from torchcell_search.errors import ConfigError, StudyError
from torchcell_search.metrics import regression_metrics
from torchcell_search.search.duplicates import DUPLICATE_ATTR, REPLICA_ATTR
from torchcell_search.search.ensemble import check_ensemble, ensemble_summary, select_members
from torchcell_search.storage.artifacts import open_artifact_store, upload_trial_artifact

_DIST = {"model.num_layers": CategoricalDistribution([1, 2, 3, 4])}


def _add(study: optuna.Study, values: list[float], layers: int, **attrs: object) -> optuna.trial.FrozenTrial:
    study.add_trial(optuna.create_trial(values=values, params={"model.num_layers": layers}, distributions=_DIST,
                                        user_attrs=dict(attrs)))
    return study.trials[-1]


def test_configs_take_the_best_distinct_trials_never_duplicates_or_replicas() -> None:
    study = optuna.create_study(direction="maximize")
    _add(study, [0.2], 1), _add(study, [0.5], 2), _add(study, [0.5], 3)
    _add(study, [0.5], 2, **{DUPLICATE_ATTR: 1}), _add(study, [0.9], 2, **{REPLICA_ATTR: 1}), _add(study, [0.4], 4)
    # by value, ties to the lower number; the duplicate and the replica are no configurations of their own
    assert [t.number for t in select_members(study, 3, "configs")] == [1, 2, 5]
    with pytest.raises(StudyError, match="has 4 complete distinct configuration"):
        select_members(study, 5, "configs")


def test_seeds_take_the_best_trial_and_its_replicas_one_per_seed() -> None:
    study = optuna.create_study(direction="minimize")
    _add(study, [0.3], 1), _add(study, [0.1], 2)
    _add(study, [0.2], 2, **{REPLICA_ATTR: 2}), _add(study, [0.0], 2, **{REPLICA_ATTR: 1})
    _add(study, [0.0], 2, **{REPLICA_ATTR: 1, DUPLICATE_ATTR: 3}), _add(study, [0.0], 1, **{REPLICA_ATTR: 3})
    # the anchor, then replicas of ITS configuration by seed; another configuration's replica is not one
    assert [t.number for t in select_members(study, 3, "seeds")] == [1, 3, 2]
    with pytest.raises(StudyError, match=r"trial 1 has 2 trained seed replica\(s\); run .*--ensemble 4"):
        select_members(study, 4, "seeds")


def test_a_multi_objective_ensemble_takes_the_pareto_set_first() -> None:
    study = optuna.create_study(directions=["minimize", "maximize"])
    _add(study, [0.3, 0.5], 1), _add(study, [0.1, 0.1], 2), _add(study, [0.4, 0.4], 3), _add(study, [0.2, 0.6], 4)
    # Pareto set {1, 3, 0} by the first objective, then the dominated trial 2
    assert [t.number for t in select_members(study, 4, "configs")] == [1, 3, 0, 2]


@pytest.mark.parametrize("k, diversity, match", [(0, "configs", "--ensemble"), (True, "configs", "--ensemble"),
                                                 (2, "near", "--ensemble-diversity")])
def test_bad_ensemble_options_are_config_errors(k: object, diversity: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        check_ensemble(k, diversity)


def test_the_ensemble_scores_the_mean_of_its_members_stored_predictions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(storage=url, direction="maximize")
    store = open_artifact_store(tmp_path / "art")
    rng = np.random.default_rng(0)
    label = {p: rng.normal(size=(40, 2)) for p in ("val", "test")}
    preds = []
    for i, value in enumerate([0.1, 0.3, 0.2]):
        trial = study.ask(_DIST)  # artifacts attach to a running trial
        pred = {p: label[p] + rng.normal(scale=1.0, size=(40, 2)) for p in ("val", "test")}  # independent errors
        preds.append(pred)
        path = tmp_path / "predictions.npz"
        np.savez(path, **{f"{p}_{k}": v for p in ("val", "test") for k, v in
                          (("index", np.arange(40)), ("label", label[p]), ("pred", pred[p]))},
                 train_mean=np.zeros(2), train_std=np.ones(2))
        upload_trial_artifact(store, trial, path)
        study.tell(trial, value)
    summary = ensemble_summary(study, study._storage, store, k=3, diversity="configs")
    assert summary["members"] == [1, 2, 0] and summary["best_single"]["trial"] == 1
    mean = np.mean([p["test"] for p in preds], axis=0)
    expected = regression_metrics(mean, label["test"], "test")
    for name, value in expected.items():
        assert summary["test"][name] == pytest.approx(value)
    assert summary["test"]["test/combined/MSE"] == pytest.approx(np.mean((mean - label["test"]) ** 2))
    # averaging three independent errors cuts the squared error: the gain is ensemble minus best single
    single = regression_metrics(preds[1]["test"], label["test"], "test")
    assert summary["gain"]["test"]["test/fitness/MSE"] == pytest.approx(expected["test/fitness/MSE"]
                                                                        - single["test/fitness/MSE"])
    assert summary["gain"]["test"]["test/fitness/MSE"] < 0


@pytest.mark.slow
def test_a_seeds_ensemble_is_trained_shown_and_served(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from torchcell_search.cli import main
    from torchcell_search.search.objective import load_study_data
    from torchcell_search.search.predict import predict_command
    from torchcell_search.search.study import build_study_config, start_command

    space = {"parameters": {"model.num_layers": 1, "model.hidden_channels": 8, "heads": 1,
                            "cell_dataset.learnable_embedding_input_channels": 8,
                            "model.prediction_head_config.hidden_channels": 8, "model.pooling": "attentional"}}
    options = {"space": space, "subset": 200, "epochs": 1, "device": "cpu", "n_trials": 1, "pruner": "none",
               "overrides": {"data_module.batch_size": 64}, "ensemble": 3, "ensemble_diversity": "seeds"}
    url = f"sqlite:///{tmp_path / 's.db'}"
    status = start_command("e", url, options, jobs=1)
    trials = optuna.load_study(study_name="e", storage=url).trials
    # the search's one trial, then its two seed replicas: same params, other seeds, other results
    assert [t.user_attrs.get(REPLICA_ATTR) for t in trials] == [None, 1, 2]
    assert [t.user_attrs["config"]["seed"] for t in trials] == [0, 1, 2]
    assert len({t.value for t in trials}) == 3
    assert status["ensemble"]["members"] == [0, 1, 2]
    assert set(status["ensemble"]["val"]) >= {"val/gene_interaction/Pearson", "val/combined/Pearson"}

    ids = load_study_data(build_study_config(options))[0].graph.gene_ids
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("query_orf\tarray_orf\n" + "".join(f"{ids[i]}\t{ids[i + 1]}\n" for i in range(20)))
    # predict serves the study's ensemble by default: the mean of its members' own predictions
    result = predict_command("e", url, pairs=pairs, out=tmp_path / "ens.tsv")
    assert result["trials"] == [0, 1, 2]
    singles = []
    for n in range(3):
        predict_command("e", url, pairs=pairs, out=tmp_path / f"{n}.tsv", trial=n)
        singles.append(np.loadtxt(tmp_path / f"{n}.tsv", skiprows=1, usecols=(2, 3)))
    assert np.allclose(np.loadtxt(tmp_path / "ens.tsv", skiprows=1, usecols=(2, 3)), np.mean(singles, axis=0))
    # the report shows the ensemble beside its best trial
    from torchcell_search.dashboards.report import report_command

    report = report_command("e", url, out=tmp_path / "r.html").read_text(encoding="utf-8")
    table = report[report.index('id="ensemble"'):report.index("</table>", report.index('id="ensemble"'))]
    assert "best trial #0" in table and "ensemble of 3 (seeds): #0, #1, #2" in table
    # status --json shows it; best --ensemble asks for more members than there are: exit 2, one line
    capsys.readouterr()
    assert main(["status", "--study", "e", "--storage", url, "--json", "--ensemble", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["ensemble"]["members"] == [0, 1]
    assert main(["best", "--study", "e", "--storage", url, "--ensemble", "2", "--ensemble-diversity", "configs"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "1 complete distinct configuration" in err[0]
