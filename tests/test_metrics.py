"""Metrics: TorchCell's combined (z-scored, pooled) MSE and Pearson, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from torchcell_search.metrics import combined_metrics

NAN = float("nan")


def test_combined_metrics_by_hand() -> None:
    # train statistics: fitness mean 1, std 2; gene_interaction mean 0, std 0.5
    mean, std = np.array([1.0, 0.0]), np.array([2.0, 0.5])
    target = np.array([[3.0, 0.5], [1.0, NAN], [NAN, -0.5], [1.0, -0.5]])
    pred = np.array([[1.0, 0.0], [5.0, 9.0], [0.0, -1.0], [5.0, -1.0]])
    # records with both labels (0 and 3; TorchCell's combined_mask), z-scored and flattened:
    #   labels (3-1)/2 = 1, 0.5/0.5 = 1, (1-1)/2 = 0, -0.5/0.5 = -1  -> [1, 1, 0, -1]
    #   preds  (1-1)/2 = 0, 0/0.5 = 0,  (5-1)/2 = 2, -1/0.5 = -2     -> [0, 0, 2, -2]
    out = combined_metrics(pred, target, mean, std, "val")
    assert out["val/combined/MSE"] == pytest.approx((1 + 1 + 4 + 1) / 4)
    zy, zp = np.array([1, 1, 0, -1.0]), np.array([0, 0, 2, -2.0])
    assert out["val/combined/Pearson"] == pytest.approx(np.corrcoef(zp, zy)[0, 1])
    # records 1 and 2 (one label missing) are left out whatever their predictions
    pred[1], pred[2] = [100.0, -100.0], [-100.0, 100.0]
    assert combined_metrics(pred, target, mean, std, "val") == out
    assert set(out) == {"val/combined/MSE", "val/combined/Pearson"}


def test_combined_metrics_without_present_labels_are_nan() -> None:
    out = combined_metrics(np.zeros((2, 2)), np.full((2, 2), NAN), np.zeros(2), np.ones(2), "test")
    assert math.isnan(out["test/combined/MSE"]) and math.isnan(out["test/combined/Pearson"])
