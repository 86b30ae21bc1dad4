"""Data size as a fidelity: successive halving over nested train subsets ("rungs").

A study created with ``fidelity="subset:25000,100000,all"`` trains every trial first on
25,000 train records, then, if promoted, on 100,000, then on all of them. The rungs are
nested, seeded subsets of the split's train records (the same for every trial); val and
test stay whole, so a trial's objective at one rung compares with every other trial's at
that rung.

Everything goes through Optuna's own machinery, so optuna-dashboard, ``optuna trials``,
``status``, ``best``, resume, workers and Slurm arrays read a fidelity study unchanged:

- at the end of rung ``r`` the trial calls ``trial.report(value, step=records)`` (the
  rung's train-record count is the step), then ``trial.should_prune()``;
- :class:`RungPruner` answers: keep the trial when its value is among the best
  ``max(1, n // eta)`` of the ``n`` trials that reported at that step so far
  (asynchronous successive halving, ASHA: a trial is never held back waiting for others,
  so the first trials at a rung are promoted more easily, as in Optuna's own
  ``SuccessiveHalvingPruner``); the rest end as PRUNED;
- a trial's value is its objective on the last rung; only trials that reached it COMPLETE.

The next rung starts from scratch (``fidelity_start="scratch"``, the default: its last rung
then trains exactly as a plain trial would, and in the README's demo measurement it won 4 of
5 paired rung comparisons) or from the previous rung's best weights (``"warm"``, fresh
optimiser and schedule). Every epoch checkpoint
carries the rung it belongs to and the finished rungs' results, so a worker killed
mid-rung is retried (heartbeat) from that rung's last epoch.

Example:
    >>> parse_fidelity("subset:25000,1e5,all")
    'subset:25000,100000,all'
    >>> resolve_rungs("subset:200,600,all", 900)
    [200, 600, 900]
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Mapping

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from torchcell_search.data.types import Split
from torchcell_search.errors import ConfigError
from torchcell_search.metrics import _pearson, _ranks

__all__ = [
    "FIDELITY_STARTS",
    "RANK_WARNING",
    "RungPruner",
    "format_fidelity",
    "load_matching_weights",
    "parse_fidelity",
    "rank_correlations",
    "resolve_rungs",
    "run_fidelity_trial",
    "rung_split",
]

#: How a promoted trial starts its next rung.
FIDELITY_STARTS = ("warm", "scratch")
#: Below this Spearman correlation between two rungs, screening on the smaller one misleads.
RANK_WARNING = 0.5
_PREFIX = "subset:"


def parse_fidelity(value: Any) -> str:
    """The canonical form of a ``--fidelity`` value: ``subset:N1,N2,...[,all]``, increasing.

    Raises:
        ConfigError: not of that form (the value and the problem are named).
    """
    shown = f"--fidelity {value!r}"
    if not isinstance(value, str) or not value.startswith(_PREFIX):
        raise ConfigError(f"{shown}: expected subset:N1,N2,...[,all] (train records per rung)")
    parts = [p.strip() for p in value[len(_PREFIX):].split(",")]
    sizes: list[int] = []
    for i, part in enumerate(parts):
        if part == "all" and i == len(parts) - 1:
            continue
        try:
            number = float(part)  # TorchCell writes sizes as 2.5e4, 1e5
        except ValueError:
            raise ConfigError(f"{shown}: {part!r} is not a record count ('all' only as the last rung)") from None
        if not math.isfinite(number) or number < 1 or number != int(number):
            raise ConfigError(f"{shown}: {part!r} is not a positive whole number of records")
        sizes.append(int(number))
    if len(parts) < 2:
        raise ConfigError(f"{shown}: give at least two rungs (a ladder of one is a plain study)")
    if any(b <= a for a, b in zip(sizes, sizes[1:])):
        raise ConfigError(f"{shown}: the rungs must increase")
    return _PREFIX + ",".join([*map(str, sizes), *(["all"] if parts[-1] == "all" else [])])


def resolve_rungs(spec: str, n_train: int) -> list[int]:
    """Train-record counts of the rungs on a train set of ``n_train`` records.

    ``all`` and any rung above ``n_train`` become ``n_train``; rungs that coincide are kept once.
    """
    out: list[int] = []
    for part in parse_fidelity(spec)[len(_PREFIX):].split(","):
        size = n_train if part == "all" else min(int(part), n_train)
        if not out or size > out[-1]:
            out.append(size)
    return out


def rung_split(split: Split, records: int, *, seed: int) -> Split:
    """``split`` with its train records cut to a seeded ``records``-subset; val and test whole.

    The subsets are nested: a larger rung holds every record of a smaller one.
    """
    if records >= len(split.train):
        return split
    order = torch.randperm(len(split.train), generator=torch.Generator().manual_seed(seed * 7919 + 17))
    return dataclasses.replace(split, train=split.train[order[:records].sort().values])


def load_matching_weights(model: torch.nn.Module, weights: Mapping[str, torch.Tensor]) -> int:
    """Copy the learned parameters of ``weights`` whose name and shape match into ``model``.

    Only parameters: buffers (profile tables, gene profiles) are fitted on the train
    records, so each rung keeps the ones it built from its own records.

    Returns:
        The number of parameters copied.
    """
    copied = 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            source = weights.get(name)
            if source is not None and source.shape == param.shape:
                param.copy_(source.to(param.device, param.dtype))
                copied += 1
    return copied


class RungPruner(optuna.pruners.BasePruner):
    """Asynchronous successive halving at the rung steps a fidelity trial reports.

    At step ``s`` (a rung's train-record count), the trial goes on when its value is among
    the best ``max(1, n // eta)`` of the ``n`` values reported at ``s`` by the study's
    trials that are not FAIL (the trial's own included). The same rule as Optuna's
    ``SuccessiveHalvingPruner`` (optuna/pruners/_successive_halving.py,
    ``_is_trial_promotable_to_next_rung``), but at the given steps instead of
    ``min_resource * eta**k``, since data rungs need not be geometric.
    """

    def __init__(self, eta: int = 3) -> None:
        if eta < 2:
            raise ConfigError(f"--fidelity-eta: expected an integer >= 2, got {eta!r}")
        self.eta = eta

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        value = trial.intermediate_values[step]
        if not math.isfinite(value):
            return True
        others = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                          TrialState.RUNNING))
        values = [t.intermediate_values[step] for t in others
                  if t.number != trial.number and step in t.intermediate_values]
        values = sorted([v for v in values if math.isfinite(v)] + [value],
                        reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)
        keep = max(1, len(values) // self.eta)
        better = values[keep - 1]
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        return not (value >= better if maximize else value <= better)


# --- one trial over the rungs ----------------------------------------------------------


def run_fidelity_trial(objective: Any, trial: optuna.Trial) -> float:
    """Train ``trial`` rung by rung (see the module doc); its value on the last rung.

    ``objective`` is the worker's :class:`~torchcell_search.search.objective.Objective`.

    Raises:
        optuna.TrialPruned: not promoted at a rung, or a non-finite objective.
        TrialPreempted: the worker was asked to stop (its checkpoint is kept).
    """
    from torchcell_search.search.objective import TrialPreempted, _json_safe
    from torchcell_search.search.trainer import train
    from torchcell_search.storage.artifacts import epoch_checkpoint_path, save_atomic

    cfg = objective.cfg
    run_cfg = objective.run_config(objective.space.suggest(trial))
    trial.set_user_attr("config", run_cfg.flat())
    rungs = resolve_rungs(cfg.fidelity, len(objective.split.train))
    ckpt_path = epoch_checkpoint_path(objective.artifacts, objective.study_name, trial.number)
    resume, resume_paths = objective._resume_checkpoint(trial, run_cfg)
    saved = (resume or {}).get("fidelity") or {"rung": 0, "done": [], "history": []}
    done: list[dict[str, Any]] = list(saved["done"])
    for rung in done:  # a retried trial starts without intermediate values: report them again
        trial.report(rung["value"], rung["records"])
    history: list[dict[str, Any]] = list(saved["history"])  # every epoch of every rung, tagged
    warm = None
    preempted = False
    try:
        for r in range(saved["rung"], len(rungs)):
            records = rungs[r]
            before = list(history)
            if resume is not None and r == saved["rung"]:
                history += [{**h, "rung": r, "records": records} for h in resume["state"]["history"]]

            def on_epoch(record: Any, r: int = r, records: int = records) -> None:
                history.append({"epoch": record.epoch, "rung": r, "records": records, **record.metrics})
                trial.set_user_attr("history", _json_safe(history))

            def on_checkpoint(ckpt: dict[str, Any], r: int = r, before: list = before) -> None:
                ckpt["fidelity"] = {"rung": r, "done": done, "history": before}
                save_atomic(ckpt, ckpt_path)
                if objective.stop.is_set():
                    raise TrialPreempted(f"trial {trial.number}: preempted after epoch {ckpt['state']['epoch']} "
                                         f"of rung {r}")

            cpu = time.process_time()
            try:
                result = train(objective.dataset, rung_split(objective.split, records, seed=cfg.seed), run_cfg,
                               objective=cfg.objective, epoch_callback=on_epoch,
                               checkpoint=resume if r == saved["rung"] else None, checkpoint_callback=on_checkpoint,
                               progress=True, initial_weights=warm)
            except TrialPreempted:
                preempted = True
                trial.set_user_attr("stopped_reason", "preempted")
                raise
            value = float(result.best.get(cfg.objective, math.nan))
            done.append(_json_safe({
                "rung": r, "records": records, "value": value, "best_epoch": result.best_epoch,
                "test": result.test, "seconds": result.seconds, "cpu_seconds": time.process_time() - cpu,
            }))
            trial.set_user_attr("rungs", done)
            trial.set_user_attr("cpu_seconds", sum(d["cpu_seconds"] for d in done))
            if not math.isfinite(value) or r == len(rungs) - 1:
                break
            trial.report(value, records)
            if trial.should_prune():
                objective._record(trial, result)
                trial.set_user_attr("stopped_reason", f"pruned at rung {r} ({records} train records)")
                raise optuna.TrialPruned(f"pruned at rung {r} ({records} train records)")
            if cfg.fidelity_start == "warm" and result.best_checkpoint is not None:
                warm = result.best_checkpoint["model"]
    finally:
        if not preempted:  # a finished, pruned or crashed trial is never resumed
            for path in [ckpt_path, *resume_paths]:
                path.unlink(missing_ok=True)
    return objective._finish(trial, result)


# --- can the small rung be trusted? ----------------------------------------------------


def _spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho (Pearson of average ranks); None below 3 points or with a constant side."""
    if len(x) < 3:
        return None
    rho = _pearson(_ranks(np.asarray(x, float)), _ranks(np.asarray(y, float)))
    return rho if math.isfinite(rho) else None


def rank_correlations(trials: list[FrozenTrial]) -> dict[str, Any]:
    """Rungs and the Spearman correlation of the objective between each pair of rungs.

    Over the trials (not FAIL) that reported a finite value at both rungs; a trial's value
    at the last rung is its final value. Fewer than 3 such trials give ``rho`` None.

    Returns:
        ``{"rungs": [{"records", "trials"}], "pairs": [{"from", "to", "rho", "n", "warning"}]}``
        where ``warning`` is true when ``rho < RANK_WARNING``.
    """
    at: dict[int, dict[int, float]] = {}
    for t in trials:
        if t.state == TrialState.FAIL:
            continue
        values = {int(d["records"]): float(d["value"]) for d in t.user_attrs.get("rungs") or []}
        values.update({int(s): float(v) for s, v in t.intermediate_values.items()})
        for records, value in values.items():
            if math.isfinite(value):
                at.setdefault(records, {})[t.number] = value
    steps = sorted(at)
    pairs = []
    for i, a in enumerate(steps):
        for b in steps[i + 1:]:
            both = sorted(set(at[a]) & set(at[b]))
            rho = _spearman([at[a][n] for n in both], [at[b][n] for n in both])
            pairs.append({"from": a, "to": b, "rho": rho, "n": len(both),
                          "warning": rho is not None and rho < RANK_WARNING})
    return {"rungs": [{"records": s, "trials": len(at[s])} for s in steps], "pairs": pairs}


def format_fidelity(summary: Mapping[str, Any], rows: list[Mapping[str, Any]] = ()) -> list[str]:
    """The status lines of a fidelity study: each trial's objective per rung (``rows`` are
    status rows with ``rungs``), the rungs reached, then one line per pair of rungs."""
    steps = [r["records"] for r in summary["rungs"]]
    lines = []
    if steps and rows:
        lines.append(f"objective per rung (train records): {'#':>4} " + " ".join(f"{s:>9}" for s in steps))
        for row in rows:
            at = {int(d["records"]): d["value"] for d in row.get("rungs") or []}
            if at:
                cells = " ".join(f"{at[s]:9.4f}" if s in at and math.isfinite(at[s]) else f"{'-':>9}" for s in steps)
                lines.append(f"{'':35}{row['number']:>4} {cells}")
    rungs = " -> ".join(f"{r['records']} ({r['trials']} trials)" for r in summary["rungs"])
    lines.append(f"rungs (train records): {rungs or 'none reached yet'}, top 1/{summary.get('eta', '?')} promoted "
                 f"({summary.get('start', '?')} start)")
    for p in summary["pairs"]:
        rho = "n/a (fewer than 3 trials reached both)" if p["rho"] is None else f"{p['rho']:+.2f}"
        warn = f"  WARNING: below {RANK_WARNING}, rung {p['from']} ranks trials unlike rung {p['to']}" \
            if p["warning"] else ""
        lines.append(f"rank correlation {p['from']} -> {p['to']} records: Spearman {rho} over {p['n']} trials{warn}")
    return lines
