"""Storage URLs: resolution, validation, password redaction and the Optuna RDB storage.

Every URL form an Optuna user writes is accepted as written: ``sqlite:///relative.db``,
``sqlite:////absolute.db``, ``postgresql://user[:password]@host[:port]/db`` and its explicit
driver forms ``postgresql+psycopg://`` (psycopg 3) and ``postgresql+psycopg2://``. The URL is
never rewritten, so the same string works in ``optuna-dashboard URL`` and ``optuna studies
--storage URL``: SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3 (2.0 mapped it to
psycopg2), and the package depends on both drivers. A driver that is missing anyway is
reported with the package to install (:func:`check_driver`).

Every URL that reaches a message goes through :func:`redact` first and every driver error
through :func:`scrub` (both in :mod:`torchcell_search.storage.secrets`), so a password in
``postgresql+psycopg2://user:secret@host/db`` or ``...?password=secret`` is never printed. :func:`open_storage` is the
one place that opens a database: it sets heartbeats (a dead worker's trial is marked failed
and retried from its last checkpoint), a connect timeout for PostgreSQL, and turns
SQLAlchemy / Optuna failures into :class:`~torchcell_search.errors.StorageError`.

Storage calls made after the storage opened retry lost connections (a database restart,
a failover) with exponential backoff for up to :data:`DB_RETRY_S` seconds; opening itself
does not retry, so an unreachable database fails a command quickly. Three environment
variables (read here only) tune this for tests and clusters: ``TORCHCELL_SEARCH_HEARTBEAT_S``,
``TORCHCELL_SEARCH_GRACE_S`` and ``TORCHCELL_SEARCH_DB_RETRY_S``.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
import warnings
from typing import Any, Callable

import optuna
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from torchcell_search.errors import ConfigError, StorageError
from torchcell_search.storage.secrets import redact, scrub, true_address

__all__ = [
    "DB_RETRY_S",
    "DEFAULT_STORAGE",
    "GRACE_PERIOD_S",
    "PG_CONNECT_TIMEOUT_S",
    "HEARTBEAT_INTERVAL_S",
    "MAX_RETRY",
    "check_driver",
    "open_storage",
    "redact",
    "resolve_storage",
    "sqlite_path",
]

#: Used when neither ``--storage`` nor ``$TORCHCELL_SEARCH_STORAGE`` is given.
DEFAULT_STORAGE = "sqlite:///torchcell-search.db"
#: A running trial writes a heartbeat this often (seconds) ...
HEARTBEAT_INTERVAL_S = 10
#: ... and is declared dead (failed, then retried) when none came for this long.
GRACE_PERIOD_S = 30
#: A trial whose worker died is retried at most this many times.
MAX_RETRY = 3
#: A storage call that lost its connection is retried with backoff for this long (seconds).
DB_RETRY_S = 60.0
_HEARTBEAT_ENV = "TORCHCELL_SEARCH_HEARTBEAT_S"
_GRACE_ENV = "TORCHCELL_SEARCH_GRACE_S"
_RETRY_ENV = "TORCHCELL_SEARCH_DB_RETRY_S"
_logger = logging.getLogger(__name__)
#: Seconds libpq waits for a PostgreSQL server per address before giving up (opening never retries).
PG_CONNECT_TIMEOUT_S = 5
_SQLITE_BUSY_TIMEOUT_S = 60
_BACKENDS = ("sqlite", "postgresql", "mysql")
# Synchronous PostgreSQL drivers taking libpq's connect_timeout (None: SQLAlchemy's default, psycopg in 2.1).
_PG_DRIVERS = (None, "psycopg", "psycopg2")
# pip package of each driver module SQLAlchemy may import (its dialect's ``driver`` name).
_DRIVER_PACKAGES = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "mysqldb": "mysqlclient",
                    "pymysql": "PyMySQL"}
def resolve_storage(url: str | None) -> str:
    """The storage URL to use: ``url``, or :data:`DEFAULT_STORAGE` when it is ``None`` or empty.

    Raises:
        ConfigError: the URL does not parse, or its scheme is not sqlite, postgresql
            (default driver, psycopg or psycopg2) or mysql.
    """
    url = (url or "").strip() or DEFAULT_STORAGE
    try:
        parsed = make_url(url)
    except Exception as e:  # sqlalchemy.exc.ArgumentError, ValueError on odd ports
        raise ConfigError(f"storage URL {redact(url)!r} does not parse; expected e.g. "
                          f"{DEFAULT_STORAGE} or postgresql://user@host:5432/db") from e
    backend, driver = parsed.get_backend_name(), parsed.drivername.partition("+")[2] or None
    if backend not in _BACKENDS:
        raise ConfigError(f"storage URL {redact(url)!r}: scheme {parsed.drivername!r} is not supported; "
                          f"use sqlite, postgresql or mysql")
    if backend == "postgresql" and driver not in _PG_DRIVERS:
        raise ConfigError(f"storage URL {redact(url)!r}: PostgreSQL driver {driver!r} is not supported "
                          f"(Optuna needs a synchronous one); use postgresql://, postgresql+psycopg:// "
                          f"or postgresql+psycopg2://")
    if true_address(parsed) is not parsed:
        raise ConfigError(f"storage URL {redact(url)!r}: the password holds a raw '@', where SQLAlchemy ends "
                          f"the password; percent-encode it as %40 (urllib.parse.quote(password, safe=''))")
    if backend == "sqlite" and not parsed.database:
        raise ConfigError(f"storage URL {redact(url)!r}: an in-memory SQLite database cannot be shared "
                          f"with workers; name a file, e.g. {DEFAULT_STORAGE}")
    return url


def check_driver(url: str) -> None:
    """Import the database driver SQLAlchemy picks for ``url``, as Optuna will.

    Raises:
        StorageError: the driver module is missing; the one-line message names the pip
            package that provides it (e.g. ``psycopg[binary]`` for a bare ``postgresql://``
            under SQLAlchemy 2.1), instead of SQLAlchemy's "Failed to import DB access module".
    """
    dialect = make_url(url).get_dialect()
    try:
        dialect.import_dbapi()
    except ImportError as e:
        package = _DRIVER_PACKAGES.get(dialect.driver, dialect.driver)
        raise StorageError(f"storage URL {redact(url)}: its {dialect.name} driver {dialect.driver!r} is not "
                           f"installed in this Python environment ({sys.executable}); install it with: "
                           f"pip install '{package}'") from e


def sqlite_path(url: str) -> str | None:
    """The database file of a SQLite URL, ``None`` for other backends."""
    parsed = make_url(url)
    return parsed.database if parsed.get_backend_name() == "sqlite" else None


def _engine_kwargs(url: str) -> dict:
    backend = make_url(url).get_backend_name()
    kwargs: dict = {"pool_pre_ping": True}
    if backend == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    elif backend == "sqlite":
        # Several local workers share one file: wait for the write lock instead of failing.
        kwargs["connect_args"] = {"timeout": _SQLITE_BUSY_TIMEOUT_S}
    return kwargs


def _env_seconds(name: str, default: float, *, integer: bool = False) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = -1
    if not value > 0:
        raise ConfigError(f"${name}={raw!r}: expected a positive {'integer' if integer else 'number'} of seconds")
    return value


def _is_connection_error(e: BaseException) -> bool:
    """True for a lost or refused database connection (worth retrying), false for anything else."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, sqlalchemy.exc.OperationalError) or (
                isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated):
            return True
        e = e.__cause__ or e.__context__
    return False


