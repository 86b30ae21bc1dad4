"""Storage under load: many worker processes on one PostgreSQL study.

``N`` processes (16 by default) open the study through :func:`open_storage` (heartbeats,
retries: the path every worker takes) and run a trivial objective over a grid of exactly
``trials`` points, the study's budget. Two ways are measured:

- ``service``: the study made by ``torchcell-search create --sampler grid`` (its grid points
  queued as WAITING trials, popped atomically) and the worker's budget rule (a trial
  numbered past the budget ends FAIL ``over_budget`` untrained);
- ``optuna-grid``: Optuna's ``GridSampler`` alone, for comparison.

It reports what must hold under load (exact count, every trial number once, every grid
point exactly once) and prints

- trials per second held by all workers together, and
- the storage overhead per trial: wall time per trial per worker on PostgreSQL beside the
  same objective and sampler in one process with Optuna's in-memory storage (the reference).

Run (a local PostgreSQL with trust auth; a database is created and dropped)::

    python benchmarks/bench_storage.py --workers 16 --trials 160
    python benchmarks/bench_storage.py --json   # one JSON object, as tests/reliability/test_load.py reads
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
import uuid
from collections import Counter
from typing import Any

import optuna
import sqlalchemy

from torchcell_search.storage.urls import open_storage

ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def _worker(url: str, name: str, n: int, mode: str, go: Any, ready: Any) -> None:
    from torchcell_search.search.spaces import SearchSpace
    from torchcell_search.search.study import CONFIG_ATTR, StudyConfig, _make_sampler

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(url)
    if mode == "service":
        cfg = StudyConfig.from_dict(storage.get_study_user_attrs(storage.get_study_id_from_name(name))[CONFIG_ATTR])
        sampler, space = _make_sampler(cfg, seed=os.getpid()), SearchSpace.from_dict(cfg.space)
    else:
        sampler, space = optuna.samplers.GridSampler({"x": list(range(n))}, seed=os.getpid()), None
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        if mode == "service":
            if trial.number >= n:  # the worker's rule: n trials numbered before this one
                study.stop()
                raise _OverBudget(trial.number)
            x = space.suggest(trial)["model.hidden_channels"]
        else:
            x = trial.suggest_categorical("x", list(range(n)))
        return float((x - 7) ** 2)

    ready.release()
    go.wait()
    # The grid sampler stops the study once every point is taken.
    study.optimize(objective, catch=(_OverBudget,))


class _OverBudget(Exception):
    pass


def run_load(url: str, *, workers: int, trials: int, mode: str = "service") -> dict[str, Any]:
    """Run ``workers`` processes over a grid of ``trials`` points; counts and timings."""
    from torchcell_search.search.study import create_study_command

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = f"load-{mode}-{uuid.uuid4().hex[:8]}"
    if mode == "service":
        space = {"parameters": {"model.hidden_channels": {"choices": list(range(1, trials + 1))}}}
        create_study_command(name, url, {"space": space, "sampler": "grid", "n_trials": trials, "epochs": 1})
    else:
        optuna.create_study(study_name=name, storage=open_storage(url))
    ctx = mp.get_context("spawn")
    go, ready = ctx.Event(), ctx.Semaphore(0)
    procs = [ctx.Process(target=_worker, args=(url, name, trials, mode, go, ready)) for _ in range(workers)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()  # imports and connections are not timed
    started = time.perf_counter()
    go.set()
    for p in procs:
        p.join()
    wall = time.perf_counter() - started
    all_trials = optuna.load_study(study_name=name, storage=url).trials
    done = [t for t in all_trials if t.state == optuna.trial.TrialState.COMPLETE]
    points = Counter(next(iter(t.params.values())) for t in done)
    return {
        "mode": mode, "workers": workers, "grid_points": trials, "exit_codes": sorted({p.exitcode for p in procs}),
        "trials": len(all_trials), "complete": len(done),
        "over_budget": sum(t.state == optuna.trial.TrialState.FAIL for t in all_trials),
        "duplicate_numbers": len(all_trials) - len({t.number for t in all_trials}),
        "points_missing": trials - len(points), "points_repeated": sum(c - 1 for c in points.values()),
        "wall_s": wall, "trials_per_s": len(done) / wall, "s_per_trial_per_worker": wall * workers / max(1, len(done)),
    }


def run_reference(trials: int) -> dict[str, Any]:
    """The same objective and grid in one process on Optuna's in-memory storage."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.GridSampler({"x": list(range(trials))}, seed=0))
    started = time.perf_counter()
    study.optimize(lambda t: float((t.suggest_categorical("x", list(range(trials))) - 7) ** 2))
    wall = time.perf_counter() - started
    return {"trials": len(study.trials), "wall_s": wall, "s_per_trial": wall / len(study.trials)}


def _database(admin: str, sql: str) -> None:
    engine = sqlalchemy.create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(sql))
    engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--trials", type=int, default=160, help="grid points = the study's trial budget")
    parser.add_argument("--admin-url", default=ADMIN_URL, help="PostgreSQL URL allowed to create a database")
    parser.add_argument("--modes", default="service,optuna-grid", help="comma-separated: service, optuna-grid")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    db = f"bench_storage_{uuid.uuid4().hex[:8]}"
    _database(args.admin_url, f'CREATE DATABASE "{db}"')
    url = str(sqlalchemy.engine.make_url(args.admin_url).set(database=db))
    try:
        loads = [run_load(url, workers=args.workers, trials=args.trials, mode=m) for m in args.modes.split(",")]
    finally:
        _database(args.admin_url, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    ref = run_reference(args.trials)
    if args.json:
        print(json.dumps({"loads": loads, "in_memory_reference": ref}))
        return 0
    print(f"reference, in-memory storage in one process: {1e3 * ref['s_per_trial']:.2f} ms per trial")
    for load in loads:
        print(f"{load['mode']}: {load['workers']} workers, grid of {load['grid_points']} points on PostgreSQL: "
              f"{load['complete']} complete, {load['over_budget']} over budget (untrained), "
              f"duplicate numbers {load['duplicate_numbers']}, points missing {load['points_missing']}, "
              f"repeated {load['points_repeated']}")
        print(f"  {load['trials_per_s']:.1f} trials/s together; {1e3 * load['s_per_trial_per_worker']:.1f} ms "
              f"per trial per worker (wall {load['wall_s']:.1f} s); storage overhead "
              f"{1e3 * (load['s_per_trial_per_worker'] - ref['s_per_trial']):.1f} ms per trial "
              f"on {os.cpu_count()} CPU cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
