"""The trial objective: sample a configuration, train it, report, prune, store artifacts.

One :class:`Objective` lives per worker process; the data set and split are loaded once
per process (cached by data, subset, split and seed). Per trial:

1. ``params = space.suggest(trial)`` and the run configuration from the study's overrides,
   the params and the study's epochs / seed / device;
2. ``train`` with an epoch callback that reports the objective (step = epoch), keeps the
   per-epoch metrics in ``user_attrs["history"]`` and raises :class:`optuna.TrialPruned`
   when the pruner says so, and a checkpoint callback that writes a resume checkpoint, so a
   trial retried after its worker died continues from its last epoch;
3. user attrs (``best_epoch``, ``best``, ``test``, ``n_params``, ``device``, ``seconds``,
   ``stopped_reason``, ``embedding_distance``, ``config``) and the artifacts
   ``checkpoint.pt`` and ``predictions.npz``; the value is the objective at the best epoch.

A non-finite loss or objective ends the trial as pruned, with the reason in
``user_attrs["stopped_reason"]``; it counts towards the budget and the worker goes on.

Preemption: when the worker's ``stop`` event is set (SIGTERM, as Slurm sends before it
kills a job), the trial stops right after its next epoch checkpoint is written, with
``user_attrs["stopped_reason"] = "preempted"``, by raising :class:`TrialPreempted`; its
checkpoint is kept so the re-queued trial resumes from that epoch.
"""

from __future__ import annotations

import math
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from torchcell_search.config import RunConfig
from torchcell_search.data.types import Dataset, Split
from torchcell_search.search.duplicates import (
    REPLICA_ATTR,
    answer_from,
    finished_twin,
    run_seed,
    shuffled,
    untried_points,
)
from torchcell_search.search.spaces import SearchSpace
from torchcell_search.search.study_config import StudyConfig
from torchcell_search.storage.artifacts import (
    CHECKPOINT_FILE,
    PREDICTIONS_FILE,
    artifacts_dir,
    epoch_checkpoint_path,
    open_artifact_store,
    save_atomic,
    upload_trial_artifact,
)

__all__ = ["Objective", "TrialPreempted", "load_study_data"]


class TrialPreempted(Exception):
    """The worker was asked to stop (SIGTERM); the trial's last epoch checkpoint is kept."""

_DATA_CACHE: dict[tuple[Any, ...], tuple[Dataset, Split]] = {}


def load_study_data(cfg: StudyConfig, *, cache_dir: Path | None = None) -> tuple[Dataset, Split]:
    """The study's data set (subset applied) and seeded split, loaded once per process."""
    from torchcell_search.search.trainer import prepare_data

    key = (cfg.data, cfg.subset, cfg.split, cfg.seed, str(cache_dir))
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = prepare_data(cfg.data, subset=cfg.subset, split=cfg.split, seed=cfg.seed,
                                        cache_dir=cache_dir)
    return _DATA_CACHE[key]


