"""Train/val/test splits, reproducible record subsets, and label standardisation.

Split kinds (DESIGN.md, "Labels and evaluation"):

- ``random``: records are shuffled and cut by ``fractions`` (the report's split).
- ``pair``: records are grouped by their unordered gene pair, so both orientations of a
  pair (A as query and B as array, and the reverse) always land on the same side. Groups
  are shuffled and assigned in order until each side holds its fraction of records.
- ``gene``: genes are held out. Every gene seen in the table is assigned to train, val or
  test; a record goes to **test** if it involves a test gene, to **val** if it involves a
  val gene and no test gene, and to **train** only if both genes are train genes (records
  mixing a val and a test gene go to test). ``fractions`` are record-level targets: with
  gene fractions ``p_train = sqrt(f_train)`` and ``p_train + p_val = sqrt(f_train + f_val)``
  a random pair lands in each side with the requested probability (in expectation; the
  realised sizes vary with the data).

Every split is a pure function of the table, the kind, the seed and the fractions. The
index tensors are sorted. :class:`Standardiser` z-scores the labels; the trainer fits it on
the training split only, so no val/test statistics leak into training.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from torchcell_search._atomic import write_atomic
from torchcell_search.data.types import LABELS, PerturbationTable, Split
from torchcell_search.errors import ConfigError, DataError

__all__ = [
    "SPLIT_KINDS",
    "Standardiser",
    "load_split",
    "make_split",
    "save_split",
    "split_cache_path",
    "subset_indices",
]

#: The split kinds :func:`make_split` accepts.
SPLIT_KINDS: tuple[str, ...] = ("random", "pair", "gene")
_FORMAT = "torchcell_search.split/1"
_STD_FLOOR = 1e-8

#: Record fractions (train, val, test) of every split: the report's 80/10/10.
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


def make_split(
    table: PerturbationTable,
    kind: str,
    *,
    seed: int,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> Split:
    """Split the records of ``table`` into disjoint, sorted train/val/test index sets.

    Example:
        >>> from torchcell_search.data.demo import make_demo_dataset
        >>> split = make_split(make_demo_dataset().table, "pair", seed=0)
        >>> len(split.train) + len(split.val) + len(split.test)
        6000

    Args:
        table: The perturbation records.
        kind: ``"random"``, ``"pair"`` or ``"gene"`` (see the module docstring).
        seed: Seed of the shuffle; the same inputs give the same split.
        fractions: Target record fractions (train, val, test), non-negative, summing to 1,
            with a positive train fraction.

    Returns:
        A :class:`~torchcell_search.data.types.Split` covering every record exactly once.

    Raises:
        ConfigError: unknown ``kind`` or invalid ``fractions``.
        DataError: the table has no records.
    """
    if kind not in SPLIT_KINDS:
        raise ConfigError(f"split kind {kind!r}: unknown; choose one of {', '.join(SPLIT_KINDS)}")
    f = _check_fractions(fractions)
    R = len(table)
    if R == 0:
        raise DataError("perturbation table: no records to split")
    gen = torch.Generator().manual_seed(int(seed))
    genes = table.genes.long()
    if kind == "random":
        side = _assign_groups(torch.arange(R), R, f, gen)
    elif kind == "pair":
        lo, hi = genes.min(dim=1).values, genes.max(dim=1).values
        _, group = torch.unique(torch.stack([lo, hi], dim=1), dim=0, return_inverse=True)  # (R,)
        side = _assign_groups(group, int(group.max()) + 1, f, gen)
    else:
        side = _gene_sides(genes, f, gen)
    train, val, test = (torch.nonzero(side == s).flatten() for s in range(3))
    return Split(kind=kind, seed=int(seed), train=train, val=val, test=test)


def _check_fractions(fractions: tuple[float, float, float]) -> tuple[float, float, float]:
    try:
        f = tuple(float(x) for x in fractions)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"split fractions {fractions!r}: expected three numbers") from e
    if len(f) != 3 or any(not math.isfinite(x) or x < 0 for x in f) or abs(sum(f) - 1.0) > 1e-6 or f[0] <= 0:
        raise ConfigError(
            f"split fractions {fractions!r}: expected three non-negative numbers (train, val, test) "
            "summing to 1 with train > 0"
        )
    return f  # type: ignore[return-value]


def _assign_groups(
    group: torch.Tensor, n_groups: int, f: tuple[float, float, float], gen: torch.Generator
) -> torch.Tensor:
    """Side (0 train, 1 val, 2 test) per record, assigning whole groups in shuffled order."""
    sizes = torch.bincount(group, minlength=n_groups)  # (G,) records per group
    order = torch.randperm(n_groups, generator=gen)
    # Cumulative record count *before* each group, in shuffled order; a group goes to the
    # side whose record-fraction interval holds that start.
    start = torch.cumsum(sizes[order], 0) - sizes[order]
    R = int(sizes.sum())
    cut_train, cut_val = round(f[0] * R), round((f[0] + f[1]) * R)
    side_sorted = (start >= cut_train).long() + (start >= cut_val).long()
    group_side = torch.empty(n_groups, dtype=torch.long)
    group_side[order] = side_sorted
    return group_side[group]  # (R,)


def _gene_sides(genes: torch.Tensor, f: tuple[float, float, float], gen: torch.Generator) -> torch.Tensor:
    """Side per record for held-out genes: test beats val beats train."""
    uniq = torch.unique(genes)  # sorted gene indices seen in the table
    n = int(uniq.numel())
    order = uniq[torch.randperm(n, generator=gen)]
    n_train = round(math.sqrt(f[0]) * n)
    n_train_val = round(math.sqrt(f[0] + f[1]) * n)
    if f[2] > 0:  # keep at least one test gene when a test side is asked for
        n_train_val = min(n_train_val, n - 1)
        n_train = min(n_train, n_train_val)
    gene_side = torch.zeros(int(genes.max()) + 1, dtype=torch.long)
    gene_side[order[n_train:n_train_val]] = 1
    gene_side[order[n_train_val:]] = 2
    return gene_side[genes].max(dim=1).values  # (R,)


def subset_indices(n_records: int, n: int, *, seed: int) -> torch.Tensor:
    """Draw ``n`` distinct record indices reproducibly.

    Args:
        n_records: Number of records to draw from.
        n: How many to draw (``1 <= n <= n_records``).
        seed: Seed of the draw.

    Returns:
        ``(n,)`` long tensor, sorted ascending.

    Raises:
        ConfigError: ``n`` is not in ``[1, n_records]``.
    """
    if n < 1 or n > n_records:
        raise ConfigError(f"subset {n}: must be between 1 and the number of records ({n_records})")
    gen = torch.Generator().manual_seed(int(seed))
    return torch.sort(torch.randperm(n_records, generator=gen)[:n]).values


def split_cache_path(cache_dir: str | Path, dataset_key: str, kind: str, seed: int, subset: int | None) -> Path:
    """Where a split is persisted: ``<cache_dir>/splits/<key>-<kind>-seed<seed>-<subset|all>.pt``.

    Args:
        cache_dir: The data cache directory.
        dataset_key: Identifies the data set (e.g. its content hash or ``"demo"``); characters
            outside ``[A-Za-z0-9._-]`` are replaced by ``_``.
        kind: The split kind.
        seed: The split seed.
        subset: The subset size, or ``None`` for all records.

    Returns:
        The file path (not created).

    Raises:
        ConfigError: unknown ``kind``.
    """
    if kind not in SPLIT_KINDS:
        raise ConfigError(f"split kind {kind!r}: unknown; choose one of {', '.join(SPLIT_KINDS)}")
    key = re.sub(r"[^A-Za-z0-9._-]", "_", dataset_key) or "_"
    tag = "all" if subset is None else f"n{int(subset)}"
    return Path(cache_dir) / "splits" / f"{key}-{kind}-seed{int(seed)}-{tag}.pt"


def save_split(split: Split, path: str | Path) -> None:
    """Write ``split`` to ``path`` atomically (temporary file in the same directory + rename).

    Args:
        split: The split to persist.
        path: Target file; parent directories are created.

    Raises:
        DataError: the file cannot be written.
    """
    path = Path(path)
    payload = {
        "format": _FORMAT,
        "kind": split.kind,
        "seed": int(split.seed),
        "train": split.train.long().cpu(),
        "val": split.val.long().cpu(),
        "test": split.test.long().cpu(),
    }
    try:
        write_atomic(path, lambda f: torch.save(payload, f))
    except OSError as e:
        raise DataError(f"split file {path}: cannot write ({e.strerror or e})") from e


def load_split(path: str | Path) -> Split:
    """Read a split written by :func:`save_split`.

    Args:
        path: The split file.

    Returns:
        The stored :class:`~torchcell_search.data.types.Split`.

    Raises:
        DataError: the file is missing, unreadable or not a split file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file {path}: not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several unrelated types for a corrupt file
        raise DataError(f"split file {path}: unreadable ({type(e).__name__}); delete it to rebuild") from e
    keys = {"format", "kind", "seed", "train", "val", "test"}
    if not isinstance(payload, dict) or not keys <= set(payload) or payload["format"] != _FORMAT:
        raise DataError(f"split file {path}: not a {_FORMAT} file; delete it to rebuild")
    return Split(
        kind=str(payload["kind"]),
        seed=int(payload["seed"]),
        train=payload["train"],
        val=payload["val"],
        test=payload["test"],
    )


