"""Faults a days-long search meets: killed and preempted workers, a database restart,
an unreachable database and diverging trials. Real PostgreSQL, real worker processes.

Heartbeats are shortened through ``TORCHCELL_SEARCH_HEARTBEAT_S`` / ``_GRACE_S`` so a dead
worker's trial is noticed in seconds instead of the production 30 s.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from tests.reliability.conftest import TINY, TINY_SPACE, child_env
from torchcell_search.search.duplicates import DUPLICATE_ATTR
from torchcell_search.search.study import create_study_command

pytestmark = [pytest.mark.postgres]

FAST_HEARTBEAT = {"TORCHCELL_SEARCH_HEARTBEAT_S": "1", "TORCHCELL_SEARCH_GRACE_S": "3"}
#: Slower epochs (about a second each on one thread) so a signal lands mid-trial.
SLOW_EPOCHS = {**TINY, "subset": 1500, "epochs": 4, "pruner": "none", "sampler": "random"}
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"worker exited early: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _saved_epoch(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["state"]["epoch"])


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).trials


@pytest.mark.slow
def test_killed_worker_trial_is_failed_by_heartbeat_and_resumed_from_its_checkpoint(
        pg_url: str, tmp_path: Path, spawn_worker) -> None:
    art = tmp_path / "art"
    create_study_command("kill", pg_url, {**SLOW_EPOCHS, "n_trials": 2, "artifacts": str(art)})
    ckpt = art / "epoch-checkpoints" / "kill" / "trial-0.pt"
    a = spawn_worker("kill", pg_url, **FAST_HEARTBEAT)
    _wait_for(ckpt, a)
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=30)
    saved = _saved_epoch(ckpt)
    # the killed trial is still RUNNING: nobody has noticed yet
    assert _trials(pg_url, "kill")[0].state == TrialState.RUNNING
    time.sleep(4)  # past the 3 s grace period

    b = spawn_worker("kill", pg_url, **FAST_HEARTBEAT)
    out, err = b.communicate(timeout=300)
    assert b.returncode == 0, err[-3000:]
    trials = _trials(pg_url, "kill")
    # the killed trial was failed by the heartbeat and retried with the same parameters
    assert trials[0].state == TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].state in _FINISHED
    assert retried[0].params == trials[0].params
    # the retry resumed from the killed trial's last checkpoint, not from epoch 0
    assert retried[0].user_attrs["resumed_from"] == {"trial": 0, "epoch": saved}
    history = retried[0].user_attrs["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert set(retried[0].intermediate_values) == {0, 1, 2, 3}
    # the study still trained exactly its budget (a repeated draw of the 2-point space is
    # answered from its twin for free, see search/duplicates.py), and the checkpoint was cleaned up
    assert sum(t.state in _FINISHED for t in _trained(trials)) == 2
    assert not ckpt.exists()


@pytest.mark.slow
def test_sigterm_preempts_at_the_next_epoch_and_hands_the_trial_back(
        pg_url: str, tmp_path: Path, spawn_worker) -> None:
    art = tmp_path / "art"
    create_study_command("pre", pg_url, {**SLOW_EPOCHS, "n_trials": 1, "artifacts": str(art)})
    ckpt = art / "epoch-checkpoints" / "pre" / "trial-0.pt"
    a = spawn_worker("pre", pg_url, **FAST_HEARTBEAT)
    _wait_for(ckpt, a)
    at_signal = _saved_epoch(ckpt)
    a.send_signal(signal.SIGTERM)
    out, err = a.communicate(timeout=300)
    # a clean stop at the end of the running epoch: status 0, one line saying so
    assert a.returncode == 0, err[-3000:]
    assert "handed back for retry" in err and "Traceback" not in err
    trials = _trials(pg_url, "pre")
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["stopped_reason"] == "preempted"
    # it stopped at the next epoch boundary: after the last checkpoint seen before the signal,
    # at most the epoch then running was finished and reported
    assert len(trials[0].intermediate_values) <= at_signal + 2
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].system_attrs["retry_history"] == [0]
    saved = _saved_epoch(ckpt)  # kept for the retry

    b = spawn_worker("pre", pg_url, **FAST_HEARTBEAT)
    out, err = b.communicate(timeout=300)
    assert b.returncode == 0, err[-3000:]
    trials = _trials(pg_url, "pre")
    finished = [t for t in trials if t.state in _FINISHED]
    # the budget of one trial is met by the retry, which resumed after the saved epoch
    assert len(finished) == 1 and finished[0].system_attrs["failed_trial"] == 0
    assert finished[0].user_attrs["resumed_from"] == {"trial": 0, "epoch": saved}
    assert [h["epoch"] for h in finished[0].user_attrs["history"]] == [0, 1, 2, 3]


def _trained(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """``trials`` less duplicates answered from a finished twin (untrained, free of the budget).

    The tiny space has two points, so the random sampler often repeats one; each repeat must
    name a trained twin with the same parameters.
    """
    by_number = {t.number: t for t in trials}
    for t in trials:
        if DUPLICATE_ATTR in t.user_attrs:
            twin = by_number[t.user_attrs[DUPLICATE_ATTR]]
            assert DUPLICATE_ATTR not in twin.user_attrs and twin.params == t.params
    return [t for t in trials if DUPLICATE_ATTR not in t.user_attrs]


def _snapshot(url: str, name: str) -> dict[int, tuple[str, dict[int, float], int]]:
    """trial number -> (state, intermediate values, number of artifacts) for trained finished trials."""
    study = optuna.load_study(study_name=name, storage=url)
    out = {}
    for t in _trained(study.get_trials(states=_FINISHED)):
        metas = optuna.artifacts.get_all_artifact_meta(t, storage=study._storage)
        out[t.number] = (t.state.name, dict(t.intermediate_values), len(metas))
    return out


@pytest.mark.slow
def test_database_restart_loses_nothing(pg_url: str, tmp_path: Path, spawn_worker) -> None:
    art = tmp_path / "art"
    # A continuous learning rate: the tiny space's 2 points would be exhausted after 2 trained
    # trials (search/duplicates.py stops the study), or trained twice when both workers draw one
    # point at once, so the count below would depend on timing.
    space = {"parameters": {**TINY_SPACE["parameters"], "optimizer.lr": {"low": 1e-3, "high": 1e-2, "log": True}}}
    create_study_command("restart", pg_url, {**SLOW_EPOCHS, "space": space, "subset": 800, "epochs": 3,
                                             "n_trials": 4, "artifacts": str(art)})
    workers = [spawn_worker("restart", pg_url, **FAST_HEARTBEAT) for _ in range(2)]
    deadline = time.monotonic() + 180
    # restart once at least one trial finished and others are running
    while not _snapshot(pg_url, "restart"):
        assert all(w.poll() is None for w in workers), [w.communicate()[1][-2000:] for w in workers]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    before = _snapshot(pg_url, "restart")
    restart = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "restart"],
                             capture_output=True, text=True, timeout=60)
    assert restart.returncode == 0, restart.stderr
    outs = [w.communicate(timeout=300) for w in workers]
    # both workers rode out the restart (retrying with backoff) and finished
    assert all(w.returncode == 0 for w in workers), [o[1][-3000:] for o in outs]
    print("storage retries logged:", sum(o[1].count("connection lost") for o in outs))
    after = _snapshot(pg_url, "restart")
    # nothing finished before the restart was lost or changed
    assert {n: after[n] for n in before} == before
    # exactly the budget was trained, each with all its epochs and both artifacts
    assert len(after) == 4
    for state, values, n_artifacts in after.values():
        if state == "COMPLETE":
            assert set(values) == {0, 1, 2} and n_artifacts == 2


def test_unreachable_database_fails_with_one_line(cli) -> None:
    r = cli("status", "--study", "s", storage="postgresql+psycopg2://postgres@127.0.0.1:1/db", timeout=300)
    # exit 2, one readable line, no traceback (how fast: benchmarks/bench_fail_fast.py; what bounds
    # it, the connect timeout and no retry on open: tests/storage/test_urls.py)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "cannot open storage" in r.stderr


DIVERGING_SPACE = {"parameters": {
    **TINY["space"]["parameters"], "model.num_layers": 1,
    "optimizer.lr": {"choices": [1.0e6, 1.0e-3]},
    "trainer.grad_clip": 0.0, "regression_task.standardize_labels": False,
}}


@pytest.mark.slow
def test_diverging_trial_is_pruned_with_its_reason_and_the_worker_goes_on(pg_url: str, tmp_path: Path) -> None:
    create_study_command("nan", pg_url, {**TINY, "space": DIVERGING_SPACE, "sampler": "grid", "n_trials": 2,
                                         "pruner": "none", "artifacts": str(tmp_path / "art")})
    r = subprocess.run([sys.executable, "-m", "torchcell_search.cli", "worker", "--study", "nan"],
                       env=child_env(pg_url), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = {t.params["optimizer.lr"]: t for t in _trials(pg_url, "nan")}
    # lr 1e6 without clipping diverges: pruned, the reason recorded
    assert trials[1.0e6].state == TrialState.PRUNED
    assert trials[1.0e6].user_attrs["stopped_reason"].startswith("non_finite_loss")
    # and the worker went on to train the other grid point
    assert trials[1.0e-3].state == TrialState.COMPLETE


def _saved_rung(path: Path) -> tuple[int, int] | None:
    """(rung, epoch) of a fidelity epoch checkpoint, None while it is missing or being replaced."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError):
        return None
    return int(ckpt["fidelity"]["rung"]), int(ckpt["state"]["epoch"])


