"""W&B's hyperband as an Optuna pruner (search/pruners.py), checked against wandb/sweeps' own example."""

from __future__ import annotations

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState

from torchcell_search.search.pruners import WandbHyperbandPruner, wandb_bands


def _run(study: optuna.Study, values: list[float], state: TrialState) -> optuna.trial.FrozenTrial:
    trial = optuna.trial.create_trial(state=state, intermediate_values=dict(enumerate(values)),
                                      value=values[-1] if state == TrialState.COMPLETE else None,
                                      params={}, distributions={})
    study.add_trial(trial)
    return study.trials[-1]


@pytest.mark.parametrize("strict", [True, False])
def test_hyperband_stops_the_runs_wandb_stops(strict: bool) -> None:
    # hyperband_stop_runs' docstring: max_iter 5, eta 2, s 2 (bands 1, 2), loss minimised; of the
    # running runs b, c, d, W&B stops b only (band-2 threshold: sorted([9, 10, 8, 7, 6])[int(0.5 * 5)] = 8).
    study = optuna.create_study(direction="minimize")
    _run(study, [10, 9], TrialState.COMPLETE)
    b = _run(study, [10, 10], TrialState.RUNNING)
    c = _run(study, [10, 8, 8], TrialState.RUNNING)
    d = _run(study, [10, 7, 7], TrialState.RUNNING)
    _run(study, [10, 6, 6], TrialState.COMPLETE)
    pruner = WandbHyperbandPruner([1, 2], 2, strict=strict)
    assert [pruner.prune(study, t) for t in (b, c, d)] == [True, False, False]
    # maximised, values are negated: band-2 threshold -8; strict judges the band-2 value (d's -7 stops),
    # the conservative rule the best so far (d's -10 passes)
    up = optuna.create_study(direction="maximize")
    for t in study.trials:
        up.add_trial(t)
    running = [t for t in up.trials if t.state == TrialState.RUNNING]
    assert [pruner.prune(up, t) for t in running] == [False, False, strict]


def test_hyperband_first_band_waits_for_its_epoch() -> None:
    # bands [3, 9]: the worst trial is not judged before its third epoch, then it is
    study = optuna.create_study(direction="minimize")
    for _ in range(3):
        _run(study, [1.0, 1.0, 1.0], TrialState.COMPLETE)
    pruner = WandbHyperbandPruner([3, 9], 3)
    assert not pruner.prune(study, _run(study, [5.0, 5.0], TrialState.RUNNING))
    assert pruner.prune(study, _run(study, [5.0, 5.0, 5.0], TrialState.RUNNING))



@settings(max_examples=200, deadline=None)
@given(max_iter=st.integers(1, 500), s=st.integers(1, 6), eta=st.sampled_from([2, 3, 4, 2.5]))
def test_max_iter_bands_follow_wandbs_loop(max_iter: int, s: int, eta: float) -> None:
    # hyperband_stopping.py: band /= eta up to s times, stopping below 1, int() each, sorted
    bands = wandb_bands({"max_iter": max_iter, "s": s, "eta": eta})
    assert bands == sorted(bands) and len(bands) <= s and all(b >= 1 for b in bands)
    if bands:
        assert bands[-1] == int(max_iter / eta)
