"""Baselines on a data set, beside the project lead's reference figures.

Usage::

    python benchmarks/bench_baselines.py [DATA] [--split pair|gene|random] [--seed 0]

``DATA`` is ``demo`` or a data directory (default ``../shared/data``). Prints each
baseline's test Pearson/Spearman/MSE per label and its fit time, with the reference
gene-interaction Pearson measured by the project lead on the real mirror.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from torchcell_search.data.dataset import load_dataset
from torchcell_search.data.types import Dataset, Split
from torchcell_search.model.baselines import BASELINES, evaluate_baselines

# test/gene_interaction/Pearson on the real mirror (project lead, seed 0).
_REFERENCE = {
    "pair": {"additive": 0.10, "matrix_factorisation": 0.27, "matrix_factorisation_role_blind": 0.15},
    "gene": {"additive": 0.07, "matrix_factorisation": 0.05},
}


def _split(ds: Dataset, kind: str, seed: int) -> Split:
    try:
        from torchcell_search.data.splits import make_split
    except ImportError:
        return _fallback_split(ds, kind, seed)
    return make_split(ds.table, kind, seed=seed)


def _fallback_split(ds: Dataset, kind: str, seed: int) -> Split:
    """80/10/10 split used only while ``data/splits.py`` does not exist yet."""
    genes = ds.table.genes
    gen = torch.Generator().manual_seed(seed)
    if kind == "gene":
        uniq = torch.unique(genes)
        perm = uniq[torch.randperm(uniq.numel(), generator=gen)]
        n = uniq.numel() // 10
        test_g, val_g = perm[:n], perm[n : 2 * n]
        in_test = torch.isin(genes, test_g).any(1)
        in_val = torch.isin(genes, val_g).any(1) & ~in_test
        train = ~(in_test | in_val)
        idx = torch.arange(len(genes))
        return Split(kind, seed, idx[train], idx[in_val], idx[in_test])
    if kind == "pair":
        key = genes.min(1).values * (int(genes.max()) + 1) + genes.max(1).values
    else:
        key = torch.arange(len(genes))
    uniq, inverse = torch.unique(key, return_inverse=True)
    u = torch.rand(uniq.numel(), generator=gen)[inverse]
    idx = torch.arange(len(genes))
    return Split(kind, seed, idx[u < 0.8], idx[(u >= 0.8) & (u < 0.9)], idx[u >= 0.9])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--split", default="pair", choices=("pair", "gene", "random"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    ds = load_dataset(args.data)
    split = _split(ds, args.split, args.seed)
    print(
        f"data {args.data}: {len(ds.table)} records, split {args.split} "
        f"{split.train.numel()}/{split.val.numel()}/{split.test.numel()} (loaded in {time.perf_counter() - t0:.1f} s)"
    )
    results = evaluate_baselines(ds, split, seed=args.seed)
    ref = _REFERENCE.get(args.split, {})
    print(f"{'baseline':34s} {'label':17s} {'Pearson':>8s} {'Spearman':>9s} {'MSE':>10s} {'ref P':>6s} {'secs':>6s}")
    for name in BASELINES:
        m = results[name]
        for label in ("fitness", "gene_interaction"):
            r = ref.get(name) if label == "gene_interaction" else None
            print(
                f"{name:34s} {label:17s} {m[f'test/{label}/Pearson']:8.3f} {m[f'test/{label}/Spearman']:9.3f} "
                f"{m[f'test/{label}/MSE']:10.5f} {'' if r is None else f'{r:.2f}':>6s} {m['seconds']:6.1f}"
            )


if __name__ == "__main__":
    main()
