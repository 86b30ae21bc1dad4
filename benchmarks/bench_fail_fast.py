"""How fast bad input fails a fresh ``torchcell-search`` process, beside the process's own start-up.

The tests assert what makes failing fast possible (one connection attempt with libpq's
``connect_timeout``, no retry while opening; the data readers checking a file before using
it); the wall-clock figures are measured here, never asserted in a test. Each case runs a
fresh process ``--repeats`` times; the reference in the same run is a successful
``torchcell-search status`` of a SQLite study (interpreter start-up, the CLI's imports, opening
a storage), so the ratio shows what the failure itself costs on a machine however loaded.

Cases:
  - ``refused``: PostgreSQL on a port nobody listens on (the server is down);
  - ``blackhole``: a TEST-NET-1 address (192.0.2.1, RFC 5737) that drops packets, bounded by
    the connect timeout (where the network answers "unreachable" it fails at once);
  - ``corrupt-data``: ``start`` on a data directory whose epsilon table is truncated gzip.

Run::

    python benchmarks/bench_fail_fast.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _time(argv: list[str], repeats: int) -> tuple[float, int, str]:
    """Median wall seconds of ``argv`` in fresh processes, its exit status and last stderr line."""
    env = {k: v for k, v in os.environ.items() if k != "TORCHCELL_SEARCH_STORAGE"}
    env["OMP_NUM_THREADS"] = "1"
    times, code, last = [], 0, ""
    for _ in range(repeats):
        started = time.perf_counter()
        r = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
        times.append(time.perf_counter() - started)
        code, last = r.returncode, (r.stderr.strip().splitlines() or [""])[-1]
    return statistics.median(times), code, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from datafiles import make_tiny_data_dir

    cli = [sys.executable, "-m", "torchcell_search.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        corrupt = make_tiny_data_dir(Path(tmp) / "data")
        (corrupt / "costanzo2016" / "nxn_metabolic_epsilon.tsv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
        cases = {
            "reference: status": cli + ["status", "--study", "s", "--storage", f"sqlite:///{tmp}/ok.db"],
            "refused": cli + ["status", "--study", "s", "--storage", "postgresql://postgres@127.0.0.1:1/x"],
            "blackhole": cli + ["status", "--study", "s", "--storage", "postgresql://postgres@192.0.2.1:5432/x"],
            "corrupt-data": cli + ["start", "--study", "s", "--epochs", "1", "--data", str(corrupt),
                                   "--storage", f"sqlite:///{tmp}/s.db"],
        }
        made = subprocess.run(cli + ["create", "--study", "s", "--storage", f"sqlite:///{tmp}/ok.db"],
                              capture_output=True, text=True, timeout=600)
        if made.returncode != 0:
            sys.exit(f"could not create the reference study: {made.stderr[-500:]}")
        reference = None
        print(f"{'case':<22} {'median s':>9} {'x reference':>12} exit  last line")
        for name, argv in cases.items():
            seconds, code, last = _time(argv, args.repeats)
            reference = reference or seconds
            print(f"{name:<22} {seconds:>9.2f} {seconds / reference:>12.2f} {code:>4}  {last[:90]}")


if __name__ == "__main__":
    main()
