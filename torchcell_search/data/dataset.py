"""Load a data set: the embedded synthetic demo, or a real data directory cached by content hash.

A real directory is built once (cell graph + perturbation table, seconds) and stored under
``cache_dir/dataset-<key>.pt``, where ``key`` hashes the contents of every input file
(and :data:`FORMAT_VERSION`). Later loads of unchanged inputs read that file; a changed
input gives a new key and a rebuild. The cache holds only tensors, strings and numbers,
so it loads with ``torch.load(weights_only=True)``; it is written to a temporary file and
renamed into place, so a failed build or write never leaves a partial cache file.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import HeteroData

from torchcell_search._atomic import write_atomic
from torchcell_search.data import readers
from torchcell_search.data.cell_graph import build_cell_graph
from torchcell_search.data.perturbations import build_perturbation_table, read_measurements
from torchcell_search.data.types import GPR, METABOLISM, PHYSICAL, REGULATORY, CellGraph, Dataset, PerturbationTable
from torchcell_search.errors import DataError

__all__ = ["FORMAT_VERSION", "default_cache_dir", "input_key", "load_dataset"]

#: Bump when the built graph or table changes for the same inputs; old cache files are then ignored.
FORMAT_VERSION = 1

_TABLE_FIELDS = ("genes", "fitness", "gene_interaction", "fitness_derived", "gene_interaction_p_value", "fitness_std")


def default_cache_dir() -> Path:
    """The cache directory used when none is given: ``~/.cache/torchcell-search``.

    Returns:
        The path (not created).
    """
    return Path.home() / ".cache" / "torchcell-search"


def input_key(files: readers.DataFiles) -> str:
    """Hash of the format version and every input file's name (relative to the data dir) and contents.

    Args:
        files: The located inputs.

    Returns:
        20 hex digits.

    Raises:
        DataError: An input file cannot be read.
    """
    h = hashlib.sha256(f"torchcell-search dataset v{FORMAT_VERSION}\n".encode())
    for path in files.all_paths():
        h.update(f"{files.relative(path)}\n".encode())
        try:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
        h.update(b"\n")
    return h.hexdigest()[:20]


def load_dataset(data: str | Path, *, cache_dir: Path | None = None, progress: bool = False) -> Dataset:
    """Load the demo data set or a real data directory.

    Example:
        >>> ds = load_dataset("/work/shared/data")  # doctest: +SKIP
        >>> len(ds.table), ds.graph.num_genes  # doctest: +SKIP
        (350296, 6696)

    Args:
        data: ``"demo"`` for the embedded synthetic data set, or a data directory (the
            mirror's layout or the official files, see
            :func:`~torchcell_search.data.readers.locate_inputs`).
        cache_dir: Where built data sets are cached (default :func:`default_cache_dir`).
            An unwritable cache directory only costs the cache (a warning is issued).
        progress: Show progress bars on stderr while building.

    Returns:
        The data set; ``info`` holds the perturbation table's provenance and counts and
        ``info["cache"]`` (``path``, ``hit``, ``key``, ``seconds``).

    Raises:
        DataError: The directory does not exist, or an input is missing or malformed.
    """
    if str(data) == "demo":
        from torchcell_search.data.demo import make_demo_dataset

        return make_demo_dataset(seed=0)
    start = time.perf_counter()
    root = Path(data).expanduser()
    files = readers.locate_inputs(root)
    key = input_key(files)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = cache / f"dataset-{key}.pt"
    dataset = _read_cache(path, name=str(data))
    hit = dataset is not None
    if dataset is None:
        measurements = read_measurements(files)
        genes = measurements[["query_orf", "array_orf"]].stack().unique()
        graph = build_cell_graph(root, progress=progress, files=files, perturbation_genes=genes)
        table, table_info = build_perturbation_table(root, graph, measurements=measurements, files=files)
        dataset = Dataset(name=str(data), graph=graph, table=table, info={"data_dir": str(root.resolve()), "perturbations": table_info})
        _write_cache(path, dataset)
    dataset.info["cache"] = {"path": str(path), "hit": hit, "key": key, "seconds": round(time.perf_counter() - start, 3)}
    return dataset


# --- cache ------------------------------------------------------------------------------------


def _to_state(ds: Dataset) -> dict[str, Any]:
    d = ds.graph.data
    return {
        "format_version": FORMAT_VERSION,
        "info": ds.info,
        "graph": {
            "gene_ids": list(d["gene"].node_ids),
            "reaction_ids": list(d["reaction"].node_ids),
            "metabolite_ids": list(d["metabolite"].node_ids),
            "physical": d[PHYSICAL].edge_index,
            "regulatory": d[REGULATORY].edge_index,
            "gpr": d[GPR].hyperedge_index,
            "metabolism": d[METABOLISM].hyperedge_index,
            "stoichiometry": d[METABOLISM].stoichiometry,
            "gpr_clause_reaction": ds.graph.gpr_clause_reaction,
            "gpr_clause_genes": ds.graph.gpr_clause_genes,
            "essential": ds.graph.essential,
            "info": ds.graph.info,
        },
        "table": {f: getattr(ds.table, f) for f in _TABLE_FIELDS},
    }


def _from_state(state: dict[str, Any], name: str) -> Dataset:
    g = state["graph"]
    data = HeteroData()
    for node_type, ids in (("gene", g["gene_ids"]), ("reaction", g["reaction_ids"]), ("metabolite", g["metabolite_ids"])):
        data[node_type].num_nodes = len(ids)
        data[node_type].node_ids = list(ids)
    data[PHYSICAL].edge_index = g["physical"]
    data[REGULATORY].edge_index = g["regulatory"]
    data[METABOLISM].hyperedge_index = g["metabolism"]
    data[METABOLISM].stoichiometry = g["stoichiometry"]
    data[GPR].hyperedge_index = g["gpr"]
    graph = CellGraph(
        data=data,
        gpr_clause_reaction=g["gpr_clause_reaction"],
        gpr_clause_genes=g["gpr_clause_genes"],
        essential=g["essential"],
        info=g["info"],
    )
    table = PerturbationTable(**{f: state["table"][f] for f in _TABLE_FIELDS})
    return Dataset(name=name, graph=graph, table=table, info=dict(state["info"]))


def _read_cache(path: Path, *, name: str) -> Dataset | None:
    """The cached data set at ``path``, or None when absent, unreadable or of another format version."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
            return None
        return _from_state(state, name)
    except Exception as e:  # noqa: BLE001 - a damaged cache file is rebuilt, whatever the damage
        warnings.warn(f"{path}: ignoring unreadable cache file ({type(e).__name__}); rebuilding", stacklevel=3)
        return None


def _write_cache(path: Path, ds: Dataset) -> None:
    """Write atomically: a temporary file in the cache directory, renamed into place."""
    try:
        write_atomic(path, lambda f: torch.save(_to_state(ds), f))
    except OSError as e:
        warnings.warn(f"{path.parent}: cannot write the data set cache ({e.strerror or e}); pass another --cache-dir", stacklevel=3)
