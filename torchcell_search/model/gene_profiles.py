r"""Gene inputs made of train-only interaction profiles and annotations (``model.gene_inputs=profile``).

Instead of a learnable identity embedding per gene (which no record trains for a gene
without records), every gene enters the graph network with what is known of it:

- its **interaction profile** from the train records: row ``g`` of the ``(P, P)`` matrix
  ``Y`` of train epsilon cell means (query ``g`` against every array) and column ``g``
  (every query against array ``g``), standardised by the train epsilon's mean and sd, each
  embedded as a sum of learned partner embeddings (:class:`~.hetero_cell.HeteroCell`);
- its **annotations**, measured without any pair: a truncated SVD of its
  information-content-weighted GO term vector (ancestors included,
  :mod:`~torchcell_search.data.annotations`) and its single-mutant fitness;
- the embedded profiles its **lenders** show: the ``K = 10`` train genes with the most
  similar GO annotations (cosine of those vectors) and the 10 with the closest single-mutant
  fitness (weights :math:`\exp(-(f_g - f_j)^2 / h)`, ``h = 0.02``,
  :func:`~.collaborative.smf_kernel`), averaged over the lenders shown with those weights. This is what the hand-made features 12-13 and 19-20 of
  :mod:`~.collaborative` do with raw profiles, here inside the network.

The pair readout (:meth:`HeteroCell._pair_terms`) then adds the product of the two genes'
embeddings and **borrowed entries**: attention over the query's lenders that were measured
with this array reads their train epsilon with it (and the same for the array's lenders),
the attention scored from the network's gene embeddings plus the lender weight's log.

Genes held out of the split (or in no record at all) have no profile: the network must
rebuild one from their neighbours and annotations. Training teaches it to: each step hides
the profiles of a random fraction of the train genes (``model.gene_profile_dropout``),
removing their rows and columns from ``Y`` so no record of theirs reaches any input, and
scores only records with a hidden gene (the others' labels sit in the inputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from torch import Tensor

from torchcell_search.data.annotations import GeneInputs, dataset_gene_inputs, information_content
from torchcell_search.data.types import Dataset, Split
from torchcell_search.model.collaborative import smf_kernel

__all__ = ["GO_COMPONENTS", "LENDERS", "NUM_ANNOTATIONS", "GeneProfiles", "gene_profiles"]

#: GO components kept from the SVD (fewer when there are fewer terms; zero-padded).
GO_COMPONENTS = 32
#: Annotation columns per gene: the GO components, the centred SMF, whether SMF is known.
NUM_ANNOTATIONS = GO_COMPONENTS + 2
#: Lenders per gene and kind (GO, SMF).
LENDERS = 10


@dataclass
class GeneProfiles:
    """What :meth:`HeteroCell.set_gene_profiles` installs.

    Shapes: ``ids`` ``(P,)`` graph index of the genes with train records; ``matrix``
    ``(P, P)`` standardised train epsilon cell means (query rows, array columns; 0 where
    unobserved); ``observed`` ``(P, P)`` bool; ``annotations`` ``(N_gene, NUM_ANNOTATIONS)``;
    ``lenders`` ``(N_gene, 2, LENDERS)`` long profile rows (GO, SMF; ``P`` = none) and
    ``lender_weights`` ``(N_gene, 2, LENDERS)``.
    """

    ids: Tensor
    matrix: Tensor
    observed: Tensor
    annotations: Tensor
    lenders: Tensor
    lender_weights: Tensor

    FIELDS = ("ids", "matrix", "observed", "annotations", "lenders", "lender_weights")

    @classmethod
    def from_model_state(cls, state: dict, prefix: str = "") -> "GeneProfiles":
        return cls(*(state[prefix + f"gene_profile_{name}"].cpu() for name in cls.FIELDS))


def gene_profiles(dataset: Dataset, split: Split) -> GeneProfiles:
    """Profiles from ``split.train`` only, and every graph gene's annotations."""
    genes = dataset.table.genes.numpy()
    eps = dataset.table.gene_interaction.numpy().astype(np.float64)
    train = split.train.numpy()
    train = train[np.isfinite(eps[train])]
    ids = np.unique(genes[train].reshape(-1))
    row = np.full(dataset.graph.num_genes, -1)
    row[ids] = np.arange(len(ids))
    q, a = row[genes[train, 0]], row[genes[train, 1]]
    y = eps[train]
    y = (y - y.mean()) / max(y.std(), 1e-12)
    P = len(ids)
    total, count = np.zeros((P, P)), np.zeros((P, P))
    np.add.at(total, (q, a), y)
    np.add.at(count, (q, a), 1.0)
    matrix = total / np.maximum(count, 1.0)
    inputs = dataset_gene_inputs(dataset)
    go = _unit_go(inputs.go)  # once, for the lenders and the components
    lenders, weights = _lenders(inputs, go, ids)
    return GeneProfiles(torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(matrix, dtype=torch.float32),
                        torch.as_tensor(count > 0), torch.as_tensor(_annotations(inputs, go)),
                        torch.as_tensor(lenders, dtype=torch.long), torch.as_tensor(weights, dtype=torch.float32))


