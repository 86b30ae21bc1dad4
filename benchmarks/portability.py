"""Does the default demo training land in the same place on every CPU rounding path?

Runs ``torchcell-search train --data demo --json`` (plus any ``--set`` overrides) once per
seed and ``ATEN_CPU_CAPABILITY`` in fresh processes, and prints val gene_interaction Pearson
at the best epoch as a seeds x capabilities table, with each seed's spread across the
capabilities (max - min) and the spread across seeds. ``native`` leaves the variable unset
(torch picks the widest vector ISA this CPU has; the table header names it).

The same figure on one machine under several capabilities is the reference: a training run
that is well conditioned gives nearly the same figure on every rounding path, a chaotic one
does not. Each run's JSON summary is kept with ``--out`` for the per-epoch histories.

Run::

    python benchmarks/portability.py                                   # hetero_cell, seeds 0-4
    python benchmarks/portability.py --set model.kind=perturbation_set
    python benchmarks/portability.py --seeds 0 --capabilities default avx2 \\
        --data ../shared/data --split pair --epochs 1 --metric val/gene_interaction/Pearson
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_METRIC = "val/gene_interaction/Pearson"


def _capability_env(capability: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    if capability != "native":
        env["ATEN_CPU_CAPABILITY"] = capability
    return env


def _native_capability() -> str:
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                         capture_output=True, text=True, env=_capability_env("native"), check=True)
    return out.stdout.strip()


def _run(args: argparse.Namespace, seed: int, capability: str) -> dict:
    """One ``train --json`` run in a fresh process; its summary plus the wall time."""
    argv = [sys.executable, "-m", "torchcell_search.cli", "train", "--data", args.data, "--json",
            "--seed", str(seed), "--device", "cpu"]
    if args.split:
        argv += ["--split", args.split]
    if args.epochs:
        argv += ["--epochs", str(args.epochs)]
    argv += [f"--set={item}" for item in args.set]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=_capability_env(capability))
    if done.returncode != 0:
        raise SystemExit(f"seed {seed}, {capability}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    summary = json.loads(done.stdout)
    summary["wall_s"] = time.perf_counter() - started
    return summary


def _table(figures: dict[tuple[int, str], float], seeds: list[int], capabilities: list[str], native: str) -> str:
    names = [f"native ({native.lower()})" if c == "native" else c for c in capabilities]
    lines = ["| seed | " + " | ".join(names) + " | spread |", "|---" * (len(names) + 2) + "|"]
    spreads = []
    for seed in seeds:
        row = [figures[seed, c] for c in capabilities]
        spreads.append(max(row) - min(row))
        lines.append(f"| {seed} | " + " | ".join(f"{v:.3f}" for v in row) + f" | {spreads[-1]:.3f} |")
    values = list(figures.values())
    lines.append(f"\nmin {min(values):.3f}, max {max(values):.3f}; largest spread across capabilities "
                 f"at one seed {max(spreads):.3f}")
    for c, name in zip(capabilities, names):
        column = [figures[s, c] for s in seeds]
        lines.append(f"spread across seeds under {name}: {max(column) - min(column):.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--capabilities", nargs="+", default=["default", "avx2", "native"])
    parser.add_argument("--data", default="demo")
    parser.add_argument("--split", default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--metric", default=_METRIC, help="a key of the summary's 'best'")
    parser.add_argument("--out", type=Path, default=None, help="a JSON-lines file for every run's summary")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at once, each a one-thread process (default: 1; the figures do not depend on it)")
    args = parser.parse_args()

    native = _native_capability()
    figures: dict[tuple[int, str], float] = {}
    cells = [(seed, capability) for seed in args.seeds for capability in args.capabilities]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        runs = pool.map(lambda cell: (cell, _run(args, *cell)), cells)
        for (seed, capability), summary in runs:
            figures[seed, capability] = summary["best"][args.metric]
            print(f"seed {seed} {capability}: {args.metric} {figures[seed, capability]:.4f} "
                  f"(best epoch {summary['best_epoch']}, {summary['wall_s']:.0f} s)", flush=True)
            if args.out is not None:
                with args.out.open("a") as fh:
                    fh.write(json.dumps({"seed": seed, "capability": capability, "set": args.set, **summary}) + "\n")
    print(f"\n{args.metric} at the best epoch, data {args.data}, --set {' '.join(args.set) or '(defaults)'}")
    print(_table(figures, args.seeds, args.capabilities, native))


if __name__ == "__main__":
    main()
