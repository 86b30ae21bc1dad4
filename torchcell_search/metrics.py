"""Regression metrics per label, named like the report (``val/gene_interaction/Pearson``).

Every model and baseline is scored by :func:`regression_metrics`, so their numbers are
comparable. Metrics are computed on the original label scale over the records whose label
is present (missing labels are NaN and skipped per label).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from torchcell_search.data.types import LABELS

__all__ = ["METRICS", "combined_metrics", "metric_name", "regression_metrics"]

METRICS: tuple[str, str, str] = ("MSE", "Pearson", "Spearman")


def metric_name(split: str, label: str, metric: str) -> str:
    """``metric_name("val", "gene_interaction", "Pearson") == "val/gene_interaction/Pearson"``."""
    return f"{split}/{label}/{metric}"


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2:
        return math.nan
    x = x - x.mean()
    y = y - y.mean()
    denom = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    # A constant prediction (the report's collapse to the mean) has no correlation: report 0.
    return float((x * y).sum() / denom) if denom > 0 else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman's rho needs."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.arange(x.size, dtype=np.float64)
    sorted_x = x[order]
    # Give each run of equal values the mean of its ranks.
    boundaries = np.flatnonzero(np.diff(sorted_x)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [x.size]])
    for s, e in zip(starts, ends):
        if e - s > 1:
            ranks[order[s:e]] = (s + e - 1) / 2.0
    return ranks


def regression_metrics(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, split: str) -> dict[str, float]:
    """MSE, Pearson and Spearman of each label.

    Args:
        pred: ``(R, 2)`` predictions in :data:`~torchcell_search.data.types.LABELS` order.
        target: ``(R, 2)`` labels, NaN where missing.
        split: prefix of the names (``"train"``, ``"val"``, ``"test"``).

    Returns:
        ``{"<split>/<label>/<metric>": value}``; a label with fewer than two present values
        gets NaN correlations.
    """
    p = np.asarray(pred.detach().cpu() if isinstance(pred, torch.Tensor) else pred, dtype=np.float64)
    t = np.asarray(target.detach().cpu() if isinstance(target, torch.Tensor) else target, dtype=np.float64)
    out: dict[str, float] = {}
    for j, label in enumerate(LABELS):
        present = np.isfinite(t[:, j])
        pj, tj = p[present, j], t[present, j]
        out[metric_name(split, label, "MSE")] = float(np.mean((pj - tj) ** 2)) if pj.size else math.nan
        out[metric_name(split, label, "Pearson")] = _pearson(pj, tj)
        out[metric_name(split, label, "Spearman")] = _pearson(_ranks(pj), _ranks(tj)) if pj.size >= 2 else math.nan
    return out


def combined_metrics(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    mean: torch.Tensor | np.ndarray,
    std: torch.Tensor | np.ndarray,
    split: str,
) -> dict[str, float]:
    """MSE and Pearson of both labels pooled into one vector: TorchCell's ``<split>/transformed/combined``.

    Predictions and labels of each label are z-scored with the training split's ``mean`` and
    ``std``; the records with both labels present are flattened into one vector of
    ``2 * R_both`` values and scored, so a model is rewarded for both labels on a common
    scale. As TorchCell (``torchcell/trainers/fit_int_hetero_cell.py``:
    ``combined_mask = ~isnan(targets).any(dim=1)``), a record missing either label is left
    out. TorchCell's Hydra sweep returns these two values (MSE to minimise, Pearson to
    maximise) as its objectives.

    Args:
        pred: ``(R, 2)`` predictions on the original scale.
        target: ``(R, 2)`` labels on the original scale, NaN where missing.
        mean, std: ``(2,)`` per-label training statistics (``Standardiser.fit`` of the train labels).
        split: prefix of the names.

    Returns:
        ``{"<split>/combined/MSE": ..., "<split>/combined/Pearson": ...}`` (NaN MSE without a
        complete record, NaN Pearson with fewer than two values).
    """
    def array(x: torch.Tensor | np.ndarray) -> np.ndarray:
        return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)

    p, t, mu, sd = array(pred), array(target), array(mean), array(std)
    both = np.isfinite(t).all(axis=1)  # (R,) records with every label
    zp = ((p[both] - mu) / sd).reshape(-1)  # (2 R_both,) pooled
    zt = ((t[both] - mu) / sd).reshape(-1)
    return {
        metric_name(split, "combined", "MSE"): float(np.mean((zp - zt) ** 2)) if zt.size else math.nan,
        metric_name(split, "combined", "Pearson"): _pearson(zp, zt),
    }
