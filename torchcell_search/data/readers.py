"""Readers of the real data formats: one public function per file format.

Every reader checks its input at the boundary and raises :class:`DataError` with one line
naming the file and the problem (missing file, corrupt gzip/xlsx, missing column,
non-numeric value, empty table). Gene names are returned as found; resolving them to ORFs
is :mod:`torchcell_search.data.gene_names`' job.

:func:`locate_inputs` finds the files of a data directory, in the mirror's layout
(``DIR/costanzo2016/...``, ``DIR/graph/...``) or as the official downloads placed in
``DIR`` itself (``SGA_*.txt``, ``BIOGRID-ORGANISM-*.tab3.txt``, ``yeast-GEM.xml``).
"""

from __future__ import annotations

import csv
import gzip
import logging
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from torchcell_search.errors import DataError

__all__ = [
    "DataFiles",
    "MetabolicModel",
    "locate_inputs",
    "parse_gpr",
    "read_biogrid_tab3",
    "read_epsilon_table",
    "read_gem",
    "read_gem_sbml",
    "read_gem_yaml",
    "read_gene_list",
    "read_physical_edges",
    "read_sga_pairwise",
    "read_sgd_gene_names",
    "read_smf",
    "read_yeastract",
]

_READ_ERRORS = (
    OSError,  # includes gzip.BadGzipFile
    EOFError,  # truncated gzip
    zlib.error,
    UnicodeDecodeError,
    pd.errors.ParserError,
    ValueError,
)

# --- shared helpers -----------------------------------------------------------------------


def _require_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found ({what})")
    return path


