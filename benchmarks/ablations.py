"""Ablations of report 003's hypotheses on gene_interaction, on the real data.

Each row switches ONE hypothesis against a fixed base configuration (everything else
unchanged) and trains it on the pair and gene splits for several seeds; the table gives
mean +- sd of test gene_interaction Pearson (taken at the best-val epoch, never a maximum
over epochs) with the baselines (additive, role-aware / role-blind matrix factorisation)
fitted on the same subset and split beside them.

    python benchmarks/ablations.py /work/shared/data --quick --rows base roles_off --splits pair
    python benchmarks/ablations.py /work/shared/data                      # everything (GPU-sized)
    python benchmarks/ablations.py /work/shared/data --table-only         # print the table from --results
    python benchmarks/ablations.py /work/shared/data --splits gene --readout linear --rows base smf_off go_off

Every finished run is appended to ``--results`` (JSON lines) at once, so an interrupted
sweep resumes where it stopped (runs already there are skipped) and runs from several
invocations (or machines) combine into one table. ``--quick`` is a smoke mode: fewer
epochs and a smaller subset (the numbers are then far below a full run's).

Seeds: seed ``s`` draws the subset, makes the split and initialises the model, so the sd
covers data sampling, split and initialisation together. The baselines use the same
subset/split per seed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: The fixed base: the recipes' model (configs/real-pair.yaml): perturbation-set with SGA
#: roles and profile features, plain MSE on z-scored labels. Each row below changes one thing.
BASE: dict[str, Any] = {
    "model.kind": "perturbation_set",
    "model.use_roles": True,
    "model.profile_features": True,
    "model.num_layers": 1,
    "model.hidden_channels": 64,
    "cell_dataset.learnable_embedding_input_channels": 64,
    "model.prediction_head_config.hidden_channels": 64,
    "model.pooling": "sorted_set_transformer",
    "heads": 1,
    "data_module.batch_size": 2048,
    "optimizer.lr": 3e-3,
    "optimizer.weight_decay": 1e-5,
    "regression_task.lambda_dist": 0.0,
    "regression_task.lambda_supcr": 0.0,
    "regression_task.uncertainty_weighting": False,
    "regression_task.standardize_labels": True,
}

#: Bases over time. 1: issue 13's first base, the 19 profile features (the SMF similarity
#: is the row ``smf_similarity``); 2: the config default, with the SMF similarity. Runs are
#: keyed and tabled per base (``--base-version``), so the older table stays reproducible.
BASE_VERSIONS: dict[int, dict[str, Any]] = {
    1: {"model.input_smf_similarity": False},
    2: {"model.input_smf_similarity": True},
}
BASE_VERSION = 2

#: name -> (hypothesis, overrides on BASE, subset override or "base").
#: ``subset`` None = all records; "base" = the run's --subset.
ROWS: dict[str, tuple[str, dict[str, Any], Any]] = {
    "base": ("base: perturbation_set, roles, profile features, 1 layer, MSE only", {}, "base"),
    "profile_off": ("profile features off (model.profile_features=false)", {"model.profile_features": False}, "base"),
    "roles_off": ("SGA roles off (model.use_roles=false)", {"model.use_roles": False}, "base"),
    "dist_on": ("DistLoss on (lambda_dist=0.1)", {"regression_task.lambda_dist": 0.1}, "base"),
    "supcr_on": ("SupCR on (lambda_supcr=1e-3)", {"regression_task.lambda_supcr": 1e-3}, "base"),
    "dist_supcr_on": ("DistLoss + SupCR (report: 0.1, 1e-3)",
                      {"regression_task.lambda_dist": 0.1, "regression_task.lambda_supcr": 1e-3}, "base"),
    "no_standardise": ("label standardisation off", {"regression_task.standardize_labels": False}, "base"),
    "uncertainty": ("uncertainty weighting on", {"regression_task.uncertainty_weighting": True}, "base"),
    "depth_2": ("depth 2 conv layers", {"model.num_layers": 2}, "base"),
    "depth_3": ("depth 3 conv layers", {"model.num_layers": 3}, "base"),
    # hetero_cell: the report's whole-graph model (z_p = z_w - z_perturbed); ~1 sample/s on CPU.
    "hetero_cell": ("model.kind=hetero_cell (roles and profile features on, sorted_set_transformer)",
                    {"model.kind": "hetero_cell", "data_module.batch_size": 32}, "base"),
    "hetero_cell_attentional": ("hetero_cell, pooling=attentional",
                                {"model.kind": "hetero_cell", "model.pooling": "attentional",
                                 "data_module.batch_size": 32}, "base"),
    "hetero_cell_isab": ("hetero_cell, pooling=isab",
                         {"model.kind": "hetero_cell", "model.pooling": "isab", "data_module.batch_size": 32}, "base"),
    "hetero_cell_sab": ("hetero_cell, pooling=sab",
                        {"model.kind": "hetero_cell", "model.pooling": "sab", "data_module.batch_size": 32}, "base"),
    "hetero_cell_pma": ("hetero_cell, pooling=pma",
                        {"model.kind": "hetero_cell", "model.pooling": "pma", "data_module.batch_size": 32}, "base"),
    # Issue 13, genes without records: each input an unseen gene has, removed in turn.
    "smf_off": ("single-mutant fitness off (model.input_smf=false)", {"model.input_smf": False}, "base"),
    "go_off": ("GO off: GO-similar genes' profiles and the learned similarity (model.input_go=false, "
               "model.input_learned_similarity=false)",
               {"model.input_go": False, "model.input_learned_similarity": False}, "base"),
    "learned_similarity_off": ("learned GO similarity off, top-10 GO neighbours kept",
                               {"model.input_learned_similarity": False}, "base"),
    "go_topk_off": ("top-10 GO neighbours off, learned GO similarity kept", {"model.input_go": False}, "base"),
    "physical_off": ("physical neighbours' profiles off (model.input_physical=false)",
                     {"model.input_physical": False}, "base"),
    "regulatory_off": ("regulatory neighbours' profiles off (model.input_regulatory=false)",
                       {"model.input_regulatory": False}, "base"),
    "metabolic_off": ("shared-reaction genes' profiles off (model.input_metabolic=false)",
                      {"model.input_metabolic": False}, "base"),
    "unseen_inputs_off": ("every input of an unseen gene off (SMF, GO, learned similarity, physical, "
                          "regulatory, metabolic): the pre-issue-13 features minus the graph ones",
                          {"model.input_smf": False, "model.input_go": False, "model.input_learned_similarity": False,
                           "model.input_physical": False, "model.input_regulatory": False,
                           "model.input_metabolic": False}, "base"),
    "profile_dropout": ("profile dropout 0.3 (model.profile_dropout=0.3)", {"model.profile_dropout": 0.3}, "base"),
    "smf_similarity": ("adds the SMF similarity: profiles of genes with similar single-mutant fitness "
                       "(model.input_smf_similarity=true, columns 19-20; the config default)",
                       {"model.input_smf_similarity": True}, "base"),
    # Issue 13: the graph network over genes whose inputs are their train-only profiles
    # (embedded), GO components and SMF, with whole-gene profile dropout (model/gene_profiles.py).
    "gene_profiles": ("graph network over profile-input genes (model.gene_inputs=profile), no pair features",
                      {"model.gene_inputs": "profile", "model.profile_features": False}, "base"),
    "gene_profiles_features": ("profile-input genes and the pair features (model.gene_inputs=profile)",
                               {"model.gene_inputs": "profile"}, "base"),
    "size_25k": ("training-set size: subset 25,000", {}, 25_000),
    "size_100k": ("training-set size: subset 100,000", {}, 100_000),
    "size_all": ("training-set size: all 350,296", {}, None),
}
BASELINE_NAMES = ("additive", "matrix_factorisation", "matrix_factorisation_role_blind")
METRIC = "test/gene_interaction/Pearson"


def _canonical(row: str, subset: Any, base_subset: Any) -> str:
    """A size row at the base subset IS the base run: share its results instead of rerunning."""
    return "base" if row.startswith("size_") and subset == base_subset else row


def _key(row: str, split: str, seed: int, subset: Any, epochs: int, version: int) -> str:
    return f"{row}|{split}|{seed}|{subset}|{epochs}" + ("" if version == 1 else f"|base{version}")


def _base(version: int) -> dict[str, Any]:
    return {**BASE, **BASE_VERSIONS[version]}


def _version(record: dict[str, Any]) -> int:
    return record.get("base_version", 1)  # runs from before the versions were all on base 1


def _load_results(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            out.append(json.loads(line))
    return out


def _append(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _run_one(data: str, row: str, split: str, seed: int, subset: Any, epochs: int, device: str,
             cache_dir: Path | None, version: int) -> dict[str, Any]:
    from torchcell_search.config import RunConfig
    from torchcell_search.search.trainer import prepare_data, train

    _, overrides, _ = ROWS[row]
    values = {**_base(version), **overrides, "seed": seed, "trainer.max_epochs": epochs, "trainer.device": device}
    cfg = RunConfig().with_overrides(values)
    dataset, data_split = prepare_data(data, subset=subset, split=split, seed=seed, cache_dir=cache_dir)
    result = train(dataset, data_split, cfg)
    return {
        "kind": "model", "row": row, "split": split, "seed": seed, "subset": subset, "epochs": epochs,
        "config": cfg.flat(), "best_epoch": result.best_epoch, "test": result.test,
        "val_gi_pearson": result.best.get("val/gene_interaction/Pearson"), "seconds": result.seconds,
        "epoch_seconds": [h.get("epoch_seconds") for h in result.history],
        "stopped_reason": result.stopped_reason, "device": result.device, "base_version": version,
    }


def _run_linear(data: str, row: str, split: str, seed: int, subset: Any, cache_dir: Path | None,
                version: int) -> dict[str, Any]:
    """The row's profile features read out by least squares instead of the network (epochs = 0).

    Fitted on the train records' out-of-fold features (profile dropout: every train record
    once more with its own-profile columns hidden, at the row's rate), scored on val and
    test; seconds instead of minutes per row, since the features are fitted once per split.
    """
    import numpy as np
    import torch

    from torchcell_search.config import RunConfig
    from torchcell_search.model.collaborative import OWN_PROFILE_COLUMNS, profile_features, profile_input_mask
    from torchcell_search.search.trainer import prepare_data

    _, overrides, _ = ROWS[row]
    cfg = RunConfig().with_overrides({**_base(version), **overrides, "seed": seed})
    dataset, data_split = prepare_data(data, subset=subset, split=split, seed=seed, cache_dir=cache_dir)
    start = time.perf_counter()
    train_x, tables = profile_features(dataset, data_split, seed=seed)
    mask = profile_input_mask(cfg.model).numpy()
    eps = dataset.table.gene_interaction.numpy()
    x = train_x.numpy() * mask
    y = eps[data_split.train.numpy()]
    if cfg.model.profile_dropout > 0:
        hidden = x.copy()
        hidden[:, list(OWN_PROFILE_COLUMNS)] = 0.0
        take = np.random.default_rng(seed).random(len(x)) < cfg.model.profile_dropout
        x, y = np.concatenate([x, hidden[take]]), np.concatenate([y, y[take]])
    ok = np.isfinite(y)
    design = lambda f: np.column_stack([np.ones(len(f)), f])  # noqa: E731
    w, *_ = np.linalg.lstsq(design(x[ok]), y[ok], rcond=None)
    out: dict[str, float] = {}
    for part in ("val", "test"):
        index = getattr(data_split, part)
        pred = design(tables(dataset.table.genes[index]).numpy() * mask) @ w
        target = eps[index.numpy()]
        good = np.isfinite(target)
        out[f"{part}/gene_interaction/Pearson"] = float(np.corrcoef(pred[good], target[good])[0, 1])
    return {
        "kind": "model", "row": row, "split": split, "seed": seed, "subset": subset, "epochs": 0, "readout": "linear",
        "config": cfg.flat(), "best_epoch": 0, "test": {METRIC: out[METRIC]},
        "val_gi_pearson": out["val/gene_interaction/Pearson"], "seconds": time.perf_counter() - start,
        "base_version": version,
    }


def _run_baselines(data: str, split: str, seed: int, subset: Any, cache_dir: Path | None) -> dict[str, Any]:
    from torchcell_search.model.baselines import evaluate_baselines
    from torchcell_search.search.trainer import prepare_data

    dataset, data_split = prepare_data(data, subset=subset, split=split, seed=seed, cache_dir=cache_dir)
    metrics = evaluate_baselines(dataset, data_split, seed=seed)
    return {"kind": "baselines", "split": split, "seed": seed, "subset": subset,
            "test": {name: m.get(METRIC) for name, m in metrics.items()}}


def _fmt(values: list[float]) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "not run"
    if len(values) == 1:
        return f"{values[0]:.3f} (n=1)"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} (n={len(values)})"


def table(records: list[dict[str, Any]], splits: list[str], rows: list[str], base_subset: Any,
          epochs: int | None, version: int = BASE_VERSION) -> str:
    """Markdown table: one line per ablation row, then one per baseline (per subset)."""
    lines = ["| row | hypothesis | subset | " + " | ".join(f"{s} split: test ε Pearson" for s in splits) + " |",
             "|---|---|---|" + "---|" * len(splits)]
    subsets_used = set()
    for row in rows:
        desc, _, subset = ROWS[row]
        subset = base_subset if subset == "base" else subset
        subsets_used.add(subset)
        cells = []
        for split in splits:
            wanted = _canonical(row, subset, base_subset)
            vals = [r["test"].get(METRIC) for r in records if r["kind"] == "model" and r["row"] == wanted
                    and r["split"] == split and r["subset"] == subset and (epochs is None or r["epochs"] == epochs)
                    and _version(r) == version]
            cells.append(_fmt(vals))
        lines.append(f"| {row} | {desc} | {subset if subset is not None else 'all'} | " + " | ".join(cells) + " |")
    for subset in sorted(subsets_used, key=lambda s: math.inf if s is None else s):
        for name in BASELINE_NAMES:
            cells = []
            for split in splits:
                vals = [r["test"].get(name) for r in records if r["kind"] == "baselines" and r["split"] == split
                        and r["subset"] == subset]
                cells.append(_fmt(vals))
            lines.append(f"| baseline | {name} | {subset if subset is not None else 'all'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired(records: list[dict[str, Any]], splits: list[str], rows: list[str], base_subset: Any,
           epochs: int | None, version: int = BASE_VERSION) -> str:
    """Each row against each baseline on the same seeds: mean and sd of the per-seed difference.

    A row counts as better than a baseline only where the mean difference exceeds twice the
    sd of the per-seed differences (the issue's rule), marked "yes".
    """
    lines = ["| row | split | baseline | seeds | row − baseline (mean ± sd) | better (> 2 sd) |", "|---|---|---|---|---|---|"]
    for row in rows:
        subset = base_subset if ROWS[row][2] == "base" else ROWS[row][2]
        wanted = _canonical(row, subset, base_subset)
        for split in splits:
            model = {r["seed"]: r["test"].get(METRIC) for r in records if r["kind"] == "model" and r["row"] == wanted
                     and r["split"] == split and r["subset"] == subset and (epochs is None or r["epochs"] == epochs)
                     and _version(r) == version}
            base = {r["seed"]: r["test"] for r in records if r["kind"] == "baselines" and r["split"] == split
                    and r["subset"] == subset}
            for name in BASELINE_NAMES:
                seeds = sorted(s for s in model if s in base and base[s].get(name) is not None)
                if len(seeds) < 2:
                    continue
                diff = [model[s] - base[s][name] for s in seeds]
                mean, sd = statistics.mean(diff), statistics.stdev(diff)
                lines.append(f"| {row} | {split} | {name} | {len(seeds)} | {mean:+.3f} ± {sd:.3f} | "
                             f"{'yes' if mean > 2 * sd else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="real data directory (e.g. /work/shared/data) or 'demo'")
    p.add_argument("--splits", nargs="+", default=["pair", "gene"], choices=["random", "pair", "gene"])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default 6, the recipes'; --quick: 2)")
    p.add_argument("--subset", type=str, default=None,
                   help="base subset: a number or 'all' (default all, the recipes'; --quick: 25000)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 epochs on a 25,000-record subset")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "ablations-results.jsonl",
                   help="JSON-lines file the runs are appended to (and resumed from)")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--table-only", action="store_true", help="print the table from --results, run nothing")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--readout", default="network", choices=["network", "linear"],
                   help="linear: read the row's profile features out by least squares (recorded as epochs 0)")
    p.add_argument("--base-version", type=int, default=BASE_VERSION, choices=sorted(BASE_VERSIONS),
                   help=f"which base the rows change (default {BASE_VERSION}, the config default; 1: the 19 features "
                        "of issue 13's first table)")
    p.add_argument("--linear-rows", nargs="*", default=[], choices=list(ROWS),
                   help="rows also read out linearly (epochs 0) in the same run, after the network rows of each "
                        "seed, so they reuse its profile features")
    args = p.parse_args(argv)

    epochs = args.epochs if args.epochs is not None else (2 if args.quick else 6)
    if args.readout == "linear":
        epochs = 0
    if args.subset is None:
        base_subset: Any = 25_000 if args.quick else None
    else:
        base_subset = None if args.subset == "all" else int(args.subset)

    records = _load_results(args.results)
    done = {r.get("key") for r in records}
    if not args.table_only:
        for split in args.splits:
            for seed in args.seeds:
                # baselines on every subset the selected rows use, once per split/seed
                subsets = {base_subset if ROWS[r][2] == "base" else ROWS[r][2] for r in args.rows}
                if not args.no_baselines:
                    for subset in sorted(subsets, key=lambda s: math.inf if s is None else s):
                        key = f"baselines|{split}|{seed}|{subset}"
                        if key in done:
                            continue
                        rec = _run_baselines(args.data, split, seed, subset, args.cache_dir)
                        rec["key"] = key
                        _append(args.results, rec)
                        records.append(rec)
                        done.add(key)
                        print(f"[baselines] {split} seed {seed} subset {subset}: "
                              + ", ".join(f"{k} {v:.3f}" for k, v in rec["test"].items()), flush=True)
                jobs = [(row, args.readout) for row in args.rows] + [(row, "linear") for row in args.linear_rows]
                for row, readout in jobs:
                    subset = base_subset if ROWS[row][2] == "base" else ROWS[row][2]
                    row = _canonical(row, subset, base_subset)
                    key = _key(row, split, seed, subset, epochs if readout == "network" else 0, args.base_version)
                    if key in done:
                        continue
                    start = time.perf_counter()
                    if readout == "linear":
                        rec = _run_linear(args.data, row, split, seed, subset, args.cache_dir, args.base_version)
                    else:
                        rec = _run_one(args.data, row, split, seed, subset, epochs, args.device, args.cache_dir,
                                       args.base_version)
                    rec["key"] = key
                    _append(args.results, rec)
                    records.append(rec)
                    done.add(key)
                    print(f"[{row}] {split} seed {seed} subset {subset} epochs {rec['epochs']} ({readout}): test ε Pearson "
                          f"{rec['test'].get(METRIC, math.nan):.3f} (best epoch {rec['best_epoch']}, "
                          f"{time.perf_counter() - start:.0f} s)", flush=True)
    for rows, readout_epochs in ((args.rows, epochs), (args.linear_rows, 0)):
        if rows:
            print(f"\n{'linear read-out of the profile features' if readout_epochs == 0 else f'network, {epochs} epochs'}:")
            print(table(records, args.splits, rows, base_subset, readout_epochs, args.base_version))
            print()
            print(paired(records, args.splits, rows, base_subset, readout_epochs, args.base_version))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
