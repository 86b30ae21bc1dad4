"""The embedded synthetic demo data set: a small cell graph with planted, learnable labels.

Nothing here is real biology. The demo exists so that every command, test and tutorial runs
without the real data: it has the same node and edge types as the real cell graph, GPR rules
with isoenzymes and complexes, and labels generated from a planted structure on the graph:

- single-mutant fitness ``f_g = clip(0.9 + 0.08 * a_g, 0.3, 1.05)`` from a latent per-gene
  factor ``a_g``;
- the true interaction ``eps*(q, a)`` of a pair sums a smooth term (a bilinear form of latent
  gene embeddings diffused over the physical graph, so neighbourhoods carry signal), strong
  negative terms for physical neighbours, pairs sharing a reaction and isoenzyme pairs, a
  small positive term for complex partners, and a per-gene query-role offset (SGA roles
  carry systematic effects);
- the measured ``gene_interaction = eps* + noise`` and ``fitness = f_q * f_a + gene_interaction``,
  so ``epsilon = f_ab - f_a * f_b`` holds exactly wherever fitness is present. A few genes
  have no single-mutant fitness: records involving them have NaN fitness (as for 40 genes
  of the real Costanzo table).

Single-mutant fitness is kept in ``dataset.info["single_mutant_fitness"]`` ((N_gene,)
float32, NaN where unknown) so tests can check the multiplicative model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import HeteroData

from torchcell_search.data.types import (
    GPR,
    METABOLISM,
    PHYSICAL,
    REGULATORY,
    CellGraph,
    Dataset,
    PerturbationTable,
)
from torchcell_search.errors import ConfigError

__all__ = ["make_demo_dataset"]

_DESCRIPTION = (
    "synthetic demo data (not real biology): a random cell graph with planted, "
    "graph-dependent fitness and genetic interaction labels plus noise"
)
_NOISE_EPS = 0.035  # measurement noise of epsilon: keeps the task learnable but not trivial
_LATENT_DIM = 6


def make_demo_dataset(seed: int = 0, *, num_genes: int = 120, num_records: int = 3000) -> Dataset:
    """Build the deterministic synthetic demo :class:`~torchcell_search.data.types.Dataset`.

    Example:
        >>> ds = make_demo_dataset(seed=0)
        >>> ds.name, ds.info["synthetic"], ds.graph.gene_ids[0]
        ('demo', True, 'DEMO0001')

    Args:
        seed: Seed of every random choice; the same seed gives identical tensors.
        num_genes: Number of gene nodes (ids ``DEMO0001`` ...), at least 50.
        num_records: Number of double-mutant records, at least 10.

    Returns:
        A dataset named ``"demo"`` whose ``info`` has ``synthetic=True``, a
        ``description``, the ``seed`` and ``single_mutant_fitness`` ((N_gene,) float32,
        NaN where unknown).

    Raises:
        ConfigError: ``num_genes`` < 50 or ``num_records`` < 10.
    """
    if num_genes < 50:
        raise ConfigError(f"num_genes={num_genes}: the demo needs at least 50 genes")
    if num_records < 10:
        raise ConfigError(f"num_records={num_records}: the demo needs at least 10 records")
    rng = np.random.default_rng(seed)
    N = num_genes

    # Latent structure: modules drive physical edges, embeddings drive labels.
    n_modules = max(4, N // 30)
    module = rng.integers(0, n_modules, size=N)
    centres = rng.normal(size=(n_modules, _LATENT_DIM))
    z = centres[module] + 0.7 * rng.normal(size=(N, _LATENT_DIM))  # (N, D)

    phys = _physical_edges(rng, module, N)  # (2, E) both directions
    reg = _regulatory_edges(rng, N)
    gpr = _metabolism(rng, N)
    essential = np.zeros(N, dtype=bool)
    essential[rng.choice(N, size=max(1, N // 12), replace=False)] = True

    graph = _cell_graph(N, phys, reg, gpr, essential, seed)
    table, smf = _records(rng, N, num_records, z, phys, gpr, essential)
    info = {
        "synthetic": True,
        "description": _DESCRIPTION,
        "seed": seed,
        "single_mutant_fitness": torch.from_numpy(smf.astype(np.float32)),
    }
    return Dataset(name="demo", graph=graph, table=table, info=info)


# --- graph -------------------------------------------------------------------------------


def _physical_edges(rng: np.random.Generator, module: np.ndarray, N: int) -> np.ndarray:
    """Undirected module-biased random edges, deduplicated, stored in both directions."""
    same = module[:, None] == module[None, :]
    prob = np.where(same, 8.0 / max(1, N // max(1, module.max() + 1)), 1.5 / N)
    upper = np.triu(rng.random((N, N)) < prob, k=1)
    a, b = np.nonzero(upper)
    return np.stack([np.concatenate([a, b]), np.concatenate([b, a])])  # (2, 2 * E_undirected)


def _regulatory_edges(rng: np.random.Generator, N: int) -> np.ndarray:
    """TF -> target edges: a few TFs with 5-20 targets each, no self loops."""
    tfs = rng.choice(N, size=max(3, N // 20), replace=False)
    src, dst = [], []
    for tf in sorted(tfs.tolist()):
        targets = rng.choice(N, size=int(rng.integers(5, 21)), replace=False)
        targets = targets[targets != tf]
        src.extend([tf] * len(targets))
        dst.extend(targets.tolist())
    return np.array([src, dst], dtype=np.int64)


class _Metabolism:
    """GPR rules (DNF clauses) and the stoichiometric hypergraph of the demo."""

    def __init__(self) -> None:
        self.clause_reaction: list[int] = []
        self.clause_genes: list[tuple[int, int]] = []  # (clause, gene)
        self.met_incidence: list[tuple[int, int, float]] = []  # (metabolite, reaction, coeff)
        self.num_reactions = 0
        self.num_metabolites = 0
        self.isoenzyme_pairs: set[tuple[int, int]] = set()
        self.complex_pairs: set[tuple[int, int]] = set()
        self.reaction_genes: list[list[int]] = []

    def add_clause(self, reaction: int, genes: list[int]) -> None:
        c = len(self.clause_reaction)
        self.clause_reaction.append(reaction)
        self.clause_genes.extend((c, g) for g in genes)


def _metabolism(rng: np.random.Generator, N: int) -> _Metabolism:
    """Reactions with single-gene, isoenzyme, complex, mixed or no GPR rules."""
    met = _Metabolism()
    metabolic_genes = rng.choice(N, size=max(10, (2 * N) // 5), replace=False)
    R = max(10, N // 4)
    met.num_reactions = R
    met.num_metabolites = max(8, N // 5)
    for r in range(R):
        # The first three reactions fix one isoenzyme, one complex and one rule-less reaction,
        # so every demo (however small) exercises each deletion rule.
        forced = ("isoenzyme", "complex", "none")
        kind = forced[r] if r < len(forced) else rng.choice(
            ["single", "isoenzyme", "complex", "mixed", "none"], p=[0.3, 0.25, 0.2, 0.15, 0.1])
        picks = [int(g) for g in rng.choice(metabolic_genes, size=3, replace=False)]
        if kind == "single":
            clauses = [[picks[0]]]
        elif kind == "isoenzyme":  # A or B
            clauses = [[picks[0]], [picks[1]]]
        elif kind == "complex":  # A and B
            clauses = [[picks[0], picks[1]]]
        elif kind == "mixed":  # (A and B) or C
            clauses = [[picks[0], picks[1]], [picks[2]]]
        else:
            clauses = []
        for clause in clauses:
            met.add_clause(r, clause)
        genes = sorted({g for clause in clauses for g in clause})
        met.reaction_genes.append(genes)
        for i, ci in enumerate(clauses):
            for cj in clauses[i + 1 :]:
                met.isoenzyme_pairs.update(_pair(a, b) for a in ci for b in cj if a != b)
            met.complex_pairs.update(_pair(a, b) for a in ci for b in ci if a < b)
        # 1-2 substrates (negative) and 1-2 products (positive), distinct metabolites.
        n_sub, n_prod = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        mets = rng.choice(met.num_metabolites, size=n_sub + n_prod, replace=False)
        for i, m in enumerate(mets.tolist()):
            coeff = float(rng.integers(1, 3))
            met.met_incidence.append((m, r, -coeff if i < n_sub else coeff))
    return met


def _pair(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


def _cell_graph(
    N: int, phys: np.ndarray, reg: np.ndarray, met: _Metabolism, essential: np.ndarray, seed: int
) -> CellGraph:
    data = HeteroData()
    data["gene"].num_nodes = N
    data["gene"].node_ids = [f"DEMO{i + 1:04d}" for i in range(N)]
    data["reaction"].num_nodes = met.num_reactions
    data["reaction"].node_ids = [f"DEMO_R{i + 1:04d}" for i in range(met.num_reactions)]
    data["metabolite"].num_nodes = met.num_metabolites
    data["metabolite"].node_ids = [f"DEMO_M{i + 1:04d}" for i in range(met.num_metabolites)]
    data[PHYSICAL].edge_index = torch.as_tensor(phys, dtype=torch.long)
    data[REGULATORY].edge_index = torch.as_tensor(reg, dtype=torch.long)
    gpr_cols = sorted({(g, r) for r, genes in enumerate(met.reaction_genes) for g in genes}, key=lambda t: (t[1], t[0]))
    data[GPR].hyperedge_index = torch.tensor(gpr_cols, dtype=torch.long).reshape(-1, 2).t().contiguous()  # (2, K)
    inc = met.met_incidence
    data[METABOLISM].hyperedge_index = torch.tensor([[m for m, _, _ in inc], [r for _, r, _ in inc]], dtype=torch.long)
    data[METABOLISM].stoichiometry = torch.tensor([c for _, _, c in inc], dtype=torch.float32)
    return CellGraph(
        data=data,
        gpr_clause_reaction=torch.tensor(met.clause_reaction, dtype=torch.long),
        gpr_clause_genes=torch.tensor(met.clause_genes, dtype=torch.long).reshape(-1, 2).t().contiguous(),
        essential=torch.from_numpy(essential.copy()),
        info={
            "source": "synthetic demo",
            "seed": seed,
            "isoenzyme_pairs": len(met.isoenzyme_pairs),
            "complex_pairs": len(met.complex_pairs),
        },
    )


# --- labels ------------------------------------------------------------------------------


def _records(
    rng: np.random.Generator,
    N: int,
    R: int,
    z: np.ndarray,
    phys: np.ndarray,
    met: _Metabolism,
    essential: np.ndarray,
) -> tuple[PerturbationTable, np.ndarray]:
    """Sample ordered (query, array) pairs of nonessential genes and their planted labels."""
    viable = np.flatnonzero(~essential)
    # Smooth part: latent embeddings diffused twice over the row-normalised physical graph.
    A = np.zeros((N, N))
    A[phys[0], phys[1]] = 1.0
    P = (A + np.eye(N)) / (A.sum(1, keepdims=True) + 1.0)
    h = P @ (P @ z)  # (N, D)
    h = (h - h.mean(0)) / (h.std(0) + 1e-8)
    W = rng.normal(size=(_LATENT_DIM, _LATENT_DIM))
    W = (W + W.T) / 2.0

    a_gene = rng.normal(size=N)
    smf = np.clip(0.9 + 0.08 * a_gene, 0.3, 1.05)
    smf[rng.choice(N, size=max(1, N // 40), replace=False)] = np.nan  # unknown SMF
    query_offset = 0.03 * rng.normal(size=N)
    hub = A.sum(1)
    hub = (hub - hub.mean()) / (hub.std() + 1e-8)

    # Unordered pairs: mostly random, enriched for structured pairs so they matter.
    structured = [tuple(e) for e in phys.T.tolist() if e[0] < e[1]]
    structured += sorted(met.isoenzyme_pairs) + sorted(met.complex_pairs)
    structured = [p for p in structured if not essential[p[0]] and not essential[p[1]]]
    n_unique = int(np.ceil(R / 1.3))
    pairs: set[tuple[int, int]] = set()
    if structured:
        take = rng.choice(len(structured), size=min(len(structured), n_unique // 5), replace=False)
        pairs.update(structured[i] for i in sorted(take.tolist()))
    max_pairs = len(viable) * (len(viable) - 1) // 2
    while len(pairs) < min(n_unique, max_pairs):
        a, b = rng.choice(viable, size=2, replace=False).tolist()
        pairs.add(_pair(a, b))
    upairs = np.array(sorted(pairs), dtype=np.int64)  # (U, 2)
    rng.shuffle(upairs)
    # Orientations: every pair once in a random role order, ~30% also the other way round.
    flip = rng.random(len(upairs)) < 0.5
    ordered = np.where(flip[:, None], upairs[:, ::-1], upairs)
    both = ordered[: max(0, R - len(ordered))][:, ::-1]
    genes = np.concatenate([ordered, both])
    if len(genes) < R:  # tiny graphs: repeat measurements of random pairs
        genes = np.concatenate([genes, genes[rng.integers(0, len(genes), size=R - len(genes))]])
    genes = genes[rng.permutation(len(genes))[:R]]
    q, a = genes[:, 0], genes[:, 1]

    phys_set = {tuple(e) for e in phys.T.tolist()}
    reaction_pairs = {_pair(x, y) for gs in met.reaction_genes for x in gs for y in gs if x != y}
    key = [_pair(x, y) for x, y in zip(q.tolist(), a.tolist())]
    is_phys = np.array([(x, y) in phys_set for x, y in key])
    is_iso = np.array([k in met.isoenzyme_pairs for k in key])
    is_cplx = np.array([k in met.complex_pairs for k in key])
    shares = np.array([k in reaction_pairs for k in key])

    smooth = np.einsum("rd,de,re->r", h[q], W, h[a])
    smooth = smooth / (smooth.std() + 1e-8)  # fixed scale, so every seed is equally learnable
    eps_true = (
        0.065 * smooth
        - 0.010 * (hub[q] + hub[a])
        - 0.08 * is_phys
        - 0.06 * shares
        - 0.18 * is_iso
        + 0.06 * is_cplx
        + query_offset[q]
    )
    eps = eps_true + _NOISE_EPS * rng.normal(size=R)
    fitness = smf[q] * smf[a] + eps  # NaN where either SMF is unknown
    fitness_std = np.where(np.isnan(fitness), np.nan, 0.02 + 0.02 * rng.random(R))
    p_value = torch.special.erfc(torch.from_numpy(np.abs(eps) / _NOISE_EPS / np.sqrt(2.0))).numpy()

    table = PerturbationTable(
        genes=torch.from_numpy(np.stack([q, a], axis=1).astype(np.int64)),
        fitness=torch.from_numpy(fitness.astype(np.float32)),
        gene_interaction=torch.from_numpy(eps.astype(np.float32)),
        fitness_derived=torch.zeros(R, dtype=torch.bool),
        gene_interaction_p_value=torch.from_numpy(p_value.astype(np.float32)),
        fitness_std=torch.from_numpy(fitness_std.astype(np.float32)),
    )
    return table, smf
