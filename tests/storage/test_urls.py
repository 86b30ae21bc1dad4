"""Storage URLs: every form an Optuna user writes, redaction, missing drivers, opening
SQLite and PostgreSQL, and the same URL in Optuna's CLI and optuna-dashboard.

The PostgreSQL tests run against the real server at 127.0.0.1:5432; Optuna's CLI and
optuna-dashboard are the installed programs, run as subprocesses with the user's URL.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from sqlalchemy.engine import Engine, make_url

from torchcell_search.errors import ConfigError, StorageError
from torchcell_search.storage.artifacts import artifacts_dir
from torchcell_search.storage.urls import (
    DB_RETRY_S,
    DEFAULT_STORAGE,
    PG_CONNECT_TIMEOUT_S,
    open_storage,
    redact,
    resolve_storage,
)

_BIN = Path(sys.executable).parent
_ENV = "TORCHCELL_SEARCH_STORAGE"
#: A tiny one-trial study: one epoch of a one-layer model on 200 demo records.
_TINY_CREATE = ["--subset", "200", "--epochs", "1", "--n-trials", "1", "--device", "cpu", "--pruner", "none"]


def test_resolve_storage_defaults_to_sqlite_file() -> None:
    assert resolve_storage(None) == DEFAULT_STORAGE == "sqlite:///torchcell-search.db"
    assert resolve_storage("  ") == DEFAULT_STORAGE


@pytest.mark.parametrize("url", [
    "sqlite:///x.db", "sqlite:////abs/x.db", "postgresql://u@h/db", "postgresql://u:p@h:5432/db",
    "postgresql+psycopg2://u:p@h:5432/db", "postgresql+psycopg://u@h/db", "mysql://u@h/db",
])
def test_every_url_form_passes_unchanged(url: str) -> None:
    # never rewritten: the same string must work in optuna-dashboard and Optuna's CLI
    assert resolve_storage(url) == url


@pytest.mark.parametrize(("url", "match"), [
    ("redis://u:secret@h/0", "scheme 'redis' is not supported"),
    ("postgresql+asyncpg://u:secret@h/db", "driver 'asyncpg' is not supported"),
    ("not a url", "does not parse"),
    ("sqlite://", "in-memory"),
    # SQLAlchemy would end the password at the first '@' and try host 'word@h'
    ("postgresql://u:secret@word@h/db", "raw '@'.*percent-encode it as %40"),
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


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg", "postgresql+psycopg2"])
def test_opening_an_unreachable_postgres_connects_once_with_the_connect_timeout(scheme: str) -> None:
    # What bounds the wait for a dead server: libpq's connect_timeout on one attempt, no retry
    # while opening (the wall-clock figure is benchmarks/bench_fail_fast.py's, not a test's).
    attempts: list[dict] = []

    def record(dialect: object, conn_rec: object, cargs: tuple, cparams: dict) -> None:
        attempts.append(dict(cparams))

    sqlalchemy.event.listen(Engine, "do_connect", record)
    try:
        # port 1 on localhost refuses at once; a password must not leak into the message
        with pytest.raises(StorageError, match=rf"cannot open storage {scheme.replace('+', '.')}://u:\*\*\*@127.0.0.1:1/x") \
                as info:
            open_storage(f"{scheme}://u:hunter2@127.0.0.1:1/x")
    finally:
        sqlalchemy.event.remove(Engine, "do_connect", record)
    assert "hunter2" not in str(info.value)
    assert [a["connect_timeout"] for a in attempts] == [PG_CONNECT_TIMEOUT_S] == [5]


def test_open_sqlite_storage_has_heartbeat_and_retry(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    assert storage.heartbeat_interval == 10 and storage.grace_period == 30
    assert isinstance(storage.heartbeat_stale_trial_callback, optuna.storages.RetryHeartbeatStaleTrialCallback)
    # calls made after opening retry a lost connection for DB_RETRY_S seconds
    assert storage._tcs_retry_s == DB_RETRY_S == 60.0
    assert hasattr(type(storage).get_all_studies, "__wrapped__") and hasattr(type(storage).set_trial_state_values,
                                                                            "__wrapped__")
    optuna.create_study(storage=storage, study_name="x")
    assert [s.study_name for s in storage.get_all_studies()] == ["x"]


def test_retry_window_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHCELL_SEARCH_DB_RETRY_S", "7.5")
    assert open_storage(f"sqlite:///{tmp_path / 's.db'}")._tcs_retry_s == 7.5
    monkeypatch.setenv("TORCHCELL_SEARCH_DB_RETRY_S", "soon")
    with pytest.raises(ConfigError, match="TORCHCELL_SEARCH_DB_RETRY_S"):
        open_storage(f"sqlite:///{tmp_path / 's.db'}")


def test_sqlite_in_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open storage"):
        open_storage(f"sqlite:///{tmp_path / 'missing' / 's.db'}")


def test_artifacts_dir_next_to_sqlite_file(tmp_path: Path) -> None:
    assert artifacts_dir(f"sqlite:///{tmp_path / 'runs.db'}") == tmp_path / "runs-artifacts"
    assert artifacts_dir("postgresql://u@h/db", tmp_path / "a") == tmp_path / "a"
    assert artifacts_dir("postgresql://u@h/db").name == "torchcell-search-artifacts"


# --- a missing driver: exit 2 and the package to install -----------------------------------

_BLOCKER = '''\
import sys

class _Blocked:
    """Makes the named top-level modules unimportable, as if their package were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _Blocked())
