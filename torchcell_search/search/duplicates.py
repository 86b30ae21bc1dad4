"""No configuration trained twice: repeated suggestions, and spaces whose every point is done.

TPE in a small discrete space draws points it has already finished (the gene recipe's
4-point space drew one twice in three trials). :func:`finished_twin` finds a finished trial
(COMPLETE or PRUNED) with the same parameters and the same run seed; the objective then
answers the suggestion from it (:func:`answer_from`: its values and user attrs are copied,
``user_attrs["duplicate_of"]`` names it, nothing is trained) and queues a point of the space
no trial has finished yet (:func:`untried_points`), so the next trial explores instead.

Seed replicas (``user_attrs["replica_seed"]``, trained for ensembles) share their anchor's
parameters on purpose: the run seed is part of the key, so they are never duplicates.

Example:
    >>> a = {"optimizer.lr": 0.001, "model.profile_dropout": 0.3}
    >>> same_params(a, {"model.profile_dropout": 0.3, "optimizer.lr": 0.001 * (1 + 1e-15)})
    True
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any, Mapping, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from torchcell_search.errors import ConfigError
from torchcell_search.search.spaces import SearchSpace

__all__ = [
    "DUPLICATE_ATTR",
    "REPLICA_ATTR",
    "answer_from",
    "exhausted_notice",
    "finished_twin",
    "run_seed",
    "same_params",
    "space_points",
    "untried_points",
]

#: User attr of a trial answered from an earlier one: that trial's number.
DUPLICATE_ATTR = "duplicate_of"
#: User attr of a seed replica (an ensemble member retrained with another seed): its run seed.
REPLICA_ATTR = "replica_seed"
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Per-trial bookkeeping of the source trial that a duplicate must not inherit.
_NOT_COPIED = frozenset({DUPLICATE_ATTR, REPLICA_ATTR, "resumed_from"})


def run_seed(trial: optuna.Trial | FrozenTrial, study_seed: int) -> int:
    """The training seed of ``trial``: its replica seed when it is a seed replica, else the study's."""
    seed = trial.user_attrs.get(REPLICA_ATTR)
    return int(seed) if seed is not None else study_seed


def same_params(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal keys and values; floats compare to 1e-12 relative (a stepped grid's sums round)."""
    if set(a) != set(b):
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, float) or isinstance(y, float):
            if not (isinstance(x, (int, float)) and isinstance(y, (int, float))
                    and math.isclose(float(x), float(y), rel_tol=1e-12, abs_tol=0.0)):
                return False
        elif x != y:
            return False
    return True


def finished_twin(trials: Sequence[FrozenTrial], params: Mapping[str, Any], seed: int, *,
                  study_seed: int) -> FrozenTrial | None:
    """The earliest finished trial with ``params`` and run ``seed`` that is no duplicate itself."""
    for t in sorted(trials, key=lambda t: t.number):
        if (t.state in _FINISHED and DUPLICATE_ATTR not in t.user_attrs
                and run_seed(t, study_seed) == seed and same_params(t.params, params)):
            return t
    return None


def answer_from(trial: optuna.Trial, twin: FrozenTrial) -> list[float] | None:
    """Copy ``twin``'s user attrs to ``trial`` and mark it; returns ``twin``'s values (None if pruned).

    A pruned twin's caller raises :class:`optuna.TrialPruned`: the repeat would prune again.
    """
    for key, value in sorted(twin.user_attrs.items()):
        if key not in _NOT_COPIED:
            trial.set_user_attr(key, value)
    trial.set_user_attr(DUPLICATE_ATTR, twin.number)
    trial.set_user_attr("stopped_reason", f"duplicate of trial {twin.number}: not trained again")
    return list(twin.values) if twin.state == TrialState.COMPLETE and twin.values is not None else None


def space_points(space: SearchSpace) -> list[dict[str, Any]] | None:
    """Every point of a discrete space as Optuna params (sorted keys), or None if it has no finite grid."""
    try:
        grid = space.grid()
    except ConfigError:
        return None
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def untried_points(space: SearchSpace, trials: Sequence[FrozenTrial], study_seed: int) -> list[dict[str, Any]] | None:
    """Points of a discrete space that no finished, running or queued trial at the study seed
    holds (None: the space has no finite grid)."""
    points = space_points(space)
    if points is None:
        return None
    taken = [t.params for t in trials if run_seed(t, study_seed) == study_seed
             and t.state in (*_FINISHED, TrialState.RUNNING, TrialState.WAITING)]
    return [p for p in points if not any(same_params(p, q) for q in taken)]


def shuffled(points: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """``points`` in a seeded order (which untried point is queued first)."""
    out = list(points)
    random.Random(seed).shuffle(out)
    return out


def exhausted_notice(space: SearchSpace, trials: Sequence[FrozenTrial], study_seed: int) -> str | None:
    """``"all N configurations of the space are done"`` when every point of a discrete space
    has a finished trial at the study seed; else None."""
    points = space_points(space)
    if not points:
        return None
    done = [t.params for t in trials if t.state in _FINISHED and run_seed(t, study_seed) == study_seed]
    if all(any(same_params(p, q) for q in done) for p in points):
        return f"all {len(points)} configurations of the space are done"
    return None
