"""Collaborative-filtering features of a gene pair, from the train split's interaction profiles.

On the Costanzo mirror 804 genes carry 350k records: the query x array matrix of
epsilon is ~80% observed, so a pair's interaction is best predicted from how its two genes
interact with everyone else (their *profiles*). The cell graph enters where a gene has no
profile: an unseen gene borrows the profiles of its graph neighbours and of genes with
similar GO annotations, and reads its single-mutant fitness. This module turns the train
records into ``F = 21`` features per (query, array) pair that a model
(``model.profile_features=true``) reads beside its graph embeddings:

=====  =======================================================================================
 0     role-aware matrix factorisation of epsilon (rank 64, :mod:`~.baselines`)
 1     query-side neighbours: :math:`\\sum_{q'} s(q, q') \\tilde y_{q'a} / \\sum |s|` over the 30
       queries whose epsilon profiles correlate most with ``q``'s (shrunk by overlap)
 2     array-side neighbours: the same over arrays
 3-4   1 and 2 on the residuals of the factorisation (local structure it misses)
 5     role-aware matrix factorisation of fitness
 6-7   borrowed profiles, physical edges: the mean train epsilon of ``(q', a)`` over
       ``q``'s physical neighbours ``q'`` (6), and of ``(q, a')`` over ``a``'s (7)
 8-9   the same over genes sharing a GPR reaction (isoenzymes, complex members)
 10-11 the same over regulatory relations: TF -> target edges either way, plus the 10
       genes whose TF sets are most similar (cosine), weighted by that similarity
 12-13 the same over the 10 genes with the most similar GO annotations (cosine of
       information-content-weighted term vectors, ancestors included;
       :mod:`~torchcell_search.data.annotations`), weighted by the similarity
 14-15 learned similarity: kernel ridge regression of the fit genes' centred profiles on
       the GO kernel, :math:`W = K_{\\cdot,fit} (K_{fit,fit} + \\lambda I)^{-1}` with
       :math:`\\lambda = 10`; row ``q`` of :math:`W \\tilde Y` (14), column ``a`` of
       :math:`\\tilde Y W^\\top` (15)
 16-18 single-mutant fitness of the query, of the array, and their product (centred; an
       input measured without any pair, never a label)
 19-20 SMF similarity: 14-15 with the kernel :math:`K_{ij} = \\exp(-(f_i - f_j)^2 / h)` of the
       two genes' single-mutant fitness ``f`` (:math:`h = 0.02`, :math:`\\lambda = 30`; genes of
       unknown SMF lend and borrow nothing): genes about as sick as ``q`` lend their profiles
=====  =======================================================================================

with :math:`\\tilde y` the row-centred profile and :math:`s` the Pearson correlation of two
profiles over their common partners times ``n / (n + 10)``. ``model.input_*`` switch the
groups 6-7 (physical), 8-9 (metabolic), 10-11 (regulatory), 12-13 (go), 14-15
(learned_similarity), 19-20 (smf_similarity) and 16-20 (smf: every use of SMF) off
(:data:`INPUT_COLUMNS`); ``model.profile_dropout``
hides a train record's own-profile columns 0-5 with that probability.

**No label of a record reaches its own features, and no val or test label reaches any.**
The features of a *train* record come from a fit on the other train records, out of fold,
with 5 folds shaped like the split: folds of records for the random split, of unordered
gene pairs (both orientations leave together) for the pair split, of genes for the gene
split (every record of a held-out gene leaves, so its features look like those of a test
gene). Every other pair (val, test, ``predict``) reads the :class:`ProfileTables` fitted on
all train records. The factorisation inside each fit chooses its iteration count on an
inner split of that fit's own records and is then refitted on all of them. A model thus
learns how far to trust each feature from features as noisy as those it will see. Genes
without train records get zeros (the features' train mean) except for the borrowed ones
and SMF; genes in no record at all (only in the graph) get zeros until
:meth:`ProfileTables.cover` builds their rows (``predict`` does it).

Measured on the mirror (docs/results.md): on the pair split a linear blend of features
0-4 carries most of the signal; on the gene split the GO-based features (12-15) and SMF
(16-20) carry most of what an unseen gene has. The SMF similarity (19-20) was chosen on the
gene split's validation figure over five seeds, where it beat squared/cubed GO kernels, GO
plus graph-adjacency kernels and other ridges (linear read-out: val 0.133 -> 0.142, test
0.104 -> 0.113 over the same seeds).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from typing import TYPE_CHECKING

from torchcell_search.data.types import GPR, LABELS, PHYSICAL, REGULATORY, Dataset, Split
from torchcell_search.model.baselines import Baseline, BaselineConfig, fit_baseline

if TYPE_CHECKING:
    from torchcell_search.config import ModelConfig

__all__ = ["FEATURES", "INPUT_COLUMNS", "NUM_PROFILE_FEATURES", "OWN_PROFILE_COLUMNS", "ProfileTables", "profile_features"]

#: Features per pair, in column order (see the module table).
FEATURES: tuple[str, ...] = (
    "mf_epsilon", "query_neighbours", "array_neighbours", "query_neighbours_residual", "array_neighbours_residual",
    "mf_fitness", "physical_query", "physical_array", "metabolic_query", "metabolic_array",
    "regulatory_query", "regulatory_array", "go_query", "go_array", "learned_similarity_query",
    "learned_similarity_array", "smf_query", "smf_array", "smf_product", "smf_similarity_query",
    "smf_similarity_array",
)
NUM_PROFILE_FEATURES = len(FEATURES)
#: The columns each input group of ``model.input_*`` feeds (a switched-off input reads zeros,
#: the train mean). The learned similarity is a kernel over GO annotations.
INPUT_COLUMNS: dict[str, tuple[int, ...]] = {
    "physical": (6, 7), "metabolic": (8, 9), "regulatory": (10, 11), "go": (12, 13),
    "learned_similarity": (14, 15), "smf": (16, 17, 18, 19, 20), "smf_similarity": (19, 20),
}
#: Columns read from a gene's own train profile (what profile dropout hides).
OWN_PROFILE_COLUMNS: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
_FOLDS = 5
_NEIGHBOURS = 30
_SHRINK = 10.0
_MF = BaselineConfig(rank=64)
_GO_NEIGHBOURS = 10  # GO-similar genes that lend their profiles (tried 10, 30, 50 on the gene split: 10 best)
_COREGULATED = 10
_KERNEL_RIDGE = 10.0  # ridge of the learned similarity (tried 1 and 10 on the gene split)
# SMF similarity (19-20): bandwidth (fitness units squared) and ridge, chosen on the gene
# split's validation Pearson over seeds 0-4 (h 0.005 / 0.02 / 0.08, ridge 10 / 30).
_SMF_BANDWIDTH = 0.02
_SMF_RIDGE = 30.0


@dataclass
class ProfileTables:
    """Features of every pair of genes with records, fitted on all train records.

    The train records and the scaling travel with the tables, so :meth:`cover` can add
    rows for genes in no record (a gene never screened) from their graph, GO and SMF
    inputs, exactly as an unseen gene of the split gets them.

    Shapes:
        ``lookup``: ``(N_gene,)`` long, compact row of each gene with records (``G`` = none);
        ``tables``: ``(F, G + 1, G + 1)`` standardised features, row/column ``G`` all zero;
        ``train_genes``: ``(R_train, 2)`` long; ``train_labels``: ``(R_train, 2)`` (fitness,
        gene_interaction); ``scale``: ``(2, F)`` mean and standard deviation of the features;
        ``meta``: ``(2,)`` long, the seed and the split kind's index in ``("random", "pair", "gene")``.
    """

    lookup: Tensor
    tables: Tensor
    train_genes: Tensor | None = None
    train_labels: Tensor | None = None
    scale: Tensor | None = None
    meta: Tensor | None = None

    def __call__(self, genes: Tensor) -> Tensor:
        """``(B, 2)`` gene indices (query, array) -> ``(B, F)`` features."""
        rows = self.lookup[genes.clamp_min(0)]  # (B, 2)
        return self.tables[:, rows[:, 0], rows[:, 1]].T

    @classmethod
    def from_model_state(cls, state: dict) -> "ProfileTables":
        """The tables a model's (or checkpoint's) ``state_dict`` holds (``profile_*`` entries)."""
        train = state.get("profile_train_genes")
        stored = train is not None and len(train) > 0
        return cls(state["profile_lookup"].cpu(), state["profile_tables"].cpu(),
                   train.cpu() if stored else None, state["profile_train_labels"].cpu() if stored else None,
                   state["profile_scale"].cpu() if stored else None, state["profile_meta"].cpu() if stored else None)

    def missing(self, genes: Tensor) -> Tensor:
        """The distinct genes of ``genes`` that have no row of their own."""
        genes = genes[genes >= 0].unique()
        return genes[self.lookup[genes] == self.tables.shape[1] - 1]

    def cover(self, dataset: Dataset, genes: Tensor) -> "ProfileTables":
        """Tables with rows for ``genes`` too, from the stored train records (same features elsewhere).

        A gene without records lends nothing and borrows from its physical, regulatory,
        metabolic and GO neighbours among the train genes and reads its own SMF, like a
        held-out gene of the gene split. Refits the factorisation (about a minute on the mirror).

        Raises:
            DataError: the tables were saved without their train records.
        """
        from torchcell_search.data.types import PerturbationTable
        from torchcell_search.errors import DataError

        new = self.missing(genes)
        if not len(new):
            return self
        if self.train_genes is None or self.train_labels is None or self.scale is None or self.meta is None:
            raise DataError("profile tables: saved without their train records; retrain to predict genes without records")
        G = self.tables.shape[1] - 1
        order = torch.argsort(self.lookup)
        old_ids = order[: G].numpy()  # graph index of rows 0..G-1
        gene_ids = np.concatenate([old_ids, new.numpy()])
        R = len(self.train_genes)
        nan = torch.full((R,), float("nan"))
        table = PerturbationTable(self.train_genes, self.train_labels[:, 0].float(), self.train_labels[:, 1].float(),
                                  torch.zeros(R, dtype=torch.bool), nan, nan)
        records = Dataset(dataset.name, dataset.graph, table, dataset.info)
        lookup = np.full(dataset.graph.num_genes, len(gene_ids))
        lookup[gene_ids] = np.arange(len(gene_ids))
        rows = lookup[self.train_genes.numpy()]
        seed, kind = int(self.meta[0]), ("random", "pair", "gene")[int(self.meta[1])]
        split = Split(kind, seed, torch.arange(R), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
        full = _fit_tables(records, split, np.arange(R), rows, gene_ids, _relations(records, gene_ids), seed)
        mean, std = self.scale[0].numpy()[:, None, None], self.scale[1].numpy()[:, None, None]
        tables = (full - mean) / std
        tables[:, -1, :] = tables[:, :, -1] = 0.0
        return ProfileTables(torch.as_tensor(lookup), torch.as_tensor(tables, dtype=torch.float32), self.train_genes,
                             self.train_labels, self.scale, self.meta)


def profile_input_mask(cfg: "ModelConfig") -> Tensor:
    """``(F,)`` 1 for the feature columns whose input ``cfg`` switches on (``model.input_*``)."""
    mask = torch.ones(NUM_PROFILE_FEATURES)
    for name, columns in INPUT_COLUMNS.items():
        if not getattr(cfg, f"input_{name}"):
            mask[list(columns)] = 0.0
    return mask


def mask_profile(profile: Tensor, mask: Tensor, dropout: float) -> Tensor:
    """Zero the switched-off inputs; in training, hide a record's own-profile columns with probability ``dropout``.

    Shapes: ``profile`` ``(B, F)``, ``mask`` ``(F,)``. Zero is the train mean of every
    (standardised) feature, what a gene without records reads.
    """
    profile = profile * mask.to(profile.dtype)
    if dropout > 0:
        hide = torch.rand(profile.shape[0], 1, device=profile.device) < dropout  # (B, 1)
        own = torch.zeros(profile.shape[1], dtype=torch.bool, device=profile.device)
        own[list(OWN_PROFILE_COLUMNS)] = True
        profile = profile.masked_fill(hide & own, 0.0)
    return profile


def _neighbour_means(values: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """``(G, G)`` prediction of each cell from the row's most similar rows (see module doc)."""
    n = np.maximum(observed.sum(1, keepdims=True), 1.0)
    centred = (values - (values * observed).sum(1, keepdims=True) / n) * observed
    squares = (centred**2) @ observed.T  # (G, G): sum over common partners of row i's squares
    overlap = observed @ observed.T
    sim = (centred @ centred.T) / (np.sqrt(squares * squares.T) + 1e-9) * overlap / (overlap + _SHRINK)
    np.fill_diagonal(sim, 0.0)
    weak = np.argsort(-np.abs(sim), axis=1)[:, _NEIGHBOURS:]
    np.put_along_axis(sim, weak, 0.0, axis=1)
    return (sim @ centred) / (np.abs(sim) @ observed + 1e-9)


