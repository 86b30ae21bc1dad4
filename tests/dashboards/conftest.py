"""Small real Optuna studies (SQLite, artifact store) laid out like the search writes them."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pytest

from torchcell_search.storage.artifacts import artifacts_dir

LABELS = ("fitness", "gene_interaction")
BASELINES = {
    "additive": {"val/fitness/MSE": 0.030, "val/fitness/Pearson": 0.55, "val/gene_interaction/MSE": 0.0040,
                 "val/gene_interaction/Pearson": 0.31, "test/gene_interaction/Pearson": 0.30},
    "matrix_factorisation": {"val/fitness/MSE": 0.026, "val/fitness/Pearson": 0.60, "val/gene_interaction/MSE": 0.0038,
                             "val/gene_interaction/Pearson": 0.38, "test/gene_interaction/Pearson": 0.37},
}
EPOCHS = 6
PRUNE_AT = {2: 2, 5: 1}  # trial number -> last epoch it reaches before being pruned


def _curves(num_layers: int, hidden: int, lambda_dist: float, epoch: int) -> dict[str, float]:
    """Deterministic learning curves shaped like the report's: fitness fits, epsilon barely."""
    depth = abs(num_layers - 3)
    decay = math.exp(-0.5 * (epoch + 1))
    fit_mse = 0.02 + 0.004 * depth + 0.03 * decay - 0.00005 * hidden
    gi_pearson = 0.12 + 0.04 * (epoch + 1) / EPOCHS + 0.1 * lambda_dist - 0.03 * depth
    out: dict[str, float] = {}
    for split, gap in (("train", 0.8), ("val", 1.0)):
        out[f"{split}/fitness/MSE"] = fit_mse * gap
        out[f"{split}/fitness/Pearson"] = 0.8 - fit_mse * 5 / gap
        out[f"{split}/gene_interaction/MSE"] = 0.005 - 0.001 * gi_pearson * gap
        out[f"{split}/gene_interaction/Pearson"] = gi_pearson / gap
        # TorchCell's pooled z-scored pair (val/combined/*), shaped so the two trade off across trials
        out[f"{split}/combined/MSE"] = (0.5 + 8 * fit_mse - 0.3 * lambda_dist) * gap
        out[f"{split}/combined/Pearson"] = (0.3 + 0.4 * gi_pearson + 0.05 * hidden / 64 - 0.2 * lambda_dist) / gap
    out["embedding/mean_pairwise_distance"] = 2.0 / num_layers + 0.01 * epoch
    return out


def _objective(store: optuna.artifacts.FileSystemArtifactStore, tmp: Path, *,
               multi: bool = False) -> Callable[[optuna.Trial], float | tuple[float, float]]:
    def objective(trial: optuna.Trial) -> float | tuple[float, float]:
        layers = trial.suggest_int("model.num_layers", 2, 6)
        hidden = trial.suggest_categorical("model.hidden_channels", [16, 32, 64])
        heads = trial.suggest_categorical("heads", [1, 5, 10])
        lam = trial.suggest_categorical("regression_task.lambda_dist", [0.0, 0.01, 0.1, 1.0])
        del heads
        # Optuna cannot prune a multi-objective study (Trial.report is single-objective only).
        last = PRUNE_AT.get(trial.number, EPOCHS - 1) if not multi else EPOCHS - 1
        history = []
        for epoch in range(last + 1):
            # A per-trial offset keeps trials with equal parameters apart in the figures.
            history.append({k: v * (1.0 + 0.03 * ((trial.number * 7) % 5 - 2))
                            for k, v in _curves(layers, hidden, lam, epoch).items()})
            if not multi:
                trial.report(history[-1]["val/gene_interaction/Pearson"], epoch)
        # the best epoch by the (first) objective, as the trainer chooses it
        if multi:
            best_epoch = min(range(len(history)), key=lambda e: history[e]["val/combined/MSE"])
        else:
            best_epoch = max(range(len(history)), key=lambda e: history[e]["val/gene_interaction/Pearson"])
        best = {k: v for k, v in history[best_epoch].items() if k.startswith(("train/", "val/"))}
        trial.set_user_attr("history", history)
        trial.set_user_attr("best_epoch", best_epoch)
        trial.set_user_attr("best", best)
        trial.set_user_attr("embedding_distance", history[best_epoch]["embedding/mean_pairwise_distance"])
        trial.set_user_attr("n_params", 1000 * hidden)
        trial.set_user_attr("seconds", 1.5 + trial.number)
        if trial.number in PRUNE_AT and not multi:
            trial.set_user_attr("stopped_reason", "pruned")
            raise optuna.TrialPruned()
        trial.set_user_attr("test", {k.replace("val/", "test/"): v for k, v in best.items() if k.startswith("val/")})
        trial.set_user_attr("stopped_reason", None)
        rng = np.random.default_rng(trial.number)
        arrays = {}
        for split in ("val", "test"):
            label = np.column_stack([rng.normal(0.85, 0.15, 300), rng.normal(0.0, 0.06, 300)])
            noise = best[f"val/fitness/MSE"] ** 0.5
            arrays[f"{split}_label"] = label
            arrays[f"{split}_pred"] = np.column_stack([label[:, 0] + rng.normal(0, noise, 300),
                                                      0.3 * label[:, 1] + rng.normal(0, 0.02, 300)])
        path = tmp / "predictions.npz"
        np.savez(path, **arrays)
        optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
        if multi:
            return history[best_epoch]["val/combined/MSE"], history[best_epoch]["val/combined/Pearson"]
        return history[best_epoch]["val/gene_interaction/Pearson"]

    return objective


