"""Build the wildtype cell graph (:class:`~torchcell_search.data.types.CellGraph`) from real files.

Gene nodes are SGD's gene universe (``SGDgeneNames.tsv``, file order) followed, in sorted
order, by every gene that the perturbation table, the metabolic model or an edge list
names by an ORF SGD's table lacks (counted in ``info["genes_added"]``). Names that resolve
to no ORF are counted and listed in ``info["names_unmapped"]`` with the edges they cost.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import HeteroData

from torchcell_search.data import readers
from torchcell_search.data.gene_names import GeneNames
from torchcell_search.data.types import GPR, METABOLISM, PHYSICAL, REGULATORY, CellGraph

__all__ = ["build_cell_graph"]

_EXAMPLES = 20  # names listed per category in info; counts are always complete


def build_cell_graph(
    data_dir: Path,
    *,
    progress: bool = False,
    files: readers.DataFiles | None = None,
    perturbation_genes: Iterable[str] | None = None,
) -> CellGraph:
    """Build the cell graph of a data directory.

    The graph holds gene, reaction and metabolite nodes; BioGRID physical edges (each
    undirected edge stored in both directions, self loops dropped), YEASTRACT TF -> target
    edges, the GPR incidence of genes on reactions, the stoichiometric incidence of
    metabolites on reactions, every GPR rule in disjunctive normal form and the essential
    gene mask (see :class:`~torchcell_search.data.types.CellGraph`).

    Args:
        data_dir: Mirror layout (``graph/``, ``costanzo2016/``) or official files in the
            directory itself.
        progress: Show a progress bar on stderr.
        files: Already located inputs (skips :func:`~torchcell_search.data.readers.locate_inputs`).
        perturbation_genes: Gene names of the perturbation records, when already read
            (otherwise they are read from the data directory).

    Returns:
        The cell graph; ``info`` records sources, added genes, unmapped names, dropped
        self loops and duplicates, and counts.

    Raises:
        DataError: A missing, unreadable or malformed input file, or a malformed GPR rule.
    """
    start = time.perf_counter()
    files = files or readers.locate_inputs(Path(data_dir))
    steps = _Progress(progress, total=6)

    steps.step("gene names")
    names = GeneNames.from_file(files.gene_names)
    if perturbation_genes is None:
        from torchcell_search.data.perturbations import read_measurements

        m = read_measurements(files)
        perturbation_genes = pd.concat([m["query_orf"], m["array_orf"]]).unique()
    pert_names = pd.Series(pd.unique(pd.Series(list(perturbation_genes), dtype=object)), dtype=object)

    steps.step("physical interactions")
    if files.physical_format == "biogrid_tab3":
        phys = readers.read_biogrid_tab3(files.physical)
    else:
        phys = readers.read_physical_edges(files.physical)

    steps.step("regulatory interactions")
    reg = readers.read_yeastract(files.regulatory)

    steps.step("metabolic model")
    gem = readers.read_gem(files.gem)
    rules = [readers.parse_gpr(r, reaction=rid) for rid, r in zip(gem.reactions["reaction_id"], gem.reactions["gpr"])]

    steps.step("essential genes")
    essential_names = readers.read_gene_list(files.essential)

    steps.step("assembling")
    # Resolve every name first, so added genes get sorted, reproducible indices.
    resolved: dict[str, dict[str, str | None]] = {
        "perturbations": names.map(pert_names),
        "physical": names.map(pd.concat([phys["gene_a"], phys["gene_b"]])),
        "regulatory": names.map(pd.concat([reg["tf"], reg["target"]])),
        "gem": {g: (names.to_orf(g) or g.strip()) for clauses in rules for c in clauses for g in c},
    }
    sgd = set(names.systematic)
    added_by: dict[str, list[str]] = {
        src: sorted({o for o in lookup.values() if o is not None and o not in sgd}) for src, lookup in resolved.items()
    }
    added = sorted(set().union(*added_by.values()))
    gene_ids = names.systematic + added
    gindex = {g: i for i, g in enumerate(gene_ids)}
    unmapped = {src: sorted(n for n, o in lookup.items() if o is None) for src, lookup in resolved.items()}

    def idx(col: pd.Series, src: str) -> np.ndarray:
        lookup = {n: (gindex[o] if o is not None else -1) for n, o in resolved[src].items()}
        return col.map(lookup).to_numpy(dtype=np.int64)

    info: dict[str, Any] = {
        "sources": {
            "gene_names": files.relative(files.gene_names),
            "physical": files.relative(files.physical),
            "physical_format": files.physical_format,
            "regulatory": files.relative(files.regulatory),
            "gem": files.relative(files.gem),
            "essential": files.relative(files.essential),
        },
        "genes_sgd": len(names),
        "genes_added": len(added),
        "genes_added_by_source": {src: len(v) for src, v in added_by.items()},
        "genes_added_examples": added[:_EXAMPLES],
        "names_unmapped": {src: len(v) for src, v in unmapped.items()},
        "names_unmapped_examples": {src: v[:_EXAMPLES] for src, v in unmapped.items() if v},
    }

    N = len(gene_ids)
    data = HeteroData()
    data["gene"].num_nodes = N
    data["gene"].node_ids = gene_ids

    # Physical: undirected, deduplicated, no self loops, stored in both directions.
    a, b = idx(phys["gene_a"], "physical"), idx(phys["gene_b"], "physical")
    ok = (a >= 0) & (b >= 0)
    info["physical_edges_dropped_unmapped"] = int((~ok).sum())
    a, b = a[ok], b[ok]
    loop = a == b
    info["physical_self_loops_dropped"] = int(loop.sum())
    lo, hi = np.minimum(a[~loop], b[~loop]), np.maximum(a[~loop], b[~loop])
    pairs = np.unique(lo * N + hi)
    info["physical_duplicates_dropped"] = int(len(lo) - len(pairs))
    lo, hi = pairs // N, pairs % N
    data[PHYSICAL].edge_index = torch.from_numpy(np.stack([np.concatenate([lo, hi]), np.concatenate([hi, lo])]))
    info["physical_edges_undirected"] = int(len(pairs))

    # Regulatory: directed TF -> target, deduplicated; a TF regulating itself is kept.
    tf, tg = idx(reg["tf"], "regulatory"), idx(reg["target"], "regulatory")
    ok = (tf >= 0) & (tg >= 0)
    info["regulatory_edges_dropped_unmapped"] = int((~ok).sum())
    pairs = np.unique(tf[ok] * N + tg[ok])
    info["regulatory_duplicates_dropped"] = int(ok.sum() - len(pairs))
    tf, tg = pairs // N, pairs % N
    info["regulatory_self_loops"] = int((tf == tg).sum())
    data[REGULATORY].edge_index = torch.from_numpy(np.stack([tf, tg]))

    # Metabolism: reactions and metabolites in model order; signed stoichiometry.
    reaction_ids = gem.reactions["reaction_id"].tolist()
    rindex = {r: i for i, r in enumerate(reaction_ids)}
    mindex = {m: i for i, m in enumerate(gem.metabolites)}
    data["reaction"].num_nodes = len(reaction_ids)
    data["reaction"].node_ids = reaction_ids
    data["metabolite"].num_nodes = len(gem.metabolites)
    data["metabolite"].node_ids = list(gem.metabolites)
    st = gem.stoichiometry
    met = st["metabolite"].map(mindex).to_numpy(np.int64)
    rxn = st["reaction"].map(rindex).to_numpy(np.int64)
    order = np.lexsort((met, rxn))
    data[METABOLISM].hyperedge_index = torch.from_numpy(np.stack([met[order], rxn[order]]))
    data[METABOLISM].stoichiometry = torch.from_numpy(st["coefficient"].to_numpy(np.float32)[order])

    # GPR: incidence (every gene named in a rule) and the rules' clauses.
    gpr_gene, gpr_rxn, clause_rxn, clause_id, clause_gene = [], [], [], [], []
    gem_map = resolved["gem"]
    for r, clauses in enumerate(rules):
        if not clauses:
            continue
        for g in sorted({gindex[gem_map[x]] for c in clauses for x in c}):
            gpr_gene.append(g)
            gpr_rxn.append(r)
        for c in clauses:
            cid = len(clause_rxn)
            clause_rxn.append(r)
            for g in sorted({gindex[gem_map[x]] for x in c}):
                clause_id.append(cid)
                clause_gene.append(g)
    data[GPR].hyperedge_index = torch.tensor([gpr_gene, gpr_rxn], dtype=torch.long).reshape(2, -1)
    info["reactions_with_gpr"] = int(sum(1 for c in rules if c))
    info["gpr_clauses"] = len(clause_rxn)

    essential = torch.zeros(N, dtype=torch.bool)
    ess = [gindex.get(names.to_orf(n) or "", -1) for n in essential_names]
    essential[[i for i in ess if i >= 0]] = True
    info["essential_genes"] = int(essential.sum())
    info["essential_names_unmapped"] = sorted(n for n, i in zip(essential_names, ess) if i < 0)
    info["seconds"] = round(time.perf_counter() - start, 2)
    steps.close()

    return CellGraph(
        data=data,
        gpr_clause_reaction=torch.tensor(clause_rxn, dtype=torch.long),
        gpr_clause_genes=torch.tensor([clause_id, clause_gene], dtype=torch.long).reshape(2, -1),
        essential=essential,
        info=info,
    )


class _Progress:
    """A stage-by-stage progress bar on stderr, or nothing."""

    def __init__(self, enabled: bool, total: int) -> None:
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc="cell graph", unit="step", leave=False)
        self._started = False

    def step(self, what: str) -> None:
        if self._bar is not None:
            if self._started:
                self._bar.update(1)
            self._bar.set_postfix_str(what)
            self._started = True

    def close(self) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.close()
