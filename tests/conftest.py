"""Shared fixtures: the real data mirror, a tiny data directory and fresh PostgreSQL
databases (created and dropped around a test or module).

A missing mirror or server skips the test on a developer machine and fails it under
``CI=true`` (``services.missing_service``).

The writers live in ``datafiles.py`` (import them as ``from datafiles import ...``: several
``conftest`` modules exist, so ``from conftest import`` would be ambiguous).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from datafiles import REAL_DATA_DIR, make_tiny_data_dir
from services import missing_service


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The read-only real data mirror at ``../shared/data`` (``$TORCHCELL_SEARCH_TEST_DATA``)."""
    if not (REAL_DATA_DIR / "graph").is_dir():
        missing_service("the real data mirror", f"no {REAL_DATA_DIR}/graph; clone the repository next to shared/data "
                        f"or set TORCHCELL_SEARCH_TEST_DATA to the mirror")
    return REAL_DATA_DIR


@pytest.fixture(scope="session")
def real_dataset(real_data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The real data set, built once per test session into a temporary cache."""
    from torchcell_search.data.dataset import load_dataset

    return load_dataset(real_data_dir, cache_dir=tmp_path_factory.mktemp("real-cache"))


@pytest.fixture
def tiny_data_dir(tmp_path: Path) -> Path:
    """A fresh tiny data directory (mirror layout) in ``tmp_path / "data"``."""
    return make_tiny_data_dir(tmp_path / "data")


def pytest_configure(config: pytest.Config) -> None:
    # As the CLI does by default: one torch thread per process. The graph kernels gain little
    # from more, and tests that start worker processes would otherwise oversubscribe the cores.
    import torch

    torch.set_num_threads(1)


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
        missing_service("PostgreSQL at 127.0.0.1:5432", f"{str(e).strip().splitlines()[0]} (bash scripts/setup-system.sh starts it)")
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
    """URL of an empty PostgreSQL database that lives for one test (psycopg2 driver named)."""
    with _pg_database() as url:
        yield url


@pytest.fixture(scope="module")
def pg_module_url() -> Iterator[str]:
    """URL of an empty PostgreSQL database shared by one test module."""
    with _pg_database() as url:
        yield url