def _fit_tables(dataset: Dataset, split: Split, fit: np.ndarray, rows: np.ndarray, gene_ids: np.ndarray,
                relations: "_Relations", seed: int) -> np.ndarray:
    """``(F, G + 1, G + 1)`` raw features from the records ``fit``.

    ``rows``: ``(R, 2)`` compact rows of every record; ``gene_ids``: ``(G,)`` graph index of
    each row; ``relations``: what relates the rows' genes without any record.
    """
    G = len(gene_ids)
    mf = _train_only_mf(dataset, split.kind, fit, seed)
    seen = np.zeros(G + 1, dtype=bool)
    seen[rows[fit].reshape(-1)] = True
    ids = np.append(gene_ids, gene_ids[0])
    grid = torch.as_tensor(np.stack(np.meshgrid(ids, ids, indexing="ij"), -1)).reshape(-1, 2)
    # A gene outside the fit has no factors (the baseline's rule): its pairs get the seen
    # partner's effects, which is what the gene split can use.
    mf_grid = mf.predict(grid).numpy().reshape(G + 1, G + 1, 2)  # (G + 1, G + 1, T)

    eps = dataset.table.gene_interaction.numpy().astype(np.float64)
    ok = fit[np.isfinite(eps[fit])]
    q, a = rows[ok, 0], rows[ok, 1]
    count = np.zeros((G + 1, G + 1))
    np.add.at(count, (q, a), 1.0)
    observed = (count > 0).astype(np.float64)

    def cell_means(target: np.ndarray) -> np.ndarray:
        total = np.zeros((G + 1, G + 1))
        np.add.at(total, (q, a), target)
        return total / np.maximum(count, 1.0)

    mean, residual = cell_means(eps[ok]), cell_means(eps[ok] - mf_grid[q, a, 1])
    out = [mf_grid[..., 1]]
    for cells in (mean, residual):
        out += [_neighbour_means(cells, observed), _neighbour_means(cells.T, observed.T).T]
    out.append(mf_grid[..., 0])
    def borrow(weights: np.ndarray) -> None:
        # Only genes inside the fit lend their profiles.
        lend = np.zeros((G + 1, G + 1))
        lend[:G, :G] = weights
        lend *= seen[None, :]
        out.append((lend @ mean) / np.maximum(lend @ observed, 1e-9))  # q's neighbours with a
        out.append((mean @ lend.T) / np.maximum(observed @ lend.T, 1e-9))  # q with a's neighbours

    for adj in (relations.physical, relations.metabolic):
        borrow(adj)
    borrow(_top_k(relations.coregulation, seen[:G], _COREGULATED) + relations.regulatory)
    borrow(_top_k(relations.go, seen[:G], _GO_NEIGHBOURS))
    # Learned similarity: kernel ridge regression of the fit genes' centred profiles on the
    # GO kernel, so every gene gets a weighted sum of fit profiles with learned weights
    # W = K[:, fit] (K[fit, fit] + lambda I)^-1 (a similarity fitted to the profiles).
    fit_genes = np.flatnonzero(seen[:G])
    centred = np.zeros((G + 1, G + 1))
    centred[:G, :G] = (mean[:G, :G] - (mean * observed).sum() / max(observed.sum(), 1.0)) * observed[:G, :G]
    weights = _kernel_ridge_weights(relations.go + np.eye(G), fit_genes, _KERNEL_RIDGE)
    out.append(weights @ centred)
    out.append(centred @ weights.T)
    smf = np.append(relations.smf, 0.0)
    out += [np.repeat(smf[:, None], G + 1, 1), np.repeat(smf[None, :], G + 1, 0), smf[:, None] * smf[None, :]]
    # SMF similarity: the same regression on a kernel of single-mutant fitness (how sick a
    # deletion is predicts how many and which interactions it has); unknown SMF: no kernel row.
    kernel = smf_kernel(relations.smf, relations.smf, relations.smf_known, relations.smf_known)
    np.fill_diagonal(kernel, 1.0)
    weights = _kernel_ridge_weights(kernel, fit_genes, _SMF_RIDGE)
    out.append(weights @ centred)
    out.append(centred @ weights.T)
    return np.stack(out).astype(np.float32)


