"""W&B's hyperband early termination as an Optuna pruner.

Ported from wandb/sweeps ``src/sweeps/hyperband_stopping.py`` (``hyperband_stop_runs``,
commit b1dfc5f). W&B's hyperband is not Optuna's ``HyperbandPruner`` (which runs brackets
of successive halving with their own budgets): it fixes a list of *bands* (epochs) and, at
each check, stops a running trial whose value at the last band it has passed is outside the
best ``1/eta`` of every trial's value at that band.

Bands (``wandb_bands``):

- ``max_iter`` and ``s``: ``max_iter / eta``, ``max_iter / eta**2``, ... (``s`` of them,
  stopping below 1), truncated to integers and sorted. ``max_iter: 27, s: 2, eta: 3`` gives
  ``[3, 9]``.
- else ``min_iter``: ``min_iter, min_iter * eta, ...`` (100 of them).

Example:
    >>> wandb_bands({"max_iter": 27, "s": 2, "eta": 3})
    [3, 9]
    >>> wandb_bands({"min_iter": 2, "eta": 3})[:4]
    [2, 6, 18, 54]
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import optuna
from optuna.trial import FrozenTrial

__all__ = ["WandbHyperbandPruner", "wandb_bands"]


def wandb_bands(settings: Mapping[str, Any]) -> list[int]:
    """The bands (1-based epoch counts) of W&B's ``early_terminate`` settings (``eta`` filled)."""
    eta = settings["eta"]
    bands: list[int] = []
    if "max_iter" in settings:
        band = float(settings["max_iter"])
        for _ in range(int(settings["s"])):
            band /= eta
            if band < 1:
                break
            bands.append(int(band))
        return sorted(bands)
    band = float(settings["min_iter"])
    for _ in range(100):
        bands.append(int(band))
        band *= eta
    return bands


class WandbHyperbandPruner(optuna.pruners.BasePruner):
    """Stop a trial as W&B's hyperband does.

    A trial's *history* is its reported values in epoch order (negated when maximising, so
    lower is better). For each band ``b``, the threshold is ``sorted(values)[int(len / eta)]``
    over the ``b``-th value of every trial that reached ``b`` (in any state, the trial
    itself included). A trial past band ``b`` (its last passed band) is pruned when
    its value at ``b`` (``strict``, W&B's default), or its best value so far (not strict),
    is above that threshold.

    Args:
        bands: epoch counts, ascending (:func:`wandb_bands`).
        eta: W&B's ``eta``; the best ``1 / eta`` pass.
        strict: W&B's ``strict`` (default ``True``).
    """

    def __init__(self, bands: list[int], eta: float, *, strict: bool = True) -> None:
        if not bands:
            raise ValueError("WandbHyperbandPruner needs at least one band")
        self.bands = list(bands)
        self.eta = float(eta)
        self.strict = strict

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        history = _history(trial, sign)
        passed = [b for b in self.bands if b <= len(history)]
        if not passed:
            return False  # no band applies yet
        band = passed[-1]
        # Every trial of the study, in any state, as W&B takes every run of the sweep.
        others = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        values = [h[band - 1] for h in [_history(t, sign) for t in others] + [history] if len(h) >= band]
        threshold = sorted(values)[int((1.0 / self.eta) * len(values))]
        condition = history[band - 1] if self.strict else min(history)
        return condition > threshold


def _history(trial: FrozenTrial, sign: float) -> list[float]:
    """Reported values in step order, finite only (W&B's ``filter_invalid``), signed so lower is better."""
    return [sign * v for _, v in sorted(trial.intermediate_values.items()) if math.isfinite(v)]
