"""Races: several processes starting the same new study at once create it exactly once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.reliability.conftest import TINY, child_env
from torchcell_search.search.study import CONFIG_ATTR

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_concurrent_start_on_a_new_name_creates_one_study_within_budget(pg_url: str, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    # A continuous learning rate: the tiny space's 2 points could be spent before the third
    # worker draws (search/duplicates.py then stops the study), which would make the count timing's.
    space.write_text(yaml.safe_dump({"parameters": {**TINY["space"]["parameters"],
                                                    "optimizer.lr": {"low": 1e-3, "high": 1e-2, "log": True}}}))
    argv = [sys.executable, "-m", "torchcell_search.cli", "start", "--study", "race", "--space", str(space),
            "--subset", "200", "--epochs", "1", "--device", "cpu", "--n-trials", "3", "--sampler", "random",
            "--pruner", "none", "--set", "data_module.batch_size=64", "--artifacts", str(tmp_path / "art")]
    procs = [subprocess.Popen(argv, env=child_env(pg_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    # every process succeeded: none saw a half-created study
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    studies = optuna.get_all_study_names(storage=pg_url)
    # exactly one study, with its configuration
    assert studies == ["race"]
    study = optuna.load_study(study_name="race", storage=pg_url)
    assert study.user_attrs[CONFIG_ATTR]["n_trials"] == 3
    # the combined trial count stays within the budget; extras never trained
    trials = study.trials
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 3
    assert all(t.user_attrs.get("stopped_reason") == "over_budget" for t in trials if t.state == TrialState.FAIL)
    assert len({t.number for t in trials}) == len(trials)