def smf_kernel(rows: np.ndarray, columns: np.ndarray, rows_known: np.ndarray, columns_known: np.ndarray) -> np.ndarray:
    """``(len(rows), len(columns))`` :math:`\\exp(-(f_i - f_j)^2 / h)` of two genes' single-mutant
    fitness ``f`` (``h`` = ``_SMF_BANDWIDTH``), 0 where either is unknown."""
    diff = rows[:, None] - columns[None, :]
    return np.exp(-(diff**2) / _SMF_BANDWIDTH) * rows_known.astype(np.float64)[:, None] * columns_known[None, :]


def _kernel_ridge_weights(kernel: np.ndarray, fit_genes: np.ndarray, ridge: float) -> np.ndarray:
    """``(G + 1, G + 1)`` weights :math:`W = K_{\\cdot,fit} (K_{fit,fit} + \\lambda I)^{-1}` (zero outside the fit columns).

    ``kernel``: ``(G, G)`` symmetric; ``fit_genes``: the rows with records in the fit.
    """
    G = len(kernel)
    weights = np.zeros((G + 1, G + 1))
    if len(fit_genes):
        inner = kernel[np.ix_(fit_genes, fit_genes)] + ridge * np.eye(len(fit_genes))
        weights[:G, fit_genes] = np.linalg.solve(inner, kernel[fit_genes, :]).T  # (G, n_fit), K symmetric
    return weights


