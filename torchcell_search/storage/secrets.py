"""Secrets in storage URLs: what is secret, and how it is kept out of everything printed.

A storage URL may carry a password in its userinfo (``postgresql://user:pw@host/db``, the
password percent-encoded or not, holding '/', ':', '?', '#' or spaces) or in its query
(``?password=pw``, libpq's URI form). :func:`redact` reads the URL with SQLAlchemy's own
parser, the one that decides what is sent to the database, and shows it with every secret as
``***``; :func:`scrub` removes a URL's secrets from any text (a driver's error may echo a
password or a DSN); :func:`secrets_hidden` sends everything a command prints through
:func:`scrub`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import sys
from typing import Any, Iterable, Iterator, TextIO
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from sqlalchemy.engine import URL, make_url

__all__ = ["redact", "scrub", "secrets_hidden", "true_address"]

# Connection keywords that hold a secret: libpq marks "password" and "sslpassword" as password
# fields (dispchar "*", "Password field - hide value") in PQconninfoOptions, postgres/postgres
# src/interfaces/libpq/fe-connect.c; MySQL's drivers also take "passwd". SQLAlchemy's PostgreSQL
# dialects pass the URL's query to the driver as connect arguments (create_connect_args in
# sqlalchemy/dialects/postgresql/_psycopg_common.py), so ``?password=`` logs in like the userinfo.
_SECRET_KEYS = ("password", "sslpassword", "passwd")
_KEYS = "|".join(_SECRET_KEYS)
# A URL's userinfo password, split as SQLAlchemy splits it (sqlalchemy/sqlalchemy
# lib/sqlalchemy/engine/url.py, _parse_url: the user name runs to the first ':' or '/', the
# password from that ':' to the first '@'), except that this pattern runs to the LAST '@': a raw
# '@' in a password (SQLAlchemy reads the rest as the host) is hidden whole.
_USERINFO_RE = re.compile(r"^(?P<head>[\w+]+://[^:/]*:)(?P<pw>.*)(?P<tail>@)", re.DOTALL)
# In free text (an error, a log line) a URL ends at whitespace.
_TEXT_USERINFO_RE = re.compile(r"(?P<head>[A-Za-z][\w+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<tail>@)")
# ``password=...`` in a URL query (ends at '&') or a libpq conninfo string ("key = value" pairs,
# a value single-quoted with backslash escapes or running to whitespace: conninfo_parse in
# fe-connect.c).
_QUERY_SECRET_RE = re.compile(rf"(?P<head>[?&](?:{_KEYS})=)(?P<pw>[^&#]*)", re.IGNORECASE)
_CONNINFO_SECRET_RE = re.compile(rf"(?P<head>\b(?:{_KEYS})\s*=\s*)(?P<pw>'(?:\\.|[^'\\])*'|[^&\s]*)",
                                 re.IGNORECASE)
_HIDDEN = "***"


def _hide(pattern: re.Pattern[str], text: str) -> str:
    return pattern.sub(lambda m: m["head"] + _HIDDEN + (m.groupdict().get("tail") or ""), text)


def true_address(parsed: URL) -> URL:
    """``parsed`` as its writer meant it when the password holds a raw '@'.

    SQLAlchemy ends the password at its first '@', so the rest of the password lands in the
    host (``u:p@ss@h/db``: host ``ss@h``) or, past a '/', in the database name; the real
    address is what follows the last '@'.
    """
    host, database = parsed.host or "", parsed.database or ""
    if parsed.password is None:
        return parsed
    if "@" in host:
        return parsed.set(host=host.rpartition("@")[2])
    if "@" in database:
        try:
            tail = make_url(f"{parsed.drivername}://{database.rpartition('@')[2]}")
        except Exception:  # noqa: BLE001 - a tail that does not parse: show no address at all
            return parsed.set(host=None, port=None, database="...")
        return parsed.set(host=tail.host, port=tail.port, database=tail.database)
    return parsed


def _secret_values(parsed: URL) -> list[str]:
    """The secrets SQLAlchemy reads from a URL: its password and secret query parameters."""
    values = [str(parsed.password)] if parsed.password else []
    for key, value in parsed.query.items():
        if key.lower() in _SECRET_KEYS:
            values += [v for v in ([value] if isinstance(value, str) else value) if v]
    return values


def redact(url: str) -> str:
    """``url`` with every password replaced by ``***`` (safe to print).

    The URL is read by SQLAlchemy's own parser (:func:`sqlalchemy.engine.make_url`): the
    userinfo password, percent-encoded or not, containing '/', ':', '?' or spaces, and the
    secret query parameters (``password``, ``sslpassword``, ``passwd``) are hidden, and the
    URL is shown as SQLAlchemy renders it (``URL.render_as_string(hide_password=True)``). A URL
    without a secret is returned unchanged. A string SQLAlchemy cannot parse (a libpq
    ``key=value`` conninfo string, a bad port) is redacted by pattern: everything between
    ``scheme://user:`` and the last '@', and every ``password=`` value.

    >>> redact("postgresql+psycopg2://me:secret@db:5432/s")
    'postgresql+psycopg2://me:***@db:5432/s'
    >>> redact("postgresql://me:a/b c@db/s?sslmode=require&password=x%26y")
    'postgresql://me:***@db/s?password=***&sslmode=require'
    >>> redact("host=db password='a b' dbname=s")
    'host=db password=*** dbname=s'
    """
    text = str(url)
    try:
        parsed = make_url(text)
    except Exception:  # noqa: BLE001 - ArgumentError, ValueError on a bad port: redact by pattern
        return _hide(_CONNINFO_SECRET_RE, _hide(_QUERY_SECRET_RE, _hide(_USERINFO_RE, text)))
    if not _secret_values(parsed) and true_address(parsed) is parsed:
        return text
    shown = true_address(parsed)
    rendered = shown.set(query={}).render_as_string(hide_password=True)
    if not shown.query:
        return rendered
    # SQLAlchemy's query rendering (sorted keys, quote_plus), with the secret values hidden.
    pairs = [f"{quote_plus(k)}={_HIDDEN if k.lower() in _SECRET_KEYS else quote_plus(v)}"
             for k in sorted(shown.query) for v in ([shown.query[k]] if isinstance(shown.query[k], str)
                                                    else shown.query[k])]
    return rendered + "?" + "&".join(pairs)


def _secret_forms(url: str | None) -> list[str]:
    """Every way a secret of ``url`` may be written: as parsed, as written, percent-encoded.

    Longest first, so a secret is replaced whole before any shorter form inside it.
    """
    if not url:
        return []
    text, values = str(url), []
    try:
        parsed = make_url(text)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: only the written forms below
        parsed = None
    if parsed is not None:
        values += _secret_values(parsed)
        if true_address(parsed) is not parsed:
            # SQLAlchemy's password is only the part before a raw '@': the whole, as written, is below.
            values.remove(str(parsed.password))
    for pattern in (_USERINFO_RE, _QUERY_SECRET_RE, _CONNINFO_SECRET_RE):
        values += [m["pw"] for m in pattern.finditer(text)]
    forms = set()
    for value in values:
        for form in (value, value.strip("'"), unquote(value), unquote_plus(value)):
            forms |= {form, quote(form, safe=""), quote(form), quote_plus(form)}
    return sorted((f for f in forms if f), key=len, reverse=True)


@functools.lru_cache(maxsize=16)
def _url_secrets(url: str) -> tuple[str, tuple[str, ...]]:
    """:func:`redact`'s form of ``url`` and its secrets' forms (parsed once per URL, not per write)."""
    return redact(url), tuple(_secret_forms(url))


def scrub(text: str, url: str | None) -> str:
    """``text`` (an error message, a log line) with no secret of ``url`` left in it.

    The URL itself, wherever it appears verbatim, becomes :func:`redact`'s form; then every
    form of its secrets (see :func:`_secret_forms`) becomes ``***`` wherever it appears (a
    driver may echo a password, or part of a DSN, on its own); then any other URL password or
    ``password=`` value found by pattern is hidden.
    """
    text = str(text)
    if url:
        shown, forms = _url_secrets(str(url))
        text = text.replace(str(url), shown)
        for form in forms:
            text = text.replace(form, _HIDDEN)
    return _hide(_CONNINFO_SECRET_RE, _hide(_TEXT_USERINFO_RE, text))


class _ScrubbedStream:
    """A text stream that writes everything through :func:`scrub` (all else is delegated)."""

    def __init__(self, stream: TextIO, url: str | None) -> None:
        self._stream, self._url = stream, url

    def write(self, text: str) -> int:
        self._stream.write(scrub(text, self._url))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                     if isinstance(v, logging.Logger))]
    return [h for lg in loggers for h in lg.handlers if type(h) is logging.StreamHandler]


@contextlib.contextmanager
def secrets_hidden(url: str | None) -> Iterator[None]:
    """Within this block, everything Python writes to stdout and stderr goes through :func:`scrub`.

    The last line of defence under every message: log records, warnings, tracebacks and a
    driver's error text that echoes the DSN reach the terminal without ``url``'s secrets, even
    where no message was redacted on purpose. Logging handlers made earlier hold the streams
    themselves (Optuna's library handler keeps the ``sys.stderr`` of its first use), so they
    are pointed at the scrubbed streams too. Everything is restored on exit.
    """
    saved = sys.stdout, sys.stderr
    wrapped = {id(stream): _ScrubbedStream(stream, url) for stream in saved}
    moved = [(h, h.stream) for h in _stream_handlers() if id(h.stream) in wrapped]
    sys.stdout, sys.stderr = (wrapped[id(stream)] for stream in saved)  # type: ignore[assignment]
    for handler, stream in moved:
        handler.setStream(wrapped[id(stream)])  # type: ignore[arg-type]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
        for handler, stream in moved:
            if handler.stream is wrapped[id(stream)]:
                handler.setStream(stream)
