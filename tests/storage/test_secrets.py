"""Secrets in storage URLs: every way a password is written is read as SQLAlchemy reads it and
never shown (redact), removed from any text (scrub) and from everything printed (secrets_hidden).

The forms (tests/password_forms.py) are also those the end-to-end test
(tests/reliability/test_secret_leaks.py) runs every command with the real PostgreSQL.
"""

from __future__ import annotations

import logging
import sys
import traceback
import warnings
from urllib.parse import quote, quote_plus

import pytest
from sqlalchemy.engine import make_url

from tests.password_forms import CONNECTING, PASSWORD_FORMS, form_url, leaks
from torchcell_search.storage.secrets import redact, scrub, secrets_hidden

@pytest.mark.parametrize("name", CONNECTING)
def test_each_form_carries_its_secret_as_sqlalchemy_reads_it(name: str) -> None:
    # What the test forms hold is what the driver gets: the userinfo password or ?password=.
    parsed = make_url(form_url(name, "db"))
    assert PASSWORD_FORMS[name][0] in (parsed.password, parsed.query.get("password"))
    assert (parsed.host, parsed.port, parsed.database) == ("127.0.0.1", 5432, "db")


@pytest.mark.parametrize("name", sorted(PASSWORD_FORMS))
def test_redact_hides_every_form_and_keeps_the_address(name: str) -> None:
    shown = redact(form_url(name, "tcs_db"))
    assert not leaks(name, shown), shown
    assert "***" in shown and "127.0.0.1" in shown and "tcs_db" in shown


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://me:a/b c@db:5432/s", "postgresql://me:***@db:5432/s"),
    ("postgresql://me:p%40ss%2Fw@db/s", "postgresql://me:***@db/s"),
    ("postgresql://me@db/s?sslmode=require&password=x%26y", "postgresql://me@db/s?password=***&sslmode=require"),
    ("postgresql://me@db/s?sslpassword=k3y&application_name=a", "postgresql://me@db/s?application_name=a&sslpassword=***"),
    ("postgresql+psycopg2://me:s3cr@t@db:5432/s", "postgresql+psycopg2://me:***@db:5432/s"),
    ("postgresql://me:pw@db:abc/s", "postgresql://me:***@db:abc/s"),
    ("host=db password='a b\\'c' dbname=s", "host=db password=*** dbname=s"),
    ("host=db PASSWORD = plain dbname=s", "host=db PASSWORD = *** dbname=s"),
])
def test_redact_shows_the_url_as_sqlalchemy_renders_it_without_secrets(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize("url", [
    "sqlite:///torchcell-search.db", "sqlite:////abs/dir with space/x.db", "postgresql://me@db/s",
    "postgresql+psycopg://me@db:5432/s?sslmode=require", "postgresql://me@db/na@me", "not a url",
])
def test_redact_leaves_a_url_without_secret_as_written(url: str) -> None:
    assert redact(url) == url


@pytest.mark.parametrize("name", sorted(PASSWORD_FORMS))
def test_scrub_removes_the_secret_wherever_a_message_echoes_it(name: str) -> None:
    url = form_url(name, "tcs_db")
    secret = PASSWORD_FORMS[name][0]
    echoes = [
        f"cannot open {url}: refused",  # the URL verbatim
        f'FATAL: password "{secret}" rejected',  # the secret alone, as parsed
        f"dsn: user=postgres password={quote(secret, safe='')} host=127.0.0.1",  # percent-encoded
        f"dsn: password={quote_plus(secret)}",
        f"connection to postgresql://postgres:{secret}@127.0.0.1/x failed",
    ]
    for text in echoes:
        assert not leaks(name, scrub(text, url)), (text, scrub(text, url))
    # text without the secret is left alone
    assert scrub("port 5432 of 127.0.0.1 refused", url) == "port 5432 of 127.0.0.1 refused"


def test_scrub_without_a_url_still_hides_passwords_found_by_pattern() -> None:
    assert scrub("at postgresql://u:pw@h/db and host=h password=pw2 x", None) == \
        "at postgresql://u:***@h/db and host=h password=*** x"


@pytest.mark.parametrize("name", CONNECTING + ["raw-at"])
def test_everything_printed_inside_secrets_hidden_is_scrubbed(name: str, capfd: pytest.CaptureFixture[str]) -> None:
    url = form_url(name, "tcs_db")
    secret = PASSWORD_FORMS[name][0]
    # A handler made before the block holds the stream itself, as Optuna's library handler does.
    logger = logging.getLogger(f"tests.secrets.{name}")
    handler = logging.StreamHandler(sys.stderr)
    logger.addHandler(handler)
    try:
        with secrets_hidden(url):
            print(f"storage {url}")
            sys.stderr.write(f"driver says: password {secret}\n")
            logger.warning("retrying %s with %s", url, quote(secret, safe=""))
            # the default showwarning's output (pytest records warnings instead of printing them)
            sys.stderr.write(warnings.formatwarning(f"odd URL {url}", UserWarning, __file__, 1))
            try:
                raise RuntimeError(f"engine for {url} failed")
            except RuntimeError:
                traceback.print_exc()
        assert handler.stream is sys.stderr  # restored
    finally:
        logger.removeHandler(handler)
    out = capfd.readouterr()
    assert not leaks(name, out.out + out.err), out
    # each write still arrived, redacted
    assert out.out.count("***") == 1 and out.err.count("***") >= 4 and "Traceback" in out.err