def _json_safe(value: Any) -> Any:
    """Plain floats / ints / lists for Optuna's JSON user attrs (numpy scalars and tensors turned plain)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, str, int)) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


class Objective:
    """Callable Optuna objective of one study, for one worker process.

    Args:
        study_name: the study's name (names the resume-checkpoint directory).
        cfg: the stored :class:`~torchcell_search.search.study_config.StudyConfig`.
        storage_url: the storage URL (locates the default artifact directory).
        cache_dir: data cache directory.
        stop: when set, the running trial stops after its next epoch checkpoint
            (:class:`TrialPreempted`).
    """

    def __init__(self, study_name: str, cfg: StudyConfig, storage_url: str, *, cache_dir: Path | None = None,
                 stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()
        self.study_name = study_name
        self.cfg = cfg
        self.space = SearchSpace.from_dict(cfg.space)
        self.dataset, self.split = load_study_data(cfg, cache_dir=cache_dir)
        self.artifacts = artifacts_dir(storage_url, cfg.artifacts)
        self.store = open_artifact_store(self.artifacts)

    def run_config(self, params: dict[str, Any], *, seed: int | None = None) -> RunConfig:
        """The run configuration of a trial with ``params`` (fixed values of the space
        included): the space's fixed values, then ``--set`` overrides, then sampled values;
        the study's own keys win (``seed``, a seed replica's, replaces the study seed)."""
        cfg = self.cfg
        fixed = self.space.fixed()
        sampled = {k: v for k, v in params.items() if k not in fixed}
        return RunConfig().with_overrides({
            **fixed, **cfg.overrides, **sampled,
            "trainer.max_epochs": cfg.epochs, "seed": cfg.seed if seed is None else seed, "trainer.device": cfg.device,
        })

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        """Train one trial; its value at the best epoch (by the first objective), one per objective."""
        from torchcell_search.search.trainer import train

        if self.cfg.fidelity:
            from torchcell_search.search.fidelity import run_fidelity_trial

            return run_fidelity_trial(self, trial)
        objective = self.cfg.objective
        # Optuna prunes and takes intermediate values only in single-objective studies.
        single = not self.cfg.is_multi_objective
        params = self.space.suggest(trial)
        seed = run_seed(trial, self.cfg.seed)
        answered = self._answer_duplicate(trial, seed)
        if answered is not None:
            return answered[0] if single else answered
        run_cfg = self.run_config(params, seed=seed)
        replica = REPLICA_ATTR in trial.user_attrs  # an ensemble member: never pruned
        trial.set_user_attr("config", run_cfg.flat())
        ckpt_path = epoch_checkpoint_path(self.artifacts, self.study_name, trial.number)
        resume, resume_paths = self._resume_checkpoint(trial, run_cfg)
        history: list[dict[str, Any]] = list(resume["state"]["history"]) if resume else []
        for record in history:
            # A retried trial starts without intermediate values: report its finished epochs again.
            value = record.get(objective)
            if single and value is not None and math.isfinite(value):
                trial.report(float(value), int(record["epoch"]))

        def on_epoch(record: Any) -> None:
            history.append({"epoch": record.epoch, **record.metrics})
            trial.set_user_attr("history", _json_safe(history))
            value = record.metrics.get(objective)
            if single and value is not None and math.isfinite(value):
                trial.report(float(value), record.epoch)
            if single and not replica and trial.should_prune():
                trial.set_user_attr("stopped_reason", f"pruned at epoch {record.epoch}")
                raise optuna.TrialPruned(f"pruned at epoch {record.epoch}")

        def on_checkpoint(ckpt: dict[str, Any]) -> None:
            save_atomic(ckpt, ckpt_path)
            if self.stop.is_set():  # the safe point: this epoch is on disk
                raise TrialPreempted(f"trial {trial.number}: preempted after epoch {ckpt['state']['epoch']}")

        preempted = False
        try:
            # The study's direction, not one inferred from the metric name, picks the best epoch.
            result = train(self.dataset, self.split, run_cfg, objective=objective, direction=self.cfg.direction,
                           epoch_callback=on_epoch, checkpoint=resume, checkpoint_callback=on_checkpoint,
                           progress=True)
        except TrialPreempted:
            preempted = True
            trial.set_user_attr("stopped_reason", "preempted")
            raise
        finally:
            # A finished, pruned or crashed trial is never resumed; a killed or preempted one is.
            if not preempted:
                for path in [ckpt_path, *resume_paths]:
                    path.unlink(missing_ok=True)

        return self._finish(trial, result)

    def _record(self, trial: optuna.Trial, result: Any) -> None:
        """The trial's user attrs from a finished training run."""
        embedding = result.history[result.best_epoch].get("embedding/mean_pairwise_distance") if (
            0 <= result.best_epoch < len(result.history)) else None
        for key, value in (
            ("best_epoch", result.best_epoch), ("best", result.best), ("test", result.test),
            ("n_params", result.n_params), ("device", result.device), ("seconds", result.seconds),
            ("stopped_reason", result.stopped_reason), ("embedding_distance", embedding),
        ):
            trial.set_user_attr(key, _json_safe(value))

    def _finish(self, trial: optuna.Trial, result: Any) -> float | list[float]:
        """Record ``result``, prune a non-finite one, upload the artifacts; the trial's value(s)."""
        single = not self.cfg.is_multi_objective
        self._record(trial, result)
        values = [result.best.get(name, math.nan) for name in self.cfg.objective_names]
        if result.stopped_reason and result.stopped_reason.startswith("non_finite"):
            raise optuna.TrialPruned(result.stopped_reason)
        bad = [(name, v) for name, v in zip(self.cfg.objective_names, values) if not math.isfinite(v)]
        if bad:
            reason = f"non_finite_objective: {bad[0][0]} = {bad[0][1]}"
            trial.set_user_attr("stopped_reason", reason)
            raise optuna.TrialPruned(reason)
        self._upload(trial, result)
        return float(values[0]) if single else [float(v) for v in values]

    def _answer_duplicate(self, trial: optuna.Trial, seed: int) -> list[float] | None:
        """Answer a suggestion equal to a finished trial from that trial (see ``duplicates.py``).

        Returns its values, or None when the suggestion is new. Raises
        :class:`optuna.TrialPruned` when the earlier trial was pruned. In a discrete space a
        point no trial holds yet is queued, so the next trial explores instead of repeating.
        """
        study = trial.study
        trials = study.get_trials(deepcopy=False)
        twin = finished_twin(trials, trial.params, seed, study_seed=self.cfg.seed)
        if twin is None:
            return None
        values = answer_from(trial, twin)
        untried = untried_points(self.space, trials, self.cfg.seed)
        if untried and not any(t.state == optuna.trial.TrialState.WAITING for t in trials):
            study.enqueue_trial(shuffled(untried, self.cfg.seed + trial.number)[0])
        if values is None:
            raise optuna.TrialPruned(f"duplicate of pruned trial {twin.number}")
        return values

    def _resume_checkpoint(self, trial: optuna.Trial, run_cfg: RunConfig) -> tuple[dict[str, Any] | None, list[Path]]:
        """The newest epoch checkpoint of the trials this one retries, and their paths."""
        import torch

        system_attrs = trial.storage.get_trial_system_attrs(trial._trial_id)
        earlier = [int(n) for n in system_attrs.get("retry_history", [])]
        paths = [epoch_checkpoint_path(self.artifacts, self.study_name, n) for n in earlier]
        for path in reversed(paths):
            if path.exists():
                try:
                    ckpt = torch.load(path, map_location="cpu", weights_only=False)
                except (OSError, RuntimeError, EOFError):
                    continue  # a torn file: try an older one, else start over
                if ckpt.get("config") == run_cfg.flat():
                    trial.set_user_attr("resumed_from", {"trial": int(path.stem.split("-")[-1]),
                                                         "epoch": int(ckpt["state"]["epoch"])})
                    return ckpt, paths
        return None, paths

    def _upload(self, trial: optuna.Trial, result: Any) -> None:
        """Store ``checkpoint.pt`` (best epoch) and ``predictions.npz`` as the trial's artifacts."""
        import torch

        labels = self.dataset.table.labels().numpy()
        genes = self.dataset.table.genes.numpy()
        from torchcell_search.data.splits import Standardiser

        # Train statistics let an ensemble of these predictions score the combined metrics.
        train_statistics = Standardiser.fit(self.dataset.table.labels()[self.split.train])
        arrays: dict[str, np.ndarray] = {"train_mean": train_statistics.mean.numpy(),
                                         "train_std": train_statistics.std.numpy()}
        for part in ("val", "test"):
            index = getattr(self.split, part).numpy()
            pred = result.predictions.get(part)
            arrays[f"{part}_index"] = index
            arrays[f"{part}_genes"] = genes[index]
            arrays[f"{part}_label"] = labels[index]
            arrays[f"{part}_pred"] = np.asarray(pred) if pred is not None else np.full((len(index), 2), np.nan)
        with tempfile.TemporaryDirectory(prefix="torchcell-search-") as tmp:
            pred_path = Path(tmp) / PREDICTIONS_FILE
            np.savez(pred_path, **arrays)
            upload_trial_artifact(self.store, trial, pred_path)
            if result.best_checkpoint is not None:
                ckpt_path = Path(tmp) / CHECKPOINT_FILE
                torch.save(result.best_checkpoint, ckpt_path)
                upload_trial_artifact(self.store, trial, ckpt_path)