@pytest.mark.slow
def test_fidelity_trial_killed_mid_rung_resumes_that_rung_from_its_checkpoint(
        pg_url: str, tmp_path: Path, spawn_worker) -> None:
    art = tmp_path / "art"
    # Trial 0, the first at every rung, is always promoted, so it trains on all three rungs.
    create_study_command("rung-kill", pg_url, {**SLOW_EPOCHS, "n_trials": 2, "artifacts": str(art),
                                               "fidelity": "subset:300,600,all"})
    ckpt = art / "epoch-checkpoints" / "rung-kill" / "trial-0.pt"
    a = spawn_worker("rung-kill", pg_url, **FAST_HEARTBEAT)
    deadline = time.monotonic() + 300
    while not (ckpt.exists() and (_saved_rung(ckpt) or (0, 0))[0] >= 1):
        assert a.poll() is None, f"worker exited early: {a.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, "the trial never reached its second rung"
        time.sleep(0.02)
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=30)
    rung, epoch = _saved_rung(ckpt)
    killed = _trials(pg_url, "rung-kill")[0]
    assert killed.state == TrialState.RUNNING
    first_rung = killed.user_attrs["rungs"][0]
    time.sleep(4)  # past the 3 s grace period

    b = spawn_worker("rung-kill", pg_url, **FAST_HEARTBEAT)
    out, err = b.communicate(timeout=300)
    assert b.returncode == 0, err[-3000:]
    trials = _trials(pg_url, "rung-kill")
    assert trials[0].state == TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    # resumed inside the rung it was killed in, from that rung's last epoch checkpoint
    assert retried[0].user_attrs["resumed_from"] == {"trial": 0, "epoch": epoch}
    rungs = retried[0].user_attrs["rungs"]
    assert [r["rung"] for r in rungs] == [0, 1, 2]
    assert rungs[0] == first_rung  # the finished rung was carried over, not trained again
    assert set(retried[0].intermediate_values) == {300, 600}  # re-reported, the last rung is the value
    assert retried[0].value == rungs[2]["value"]
    # every epoch of every rung once in the history
    history = [(h["rung"], h["epoch"]) for h in retried[0].user_attrs["history"]]
    assert history == [(r, e) for r in range(3) for e in range(4)]
    assert rung in (1, 2) and not ckpt.exists()
