"""What an ensemble buys over the best single trial, paired per seed (issue 21, item 3).

For each seed, one study (the recipe and options given, that seed) runs its search and then
the best trial's seed replicas (``--ensemble Kmax --ensemble-diversity seeds``); the stored
predictions are then averaged for every K and both diversities. A gain is the ensemble's
metric minus the best single trial's in the same study (paired); the table prints the mean
+- standard error over seeds. An ensemble that cannot be formed (too few distinct
configurations) is shown as "-" with its reason.

    PYTHONPATH=. python benchmarks/ensemble_gain.py --storage sqlite:////tmp/ens/demo.db \\
        --recipe benchmarks/ensemble-demo.yaml --seeds 0 1 2 --ks 1 3 5
    # real data (slow; see README "Ensembles"):
    PYTHONPATH=. python benchmarks/ensemble_gain.py --storage sqlite:////tmp/ens/real.db \\
        --recipe configs/real-gene.yaml --data ../shared/data --epochs 1 --pruner none --n-trials 3 \\
        --seeds 0 --ks 1 3
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np
import optuna

from torchcell_search.errors import StudyError
from torchcell_search.search.ensemble import ensemble_summary
from torchcell_search.search.study import start_command
from torchcell_search.storage.artifacts import artifacts_dir, open_artifact_store
from torchcell_search.storage.urls import open_storage

_METRICS = ("val/gene_interaction/Pearson", "test/gene_interaction/Pearson", "test/fitness/MSE")


def _run_study(args: argparse.Namespace, seed: int) -> str:
    name = f"{args.prefix}-s{seed}"
    options: dict[str, Any] = {"recipe": args.recipe, "seed": seed, "ensemble": max(args.ks),
                               "ensemble_diversity": "seeds"}
    for key in ("data", "epochs", "pruner", "n_trials"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    start_command(name, args.storage, options, jobs=1)
    return name


def _gains(storage: str, name: str, ks: list[int]) -> dict[tuple[int, str], dict[str, float] | str]:
    rdb = open_storage(storage)
    study = optuna.load_study(study_name=name, storage=rdb)
    cfg = study.user_attrs["torchcell_search"]
    store = open_artifact_store(artifacts_dir(storage, cfg.get("artifacts")))
    out: dict[tuple[int, str], dict[str, float] | str] = {}
    for k in ks:
        for diversity in ("configs", "seeds"):
            try:
                summary = ensemble_summary(study, rdb, store, k=k, diversity=diversity)
            except StudyError as e:
                out[(k, diversity)] = str(e)
                continue
            out[(k, diversity)] = {
                m: summary[m.split("/")[0]][m] - summary["best_single"][m.split("/")[0]][m] for m in _METRICS}
            out[(k, diversity)]["members"] = summary["members"]  # type: ignore[assignment]
            out[(k, diversity)].update({f"ens {m}": summary[m.split("/")[0]][m] for m in _METRICS})
    return out


def _mean_se(values: list[float]) -> str:
    if not values:
        return "-"
    mean = float(np.mean(values))
    se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return f"{mean:+.4f} +- {se:.4f}" if math.isfinite(se) else f"{mean:+.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--storage", required=True)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--data")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--pruner")
    parser.add_argument("--n-trials", type=int)
    parser.add_argument("--prefix", default="ensemble")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--no-train", action="store_true", help="only score studies that exist")
    args = parser.parse_args()
    per_seed = {}
    for seed in args.seeds:
        name = f"{args.prefix}-s{seed}" if args.no_train else _run_study(args, seed)
        per_seed[seed] = _gains(args.storage, name, args.ks)
        for key, row in sorted(per_seed[seed].items()):
            print(f"seed {seed} K={key[0]} {key[1]}: {row}")
    print(f"\npaired gain over the best single trial (ensemble - best), mean +- s.e. over seeds {args.seeds}")
    print(f"{'K':>2} {'diversity':<9} {'n':>2} " + " ".join(f"{m:>28}" for m in _METRICS))
    for k in args.ks:
        for diversity in ("configs", "seeds"):
            rows = [r[(k, diversity)] for r in per_seed.values() if isinstance(r[(k, diversity)], dict)]
            cells = " ".join(f"{_mean_se([r[m] for r in rows]):>28}" for m in _METRICS)
            print(f"{k:>2} {diversity:<9} {len(rows):>2} {cells}")


if __name__ == "__main__":
    main()
