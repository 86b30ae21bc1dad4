"""Storage URLs: resolution, validation, password redaction and the Optuna RDB storage.

Every URL that reaches a message goes through :func:`redact` first, so a password in
``postgresql+psycopg2://user:secret@host/db`` is never printed. :func:`open_storage` is the
one place that opens a database: it sets heartbeats (a dead worker's trial is marked failed
and retried from its last checkpoint), a connect timeout for PostgreSQL, and turns
SQLAlchemy / Optuna failures into :class:`~torchcell_search.errors.StorageError`.
"""

from __future__ import annotations

import re
import warnings

import optuna
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from torchcell_search.errors import ConfigError, StorageError

__all__ = [
    "DEFAULT_STORAGE",
    "GRACE_PERIOD_S",
    "HEARTBEAT_INTERVAL_S",
    "MAX_RETRY",
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
_PG_CONNECT_TIMEOUT_S = 5
_SQLITE_BUSY_TIMEOUT_S = 60
_BACKENDS = ("sqlite", "postgresql", "mysql")
_PG_DRIVERS = (None, "psycopg2")
_PASSWORD_RE = re.compile(r"(?P<head>[a-zA-Z0-9+.\-]+://[^:/@\s]*:)(?P<pw>[^/\s]*)(?P<tail>@)")


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to print).

    >>> redact("postgresql+psycopg2://me:secret@db:5432/s")
    'postgresql+psycopg2://me:***@db:5432/s'
    """
    return _PASSWORD_RE.sub(lambda m: m["head"] + "***" + m["tail"], str(url))


def _scrub(text: str, url: str) -> str:
    """Remove the URL's password from any error text (drivers may echo the DSN)."""
    text = redact(text)
    try:
        password = make_url(url).password
    except Exception:  # noqa: BLE001 - an unparsable URL has no password we can find
        password = None
    if password:
        text = text.replace(str(password), "***")
    return text


def resolve_storage(url: str | None) -> str:
    """The storage URL to use: ``url``, or :data:`DEFAULT_STORAGE` when it is ``None`` or empty.

    Raises:
        ConfigError: the URL does not parse, or its scheme is not sqlite, postgresql
            (driver psycopg2) or mysql.
    """
    url = (url or "").strip() or DEFAULT_STORAGE
    try:
        parsed = make_url(url)
    except Exception as e:  # sqlalchemy.exc.ArgumentError, ValueError on odd ports
        raise ConfigError(f"storage URL {redact(url)!r} does not parse; expected e.g. "
                          f"{DEFAULT_STORAGE} or postgresql+psycopg2://user@host:5432/db") from e
    backend, driver = parsed.get_backend_name(), parsed.drivername.partition("+")[2] or None
    if backend not in _BACKENDS:
        raise ConfigError(f"storage URL {redact(url)!r}: scheme {parsed.drivername!r} is not supported; "
                          f"use sqlite, postgresql(+psycopg2) or mysql")
    if backend == "postgresql" and driver not in _PG_DRIVERS:
        raise ConfigError(f"storage URL {redact(url)!r}: PostgreSQL driver {driver!r} is not installed; "
                          f"use postgresql+psycopg2://")
    if backend == "sqlite" and not parsed.database:
        raise ConfigError(f"storage URL {redact(url)!r}: an in-memory SQLite database cannot be shared "
                          f"with workers; name a file, e.g. {DEFAULT_STORAGE}")
    return url


def sqlite_path(url: str) -> str | None:
    """The database file of a SQLite URL, ``None`` for other backends."""
    parsed = make_url(url)
    return parsed.database if parsed.get_backend_name() == "sqlite" else None


def _engine_kwargs(url: str) -> dict:
    backend = make_url(url).get_backend_name()
    kwargs: dict = {"pool_pre_ping": True}
    if backend == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": _PG_CONNECT_TIMEOUT_S}
    elif backend == "sqlite":
        # Several local workers share one file: wait for the write lock instead of failing.
        kwargs["connect_args"] = {"timeout": _SQLITE_BUSY_TIMEOUT_S}
    return kwargs


def open_storage(url: str | None) -> optuna.storages.RDBStorage:
    """Open (and create the tables of) the Optuna storage at ``url``.

    Heartbeats are on (:data:`HEARTBEAT_INTERVAL_S`, :data:`GRACE_PERIOD_S`): a trial whose
    worker stopped beating is marked failed and re-queued up to :data:`MAX_RETRY` times.
    An unreachable PostgreSQL server fails within about 15 seconds.

    Raises:
        ConfigError: the URL is invalid (see :func:`resolve_storage`).
        StorageError: the database cannot be reached or opened.
    """
    url = resolve_storage(url)
    with warnings.catch_warnings():
        # Heartbeats and the retry callback are marked experimental in Optuna.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=_engine_kwargs(url),
                heartbeat_interval=HEARTBEAT_INTERVAL_S,
                grace_period=GRACE_PERIOD_S,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=MAX_RETRY
                ),
            )
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.OptunaError, ImportError, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StorageError(f"cannot open storage {redact(url)}: {_scrub(first, url)}") from e
