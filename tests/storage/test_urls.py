"""Storage URLs: defaults, scheme validation, redaction, opening SQLite and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest

from torchcell_search.errors import ConfigError, StorageError
from torchcell_search.storage.artifacts import artifacts_dir
from torchcell_search.storage.urls import DEFAULT_STORAGE, open_storage, redact, resolve_storage


def test_resolve_storage_defaults_to_sqlite_file() -> None:
    assert resolve_storage(None) == DEFAULT_STORAGE == "sqlite:///torchcell-search.db"
    assert resolve_storage("  ") == DEFAULT_STORAGE


@pytest.mark.parametrize("url", [
    "sqlite:///x.db", "postgresql://u@h/db", "postgresql+psycopg2://u:p@h:5432/db", "mysql://u@h/db",
])
def test_supported_schemes_pass(url: str) -> None:
    assert resolve_storage(url) == url


@pytest.mark.parametrize(("url", "match"), [
    ("redis://u:secret@h/0", "scheme 'redis' is not supported"),
    ("postgresql+asyncpg://u:secret@h/db", "driver 'asyncpg'"),
    ("not a url", "does not parse"),
    ("sqlite://", "in-memory"),
])
def test_bad_urls_raise_config_error_without_password(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        resolve_storage(url)
    # the password never appears in the message
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+psycopg2://me:s3cr@t@db:5432/s", "postgresql+psycopg2://me:***@db:5432/s"),
    ("postgresql://me@db/s", "postgresql://me@db/s"),
    ("mysql://root:pw@localhost/x", "mysql://root:***@localhost/x"),
    ("sqlite:///torchcell-search.db", "sqlite:///torchcell-search.db"),
])
def test_redact_hides_passwords(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_unreachable_postgres_fails_fast_with_redacted_storage_error() -> None:
    start = time.monotonic()
    # port 1 on localhost refuses at once; a password must not leak into the message
    with pytest.raises(StorageError, match=r"cannot open storage postgresql\+psycopg2://u:\*\*\*@127.0.0.1:1/x") as info:
        open_storage("postgresql+psycopg2://u:hunter2@127.0.0.1:1/x")
    assert "hunter2" not in str(info.value)
    assert time.monotonic() - start < 15


def test_open_sqlite_storage_has_heartbeat_and_retry(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    assert storage.heartbeat_interval == 10 and storage.grace_period == 30
    assert isinstance(storage.heartbeat_stale_trial_callback, optuna.storages.RetryHeartbeatStaleTrialCallback)
    optuna.create_study(storage=storage, study_name="x")
    assert [s.study_name for s in storage.get_all_studies()] == ["x"]


def test_sqlite_in_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open storage"):
        open_storage(f"sqlite:///{tmp_path / 'missing' / 's.db'}")


@pytest.mark.postgres
def test_open_postgres_storage(pg_url: str) -> None:
    storage = open_storage(pg_url)
    optuna.create_study(storage=storage, study_name="pg")
    assert optuna.study.get_all_study_names(storage) == ["pg"]


def test_artifacts_dir_next_to_sqlite_file(tmp_path: Path) -> None:
    assert artifacts_dir(f"sqlite:///{tmp_path / 'runs.db'}") == tmp_path / "runs-artifacts"
    assert artifacts_dir("postgresql://u@h/db", tmp_path / "a") == tmp_path / "a"
    assert artifacts_dir("postgresql://u@h/db").name == "torchcell-search-artifacts"