def _top_k(similarity: np.ndarray, lenders: np.ndarray, k: int) -> np.ndarray:
    """``(G, G)`` the ``k`` most similar lenders of each gene (positive similarities only)."""
    sim = np.clip(similarity, 0.0, None) * lenders[None, :]
    out = np.zeros_like(sim)
    top = np.argsort(-sim, axis=1)[:, :k]
    np.put_along_axis(out, top, np.take_along_axis(sim, top, 1), 1)
    return out


@dataclass
class _Relations:
    """What relates the record genes without any record: ``(G, G)`` weights, ``(G,)`` SMF."""

    physical: np.ndarray  # 0/1 physical interaction
    metabolic: np.ndarray  # 0/1 sharing a GPR reaction
    regulatory: np.ndarray  # 0/1 TF -> target, either direction
    coregulation: np.ndarray  # cosine of the genes' TF sets
    go: np.ndarray  # cosine of the IC-weighted GO term vectors (ancestors included)
    smf: np.ndarray  # single-mutant fitness, centred, unknown = 0
    smf_known: np.ndarray  # bool, the SMF is measured


def _relations(dataset: Dataset, gene_ids: np.ndarray) -> _Relations:
    """Graph, GO and SMF relations between the genes ``gene_ids`` (graph indices)."""
    from torchcell_search.data.annotations import dataset_gene_inputs, information_content

    G, N = len(gene_ids), dataset.graph.num_genes
    phys, shared = _adjacency(dataset, gene_ids)
    row = np.full(N, -1)
    row[gene_ids] = np.arange(G)
    edges = dataset.graph.data[REGULATORY].edge_index.numpy()
    direct = np.zeros((G, G))
    e = row[edges]
    e = e[:, (e >= 0).all(0)]
    direct[e[0], e[1]] = direct[e[1], e[0]] = 1.0
    np.fill_diagonal(direct, 0.0)
    tfs, tf_col = np.unique(edges[0], return_inverse=True)
    targets = np.zeros((G, len(tfs)))
    keep = row[edges[1]] >= 0
    targets[row[edges[1, keep]], tf_col[keep]] = 1.0
    coreg = _cosine(targets)

    inputs = dataset_gene_inputs(dataset)
    go = inputs.go.tocsc()
    ic = information_content(go)
    go_sim = _cosine(go[gene_ids].toarray() * ic[None, :]) if go.shape[1] else np.zeros((G, G))
    known = np.isfinite(inputs.smf)
    centre = inputs.smf[known].mean() if known.any() else 0.0  # over every gene, so any gene set agrees
    smf = np.where(known, inputs.smf - centre, 0.0)[gene_ids]
    return _Relations(phys, shared, direct, coreg, go_sim, smf, known[gene_ids])