@dataclass
class Standardiser:
    """Per-label z-scoring of ``(R, 2)`` labels in :data:`LABELS` order, NaN-aware.

    Fit it on the training split only (the trainer does), then ``transform`` targets for
    the loss and ``inverse`` predictions back to the original scale for metrics.

    Example:
        >>> y = torch.tensor([[1.0, 0.0], [3.0, float("nan")], [5.0, 2.0]])
        >>> s = Standardiser.fit(y)
        >>> torch.allclose(s.inverse(s.transform(y)), y, equal_nan=True)
        True

    Args:
        mean: ``(2,)`` float32 per-label mean of the present values.
        std: ``(2,)`` float32 per-label population standard deviation, floored at 1e-8.
    """

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, labels: torch.Tensor) -> "Standardiser":
        """Per-label mean and std over the present (non-NaN) values.

        Args:
            labels: ``(R, 2)`` float labels, NaN where missing.

        Returns:
            The fitted standardiser.

        Raises:
            DataError: ``labels`` is not ``(R, 2)``, or a label has no present value.
        """
        if labels.dim() != 2 or labels.shape[1] != len(LABELS):
            raise DataError(f"labels: expected shape (R, {len(LABELS)}), got {tuple(labels.shape)}")
        y = labels.double()
        present = ~torch.isnan(y)  # (R, 2)
        count = present.sum(0)
        for i, name in enumerate(LABELS):
            if int(count[i]) == 0:
                raise DataError(f"labels: no present {name} value to standardise (all NaN or empty)")
        y0 = torch.where(present, y, torch.zeros_like(y))
        mean = y0.sum(0) / count
        var = (torch.where(present, y - mean, torch.zeros_like(y)) ** 2).sum(0) / count
        std = var.sqrt().clamp_min(_STD_FLOOR)
        return cls(mean=mean.float(), std=std.float())

    @classmethod
    def identity(cls) -> "Standardiser":
        """The no-op standardiser (mean 0, std 1), for runs with label standardisation off."""
        return cls(mean=torch.zeros(len(LABELS)), std=torch.ones(len(LABELS)))

    def transform(self, y: torch.Tensor) -> torch.Tensor:
        """``(y - mean) / std`` over the last dimension (size 2); NaN stays NaN."""
        return (y - self.mean.to(y.device, y.dtype)) / self.std.to(y.device, y.dtype)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``y * std + mean`` over the last dimension (size 2); NaN stays NaN."""
        return y * self.std.to(y.device, y.dtype) + self.mean.to(y.device, y.dtype)

    def state_dict(self) -> dict[str, list[float]]:
        """Plain floats (JSON- and checkpoint-safe): ``{"mean": [..], "std": [..]}``."""
        return {"mean": [float(x) for x in self.mean], "std": [float(x) for x in self.std]}

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> "Standardiser":
        """Rebuild from :meth:`state_dict` output.

        Args:
            d: ``{"mean": [m_fitness, m_gi], "std": [s_fitness, s_gi]}``.

        Returns:
            The standardiser.

        Raises:
            DataError: keys missing, wrong lengths, or a non-positive / non-finite std.
        """
        try:
            mean = torch.tensor([float(x) for x in d["mean"]], dtype=torch.float32)
            std = torch.tensor([float(x) for x in d["std"]], dtype=torch.float32)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"standardiser state {d!r}: expected lists 'mean' and 'std' of numbers") from e
        n = len(LABELS)
        if mean.numel() != n or std.numel() != n or not bool(torch.isfinite(std).all()) or bool((std <= 0).any()):
            raise DataError(f"standardiser state {d!r}: expected {n} means and {n} positive finite stds")
        return cls(mean=mean, std=std)
