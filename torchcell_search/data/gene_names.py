"""Standard gene name -> systematic ORF resolution through SGD's name table.

``SGDgeneNames.tsv`` (the Yeast-GEM repository's SGD table; columns ``Systematic_name``,
``Standard_name``) defines the gene universe. Other sources name genes by systematic name
(``YAL001C``), by standard name (``TFC3``, ``FLO8``) or by names SGD's table lacks. A name
resolves, in this order, to

1. the SGD systematic name it equals (case-insensitive);
2. the systematic name whose standard name it equals (case-insensitive);
3. itself, upper-cased, when it has the shape of a systematic ORF name (``YBL005W-A``,
   ``Q0045``): a real gene SGD's table lacks, which callers add and count;
4. nothing (``None``): callers count and report it, never drop it silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from torchcell_search.data import readers
from torchcell_search.errors import DataError

__all__ = ["GeneNames", "is_orf_name"]

#: Nuclear ORFs (``YAL001C``, ``YBL005W-A``), mitochondrial ``Q0045`` and ``R0010W``-style names.
_ORF = re.compile(r"^(?:Y[A-P][LR]\d{3}[WC](?:-[A-Z])?|Q\d{4}|R\d{4}[WC]?)$")


def is_orf_name(name: str) -> bool:
    """Whether ``name`` has the shape of a yeast systematic ORF name (case-insensitive).

    Args:
        name: A gene name.

    Returns:
        True for names like ``YAL001C``, ``ybl005w-a``, ``Q0045``.
    """
    return bool(_ORF.match(name.strip().upper()))


class GeneNames:
    """Resolves gene names from any source to systematic ORF names.

    Example:
        >>> names = GeneNames(["YAL001C", "YHR211W"], ["TFC3", "FLO5"])
        >>> names.to_orf("tfc3"), names.to_orf("YBL005W-A"), names.to_orf("tA(AGC)D")
        ('YAL001C', 'YBL005W-A', None)

    Args:
        systematic: SGD systematic names, in the order that defines gene node indices.
        standard: Standard names aligned with ``systematic`` (``None``/empty where a gene
            has none).

    Raises:
        DataError: If the two sequences differ in length or a systematic name repeats.
    """

    def __init__(self, systematic: Sequence[str], standard: Sequence[str | None], *, source: str = "gene names") -> None:
        if len(systematic) != len(standard):
            raise DataError(f"{source}: {len(systematic)} systematic names but {len(standard)} standard names")
        self.systematic: list[str] = [s.strip() for s in systematic]
        self.source = source
        self._by_upper: dict[str, str] = {}
        for orf in self.systematic:
            key = orf.upper()
            if key in self._by_upper:
                raise DataError(f"{source}: systematic name {orf!r} appears twice")
            self._by_upper[key] = orf
        # Standard names never shadow a systematic name (rule 1 before rule 2).
        self._standard: dict[str, str] = {}
        for orf, std in zip(self.systematic, standard):
            if isinstance(std, str) and std.strip():
                self._standard.setdefault(std.strip().upper(), orf)

    @classmethod
    def from_file(cls, path: Path) -> "GeneNames":
        """Read ``SGDgeneNames.tsv``.

        Args:
            path: The TSV with columns ``Systematic_name`` and ``Standard_name``.

        Returns:
            The resolver, with systematic names in file order.

        Raises:
            DataError: If the file is missing, unreadable, lacks a column or is empty.
        """
        df = readers.read_sgd_gene_names(path)
        return cls(df["systematic"].tolist(), df["standard"].tolist(), source=str(path))

    def __len__(self) -> int:
        return len(self.systematic)

    def __contains__(self, orf: object) -> bool:
        return isinstance(orf, str) and orf.upper() in self._by_upper

    def to_orf(self, name: str) -> str | None:
        """Resolve one name (see the module docstring for the rules).

        Args:
            name: Systematic, standard or unknown gene name.

        Returns:
            The systematic ORF name, or ``None`` when it cannot be resolved.
        """
        key = name.strip().upper()
        if key in self._by_upper:
            return self._by_upper[key]
        if key in self._standard:
            return self._standard[key]
        if _ORF.match(key):
            return key
        return None

    def map(self, names: Iterable[str]) -> dict[str, str | None]:
        """Resolve many names at once.

        Args:
            names: Names, repeats allowed.

        Returns:
            ``{name: orf or None}`` over the distinct names.
        """
        return {n: self.to_orf(n) for n in pd.unique(pd.Series(list(names), dtype=object))}

    def map_series(self, names: pd.Series) -> pd.Series:
        """Resolve a column of names (vectorised over distinct values).

        Args:
            names: String series.

        Returns:
            Series of ORF names aligned with ``names``; ``None`` where unresolved.
        """
        lookup = {n: self.to_orf(n) for n in names.unique()}
        return names.map(lookup)
