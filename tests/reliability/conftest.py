"""Fixtures of the reliability tests: real PostgreSQL databases, real worker processes.

- ``pg_url``: a fresh PostgreSQL database per test, dropped even after a server restart;
- ``cli``: run ``torchcell-search`` in a subprocess, as a user or a Slurm task would;
- ``spawn_worker``: start a ``torchcell-search worker`` process against a study;
- ``TINY``: study options of a tiny model on a small demo subset (a trial takes seconds).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PG_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def _admin(sql: str) -> None:
    """Run one statement on a fresh admin connection (a database restart breaks pooled ones)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.pool.NullPool,
                                      connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(sql))
    finally:
        engine.dispose()


@contextlib.contextmanager
def _pg_database() -> Iterator[str]:
    import sqlalchemy

    name = f"tcs_rel_{uuid.uuid4().hex[:12]}"
    try:
        _admin(f'CREATE DATABASE "{name}"')
    except sqlalchemy.exc.OperationalError as e:
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 ({str(e).splitlines()[0]})")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        for _ in range(20):  # the server may still be coming back from a restart test
            try:
                _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                break
            except sqlalchemy.exc.OperationalError:
                time.sleep(0.5)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """URL of an empty PostgreSQL database that lives for one test; skipped without a server."""
    with _pg_database() as url:
        yield url


@pytest.fixture(scope="module")
def pg_module_url() -> Iterator[str]:
    """URL of an empty PostgreSQL database shared by one test module."""
    with _pg_database() as url:
        yield url


#: A one-layer, 8-channel model: one epoch on 200 demo records takes a fraction of a second.
TINY_SPACE = {"parameters": {
    "model.num_layers": {"choices": [1, 2]},
    "model.hidden_channels": 8, "heads": 1, "cell_dataset.learnable_embedding_input_channels": 8,
    "model.prediction_head_config.hidden_channels": 8, "model.pooling": "attentional",
}}
TINY = {"space": TINY_SPACE, "subset": 200, "epochs": 2, "device": "cpu", "overrides": {"data_module.batch_size": 64}}

#: Environment of every child process: one BLAS thread (2 shared cores), fast heartbeats.
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def child_env(storage: str | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, **CHILD_ENV, **extra}
    env.pop("TORCHCELL_SEARCH_STORAGE", None)
    if storage is not None:
        env["TORCHCELL_SEARCH_STORAGE"] = storage
    return env


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess]:
    """``cli(*args, storage=url, env={...}, timeout=s)``: the real command line in a subprocess."""

    def run(*args: str, storage: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "torchcell_search.cli", *args], capture_output=True,
                              text=True, timeout=timeout, env=child_env(storage, **(env or {})), cwd=cwd)

    return run


@pytest.fixture
def spawn_worker() -> Iterator[Callable[..., subprocess.Popen]]:
    """``spawn_worker(study, storage, **env)``: a worker process; any left running is killed at teardown."""
    procs: list[subprocess.Popen] = []

    def spawn(study: str, storage: str, **env: str) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-m", "torchcell_search.cli", "worker", "--study", study],
                             env=child_env(storage, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        procs.append(p)
        return p

    yield spawn
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)