def _cosine(x: np.ndarray) -> np.ndarray:
    """``(G, G)`` cosine similarity of the rows of ``x``, zero diagonal (zero rows: 0)."""
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    np.fill_diagonal(sim, 0.0)
    return sim


def _train_only_mf(dataset: Dataset, kind: str, fit: np.ndarray, seed: int) -> Baseline:
    """Role-aware factorisation of the records ``fit`` that reads no other label.

    Its iteration count per label is chosen on an inner split of ``fit`` (one fold of
    :func:`_folds`, shaped like the outer split), then the factorisation is refitted on all
    of ``fit`` for that many iterations. Val and test records take no part, so rewriting
    their labels cannot move a feature.
    """
    genes = dataset.table.genes.numpy()
    held = _folds(genes, fit, kind, seed + 1)[0]
    empty = torch.zeros(0, dtype=torch.long)
    inner = Split(kind, seed, torch.as_tensor(fit[~held]), torch.as_tensor(fit[held]), empty)
    chosen = fit_baseline("matrix_factorisation", dataset.table, inner, seed=seed, cfg=_MF).info["best_iteration"]
    counts = tuple(max(1, int(chosen[label])) for label in LABELS)
    whole = Split(kind, seed, torch.as_tensor(fit), empty, empty)
    return fit_baseline("matrix_factorisation", dataset.table, whole, seed=seed, cfg=replace(_MF, iterations=counts))