def build_study(db: Path, *, name: str = "demo", n_trials: int = 8, seed: int = 0) -> tuple[optuna.Study, str]:
    """A study of ``n_trials`` (two pruned) in SQLite file ``db``, its artifacts beside it."""
    url = f"sqlite:///{db}"
    study = optuna.create_study(study_name=name, storage=url, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    study.set_user_attr("torchcell_search", {"objective": "val/gene_interaction/Pearson", "direction": "maximize",
                                             "data": "demo", "split": "random", "epochs": EPOCHS})
    study.set_user_attr("baselines", BASELINES)
    store_dir = artifacts_dir(url)
    store_dir.mkdir(exist_ok=True)
    store = optuna.artifacts.FileSystemArtifactStore(str(store_dir))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(_objective(store, db.parent), n_trials=n_trials)
    return study, url


MULTI_OBJECTIVES = ["val/combined/MSE", "val/combined/Pearson"]


def build_multi_study(db: Path, *, name: str = "pair", n_trials: int = 10, seed: int = 0,
                      stored_names: bool = True) -> tuple[optuna.Study, str]:
    """A two-objective study (TorchCell's pair, minimise MSE and maximise Pearson) in SQLite file ``db``.

    ``stored_names``: store the objectives/directions lists in the study configuration as the
    multi-objective ``create`` does; without them the figures fall back to Optuna's directions.
    """
    url = f"sqlite:///{db}"
    study = optuna.create_study(study_name=name, storage=url, directions=["minimize", "maximize"],
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    cfg = {"data": "demo", "split": "random", "epochs": EPOCHS}
    if stored_names:
        cfg.update(objectives=MULTI_OBJECTIVES, directions=["minimize", "maximize"])
    study.set_user_attr("torchcell_search", cfg)
    study.set_user_attr("baselines", BASELINES)
    store_dir = artifacts_dir(url)
    store_dir.mkdir(exist_ok=True)
    store = optuna.artifacts.FileSystemArtifactStore(str(store_dir))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(_objective(store, db.parent, multi=True), n_trials=n_trials)
    return study, url


def add_trial(study: optuna.Study, store_dir: Path) -> None:
    """Run one more trial of the same objective (as a worker finishing a trial would)."""
    store = optuna.artifacts.FileSystemArtifactStore(str(store_dir))
    study.optimize(_objective(store, store_dir.parent), n_trials=1)


@pytest.fixture(scope="module")
def demo_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[optuna.Study, str]:
    """Eight trials, two of them pruned; read-only for the tests that share it."""
    db = tmp_path_factory.mktemp("study") / "search.db"
    return build_study(db)


@pytest.fixture(scope="module")
def multi_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[optuna.Study, str]:
    """Ten trials of a two-objective study; read-only for the tests that share it."""
    db = tmp_path_factory.mktemp("multi") / "search.db"
    return build_multi_study(db)


@pytest.fixture
def fresh_study(tmp_path: Path) -> tuple[optuna.Study, str]:
    """A study a test may modify."""
    return build_study(tmp_path / "search.db", n_trials=4)
