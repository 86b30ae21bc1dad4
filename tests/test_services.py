"""The strict-CI rule of ``services.missing_service``: skip on a developer machine, fail under CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

_PROBE = '''\
from services import missing_service

def test_needs_a_service():
    missing_service("PostgreSQL at 127.0.0.1:5432", "connection refused")
'''


@pytest.mark.parametrize(("ci", "outcome"), [("", "1 skipped"), ("true", "1 failed")])
def test_a_missing_service_skips_except_under_ci(tmp_path: Path, ci: str, outcome: str) -> None:
    (tmp_path / "test_probe.py").write_text(_PROBE)
    tests_dir = Path(__file__).resolve().parent
    env = {**os.environ, "CI": ci, "PYTHONPATH": os.pathsep.join(filter(None, [str(tests_dir),
                                                                               os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    # The outcome follows CI, and either way the message names the missing service.
    assert outcome in r.stdout, r.stdout[-2000:]
    assert "PostgreSQL at 127.0.0.1:5432 is missing: connection refused" in r.stdout
    assert (r.returncode != 0) == bool(ci)
