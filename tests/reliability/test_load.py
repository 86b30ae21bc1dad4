"""Load: 16 worker processes on one PostgreSQL study hold the budget exactly.

Runs ``benchmarks/bench_storage.py`` (a trivial objective through ``open_storage`` and the
study that ``create --sampler grid`` makes) and checks its counts; the timings it prints
are benchmark figures, never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services import missing_service
from tests.reliability.conftest import child_env

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_storage.py"


def test_sixteen_workers_run_each_grid_point_exactly_once() -> None:
    r = subprocess.run([sys.executable, str(BENCH), "--workers", "16", "--trials", "48", "--modes", "service",
                        "--json"], capture_output=True, text=True, timeout=600, env=child_env())
    if r.returncode != 0 and "could not connect" in r.stderr:
        missing_service("PostgreSQL at 127.0.0.1:5432", r.stderr.strip().splitlines()[-1])
    assert r.returncode == 0, r.stderr[-3000:]
    load = json.loads(r.stdout.strip().splitlines()[-1])["loads"][0]
    # every worker exited cleanly
    assert load["exit_codes"] == [0]
    # exactly the budget completed, each trial number once, each grid point exactly once
    assert load["complete"] == 48
    assert load["duplicate_numbers"] == 0
    assert load["points_missing"] == 0 and load["points_repeated"] == 0
    # extra trials are the ones that lost the race for the last slot: at most one per worker
    assert load["trials"] - load["complete"] == load["over_budget"] <= 16