def _adjacency(dataset: Dataset, gene_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(G, G)`` physical and shared-GPR-reaction relations between the record genes."""
    G, N = len(gene_ids), dataset.graph.num_genes
    row = np.full(N, -1)
    row[gene_ids] = np.arange(G)
    data = dataset.graph.data
    phys = np.zeros((G, G))
    e = row[data[PHYSICAL].edge_index.numpy()]
    e = e[:, (e >= 0).all(0)]
    phys[e[0], e[1]] = phys[e[1], e[0]] = 1.0
    gpr = data[GPR].hyperedge_index.numpy()
    keep = row[gpr[0]] >= 0
    incidence = np.zeros((G, dataset.graph.num_reactions))
    incidence[row[gpr[0, keep]], gpr[1, keep]] = 1.0
    shared = (incidence @ incidence.T > 0).astype(np.float64)
    for adj in (phys, shared):
        np.fill_diagonal(adj, 0.0)
    return phys, shared


def _folds(genes: np.ndarray, train: np.ndarray, kind: str, seed: int) -> list[np.ndarray]:
    """Boolean masks over ``train``: the records each out-of-fold fit leaves out."""
    rng = np.random.default_rng(seed)
    if kind == "gene":
        # A record leaves with either of its genes; it takes its features from the first
        # fold that holds it out.
        fold_of_gene = rng.integers(0, _FOLDS, genes.max() + 1)
        q, a = fold_of_gene[genes[train, 0]], fold_of_gene[genes[train, 1]]
        return [(q == k) | (a == k) for k in range(_FOLDS)]
    if kind == "random":
        # Records leave one by one: a test record of a random split may have its reverse
        # orientation or a repeat measurement in train, and so may a held-out record.
        fold = rng.integers(0, _FOLDS, len(train))
        return [fold == k for k in range(_FOLDS)]
    pair = np.minimum(genes[train, 0], genes[train, 1]) * (genes.max() + 1) + np.maximum(genes[train, 0], genes[train, 1])
    _, group = np.unique(pair, return_inverse=True)
    fold = rng.integers(0, _FOLDS, group.max() + 1)[group]
    return [fold == k for k in range(_FOLDS)]


def _raw_features(dataset: Dataset, split: Split, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unscaled out-of-fold train features ``(R_train, F)``, full tables ``(F, G + 1, G + 1)``, lookup."""
    genes = dataset.table.genes.numpy()
    train = split.train.numpy()
    gene_ids = np.unique(genes.reshape(-1))  # every gene with a record, in any split
    G = len(gene_ids)
    lookup = np.full(dataset.graph.num_genes, G)
    lookup[gene_ids] = np.arange(G)
    rows = lookup[genes]  # (R, 2)
    relations = _relations(dataset, gene_ids)

    oof = np.zeros((len(train), NUM_PROFILE_FEATURES), dtype=np.float32)
    done = np.zeros(len(train), dtype=bool)
    for held in _folds(genes, train, split.kind, seed):
        tab = _fit_tables(dataset, split, train[~held], rows, gene_ids, relations, seed)
        take = held & ~done
        oof[take] = tab[:, rows[train[take], 0], rows[train[take], 1]].T
        done |= take
    full = _fit_tables(dataset, split, train, rows, gene_ids, relations, seed)
    return oof, full, lookup


_CACHE: dict[str, tuple[Tensor, ProfileTables]] = {}


def profile_features(dataset: Dataset, split: Split, *, seed: int = 0) -> tuple[Tensor, ProfileTables]:
    """Out-of-fold features of the train records and the tables for every other pair.

    Costs 6 matrix factorisations and 24 neighbour passes (~1.5 min on the full mirror, one
    core); the result is cached per process for the same records and split, so the trials
    of one worker pay it once.

    Returns:
        ``train_features`` ``(R_train, F)`` in ``split.train`` order, standardised with their
        own mean and standard deviation; :class:`ProfileTables` with the same scaling.
    """
    digest = hashlib.sha1()
    for t in (dataset.table.genes, dataset.table.gene_interaction, dataset.table.fitness, split.train, split.val):
        digest.update(t.numpy().tobytes())
    key = f"{digest.hexdigest()}:{seed}"
    if key in _CACHE:
        return _CACHE[key]
    oof, full, lookup = _raw_features(dataset, split, seed)
    G = full.shape[1] - 1
    mean, std = oof.mean(0), oof.std(0)
    # A feature constant over the train records (on the gene split the profile neighbours of
    # a held-out gene are always empty) teaches the model nothing: read it as zero everywhere
    # rather than blow the rare pairs where it is not (two genes with records) up by 1/std.
    std = np.where(std > 1e-6, std + 1e-6, np.inf).astype(np.float32)
    train_features = torch.as_tensor((oof - mean) / std)
    tables = (full - mean[:, None, None]) / std[:, None, None]
    tables[:, G, :] = 0.0  # genes in no record: the train mean of every feature (until ProfileTables.cover)
    tables[:, :, G] = 0.0
    train = split.train
    labels = dataset.table.labels()[train]
    meta = torch.tensor([seed, ("random", "pair", "gene").index(split.kind)])
    result = (train_features, ProfileTables(torch.as_tensor(lookup), torch.as_tensor(tables), dataset.table.genes[train].long(),
                                            labels.float(), torch.as_tensor(np.stack([mean, std])), meta))
    _CACHE.clear()  # one split per process at a time: tables are ~26 MB
    _CACHE[key] = result
    return result
