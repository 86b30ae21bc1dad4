"""Data-layer speed on the real mirror: build, cached load, and per-sample masks.

Prints, in one run:

- the uncached build of the real cell graph + perturbation table (target < 2 min);
- the cached load of the same data set (target < 5 s);
- per-sample mask time for batches of 32 real records, ``MaskBuilder`` (batched
  scatter/gather over precomputed incidence) beside a naive per-sample approach that
  builds a perturbed ``HeteroData`` with ``HeteroData.subgraph`` (the report's layout).

Usage::

    python benchmarks/bench_data.py [--data ../shared/data] [--batches 20] [--naive-batches 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch_geometric.data import HeteroData

from torchcell_search.data.dataset import load_dataset
from torchcell_search.data.masks import MaskBuilder
from torchcell_search.data.types import GPR, METABOLISM, PHYSICAL, REGULATORY, CellGraph

_DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class _NaiveSubgraph:
    """One perturbed HeteroData per sample: node subsets through ``HeteroData.subgraph``."""

    def __init__(self, graph: CellGraph) -> None:
        d = graph.data
        self.graph = graph
        self.plain = HeteroData()  # node types and gene-gene edges: what subgraph() handles
        for nt in ("gene", "reaction", "metabolite"):
            self.plain[nt].num_nodes = d[nt].num_nodes
        self.plain[PHYSICAL].edge_index = d[PHYSICAL].edge_index
        self.plain[REGULATORY].edge_index = d[REGULATORY].edge_index
        self.gpr = d[GPR].hyperedge_index
        self.met = d[METABOLISM].hyperedge_index
        self.stoich = d[METABOLISM].stoichiometry
        self.clause_reaction = graph.gpr_clause_reaction
        self.clause_genes = graph.gpr_clause_genes
        self.clauses_per_reaction = torch.bincount(self.clause_reaction, minlength=graph.num_reactions)

    def sample(self, deleted: torch.Tensor) -> HeteroData:
        N, R = self.graph.num_genes, self.graph.num_reactions
        keep_gene = torch.ones(N, dtype=torch.bool)
        keep_gene[deleted] = False
        broken = torch.zeros(self.clause_reaction.numel(), dtype=torch.bool)
        broken[self.clause_genes[0][~keep_gene[self.clause_genes[1]]]] = True
        n_broken = torch.bincount(self.clause_reaction[broken], minlength=R)
        keep_rxn = ~((n_broken == self.clauses_per_reaction) & (self.clauses_per_reaction > 0))
        sub = self.plain.subgraph({"gene": keep_gene.nonzero().flatten(), "reaction": keep_rxn.nonzero().flatten()})
        # Hyperedges are filtered by hand (subgraph only knows edge_index), with reindexing.
        gmap = torch.cumsum(keep_gene.long(), 0) - 1
        rmap = torch.cumsum(keep_rxn.long(), 0) - 1
        k = keep_gene[self.gpr[0]] & keep_rxn[self.gpr[1]]
        sub[GPR].hyperedge_index = torch.stack([gmap[self.gpr[0][k]], rmap[self.gpr[1][k]]])
        k = keep_rxn[self.met[1]]
        sub[METABOLISM].hyperedge_index = torch.stack([self.met[0][k], rmap[self.met[1][k]]])
        sub[METABOLISM].stoichiometry = self.stoich[k]
        return sub


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(_DEFAULT_DATA))
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--batches", type=int, default=20, help="MaskBuilder batches of 32")
    ap.add_argument("--naive-batches", type=int, default=3, help="naive batches of 32 (slow)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    # One thread by default, as the CLI: two threads ran ~70x slower here when another process shared the cores.
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        ds = load_dataset(args.data, cache_dir=Path(cache))
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        again = load_dataset(args.data, cache_dir=Path(cache))
        cached_s = time.perf_counter() - t
        if not again.info["cache"]["hit"]:
            raise SystemExit("second load missed the cache")

    g, table = ds.graph, ds.table
    gen = torch.Generator().manual_seed(args.seed)
    B = 32
    batches = [table.genes[torch.randint(len(table), (B,), generator=gen)] for _ in range(max(args.batches, args.naive_batches))]

    builder = MaskBuilder(g)
    builder.masks(batches[0])  # warm-up
    it = iter(range(10**9))
    fast = _time(lambda: builder.masks(batches[next(it) % len(batches)]), args.batches)
    naive = _NaiveSubgraph(g)
    naive.sample(batches[0][0])  # warm-up
    it2 = iter(range(10**9))

    def naive_batch() -> None:
        for row in batches[next(it2) % len(batches)]:
            naive.sample(row)

    slow = _time(naive_batch, args.naive_batches)

    fast_ms = statistics.median(fast) / B * 1e3
    slow_ms = statistics.median(slow) / B * 1e3
    print(f"data: {args.data}  genes {g.num_genes}  reactions {g.num_reactions}  records {len(table)}  threads {torch.get_num_threads()}")
    print(f"{'measure':<44}{'ours':>12}{'reference':>14}{'ratio':>9}")
    print(f"{'uncached build, graph + table (s)':<44}{build_s:>12.2f}{'120 target':>14}{build_s / 120:>9.3f}")
    print(f"{'cached load (s)':<44}{cached_s:>12.3f}{'5 target':>14}{cached_s / 5:>9.3f}")
    print(f"{'build / cached load':<44}{build_s / cached_s:>12.0f}x")
    print(f"{'masks per sample, B=32 (ms): MaskBuilder':<44}{fast_ms:>12.3f}{slow_ms:>14.3f}{slow_ms / fast_ms:>8.1f}x")
    print("  reference = naive per-sample HeteroData.subgraph; ratio = reference / ours")


if __name__ == "__main__":
    main()
