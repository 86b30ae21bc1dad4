"""The perturbation table: one record per SGA double-deletion measurement.

Sources (found by :func:`~torchcell_search.data.readers.locate_inputs`):

- official pair-wise ``SGA_*.txt`` files: ε, p-value, measured double-mutant fitness and
  its standard deviation, and the single-mutant fitness of both strains, per row;
- the mirror's ε table plus the single-mutant fitness xlsx: ε only, so fitness is derived
  as ``ε + SMF_query * SMF_array`` (Costanzo's multiplicative model) and flagged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from torchcell_search.data import readers
from torchcell_search.data.gene_names import GeneNames
from torchcell_search.data.types import CellGraph, PerturbationTable
from torchcell_search.errors import DataError

__all__ = ["MAX_UNKNOWN_GENE_SHARE", "build_perturbation_table", "read_measurements"]

#: Above this share of rows naming a gene outside the cell graph, the input is rejected.
MAX_UNKNOWN_GENE_SHARE = 0.05

_COLUMNS = ("query_orf", "array_orf", "epsilon", "p_value", "dmf", "dmf_std", "query_smf", "array_smf")


def read_measurements(files: readers.DataFiles) -> pd.DataFrame:
    """Read the measurement rows of a data directory, one per SGA measurement.

    Args:
        files: The located inputs.

    Returns:
        Columns ``query_orf``, ``array_orf`` (names as found, upper case), ``epsilon``,
        ``p_value``, ``dmf``, ``dmf_std``, ``query_smf``, ``array_smf`` (float64; NaN where
        the source lacks the value), in file order (SGA files concatenated in name order).

    Raises:
        DataError: From the readers.
    """
    if files.sga:
        frames = [readers.read_sga_pairwise(p) for p in files.sga]
        df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return df[list(_COLUMNS)]
    if files.epsilon is None or files.smf is None:
        raise DataError(f"data directory {files.root}: no SGA_*.txt files, and no epsilon table with its SMF xlsx")
    eps = readers.read_epsilon_table(files.epsilon)
    smf = readers.read_smf(files.smf)
    lookup = pd.Series(smf["smf"].to_numpy(), index=smf["orf"].to_numpy())
    nan = np.full(len(eps), np.nan)
    return pd.DataFrame({
        "query_orf": eps["query_orf"],
        "array_orf": eps["array_orf"],
        "epsilon": eps["epsilon"],
        "p_value": nan,
        "dmf": nan,
        "dmf_std": nan,
        "query_smf": eps["query_orf"].map(lookup).to_numpy(dtype=np.float64),
        "array_smf": eps["array_orf"].map(lookup).to_numpy(dtype=np.float64),
    })


def build_perturbation_table(
    data_dir: Path,
    graph: CellGraph,
    *,
    measurements: pd.DataFrame | None = None,
    files: readers.DataFiles | None = None,
) -> tuple[PerturbationTable, dict[str, Any]]:
    """Build the perturbation table of a data directory on a cell graph.

    ``genes[r] = (query, array)`` keeps the SGA roles. ``gene_interaction`` is ε.
    ``fitness`` is the measured double-mutant fitness where the source has one, otherwise
    ``ε + SMF_query * SMF_array`` with ``fitness_derived`` set, and NaN where neither is
    possible. Rows with a gene the graph lacks are dropped and counted; rows with no label
    at all are dropped and counted.

    Args:
        data_dir: The data directory (used when ``files`` is not given).
        graph: The cell graph whose gene indices the table uses.
        measurements: Rows from :func:`read_measurements`, to avoid reading them twice.
        files: The located inputs, to avoid locating them twice.

    Returns:
        The table and an info dict (``source``, row counts, dropped rows, unknown gene
        names, measured/derived/missing fitness counts).

    Raises:
        DataError: More than :data:`MAX_UNKNOWN_GENE_SHARE` of the rows name genes that
            neither the graph nor SGD's name table knows; errors of the readers.
    """
    files = files or readers.locate_inputs(Path(data_dir))
    df = measurements if measurements is not None else read_measurements(files)
    source = files.sga[0] if files.sga else files.epsilon
    names = GeneNames.from_file(files.gene_names)
    index = {g: i for i, g in enumerate(graph.gene_ids)}

    def to_index(col: pd.Series) -> np.ndarray:
        lookup: dict[str, int] = {}
        for name in col.unique():
            orf = names.to_orf(name) if isinstance(name, str) else None
            lookup[name] = index.get(orf, -1) if orf is not None else -1
        return col.map(lookup).fillna(-1).to_numpy(dtype=np.int64)

    q, a = to_index(df["query_orf"]), to_index(df["array_orf"])
    unknown = (q < 0) | (a < 0)
    n_rows = len(df)
    n_unknown = int(unknown.sum())
    unknown_names = sorted(set(df["query_orf"][q < 0].astype(str)) | set(df["array_orf"][a < 0].astype(str)))
    if n_unknown > MAX_UNKNOWN_GENE_SHARE * n_rows:
        raise DataError(
            f"{source}: {n_unknown} of {n_rows} rows ({n_unknown / n_rows:.1%}) name genes the cell graph lacks, "
            f"e.g. {', '.join(unknown_names[:3])}; are the gene names systematic ORFs?"
        )
    eps = df["epsilon"].to_numpy(np.float64)
    dmf = df["dmf"].to_numpy(np.float64)
    derived = np.isnan(dmf) & ~np.isnan(eps)
    fitness = np.where(derived, eps + df["query_smf"].to_numpy(np.float64) * df["array_smf"].to_numpy(np.float64), dmf)
    derived &= ~np.isnan(fitness)
    no_label = np.isnan(eps) & np.isnan(fitness)
    keep = ~unknown & ~no_label
    table = PerturbationTable(
        genes=torch.from_numpy(np.stack([q[keep], a[keep]], axis=1)),
        fitness=torch.from_numpy(fitness[keep].astype(np.float32)),
        gene_interaction=torch.from_numpy(eps[keep].astype(np.float32)),
        fitness_derived=torch.from_numpy(derived[keep]),
        gene_interaction_p_value=torch.from_numpy(df["p_value"].to_numpy(np.float64)[keep].astype(np.float32)),
        fitness_std=torch.from_numpy(df["dmf_std"].to_numpy(np.float64)[keep].astype(np.float32)),
    )
    fit = fitness[keep]
    info: dict[str, Any] = {
        "source": [files.relative(p) for p in files.sga] if files.sga else [files.relative(files.epsilon), files.relative(files.smf)],
        "rows_read": n_rows,
        "records": len(table),
        "rows_dropped_unknown_gene": n_unknown,
        "unknown_gene_names": unknown_names[:50],
        "unknown_gene_names_count": len(unknown_names),
        "rows_dropped_no_label": int((no_label & ~unknown).sum()),
        "fitness_measured": int((~np.isnan(fit) & ~derived[keep]).sum()),
        "fitness_derived": int(derived[keep].sum()),
        "fitness_missing": int(np.isnan(fit).sum()),
        "gene_interaction_missing": int(np.isnan(eps[keep]).sum()),
    }
    return table, info
