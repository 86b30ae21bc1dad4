"""What each profile feature carries on its own, and a linear blend of them, beside the baselines.

For one seeded split of the real mirror, fits the profile features of
:mod:`torchcell_search.model.collaborative` (out of fold on train records, from all train
records elsewhere) and prints the test and val gene_interaction Pearson of

- each feature alone,
- a least-squares blend of all features fitted on the train records' out-of-fold features
  (val and test untouched), and
- the baselines fitted on the same split,

so the README can say how much of a model's score its inputs already hold.

    python benchmarks/profile_features.py ../shared/data --split pair
    python benchmarks/profile_features.py ../shared/data --split gene
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from torchcell_search.model.baselines import evaluate_baselines
from torchcell_search.model.collaborative import FEATURES, profile_features
from torchcell_search.search.trainer import prepare_data



def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or x[ok].std() == 0:
        return float("nan")
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--split", default="pair", choices=("random", "pair", "gene"))
    ap.add_argument("--subset", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    dataset, split = prepare_data(args.data, subset=args.subset, split=args.split, seed=args.seed, cache_dir=None)
    start = time.perf_counter()
    train_x, tables = profile_features(dataset, split, seed=args.seed)
    seconds = time.perf_counter() - start
    eps = dataset.table.gene_interaction.numpy()
    genes = dataset.table.genes
    x = {"train": train_x.numpy(), "val": tables(genes[split.val]).numpy(), "test": tables(genes[split.test]).numpy()}
    y = {part: eps[getattr(split, part).numpy()] for part in x}
    print(f"{args.split} split, seed {args.seed}, subset {args.subset or 'all'}: features fitted in {seconds:.0f} s\n")
    print("| input | val ε Pearson | test ε Pearson |\n|---|---|---|")
    for k, name in enumerate(FEATURES):
        print(f"| feature {k}: {name} | {_pearson(x['val'][:, k], y['val']):.3f} | {_pearson(x['test'][:, k], y['test']):.3f} |")
    ok = np.isfinite(y["train"])
    design = lambda f: np.column_stack([np.ones(len(f)), f])  # noqa: E731
    w, *_ = np.linalg.lstsq(design(x["train"][ok]), y["train"][ok], rcond=None)
    blend = {part: design(x[part]) @ w for part in ("val", "test")}
    print(f"| linear blend of all features (fitted on train, out of fold) | {_pearson(blend['val'], y['val']):.3f} "
          f"| {_pearson(blend['test'], y['test']):.3f} |")
    for name, m in evaluate_baselines(dataset, split, seed=args.seed).items():
        print(f"| baseline: {name} | {m['val/gene_interaction/Pearson']:.3f} | {m['test/gene_interaction/Pearson']:.3f} |")


if __name__ == "__main__":
    main()
