"""Fixtures of the reliability tests: real PostgreSQL databases, real worker processes.

- ``pg_url`` / ``pg_module_url`` (from tests/conftest.py): fresh PostgreSQL databases;
- ``cli``: run ``torchcell-search`` in a subprocess, as a user or a Slurm task would;
- ``spawn_worker``: start a ``torchcell-search worker`` process against a study;
- ``TINY``: study options of a tiny model on a small demo subset (a trial takes seconds).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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
