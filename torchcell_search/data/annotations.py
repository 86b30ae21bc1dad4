"""What a gene is, without any pair: its single-mutant fitness and its GO annotations.

These are the inputs a gene never screened in a double-mutant experiment still has, so a
model can read them for a gene with no record (``model.gene_inputs``,
:mod:`torchcell_search.model.collaborative`):

- **single-mutant fitness** (SMF): Costanzo 2016's per-strain table, one value per gene
  (:func:`~torchcell_search.data.readers.read_smf`; 30 degrees first). It is measured on the
  single deletion alone, so it is an input, not a label of any pair.
- **GO annotations**: the SGD GAF file mapped to the graph's systematic names (a row's
  synonyms list the systematic name first; ``NOT`` qualifiers are dropped), each term
  propagated to its ancestors over ``is_a`` and ``part_of`` (the true-path rule) with the
  ontology read by `obonet <https://github.com/dhimmel/obonet>`_.

Files: ``graph/gene_association.sgd.gz`` (or ``.gaf``/``sgd.gaf.gz``), ``graph/gene_ontology*.obo[.gz]``
and ``costanzo2016/strain_ids_and_single_mutant_fitness.xlsx`` under the data directory;
a missing file gives empty inputs (every gene unknown) rather than an error, since the
demo data set has no GO.
"""

from __future__ import annotations

import hashlib

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

from torchcell_search.errors import DataError

if TYPE_CHECKING:
    from torchcell_search.data.types import Dataset

__all__ = ["GeneInputs", "dataset_gene_inputs", "information_content", "read_gene_inputs", "read_go"]

_GAF_NAMES = ("gene_association.sgd.gz", "gene_association.sgd", "sgd.gaf.gz", "sgd.gaf")
_OBO_NAMES = ("gene_ontology.1_2.obo.gz", "gene_ontology.1_2.obo", "gene_ontology.obo", "go-basic.obo", "go.obo")
_SMF_NAME = "strain_ids_and_single_mutant_fitness.xlsx"


@dataclass
class GeneInputs:
    """Per-gene inputs over the graph's genes.

    Shapes:
        ``smf``: ``(N_gene,)`` float64, NaN where unknown;
        ``go``: ``(N_gene, T)`` 0/1 CSR matrix over GO terms (ancestors included);
        ``terms``: the ``T`` GO ids.
    """

    smf: np.ndarray
    go: sparse.csr_matrix
    terms: list[str]


def _find(root: Path, names: tuple[str, ...]) -> Path | None:
    for sub in ("graph", "", "costanzo2016"):
        for name in names:
            p = root / sub / name
            if p.is_file():
                return p
    return None


def read_go(gaf: Path, obo: Path, gene_ids: list[str]) -> tuple[sparse.csr_matrix, list[str]]:
    """``(N_gene, T)`` 0/1 GO annotations of ``gene_ids``, propagated to ancestors.

    Raises:
        DataError: an unreadable GAF or OBO file (named).
    """
    import networkx as nx
    import obonet

    try:
        graph = obonet.read_obo(str(obo))
    except Exception as e:  # obonet raises plain exceptions on malformed files
        raise DataError(f"{obo}: not a readable OBO file ({type(e).__name__}: {e})") from e
    try:
        gaf_df = pd.read_csv(gaf, sep="\t", comment="!", header=None, dtype=str, usecols=range(15))
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{gaf}: not a readable GAF file ({type(e).__name__})") from e
    index = {g: i for i, g in enumerate(gene_ids)}
    rows, terms = [], []
    qualifier = gaf_df[3].fillna("")
    for names, symbol, term, qual in zip(gaf_df[10].fillna(""), gaf_df[2].fillna(""), gaf_df[4], qualifier):
        if "NOT" in qual:
            continue
        gene = next((index[n] for n in (*names.split("|"), symbol) if n in index), None)
        if gene is not None:
            rows.append(gene)
            terms.append(term)
    # obonet edges point child -> parent; keep the true-path relations only.
    keep = nx.DiGraph()
    keep.add_nodes_from(graph.nodes)
    keep.add_edges_from((u, v) for u, v, k in graph.edges(keys=True) if k in ("is_a", "part_of"))
    alt = {a: n for n, d in graph.nodes(data=True) for a in d.get("alt_id", [])}
    ancestors: dict[str, set[str]] = {}
    pairs = set()
    for gene, term in zip(rows, terms):
        term = alt.get(term, term)
        if term not in keep:
            continue
        if term not in ancestors:
            ancestors[term] = nx.descendants(keep, term) | {term}
        pairs.update((gene, t) for t in ancestors[term])
    names = sorted({t for _, t in pairs})
    col = {t: j for j, t in enumerate(names)}
    if not pairs:
        return sparse.csr_matrix((len(gene_ids), 0)), []
    r, c = zip(*((g, col[t]) for g, t in pairs))
    matrix = sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(gene_ids), len(names)))
    return matrix, names


