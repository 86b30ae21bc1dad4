"""Ensembles of a study's best trials: choose the members, average their predictions, score them.

Members (:func:`select_members`), never a duplicate (``duplicate_of``) and never a failed trial:

- ``diversity="configs"``: the K best distinct configurations. One objective: the complete
  trials ranked by value (ties: lower trial number first). Several objectives: the Pareto
  set ranked by the first objective, then, if it holds fewer than K trials, the other
  complete trials ranked the same way. Seed replicas are left out.
- ``diversity="seeds"``: the best configuration (the first trial above) and K - 1 replicas of
  it retrained with seeds ``seed + 1, seed + 2, ...`` (``user_attrs["replica_seed"]``); a
  worker trains the missing ones once the search budget is spent (:func:`missing_replicas`).

Scoring (:func:`ensemble_summary`) averages the members' stored ``predictions.npz`` (val and
test predictions at each member's best epoch, original label scale), so no model runs; the
metrics are :func:`~torchcell_search.metrics.regression_metrics` of the mean prediction, next
to the best single trial's.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from torchcell_search.errors import ConfigError, StorageError, StudyError
from torchcell_search.metrics import combined_metrics, regression_metrics
from torchcell_search.search.duplicates import DUPLICATE_ATTR, REPLICA_ATTR, same_params
from torchcell_search.search.study_config import StudyConfig
from torchcell_search.storage.artifacts import PREDICTIONS_FILE, download_trial_artifact

__all__ = ["DIVERSITIES", "check_ensemble", "ensemble_summary", "missing_replicas", "ranked_trials",
           "select_members"]

DIVERSITIES = ("configs", "seeds")


def check_ensemble(k: Any, diversity: Any) -> tuple[int, str]:
    """Validate an ensemble size and diversity (the CLI's ``--ensemble``, ``--ensemble-diversity``).

    Raises:
        ConfigError: ``k`` is not an integer >= 1, or ``diversity`` is not one of :data:`DIVERSITIES`.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"--ensemble: expected an integer >= 1 (trials averaged), got {k!r}")
    if diversity not in DIVERSITIES:
        raise ConfigError(f"--ensemble-diversity {diversity!r}: expected one of {', '.join(DIVERSITIES)}")
    return k, diversity


def _key(trial: FrozenTrial, directions: Sequence[optuna.study.StudyDirection]) -> tuple[float, int]:
    value = trial.values[0]
    sign = -1.0 if directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return (sign * value if math.isfinite(value) else math.inf, trial.number)


def _dominates(a: FrozenTrial, b: FrozenTrial, directions: Sequence[optuna.study.StudyDirection]) -> bool:
    signs = [-1.0 if d == optuna.study.StudyDirection.MAXIMIZE else 1.0 for d in directions]
    x = [s * v for s, v in zip(signs, a.values)]
    y = [s * v for s, v in zip(signs, b.values)]
    return all(p <= q for p, q in zip(x, y)) and any(p < q for p, q in zip(x, y))


def ranked_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete, non-duplicate, non-replica trials, best first (see the module docstring)."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if DUPLICATE_ATTR not in t.user_attrs and REPLICA_ATTR not in t.user_attrs]
    directions = study.directions
    ordered = sorted(trials, key=lambda t: _key(t, directions))
    if len(directions) == 1:
        return ordered
    pareto = [t for t in ordered if not any(_dominates(o, t, directions) for o in trials)]
    return pareto + [t for t in ordered if t not in pareto]


def _replicas(study: optuna.Study, anchor: FrozenTrial, states: Sequence[TrialState]) -> list[FrozenTrial]:
    return sorted((t for t in study.get_trials(deepcopy=False, states=tuple(states))
                   if REPLICA_ATTR in t.user_attrs and DUPLICATE_ATTR not in t.user_attrs
                   and same_params(t.params, anchor.params)), key=lambda t: (t.user_attrs[REPLICA_ATTR], t.number))