def _read_table(
    path: Path,
    what: str,
    required: dict[str, tuple[str, ...]],
    *,
    str_columns: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Read a tab-separated (optionally gzipped) table, keeping and renaming ``required`` columns.

    ``required`` maps output names to accepted header names (matched after stripping and
    lower-casing; a trailing ``*`` in an accepted name matches a prefix, e.g. for the ``ε``
    column whose symbol some tools mangle).
    """
    path = _require_file(path, what)
    kwargs: dict[str, Any] = dict(sep="\t", quoting=csv.QUOTE_NONE, low_memory=False)
    try:
        header = pd.read_csv(path, nrows=0, **kwargs).columns
    except pd.errors.EmptyDataError as e:
        raise DataError(f"{path}: file is empty ({what})") from e
    except _READ_ERRORS as e:
        raise DataError(f"{path}: cannot read {what}: {_short(e)}") from e
    found: dict[str, str] = {}
    for out, accepted in required.items():
        col = _match_column(header, accepted)
        if col is None:
            raise DataError(
                f"{path}: missing column {accepted[0].rstrip('*')!r} ({what}; found {', '.join(map(str, header[:12]))})"
            )
        found[col] = out
    dtype = {col: str for col, out in found.items() if out in str_columns}
    try:
        df = pd.read_csv(path, usecols=list(found), dtype=dtype, **kwargs)
    except _READ_ERRORS as e:
        raise DataError(f"{path}: cannot read {what}: {_short(e)}") from e
    df = df.rename(columns=found)[list(required)]
    if len(df) == 0:
        raise DataError(f"{path}: table has no rows ({what})")
    return df


def _match_column(header: pd.Index, accepted: tuple[str, ...]) -> str | None:
    norm = {str(c).strip().lower(): c for c in header}
    for name in accepted:
        key = name.strip().lower()
        if key.endswith("*"):
            for k, c in norm.items():
                if k.startswith(key[:-1]):
                    return c
        elif key in norm:
            return norm[key]
    return None


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _numeric(df: pd.DataFrame, columns: tuple[str, ...], path: Path) -> None:
    """Convert ``columns`` to float64 in place; text that is not a number is a DataError."""
    for col in columns:
        s = df[col]
        if pd.api.types.is_numeric_dtype(s):
            df[col] = s.astype(np.float64)
            continue
        as_num = pd.to_numeric(s, errors="coerce")
        text = s.astype(str).str.strip()
        bad = as_num.isna() & s.notna() & (text != "") & (text.str.lower() != "nan")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{path}: column {col!r} has a non-numeric value {s.iloc[i]!r} (data row {i + 1})")
        df[col] = as_num.astype(np.float64)


def _orf_before_underscore(ids: pd.Series) -> pd.Series:
    return ids.str.strip().str.split("_", n=1).str[0].str.upper()


# --- Costanzo 2016 --------------------------------------------------------------------------

_SGA_COLUMNS: dict[str, tuple[str, ...]] = {
    "query_strain": ("Query Strain ID",),
    "array_strain": ("Array Strain ID",),
    "arraytype_temp": ("Arraytype/Temp",),
    "epsilon": ("Genetic interaction score (ε)", "Genetic interaction score*"),
    "p_value": ("P-value",),
    "query_smf": ("Query single mutant fitness (SMF)", "Query single mutant fitness*"),
    "array_smf": ("Array SMF",),
    "dmf": ("Double mutant fitness",),
    "dmf_std": ("Double mutant fitness standard deviation",),
}
_SGA_NUMERIC = ("epsilon", "p_value", "query_smf", "array_smf", "dmf", "dmf_std")


def read_sga_pairwise(path: Path) -> pd.DataFrame:
    """Read a Costanzo 2016 pair-wise SGA file (``SGA_ExE.txt``, ``SGA_NxN.txt``, ``SGA_ExN_NxE.txt``).

    Strain IDs carry allele suffixes (``YAL002W_dma1``, ``YAL001C_tsq508``); the ORF is
    the text before the first ``_``.

    Args:
        path: Tab-separated file with the columns ``Query Strain ID``, ``Array Strain ID``,
            ``Arraytype/Temp``, ``Genetic interaction score (ε)``, ``P-value``,
            ``Query single mutant fitness (SMF)``, ``Array SMF``, ``Double mutant fitness``,
            ``Double mutant fitness standard deviation`` (allele-name columns are ignored).

    Returns:
        One row per measurement with columns ``query_orf``, ``array_orf``, ``epsilon``,
        ``p_value``, ``query_smf``, ``array_smf``, ``dmf``, ``dmf_std`` (float64, NaN where
        empty) and ``arraytype_temp``.

    Raises:
        DataError: Missing or unreadable file, missing column, non-numeric value, no rows.
    """
    df = _read_table(
        path, "Costanzo 2016 pair-wise SGA file", _SGA_COLUMNS,
        str_columns=("query_strain", "array_strain", "arraytype_temp"),
    )
    _numeric(df, _SGA_NUMERIC, Path(path))
    out = pd.DataFrame({
        "query_orf": _orf_before_underscore(df["query_strain"]),
        "array_orf": _orf_before_underscore(df["array_strain"]),
    })
    for col in _SGA_NUMERIC:
        out[col] = df[col]
    out["arraytype_temp"] = df["arraytype_temp"]
    return out


def read_epsilon_table(path: Path) -> pd.DataFrame:
    """Read the mirror's long ε table (``costanzo2016/nxn_metabolic_epsilon.tsv.gz``).

    Args:
        path: Tab-separated (optionally gzipped) file with ``query_orf``, ``array_orf``, ``epsilon``.

    Returns:
        Columns ``query_orf``, ``array_orf`` (str, upper case) and ``epsilon`` (float64).

    Raises:
        DataError: Missing or unreadable file, missing column, non-numeric ε, no rows.
    """
    df = _read_table(
        path, "epsilon table",
        {"query_orf": ("query_orf",), "array_orf": ("array_orf",), "epsilon": ("epsilon",)},
        str_columns=("query_orf", "array_orf"),
    )
    _numeric(df, ("epsilon",), Path(path))
    df["query_orf"] = df["query_orf"].str.strip().str.upper()
    df["array_orf"] = df["array_orf"].str.strip().str.upper()
    return df


def read_smf(path: Path, *, temperature: int = 30) -> pd.DataFrame:
    """Read the single-mutant fitness table and reduce it to one value per gene.

    Rule: per gene (``Systematic gene name``), the mean of the ``temperature`` column
    over that gene's strains that have a value; a gene none of whose strains has a value at
    ``temperature`` falls back to the mean of the other temperature's column; a gene with
    no value at either temperature gets NaN. 30° is the default because the NxN screens
    (and the mirror's ε table) were run at 30° (DMA30). Standard deviations follow the same
    rule (mean of the chosen column's stddevs).

    Args:
        path: ``strain_ids_and_single_mutant_fitness.xlsx`` (columns ``Strain ID``,
            ``Systematic gene name``, ``Single mutant fitness (26°)``, ``... (26°) stddev``,
            ``Single mutant fitness (30°)``, ``... (30°) stddev``).
        temperature: 26 or 30, the preferred column.

    Returns:
        One row per gene: ``orf``, ``smf``, ``smf_std`` (float64) and ``temperature``
        (the column used: 26, 30, or 0 where there is no value), sorted by ``orf``.

    Raises:
        DataError: Missing file, not a readable xlsx, missing column, non-numeric value, no rows.
    """
    path = _require_file(Path(path), "single mutant fitness xlsx")
    if temperature not in (26, 30):
        raise DataError(f"{path}: temperature must be 26 or 30, not {temperature}")
    try:
        raw = pd.read_excel(path, engine="openpyxl")
    except (zipfile.BadZipFile, KeyError, *_READ_ERRORS) as e:
        raise DataError(f"{path}: not a readable xlsx file: {_short(e)}") from e
    cols = {"orf": _match_column(raw.columns, ("Systematic gene name",))}
    for t in (26, 30):
        fit = [c for c in raw.columns if f"({t}" in str(c) and "fitness" in str(c).lower()]
        cols[f"smf{t}"] = next((c for c in fit if "std" not in str(c).lower()), None)
        cols[f"std{t}"] = next((c for c in fit if "std" in str(c).lower()), None)
    for out, col in cols.items():
        if col is None:
            want = {"orf": "Systematic gene name"}.get(out, f"Single mutant fitness ({out[-2:]}°)" + (" stddev" if out.startswith("std") else ""))
            raise DataError(f"{path}: missing column {want!r} (single mutant fitness xlsx)")
    df = raw[list(cols.values())].set_axis(list(cols), axis=1)
    df = df[df["orf"].notna()]
    if len(df) == 0:
        raise DataError(f"{path}: table has no rows (single mutant fitness xlsx)")
    _numeric(df, ("smf26", "std26", "smf30", "std30"), path)
    df["orf"] = df["orf"].astype(str).str.strip().str.upper()
    g = df.groupby("orf", sort=True)[["smf26", "std26", "smf30", "std30"]].mean()  # mean skips NaN
    other = 26 if temperature == 30 else 30
    first, second = g[f"smf{temperature}"], g[f"smf{other}"]
    use_first = first.notna()
    use_second = ~use_first & second.notna()
    out = pd.DataFrame({
        "orf": g.index.to_numpy(),
        "smf": np.where(use_first, first, np.where(use_second, second, np.nan)),
        "smf_std": np.where(use_first, g[f"std{temperature}"], np.where(use_second, g[f"std{other}"], np.nan)),
        "temperature": np.where(use_first, temperature, np.where(use_second, other, 0)),
    })
    return out.reset_index(drop=True)


# --- graph sources ----------------------------------------------------------------------------


def read_sgd_gene_names(path: Path) -> pd.DataFrame:
    """Read SGD's gene name table (``graph/SGDgeneNames.tsv``).

    Args:
        path: TSV with ``Systematic_name`` and ``Standard_name`` (may be empty).

    Returns:
        Columns ``systematic`` (str) and ``standard`` (str or ``None``), file order.

    Raises:
        DataError: Missing or unreadable file, missing column, no rows.
    """
    df = _read_table(
        path, "SGD gene names",
        {"systematic": ("Systematic_name",), "standard": ("Standard_name",)},
        str_columns=("systematic", "standard"),
    )
    df = df[df["systematic"].notna() & (df["systematic"].str.strip() != "")].copy()
    if len(df) == 0:
        raise DataError(f"{path}: table has no rows (SGD gene names)")
    df["systematic"] = df["systematic"].str.strip()
    df["standard"] = df["standard"].where(df["standard"].notna(), None)
    return df.reset_index(drop=True)


def read_physical_edges(path: Path) -> pd.DataFrame:
    """Read the mirror's physical interaction list (``graph/biogrid_*_physical_orf.tsv.gz``).

    Args:
        path: TSV with ``gene_a``, ``gene_b`` (one undirected edge per row).

    Returns:
        Columns ``gene_a``, ``gene_b`` (str), as in the file.

    Raises:
        DataError: Missing or unreadable file, missing column, no rows.
    """
    df = _read_table(
        path, "physical interaction list",
        {"gene_a": ("gene_a",), "gene_b": ("gene_b",)}, str_columns=("gene_a", "gene_b"),
    )
    return df.dropna().reset_index(drop=True)


def read_biogrid_tab3(path: Path) -> pd.DataFrame:
    """Read a BioGRID ``tab3`` organism file, keeping physical interactions.

    Rows whose ``Experimental System Type`` is not ``physical`` are dropped; when the
    organism columns exist, both interactors must be *S. cerevisiae* S288C (taxon 559292).
    A ``-`` systematic name falls back to the official symbol (resolved later).

    Args:
        path: ``BIOGRID-ORGANISM-Saccharomyces_cerevisiae_S288c-<release>.tab3.txt``.

    Returns:
        Columns ``gene_a``, ``gene_b`` (str), one row per physical interaction record
        (duplicates kept; the cell graph deduplicates).

    Raises:
        DataError: Missing or unreadable file, missing column, no rows at all.
    """
    required = {
        "gene_a": ("Systematic Name Interactor A",),
        "gene_b": ("Systematic Name Interactor B",),
        "system_type": ("Experimental System Type",),
    }
    df = _read_table(path, "BioGRID tab3 file", required, str_columns=tuple(required))
    optional = {
        "symbol_a": ("Official Symbol Interactor A",),
        "symbol_b": ("Official Symbol Interactor B",),
        "org_a": ("Organism ID Interactor A", "Organism Interactor A"),
        "org_b": ("Organism ID Interactor B", "Organism Interactor B"),
    }
    header = pd.read_csv(path, sep="\t", nrows=0, quoting=csv.QUOTE_NONE).columns
    present = {k: v for k, v in optional.items() if _match_column(header, v) is not None}
    if present:
        extra = _read_table(path, "BioGRID tab3 file", present, str_columns=tuple(present))
        df = pd.concat([df, extra], axis=1)
    keep = df["system_type"].str.strip().str.lower() == "physical"
    if "org_a" in df and "org_b" in df:
        keep &= (df["org_a"].str.strip() == "559292") & (df["org_b"].str.strip() == "559292")
    df = df[keep]
    for side in ("a", "b"):
        name = df[f"gene_{side}"].str.strip()
        if f"symbol_{side}" in df:
            name = name.where(name.notna() & (name != "-") & (name != ""), df[f"symbol_{side}"].str.strip())
        df = df.assign(**{f"gene_{side}": name})
    return df[["gene_a", "gene_b"]].dropna().reset_index(drop=True)


def read_yeastract(path: Path) -> pd.DataFrame:
    """Read a YEASTRACT TF x target 0/1 matrix (``graph/YEASTRACT_*_BOTH.tsv.gz``).

    Args:
        path: TSV whose first column ``SystematicName`` names the targets (rows) and whose
            other columns are transcription factors (systematic or standard names).

    Returns:
        Columns ``tf``, ``target`` (str, names as in the file), one row per 1 entry,
        ordered by target row, then TF column.

    Raises:
        DataError: Missing or unreadable file, missing ``SystematicName``, entries other
            than 0/1, no rows.
    """
    path = _require_file(Path(path), "YEASTRACT matrix")
    try:
        df = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, low_memory=False)
    except pd.errors.EmptyDataError as e:
        raise DataError(f"{path}: file is empty (YEASTRACT matrix)") from e
    except _READ_ERRORS as e:
        raise DataError(f"{path}: cannot read YEASTRACT matrix: {_short(e)}") from e
    target_col = _match_column(df.columns, ("SystematicName",))
    if target_col is None:
        raise DataError(f"{path}: missing column 'SystematicName' (YEASTRACT matrix)")
    if len(df) == 0 or df.shape[1] < 2:
        raise DataError(f"{path}: table has no rows or no TF columns (YEASTRACT matrix)")
    tfs = [c for c in df.columns if c != target_col]
    values = df[tfs]
    if not all(pd.api.types.is_numeric_dtype(values[c]) for c in tfs):
        values = values.copy()
        _numeric(values, tuple(tfs), path)
    mat = values.to_numpy(dtype=np.float64)
    ok = (mat == 0) | (mat == 1)
    if not ok.all():
        r, c = np.argwhere(~ok)[0]
        raise DataError(f"{path}: entry {float(mat[r, c])!r} for TF {tfs[c]!r} (data row {r + 1}) is not 0 or 1")
    rows, cols = np.nonzero(mat == 1)
    targets = df[target_col].astype(str).str.strip().to_numpy()
    return pd.DataFrame({"tf": np.asarray([str(t).strip() for t in tfs], dtype=object)[cols], "target": targets[rows]})


def read_gene_list(path: Path) -> list[str]:
    """Read a one-name-per-line gene list (``graph/inviable_orfs_yeast_deletion_project.txt``).

    Blank lines and lines starting with ``#`` are skipped; the first whitespace-separated
    token of a line is the name.

    Args:
        path: Text file.

    Returns:
        Names in file order, duplicates removed.

    Raises:
        DataError: Missing or unreadable file, or no names.
    """
    path = _require_file(Path(path), "gene list")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read gene list: {_short(e)}") from e
    names = [line.split()[0] for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not names:
        raise DataError(f"{path}: gene list is empty")
    return list(dict.fromkeys(names))


# --- Yeast-GEM --------------------------------------------------------------------------------


@dataclass
class MetabolicModel:
    """The parts of a genome-scale metabolic model the cell graph needs.

    Attributes:
        reactions: ``reaction_id`` (str) and ``gpr`` (rule string, ``""`` without a rule), model order.
        metabolites: Metabolite ids, model order.
        stoichiometry: ``metabolite``, ``reaction``, ``coefficient`` (float, negative = consumed).
    """

    reactions: pd.DataFrame
    metabolites: list[str]
    stoichiometry: pd.DataFrame


def read_gem_sbml(path: Path) -> MetabolicModel:
    """Read Yeast-GEM SBML (``yeast-GEM.xml`` or gzipped ``yeast-GEM.xml.gz``) with cobrapy.

    A gzipped file is decompressed to a temporary file first (cobrapy reads plain XML).
    Ids are cobrapy's (``r_0001``, ``s_0001``: the SBML ``R_``/``M_`` prefixes removed).

    Args:
        path: The SBML file.

    Returns:
        The reactions, metabolites and stoichiometry.

    Raises:
        DataError: Missing file, corrupt gzip, or SBML cobrapy cannot read; no reactions.
    """
    path = _require_file(Path(path), "Yeast-GEM SBML")
    import cobra  # slow import (~2 s); only when a model is read

    tmp: str | None = None
    try:
        source = path
        if path.name.endswith(".gz"):
            fd, tmp = tempfile.mkstemp(suffix=".xml")
            try:
                with gzip.open(path, "rb") as f, os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(f, out)
            except (OSError, EOFError, zlib.error) as e:
                raise DataError(f"{path}: corrupt gzip: {_short(e)}") from e
            source = Path(tmp)
        sbml_logger = logging.getLogger("cobra.io.sbml")
        level = sbml_logger.level
        sbml_logger.setLevel(logging.CRITICAL)  # cobrapy logs an error per empty SId it meets
        try:
            model = cobra.io.read_sbml_model(str(source))
        except Exception as e:  # noqa: BLE001 - any parser failure means an unreadable model file
            raise DataError(f"{path}: cobrapy cannot read this SBML: {_short(e)}") from e
        finally:
            sbml_logger.setLevel(level)
    finally:
        if tmp is not None:
            os.unlink(tmp)
    reactions = pd.DataFrame({
        "reaction_id": [r.id for r in model.reactions],
        "gpr": [r.gene_reaction_rule or "" for r in model.reactions],
    })
    stoich = [(m.id, r.id, float(c)) for r in model.reactions for m, c in r.metabolites.items()]
    return _metabolic_model(path, reactions, [m.id for m in model.metabolites], stoich)


def read_gem_yaml(path: Path) -> MetabolicModel:
    """Read Yeast-GEM's own YAML (``yeast-GEM.yml``, cobrapy/RAVEN format) with PyYAML's C loader.

    About as fast as :func:`read_gem_sbml` and without cobrapy; the two give the same
    reactions, metabolites, rules and coefficients.

    Args:
        path: The YAML file (``!!omap`` sections ``metabolites`` and ``reactions``).

    Returns:
        The reactions, metabolites and stoichiometry.

    Raises:
        DataError: Missing or unparsable file, missing sections, no reactions.
    """
    import yaml

    path = _require_file(Path(path), "Yeast-GEM YAML")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with open(path, "rb") as f:
            doc = yaml.load(f, Loader=loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DataError(f"{path}: cannot parse Yeast-GEM YAML: {_short(e)}") from e
    top = _as_dict(doc)
    if not isinstance(top.get("reactions"), list) or not isinstance(top.get("metabolites"), list):
        raise DataError(f"{path}: Yeast-GEM YAML lacks 'reactions' or 'metabolites' sections")
    ids, rules, stoich = [], [], []
    for entry in top["reactions"]:
        rxn = _as_dict(entry)
        rid = str(rxn.get("id", ""))
        ids.append(rid)
        rules.append(str(rxn.get("gene_reaction_rule") or ""))
        for met, coef in _as_dict(rxn.get("metabolites") or []).items():
            try:
                stoich.append((str(met), rid, float(coef)))
            except (TypeError, ValueError) as e:
                raise DataError(f"{path}: reaction {rid!r}: non-numeric coefficient {coef!r} for {met!r}") from e
    metabolites = [str(_as_dict(m).get("id", "")) for m in top["metabolites"]]
    return _metabolic_model(path, pd.DataFrame({"reaction_id": ids, "gpr": rules}), metabolites, stoich)


def read_gem(path: Path) -> MetabolicModel:
    """Read Yeast-GEM from SBML (``.xml``, ``.xml.gz``) or YAML (``.yml``/``.yaml``) by suffix.

    Args:
        path: The model file.

    Returns:
        The reactions, metabolites and stoichiometry.

    Raises:
        DataError: As :func:`read_gem_sbml` / :func:`read_gem_yaml`.
    """
    name = Path(path).name.lower()
    return read_gem_yaml(path) if name.endswith((".yml", ".yaml")) else read_gem_sbml(path)


def _as_dict(x: Any) -> dict[str, Any]:
    if isinstance(x, dict):
        return x
    if isinstance(x, list) and all(isinstance(e, tuple) and len(e) == 2 for e in x):
        return dict(x)
    if isinstance(x, list) and all(isinstance(e, dict) and len(e) == 1 for e in x):
        return {k: v for e in x for k, v in e.items()}
    return {}


def _metabolic_model(path: Path, reactions: pd.DataFrame, metabolites: list[str], stoich: list[tuple[str, str, float]]) -> MetabolicModel:
    if len(reactions) == 0:
        raise DataError(f"{path}: metabolic model has no reactions")
    if (reactions["reaction_id"] == "").any() or reactions["reaction_id"].duplicated().any():
        raise DataError(f"{path}: metabolic model has empty or repeated reaction ids")
    if len(set(metabolites)) != len(metabolites) or "" in metabolites:
        raise DataError(f"{path}: metabolic model has empty or repeated metabolite ids")
    st = pd.DataFrame(stoich, columns=["metabolite", "reaction", "coefficient"])
    unknown = set(st["metabolite"]) - set(metabolites)
    if unknown:
        raise DataError(f"{path}: reactions use undeclared metabolites, e.g. {sorted(unknown)[0]!r}")
    return MetabolicModel(reactions=reactions, metabolites=metabolites, stoichiometry=st)


# --- GPR rules --------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(\(|\)|&&?|\|\|?|[^\s()&|]+)")
_MAX_CLAUSES = 4096


def parse_gpr(rule: str, *, reaction: str = "?") -> list[frozenset[str]]:
    """Parse a boolean gene-protein-reaction rule into disjunctive normal form.

    ``(A and B) or C`` -> ``[{A, B}, {C}]``: the reaction runs while every gene of at least
    one clause is present. ``and``/``or`` (any case) and ``&``/``|`` (or ``&&``/``||``)
    are accepted; ``and`` binds tighter than ``or``; parentheses nest. Repeated clauses
    and clauses that contain another clause (absorption) are removed; order of first
    appearance is kept.

    Example:
        >>> parse_gpr("A and (B or C)")
        [frozenset({'A', 'B'}), frozenset({'A', 'C'})]

    Args:
        rule: The rule; empty or blank means no rule.
        reaction: The reaction id, for error messages.

    Returns:
        The clauses; ``[]`` for an empty rule.

    Raises:
        DataError: A malformed rule (unbalanced parentheses, dangling operator, empty
            group) or one whose DNF exceeds 4096 clauses; the message names the reaction.
    """
    tokens: list[str] = []
    pos, text = 0, rule or ""
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:  # pragma: no cover - the token pattern matches any non-space text
            raise DataError(f"reaction {reaction}: cannot tokenise GPR rule {rule!r}")
        tok = m.group(1)
        low = tok.lower()
        tokens.append("and" if low in ("and", "&", "&&") else "or" if low in ("or", "|", "||") else tok)
        pos = m.end()
    if not tokens:
        return []
    parser = _GprParser(tokens, rule, reaction)
    clauses = parser.expr()
    if parser.i != len(tokens):
        raise DataError(f"reaction {reaction}: malformed GPR rule {rule!r} (unexpected {tokens[parser.i]!r})")
    return _minimise(clauses)


class _GprParser:
    """Recursive descent: expr := term ('or' term)*, term := factor ('and' factor)*, factor := gene | '(' expr ')'."""

    def __init__(self, tokens: list[str], rule: str, reaction: str) -> None:
        self.tokens, self.rule, self.reaction, self.i = tokens, rule, reaction, 0

    def _fail(self, why: str) -> DataError:
        return DataError(f"reaction {self.reaction}: malformed GPR rule {self.rule!r} ({why})")

    def _peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def expr(self) -> list[frozenset[str]]:
        out = self.term()
        while self._peek() == "or":
            self.i += 1
            out = out + self.term()
        return out

    def term(self) -> list[frozenset[str]]:
        out = self.factor()
        while self._peek() == "and":
            self.i += 1
            right = self.factor()
            out = [a | b for a in out for b in right]
            if len(out) > _MAX_CLAUSES:
                raise self._fail(f"more than {_MAX_CLAUSES} clauses in disjunctive normal form")
        return out

    def factor(self) -> list[frozenset[str]]:
        tok = self._peek()
        if tok is None:
            raise self._fail("ends with an operator")
        if tok in ("and", "or", ")"):
            raise self._fail(f"unexpected {tok!r}")
        self.i += 1
        if tok == "(":
            inner = self.expr()
            if self._peek() != ")":
                raise self._fail("unbalanced parentheses")
            self.i += 1
            return inner
        return [frozenset([tok])]


def _minimise(clauses: list[frozenset[str]]) -> list[frozenset[str]]:
    unique = list(dict.fromkeys(clauses))
    return [c for c in unique if not any(o < c for o in unique)]


# --- directory layout -------------------------------------------------------------------------


@dataclass(frozen=True)
class DataFiles:
    """The input files found in a data directory (see :func:`locate_inputs`).

    Attributes:
        root: The data directory.
        gene_names: ``SGDgeneNames.tsv``.
        physical: Mirror ``biogrid_*_physical_orf.tsv[.gz]`` or BioGRID ``*.tab3.txt``.
        physical_format: ``"orf_tsv"`` or ``"biogrid_tab3"``.
        regulatory: ``YEASTRACT_*.tsv[.gz]``.
        gem: ``yeast-GEM.xml[.gz]`` or ``yeast-GEM.yml``.
        essential: ``inviable_orfs_yeast_deletion_project.txt``.
        sga: Official pair-wise ``SGA_*.txt`` files (empty when the mirror's ε table is used).
        epsilon: The mirror's ε table, when no SGA file is present.
        smf: The single-mutant fitness xlsx (needed with ``epsilon`` to derive fitness).
    """

    root: Path
    gene_names: Path
    physical: Path
    physical_format: str
    regulatory: Path
    gem: Path
    essential: Path
    sga: tuple[Path, ...]
    epsilon: Path | None
    smf: Path | None

    def all_paths(self) -> list[Path]:
        """Every input file, in a fixed order (the cache key hashes them in this order)."""
        paths = [self.gene_names, self.physical, self.regulatory, self.gem, self.essential, *self.sga]
        paths += [p for p in (self.epsilon, self.smf) if p is not None]
        return paths

    def relative(self, path: Path) -> str:
        """``path`` relative to :attr:`root` (for provenance records)."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def _first(dirs: list[Path], patterns: tuple[str, ...]) -> Path | None:
    for d in dirs:
        for pattern in patterns:
            hits = sorted(p for p in d.glob(pattern) if p.is_file())
            if hits:
                return hits[-1]  # newest release when several are present
    return None


def locate_inputs(data_dir: Path) -> DataFiles:
    """Find the input files of a data directory.

    Graph files are looked up in ``DIR/graph`` then ``DIR``; Costanzo files in
    ``DIR/costanzo2016`` then ``DIR``. Official pair-wise ``SGA_*.txt`` files win over the
    mirror's ε table; ``yeast-GEM.xml[.gz]`` wins over ``yeast-GEM.yml``.

    Args:
        data_dir: The data directory.

    Returns:
        The files found.

    Raises:
        DataError: The directory does not exist, or a required file is missing (the
            message names the file names accepted).
    """
    root = Path(data_dir)
    if not root.exists():
        raise DataError(f"data directory {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data directory {root} is not a directory")
    graph_dirs = [root / "graph", root]
    sga_dirs = [root / "costanzo2016", root]

    def need(dirs: list[Path], patterns: tuple[str, ...], what: str) -> Path:
        found = _first(dirs, patterns)
        if found is None:
            raise DataError(f"data directory {root}: no {what} file (expected {' or '.join(patterns)} in graph/ or the directory itself)")
        return found

    gene_names = need(graph_dirs, ("SGDgeneNames.tsv",), "SGD gene name")
    physical = _first(graph_dirs, ("biogrid_*_physical_orf.tsv.gz", "biogrid_*_physical_orf.tsv"))
    physical_format = "orf_tsv"
    if physical is None:
        physical = need(graph_dirs, ("BIOGRID-ORGANISM-Saccharomyces_cerevisiae*.tab3.txt", "BIOGRID-ORGANISM-*.tab3.txt"), "physical interaction")
        physical_format = "biogrid_tab3"
    regulatory = need(graph_dirs, ("YEASTRACT_*.tsv.gz", "YEASTRACT_*.tsv"), "YEASTRACT regulatory")
    gem = need(graph_dirs, ("yeast-GEM.xml.gz", "yeast-GEM.xml", "yeast-GEM.yml"), "Yeast-GEM model")
    essential = need(graph_dirs, ("inviable_orfs_yeast_deletion_project.txt",), "essential gene list")
    sga: tuple[Path, ...] = ()
    for d in sga_dirs:
        hits = tuple(sorted(p for p in d.glob("SGA_*.txt") if p.is_file()))
        if hits:
            sga = hits
            break
    epsilon = smf = None
    if not sga:
        epsilon = _first(sga_dirs, ("nxn_metabolic_epsilon.tsv.gz", "nxn_metabolic_epsilon.tsv"))
        if epsilon is None:
            raise DataError(
                f"data directory {root}: no genetic interaction file (expected SGA_*.txt or "
                "nxn_metabolic_epsilon.tsv.gz in costanzo2016/ or the directory itself)"
            )
        smf = need(sga_dirs, ("strain_ids_and_single_mutant_fitness.xlsx",), "single mutant fitness")
    return DataFiles(root, gene_names, physical, physical_format, regulatory, gem, essential, sga, epsilon, smf)
