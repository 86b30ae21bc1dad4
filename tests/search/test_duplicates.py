"""No configuration trained twice: duplicates answered from the earlier trial, exhausted spaces stop."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from torchcell_search.search.duplicates import (
    DUPLICATE_ATTR,
    REPLICA_ATTR,
    exhausted_notice,
    finished_twin,
    same_params,
    untried_points,
)
from torchcell_search.search.spaces import parse_space

A, B = "model.num_layers", "model.dropout"
SPACE = parse_space({"parameters": {A: {"choices": [1, 2]}, B: {"choices": [0.0, 0.1]}, "heads": 3}}, source="t")
_DIST = {A: CategoricalDistribution([1, 2]), B: CategoricalDistribution([0.0, 0.1])}


def _trial(number: int, state: TrialState, a: int, b: float, **attrs: object) -> optuna.trial.FrozenTrial:
    trial = optuna.create_trial(state=state, value=0.5 if state == TrialState.COMPLETE else None,
                                params={A: a, B: b}, distributions=_DIST, user_attrs=dict(attrs))
    trial.number = number
    return trial


def test_same_params_needs_equal_keys_and_values() -> None:
    assert same_params({"a": 1, "b": 0.3}, {"b": 0.1 + 0.2, "a": 1})
    # another value, another key, or a float far from the other is a different configuration
    assert not same_params({"a": 1, "b": 0.1}, {"a": 2, "b": 0.1})
    assert not same_params({"a": 1}, {"a": 1, "b": 0.1})
    assert not same_params({"b": 0.1}, {"b": 0.10001})


def test_a_finished_trial_at_the_same_seed_is_the_twin_but_a_seed_replica_is_not() -> None:
    trials = [_trial(0, TrialState.COMPLETE, 1, 0.0), _trial(1, TrialState.RUNNING, 2, 0.0),
              _trial(2, TrialState.PRUNED, 2, 0.1), _trial(3, TrialState.FAIL, 1, 0.1),
              _trial(4, TrialState.COMPLETE, 1, 0.0, **{REPLICA_ATTR: 7})]
    assert finished_twin(trials, {A: 1, B: 0.0}, 0, study_seed=0).number == 0
    # a pruned trial is finished; a running or failed one is not
    assert finished_twin(trials, {A: 2, B: 0.1}, 0, study_seed=0).number == 2
    assert finished_twin(trials, {A: 2, B: 0.0}, 0, study_seed=0) is None
    assert finished_twin(trials, {A: 1, B: 0.1}, 0, study_seed=0) is None
    # the same configuration under another seed (a replica) is no duplicate; the replica's own seed twin is
    assert finished_twin(trials, {A: 1, B: 0.0}, 5, study_seed=0) is None
    assert finished_twin(trials, {A: 1, B: 0.0}, 7, study_seed=0).number == 4


def test_untried_points_and_the_exhausted_notice() -> None:
    trials = [_trial(0, TrialState.COMPLETE, 1, 0.0), _trial(1, TrialState.PRUNED, 2, 0.1),
              _trial(2, TrialState.COMPLETE, 1, 0.1, **{REPLICA_ATTR: 1})]
    # the replica holds no point of the study seed's search
    assert untried_points(SPACE, trials, 0) == [{A: 2, B: 0.0}, {A: 1, B: 0.1}]
    assert exhausted_notice(SPACE, trials, 0) is None
    done = trials + [_trial(3, TrialState.COMPLETE, 1, 0.1), _trial(4, TrialState.PRUNED, 2, 0.0)]
    assert exhausted_notice(SPACE, done, 0) == "all 4 configurations of the space are done"
    # a space with a float range has no grid: never exhausted
    ranged = parse_space({"parameters": {"optimizer.lr": {"low": 1e-4, "high": 1e-2}}}, source="t")
    assert untried_points(ranged, done, 0) is None and exhausted_notice(ranged, done, 0) is None


@pytest.mark.slow
def test_a_tiny_discrete_space_trains_each_point_once_then_stops(tmp_path: Path) -> None:
    from torchcell_search.search.study import create_study_command, format_status, start_command

    url = f"sqlite:///{tmp_path / 's.db'}"
    space = {"parameters": {"model.num_layers": {"choices": [1, 2]}, "model.hidden_channels": 8, "heads": 1,
                            "cell_dataset.learnable_embedding_input_channels": 8,
                            "model.prediction_head_config.hidden_channels": 8, "model.pooling": "attentional"}}
    options = {"space": space, "subset": 200, "epochs": 1, "device": "cpu", "n_trials": 6, "pruner": "none",
               "overrides": {"data_module.batch_size": 64}}
    create_study_command("dup", url, options)
    # a budget of 6 trials in a 2-point space, and the same point suggested twice in a row
    for _ in range(2):
        optuna.load_study(study_name="dup", storage=url).enqueue_trial({"model.num_layers": 1})
    status = start_command("dup", url, options, jobs=1)
    trials = optuna.load_study(study_name="dup", storage=url).trials
    assert trials[1].user_attrs[DUPLICATE_ATTR] == 0 and "seconds" in trials[1].user_attrs
    trained = [t for t in trials if t.state == TrialState.COMPLETE and DUPLICATE_ATTR not in t.user_attrs]
    # each point trained exactly once ...
    assert sorted(t.params["model.num_layers"] for t in trained) == [1, 2]
    # ... a repeated suggestion copies its twin's value and results and names it ...
    for t in trials:
        if DUPLICATE_ATTR in t.user_attrs:
            twin = trials[t.user_attrs[DUPLICATE_ATTR]]
            assert t.params == twin.params and t.value == twin.value and t.user_attrs["best"] == twin.user_attrs["best"]
    # ... and the study stopped with the notice instead of spending its budget
    assert status["study"]["notice"] == "all 2 configurations of the space are done"
    assert "note: all 2 configurations of the space are done" in format_status(status)
    assert len(trials) < 6