def select_members(study: optuna.Study, k: int, diversity: str) -> list[FrozenTrial]:
    """The ``k`` trials an ensemble averages, best first.

    Raises:
        StudyError: fewer than ``k`` members exist yet (the message says how to get them).
    """
    ranked = ranked_trials(study)
    if not ranked:
        raise StudyError(f"study {study.study_name!r} has no complete trial yet; run more trials")
    if diversity == "configs":
        if len(ranked) < k:
            raise StudyError(f"--ensemble {k}: study {study.study_name!r} has {len(ranked)} complete distinct "
                             f"configuration(s); run more trials or use --ensemble-diversity seeds")
        return ranked[:k]
    seen: set[int] = set()
    replicas = []
    for t in _replicas(study, ranked[0], (TrialState.COMPLETE,)):
        if t.user_attrs[REPLICA_ATTR] not in seen:  # one member per seed
            seen.add(t.user_attrs[REPLICA_ATTR])
            replicas.append(t)
    members = [ranked[0], *replicas][:k]
    if len(members) < k:
        raise StudyError(f"--ensemble {k} --ensemble-diversity seeds: trial {ranked[0].number} has "
                         f"{len(members) - 1} trained seed replica(s); run `torchcell-search start --study "
                         f"{study.study_name} --ensemble {k} --ensemble-diversity seeds` to train the rest")
    return members


def missing_replicas(study: optuna.Study, cfg: StudyConfig) -> tuple[FrozenTrial | None, list[int]]:
    """The best trial and the replica seeds a ``seeds`` ensemble of ``cfg.ensemble`` still lacks
    (none finished, running or queued); ``(None, [])`` when nothing is to train."""
    ranked = ranked_trials(study)
    if cfg.ensemble_diversity != "seeds" or cfg.ensemble < 2 or not ranked:
        return None, []
    anchor = ranked[0]
    held = {t.user_attrs[REPLICA_ATTR] for t in _replicas(
        study, anchor, (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING))}
    wanted = [cfg.seed + i for i in range(1, cfg.ensemble)]
    return anchor, [s for s in wanted if s not in held]


def _load_predictions(study: optuna.Study, storage: optuna.storages.BaseStorage, store: Any,
                      trial: FrozenTrial, tmp: Path) -> dict[str, np.ndarray]:
    try:
        path = download_trial_artifact(store, storage, trial, PREDICTIONS_FILE, tmp / f"{trial.number}.npz")
    except StorageError as e:
        raise StudyError(f"ensemble member trial {trial.number} of study {study.study_name!r} has no stored "
                         f"predictions: {e}") from e
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def _scores(pred: dict[str, np.ndarray], arrays: dict[str, np.ndarray], part: str) -> dict[str, float]:
    out = regression_metrics(pred[part], arrays[f"{part}_label"], part)
    if "train_mean" in arrays:  # written since ensembles exist; older trials score without it
        out.update(combined_metrics(pred[part], arrays[f"{part}_label"], arrays["train_mean"],
                                    arrays["train_std"], part))
    return out


def ensemble_summary(study: optuna.Study, storage: optuna.storages.BaseStorage, store: Any, *, k: int,
                     diversity: str) -> dict[str, Any]:
    """Val and test metrics of the ``k``-member ensemble beside its best member's.

    Returns:
        ``{"k", "diversity", "members", "val", "test", "best_single": {"trial", "val", "test"},
        "gain": {"val", "test"}}``; ``gain`` holds ensemble minus best single per metric.

    Raises:
        StudyError: too few members (see :func:`select_members`), a member lacks its
            predictions, or the members were scored on different records.
    """
    members = select_members(study, k, diversity)
    with tempfile.TemporaryDirectory(prefix="torchcell-search-") as tmp:
        arrays = [_load_predictions(study, storage, store, t, Path(tmp)) for t in members]
    first = arrays[0]
    for t, a in zip(members, arrays):
        lacking = sorted({f"{p}_{k2}" for p in ("val", "test") for k2 in ("index", "label", "pred")} - set(a))
        if lacking:
            raise StudyError(f"ensemble member trial {t.number}: its predictions lack {', '.join(lacking)}")
        if any(not np.array_equal(a[f"{p}_index"], first[f"{p}_index"]) for p in ("val", "test")):
            raise StudyError(f"ensemble: trial {t.number} was scored on other records than trial "
                             f"{members[0].number}; members must share the study's split")
    mean = {p: np.mean([a[f"{p}_pred"] for a in arrays], axis=0) for p in ("val", "test")}  # (R, 2) each
    ens = {p: _scores(mean, first, p) for p in ("val", "test")}
    best = {p: _scores({p: first[f"{p}_pred"]}, first, p) for p in ("val", "test")}
    gain = {p: {m: ens[p][m] - best[p][m] for m in ens[p] if m in best[p]} for p in ("val", "test")}
    return {"k": k, "diversity": diversity, "members": [t.number for t in members], **ens,
            "best_single": {"trial": members[0].number, **best}, "gain": gain}
