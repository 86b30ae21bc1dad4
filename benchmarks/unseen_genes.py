"""Where the gene split's test Pearson comes from: per held-out gene, inputs on against off.

For each seed, the profile features are fitted once on the train records and read out by
least squares (as ``ablations.py --linear-rows``) twice: with every input of an unseen
gene on (``model.input_*`` defaults) and with all of them off (the seen partner alone, the
role-aware factorisation's figure). The pooled Pearson of a read-out over a split's
records is split exactly into a **between-gene** part (the predicted and true means of each
held-out gene's records, per role) and a **within-gene** part (how well the read-out orders
a gene's partners), and each held-out gene's share of it is listed:

.. math::

    r = \\sum_g \\frac{\\sum_{i \\in g} (p_i - \\bar p)(y_i - \\bar y)}{\\lVert p - \\bar p\\rVert\\,\\lVert y - \\bar y\\rVert},
    \\qquad \\text{between} = \\sum_g \\frac{n_g (\\bar p_g - \\bar p)(\\bar y_g - \\bar y)}{\\lVert p - \\bar p\\rVert\\,\\lVert y - \\bar y\\rVert}

    python benchmarks/unseen_genes.py ../shared/data --seeds 3 4 --top 5
    python benchmarks/unseen_genes.py demo --seeds 0

A record of both held-out genes counts under ``both``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ok = np.isfinite(y)
    coef, *_ = np.linalg.lstsq(np.column_stack([np.ones(ok.sum()), x[ok]]), y[ok], rcond=None)
    return coef


def decompose(pred: np.ndarray, target: np.ndarray, group: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Pooled Pearson, its between-group part, and each group's share (``group``: ``(n,)`` labels).

    Returns ``(r, between, groups, share)``; ``share`` sums to ``r``.
    """
    pc, yc = pred - pred.mean(), target - target.mean()
    norm = np.sqrt((pc**2).sum() * (yc**2).sum())
    groups, inv = np.unique(group, return_inverse=True)
    count = np.bincount(inv)
    pm, ym = np.bincount(inv, pc) / count, np.bincount(inv, yc) / count
    return float((pc * yc).sum() / norm), float((count * pm * ym).sum() / norm), groups, np.bincount(inv, pc * yc) / norm


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="real data directory (e.g. ../shared/data) or 'demo'")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--top", type=int, default=5, help="held-out genes listed per seed (largest |on − off| share)")
    args = p.parse_args(argv)

    import torch

    from torchcell_search.config import RunConfig
    from torchcell_search.model.collaborative import INPUT_COLUMNS, profile_features, profile_input_mask
    from torchcell_search.search.trainer import prepare_data

    torch.set_num_threads(1)
    on = profile_input_mask(RunConfig().model).numpy()
    off = on.copy()
    for columns in INPUT_COLUMNS.values():
        off[list(columns)] = 0.0
    print("| seed | part | inputs | pooled r | between-gene | within-gene |")
    print("|---|---|---|---|---|---|")
    listing = []
    for seed in args.seeds:
        dataset, split = prepare_data(args.data, subset=None, split="gene", seed=seed, cache_dir=None)
        train_x, tables = profile_features(dataset, split, seed=seed)
        eps = dataset.table.gene_interaction.numpy()
        genes = dataset.table.genes.numpy()
        train_genes = np.unique(genes[split.train.numpy()])
        coefs = {name: _fit(train_x.numpy() * mask, eps[split.train.numpy()]) for name, mask in (("on", on), ("off", off))}
        for part in ("val", "test"):
            index = getattr(split, part).numpy()
            y, g = eps[index], genes[index]
            ok = np.isfinite(y)
            y, g, x = y[ok], g[ok], tables(torch.as_tensor(g)).numpy()
            held = ~np.isin(g, train_genes)  # (n, 2)
            label = np.where(held[:, 0] & ~held[:, 1], np.char.add(g[:, 0].astype(str), "q"),
                             np.where(held[:, 1] & ~held[:, 0], np.char.add(g[:, 1].astype(str), "a"), "both"))
            share = {}
            for name, mask in (("on", on), ("off", off)):
                pred = coefs[name][0] + (x * mask) @ coefs[name][1:]
                r, between, groups, share[name] = decompose(pred, y, label)
                print(f"| {seed} | {part} | {name} | {r:.3f} | {between:+.3f} | {r - between:+.3f} |", flush=True)
            if part == "test":
                delta = share["on"] - share["off"]
                order = np.argsort(-np.abs(delta))[: args.top]
                names = dataset.graph.gene_ids
                listing.append(f"seed {seed}: on − off {delta.sum():+.3f} over {len(groups)} held-out genes (per role), "
                               f"{np.mean(delta < 0):.0%} of them lower; largest: " + ", ".join(
                                   f"{groups[k] if groups[k] == 'both' else names[int(groups[k][:-1])] + '/' + groups[k][-1]}"
                                   f" {delta[k]:+.4f}" for k in order))
    print()
    print("\n".join(listing))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
