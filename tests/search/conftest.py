"""Fixtures of the search tests: a per-test PostgreSQL database (see tests/storage/conftest.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "_tcs_storage_conftest", Path(__file__).resolve().parents[1] / "storage" / "conftest.py")
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)  # type: ignore[union-attr]

pg_url = _module.pg_url