_CACHE: dict[tuple[str, tuple[str, ...], str | None], GeneInputs] = {}


def information_content(go: sparse.spmatrix) -> np.ndarray:
    """``(T,)`` the information content :math:`-\\log(n_t / n)` of each GO term: ``n_t`` genes carry
    term ``t`` out of the ``n`` annotated ones, so rare terms weigh more."""
    annotated = max(int((np.asarray(go.sum(1)).ravel() > 0).sum()), 1)
    return -np.log(np.clip(np.asarray(go.sum(0)).ravel() / annotated, 1e-12, 1.0))


def dataset_gene_inputs(dataset: "Dataset") -> GeneInputs:
    """:func:`read_gene_inputs` for a data set: its data directory, or the demo's planted SMF."""
    smf = dataset.info.get("single_mutant_fitness")
    return read_gene_inputs(dataset.info.get("data_dir"), dataset.graph.gene_ids,
                            demo_smf=None if smf is None else np.asarray(smf, dtype=np.float64))


def read_gene_inputs(data_dir: str | Path | None, gene_ids: list[str], *, demo_smf: np.ndarray | None = None) -> GeneInputs:
    """SMF and GO of every graph gene from the data directory (see the module doc).

    ``demo_smf``: the demo data set's planted SMF (``dataset.info``), used where there is
    no directory.
    """
    # Keyed by everything the result depends on: two demo data sets of other seeds share the
    # directory (none) and the gene ids but not the planted SMF.
    smf_digest = None if demo_smf is None else hashlib.sha256(np.ascontiguousarray(demo_smf, dtype=np.float64).tobytes()).hexdigest()
    key = (str(data_dir), tuple(gene_ids), smf_digest)
    if key in _CACHE:
        return _CACHE[key]
    n = len(gene_ids)
    smf = np.full(n, np.nan)
    go, terms = sparse.csr_matrix((n, 0)), []
    if demo_smf is not None:
        smf = np.asarray(demo_smf, dtype=np.float64).copy()
    if data_dir is not None and Path(data_dir).is_dir():
        from torchcell_search.data.readers import read_smf

        root = Path(data_dir)
        smf_path = _find(root, (_SMF_NAME,))
        if smf_path is not None:
            table = read_smf(smf_path)
            lookup = pd.Series(table["smf"].to_numpy(), index=table["orf"].to_numpy())
            smf = pd.Series(gene_ids).map(lookup).to_numpy(dtype=np.float64)
        gaf, obo = _find(root, _GAF_NAMES), _find(root, _OBO_NAMES)
        if gaf is not None and obo is not None:
            go, terms = read_go(gaf, obo, gene_ids)  # obonet and pandas read .gz by suffix
    out = GeneInputs(smf, go, terms)
    _CACHE.clear()
    _CACHE[key] = out
    return out
