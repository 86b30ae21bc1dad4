"""Every way a PostgreSQL password is written into a storage URL, shared by the unit tests of
storage/secrets.py (tests/storage/test_secrets.py) and the end-to-end leak test that runs every
command with each form against the real server (tests/reliability/test_secret_leaks.py)."""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus

_PG = "postgresql://postgres{userinfo}@127.0.0.1:{port}/{db}{query}"

#: name -> (secret, how it is written into the URL). Every secret is made of 4-5 character
#: tokens found nowhere else, so a leak of any piece of it is found (:func:`fragments`).
PASSWORD_FORMS: dict[str, tuple[str, str]] = {
    "plain": ("Pl4nQx7Vw", "userinfo"),
    "slash": ("Sl4Qx/Wv7Z/Kp2M", "userinfo"),
    "space": ("Sp4Qx Wv7Z Kp2M", "userinfo"),
    "colon-question-hash": ("Cq4Qx:Wv7Z?Kp2M#Jn5R", "userinfo"),
    "percent-encoded-at-slash-space": ("At4Qx@Wv7Z/Kp2M Jn5R", "userinfo-encoded"),
    "psycopg2-percent-encoded": ("Pg4Qx/Wv7Z%Kp2M", "userinfo-encoded-psycopg2"),
    "query-password": ("Qy4Qx Wv7Z/Kp2M&Jn5R", "query"),
    "query-after-sslmode": ("Qs4QxWv7Z", "query-sslmode"),
    # refused with exit 2: SQLAlchemy would end the password at the raw '@' ...
    "raw-at": ("Ra4Qx@Wv7Z", "userinfo"),
    # ... and SQLAlchemy does not read a libpq key=value conninfo string at all
    "libpq-conninfo": ("Ci4Qx Wv7Z", "conninfo"),
}
#: Forms that connect (trust auth takes any password); the others are refused before connecting.
CONNECTING = [name for name in PASSWORD_FORMS if name not in ("raw-at", "libpq-conninfo")]


def form_url(name: str, db: str, port: int = 5432) -> str:
    """The storage URL of database ``db`` with the password written in form ``name``."""
    secret, how = PASSWORD_FORMS[name]
    if how == "userinfo":
        return _PG.format(userinfo=f":{secret}", port=port, db=db, query="")
    if how == "userinfo-encoded":
        return _PG.format(userinfo=f":{quote(secret, safe='')}", port=port, db=db, query="")
    if how == "userinfo-encoded-psycopg2":
        return _PG.replace("postgresql:", "postgresql+psycopg2:").format(
            userinfo=f":{quote(secret, safe='')}", port=port, db=db, query="")
    if how == "query":
        return _PG.format(userinfo="", port=port, db=db, query=f"?password={quote_plus(secret)}")
    if how == "query-sslmode":
        return _PG.format(userinfo="", port=port, db=db, query=f"?sslmode=disable&password={secret}")
    return f"host=127.0.0.1 port={port} dbname={db} user=postgres password='{secret}'"


def fragments(name: str) -> list[str]:
    """The secret of form ``name`` and each of its alphanumeric pieces."""
    secret = PASSWORD_FORMS[name][0]
    return [secret, *re.findall(r"[A-Za-z0-9]{4,}", secret)]


def leaks(name: str, text: str) -> list[str]:
    return [f for f in fragments(name) if f in text]