'''


@pytest.mark.parametrize(("url", "blocked", "package"), [
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3
    ("postgresql://u:hunter2@127.0.0.1:1/db", "psycopg", "pip install 'psycopg[binary]'"),
    ("postgresql+psycopg://u@127.0.0.1:1/db", "psycopg", "pip install 'psycopg[binary]'"),
    ("postgresql+psycopg2://u@127.0.0.1:1/db", "psycopg2", "pip install 'psycopg2-binary'"),
])
def test_missing_driver_exits_2_naming_the_package(url: str, blocked: str, package: str, tmp_path: Path) -> None:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(_BLOCKER.format(blocked={blocked}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop(_ENV, None)
    r = subprocess.run([sys.executable, "-m", "torchcell_search.cli", "status", "--study", "s", "--storage", url],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    # one line naming the driver and the package, not SQLAlchemy's "Failed to import DB access module"
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("torchcell-search: error: storage URL "), lines
    assert f"driver {blocked!r} is not installed" in lines[0] and lines[0].endswith(package)
    assert "Failed to import" not in r.stderr and "hunter2" not in r.stderr


# --- every URL form against the real server, in our CLI, Optuna's CLI and optuna-dashboard -------


def _run(*argv: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    base = {**os.environ, "OMP_NUM_THREADS": "1"}
    base.pop(_ENV, None)
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300,
                          env={**base, **(env or {})}, cwd=cwd)


def _cli(*args: str, storage: str | None = None, via_env: bool = False, cwd: Path | None = None,
         cache: Path | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "torchcell_search.cli", *args]
    env = {"TORCHCELL_SEARCH_CACHE": str(cache)} if cache else {}
    if storage is not None and via_env:
        env[_ENV] = storage
    elif storage is not None:
        argv += ["--storage", storage]
    return _run(*argv, env=env, cwd=cwd)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dashboard_study_names(url: str) -> list[str]:
    """Start ``optuna-dashboard URL`` and return the study names its API lists."""
    port = _free_port()
    proc = subprocess.Popen([str(_BIN / "optuna-dashboard"), url, "--host", "127.0.0.1", "--port", str(port),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=10) as res:
                    return sorted(s["study_name"] for s in json.load(res)["study_summaries"])
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail(f"optuna-dashboard {redact(url)} did not serve: {proc.communicate()[0][-2000:]}")
                time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def pg_study(pg_module_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A PostgreSQL database holding study ``shared`` with one finished trial; its name and a cache dir."""
    cache = tmp_path_factory.mktemp("cache")
    r = _cli("start", "--study", "shared", *_TINY_CREATE, storage=pg_module_url, cache=cache)
    assert r.returncode == 0, r.stderr[-3000:]
    yield make_url(pg_module_url).database, cache


_FORMS = {
    "bare": "postgresql://postgres@127.0.0.1:5432/{db}",
    "bare-password": "postgresql://postgres:s3cr3t-pw@127.0.0.1:5432/{db}",
    "psycopg": "postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
    "psycopg2": "postgresql+psycopg2://postgres@127.0.0.1:5432/{db}",
    "psycopg2-no-port": "postgresql+psycopg2://postgres:s3cr3t-pw@127.0.0.1/{db}",
}


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize(("form", "via_env"), [(form, False) for form in sorted(_FORMS)]
                         + [("bare-password", True), ("psycopg2", True)])
def test_postgres_url_form_works_here_in_optunas_cli_and_in_optuna_dashboard(
        pg_study: tuple[str, Path], form: str, via_env: bool) -> None:
    db, cache = pg_study
    url = _FORMS[form].format(db=db)
    name = f"{form}-{'env' if via_env else 'flag'}"
    # our CLI creates a study and reads the shared one, with the URL from the flag or the environment
    created = _cli("create", "--study", name, *_TINY_CREATE, storage=url, via_env=via_env, cache=cache)
    assert created.returncode == 0, created.stderr[-3000:]
    status = _cli("status", "--study", "shared", "--json", storage=url, via_env=via_env)
    assert status.returncode == 0, status.stderr[-3000:]
    assert json.loads(status.stdout)["study"]["counts"] == {"COMPLETE": 1}
    # no password in anything our CLI printed
    assert "s3cr3t-pw" not in created.stdout + created.stderr + status.stdout + status.stderr
    # Optuna's own CLI lists both studies and the shared study's trial, from the same URL
    studies = _run(_BIN / "optuna", "studies", "--storage", url, "-f", "json")
    assert studies.returncode == 0, studies.stderr[-3000:]
    assert {"shared", name} <= {s["name"] for s in json.loads(studies.stdout)}
    trials = _run(_BIN / "optuna", "trials", "--study-name", "shared", "--storage", url, "-f", "json")
    assert trials.returncode == 0, trials.stderr[-3000:]
    assert [t["state"] for t in json.loads(trials.stdout)] == ["COMPLETE"]
    # optuna-dashboard serves the same studies from the same URL (once per form)
    if not via_env:
        assert {"shared", name} <= set(_dashboard_study_names(url))


@pytest.mark.slow
@pytest.mark.parametrize("form", ["relative", "absolute", "env-relative"])
def test_sqlite_url_forms_work_here_and_in_optunas_cli(form: str, tmp_path: Path) -> None:
    url = "sqlite:///runs/s.db" if form.endswith("relative") else f"sqlite:///{tmp_path}/runs/s.db"
    assert url.startswith("sqlite:////") == (form == "absolute")
    (tmp_path / "runs").mkdir()
    # a relative path is relative to the working directory, as in Optuna
    created = _cli("create", "--study", "s", *_TINY_CREATE, storage=url, via_env=form.startswith("env"),
                   cwd=tmp_path, cache=tmp_path / "cache")
    assert created.returncode == 0, created.stderr[-3000:]
    assert (tmp_path / "runs" / "s.db").is_file()
    studies = _run(_BIN / "optuna", "studies", "--storage", url, "-f", "json", cwd=tmp_path)
    assert studies.returncode == 0, studies.stderr[-3000:]
    assert [s["name"] for s in json.loads(studies.stdout)] == ["s"]