def _is_unique_violation(e: BaseException | None) -> bool:
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, sqlalchemy.exc.IntegrityError):
            return True
        e = e.__cause__ or e.__context__
    return False


class _RetryingRDBStorage(optuna.storages.RDBStorage):
    """An RDB storage whose calls survive a database restart.

    Every public method (and the heartbeat's stale-trial query) retries a lost connection
    with exponential backoff (0.5 s doubling to 8 s) until ``retry_s`` seconds have passed,
    then raises :class:`StorageError`. Only the outermost call of a thread retries, so
    nested calls do not multiply the wait. A write whose commit reached the server just
    before the connection broke may be repeated; Optuna's own writes then either succeed
    again or fail as the trial is already finished.
    """

    def __init__(self, url: str, *, retry_s: float, **kwargs: Any) -> None:
        self._tcs_url = url
        self._tcs_retry_s = retry_s
        super().__init__(url, **kwargs)


_local = threading.local()


def _retrying(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: _RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        if getattr(_local, "depth", 0):
            return method(self, *args, **kwargs)
        deadline, delay = time.monotonic() + self._tcs_retry_s, 0.5
        _local.depth = 1
        try:
            while True:
                try:
                    return method(self, *args, **kwargs)
                except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
                    if not _is_connection_error(e):
                        raise
                    if time.monotonic() + delay > deadline:
                        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                        raise StorageError(
                            f"storage {redact(self._tcs_url)} unreachable for {self._tcs_retry_s:g} s "
                            f"({method.__name__}): {scrub(first, self._tcs_url)}") from e
                    _logger.warning("storage %s: connection lost in %s; retrying in %.1f s",
                                    redact(self._tcs_url), method.__name__, delay)
                    time.sleep(delay)
                    delay = min(delay * 2, 8.0)
        finally:
            _local.depth = 0

    return wrapper


for _name, _member in list(vars(optuna.storages.RDBStorage).items()):
    if callable(_member) and (not _name.startswith("_") or _name == "_get_stale_trial_ids") and _name not in (
            "remove_session", "upgrade", "get_current_version", "get_head_version", "get_all_versions"):
        setattr(_RetryingRDBStorage, _name, _retrying(_member))

def open_storage(url: str | None) -> optuna.storages.RDBStorage:
    """Open (and create the tables of) the Optuna storage at ``url``.

    Heartbeats are on (:data:`HEARTBEAT_INTERVAL_S`, :data:`GRACE_PERIOD_S`, or
    ``$TORCHCELL_SEARCH_HEARTBEAT_S`` / ``$TORCHCELL_SEARCH_GRACE_S``): a trial whose
    worker stopped beating is marked failed and re-queued up to :data:`MAX_RETRY` times.
    Opening does not retry: libpq waits :data:`PG_CONNECT_TIMEOUT_S` seconds per server
    address, then the command fails; once open, a lost connection is retried for
    :data:`DB_RETRY_S` (``$TORCHCELL_SEARCH_DB_RETRY_S``) seconds.

    Raises:
        ConfigError: the URL or one of the environment variables is invalid.
        StorageError: the driver is missing (the package to install is named), or the
            database cannot be reached or opened.
    """
    url = resolve_storage(url)
    check_driver(url)
    heartbeat = int(_env_seconds(_HEARTBEAT_ENV, HEARTBEAT_INTERVAL_S, integer=True))
    grace = int(_env_seconds(_GRACE_ENV, GRACE_PERIOD_S, integer=True))
    if grace <= heartbeat:
        raise ConfigError(f"heartbeat grace period {grace} s must exceed the heartbeat interval {heartbeat} s "
                          f"(${_GRACE_ENV}, ${_HEARTBEAT_ENV})")
    retry_s = _env_seconds(_RETRY_ENV, DB_RETRY_S)
    for attempt in range(5):
        with warnings.catch_warnings():
            # Heartbeats and the retry callback are marked experimental in Optuna.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return _RetryingRDBStorage(
                    url,
                    retry_s=retry_s,
                    engine_kwargs=_engine_kwargs(url),
                    heartbeat_interval=heartbeat,
                    grace_period=grace,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=MAX_RETRY
                    ),
                )
            except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.OptunaError, ImportError, OSError) as e:
                if _is_unique_violation(e) and attempt < 4:
                    # Processes opening a fresh database at once race to create its tables
                    # (PostgreSQL: duplicate pg_type entries); the loser retries and finds them.
                    time.sleep(0.2 * (attempt + 1))
                    continue
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise StorageError(f"cannot open storage {redact(url)}: {scrub(first, url)}") from e
    raise AssertionError("unreachable")  # the loop returns or raises
