"""Counts of a data set, for ``torchcell-search data summary``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from torchcell_search.data.dataset import load_dataset
from torchcell_search.data.types import GPR, METABOLISM, PHYSICAL, REGULATORY, Dataset

__all__ = ["data_summary", "format_summary", "summarize_dataset"]


def data_summary(data: str | Path, *, cache_dir: Path | None = None, progress: bool = False) -> dict[str, Any]:
    """Load a data set and count its nodes, edges, records and labels.

    Args:
        data: ``"demo"`` or a data directory (as :func:`~torchcell_search.data.dataset.load_dataset`).
        cache_dir: The data set cache directory.
        progress: Show progress bars on stderr while building.

    Returns:
        A JSON-ready dict (see :func:`summarize_dataset`).

    Raises:
        DataError: From :func:`~torchcell_search.data.dataset.load_dataset`.
    """
    return summarize_dataset(load_dataset(data, cache_dir=cache_dir, progress=progress))


def summarize_dataset(ds: Dataset) -> dict[str, Any]:
    """Count a loaded data set.

    Args:
        ds: The data set.

    Returns:
        ``name``; ``nodes`` (``gene``, ``reaction``, ``metabolite``); ``edges``
        (``physical_edges_undirected``, ``physical_edges_directed`` (= 2 x undirected),
        ``regulatory_edges`` (directed TF -> target), ``gpr_incidences``,
        ``metabolism_incidences``); ``reactions_with_gpr``, ``gpr_clauses``,
        ``essential_genes``; ``records``; ``labels`` (non-missing count per label);
        ``fitness_derived`` and ``fitness_derived_share`` (of records with fitness);
        ``genes_added``, ``names_unmapped`` (per source), ``records_dropped``; and for a
        real directory ``cache`` (``path``, ``hit``).
    """
    g, t, d = ds.graph, ds.table, ds.graph.data

    def count(edge_type: tuple[str, str, str], attr: str) -> int:
        store = d[edge_type] if edge_type in d.edge_types else None
        value = getattr(store, attr, None) if store is not None else None
        return int(value.shape[1]) if isinstance(value, torch.Tensor) else 0

    directed = count(PHYSICAL, "edge_index")
    n_fit = int((~torch.isnan(t.fitness)).sum())
    n_derived = int(t.fitness_derived.sum())
    gpr_reactions = int(torch.unique(g.gpr_clause_reaction).numel()) if g.gpr_clause_reaction.numel() else 0
    pert = ds.info.get("perturbations", {})
    out: dict[str, Any] = {
        "name": ds.name,
        "nodes": {"gene": g.num_genes, "reaction": g.num_reactions, "metabolite": g.num_metabolites},
        "edges": {
            "physical_edges_undirected": directed // 2,
            "physical_edges_directed": directed,
            "regulatory_edges": count(REGULATORY, "edge_index"),
            "gpr_incidences": count(GPR, "hyperedge_index"),
            "metabolism_incidences": count(METABOLISM, "hyperedge_index"),
        },
        "reactions_with_gpr": int(g.info.get("reactions_with_gpr", gpr_reactions)),
        "gpr_clauses": int(g.gpr_clause_reaction.numel()),
        "essential_genes": int(g.essential.sum()),
        "records": len(t),
        "labels": {
            "fitness": n_fit,
            "gene_interaction": int((~torch.isnan(t.gene_interaction)).sum()),
        },
        "fitness_derived": n_derived,
        "fitness_derived_share": round(n_derived / n_fit, 4) if n_fit else 0.0,
        "genes_added": int(g.info.get("genes_added", 0)),
        "names_unmapped": dict(g.info.get("names_unmapped", {})),
        "records_dropped": int(pert.get("rows_dropped_unknown_gene", 0)) + int(pert.get("rows_dropped_no_label", 0)),
    }
    if "cache" in ds.info:
        out["cache"] = {"path": ds.info["cache"]["path"], "hit": ds.info["cache"]["hit"]}
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """Render a summary as aligned text lines.

    Args:
        summary: From :func:`data_summary`.

    Returns:
        Lines ``key  value``, nested dicts indented, no trailing newline.
    """
    lines: list[str] = []

    def emit(obj: dict[str, Any], indent: int) -> None:
        width = max((len(str(k)) for k in obj), default=0)
        for key, value in obj.items():
            if isinstance(value, dict):
                lines.append(f"{' ' * indent}{key}:")
                emit(value, indent + 2)
            else:
                lines.append(f"{' ' * indent}{str(key).ljust(width)}  {_fmt(value)}")

    emit(summary, 0)
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)