def gene_annotations(dataset: Dataset) -> np.ndarray:
    """``(N_gene, NUM_ANNOTATIONS)`` float32: GO SVD components (unit sd each), centred SMF, SMF known."""
    inputs = dataset_gene_inputs(dataset)
    return _annotations(inputs, _unit_go(inputs.go))


def _unit_go(go: sparse.spmatrix) -> sparse.csr_matrix:
    """Rows of the 0/1 GO matrix weighted by information content and scaled to unit length."""
    weighted = go.tocsr().astype(np.float64).multiply(information_content(go)[None, :]).tocsr()
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(1)).ravel())
    return weighted.multiply(1.0 / np.maximum(norms, 1e-12)[:, None]).tocsr()


def _lenders(inputs: GeneInputs, go: sparse.csr_matrix, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 2, LENDERS)`` profile rows and weights of each gene's GO and SMF lenders (never itself).

    ``go``: :func:`_unit_go` of the inputs' GO matrix."""
    N, P = go.shape[0], len(ids)
    rows = np.full((N, 2, LENDERS), P)
    weights = np.zeros((N, 2, LENDERS))
    k = min(LENDERS, P)
    if k == 0:
        return rows, weights
    similarity = np.zeros((2, N, P))
    if go.shape[1]:
        similarity[0] = (go @ go[ids].T).toarray()
    known = np.isfinite(inputs.smf)
    smf = np.where(known, inputs.smf, 0.0)
    similarity[1] = smf_kernel(smf, smf[ids], known, known[ids])
    similarity[:, ids, np.arange(P)] = 0.0  # a gene does not lend to itself
    top = np.argsort(-similarity, axis=2, kind="stable")[:, :, :k]  # (2, N, k)
    w = np.take_along_axis(similarity, top, 2)
    rows[:, :, :k] = np.where(w > 0, top, P).transpose(1, 0, 2)
    weights[:, :, :k] = np.clip(w, 0.0, None).transpose(1, 0, 2)
    return rows, weights


def _annotations(inputs: GeneInputs, go: sparse.csr_matrix) -> np.ndarray:
    """See :func:`gene_annotations`; ``go``: :func:`_unit_go` of the inputs' GO matrix."""
    from scipy.sparse.linalg import svds

    out = np.zeros((go.shape[0], NUM_ANNOTATIONS), dtype=np.float32)
    k = min(GO_COMPONENTS, min(go.shape) - 1)
    if k > 0 and go.nnz:
        # ARPACK from a fixed start vector: the same components on every run and machine.
        u, s, _ = svds(go, k=k, v0=np.ones(min(go.shape)) / np.sqrt(min(go.shape)))
        comps = u[:, ::-1] * s[::-1]
        comps *= np.sign(comps[np.abs(comps).argmax(0), np.arange(k)])  # sign: largest entry positive
        comps /= np.maximum(comps.std(0), 1e-12)
        out[:, :k] = comps
    known = np.isfinite(inputs.smf)
    centre = inputs.smf[known].mean() if known.any() else 0.0
    scale = inputs.smf[known].std() if known.sum() > 1 else 1.0
    out[:, GO_COMPONENTS] = np.where(known, (inputs.smf - centre) / max(scale, 1e-12), 0.0)
    out[:, GO_COMPONENTS + 1] = known
    return out
