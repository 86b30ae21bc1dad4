"""The artifact store next to a study: trial checkpoints and predictions.

Artifacts go to Optuna's :class:`~optuna.artifacts.FileSystemArtifactStore`, so
optuna-dashboard lists them under each trial. The directory is

- the study's ``artifacts`` option when set (``--artifacts DIR``), else
- ``<db stem>-artifacts/`` next to a SQLite file, else
- ``./torchcell-search-artifacts`` (made absolute when the study is created; workers on
  other machines need it on a shared file system).

Per-epoch resume checkpoints are plain files under ``<dir>/epoch-checkpoints/<study>/``,
written atomically and removed once the trial finishes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore

from torchcell_search._atomic import write_atomic
from torchcell_search.errors import StorageError
from torchcell_search.storage.urls import resolve_storage, sqlite_path

__all__ = [
    "DEFAULT_ARTIFACTS_DIR",
    "CHECKPOINT_FILE",
    "PREDICTIONS_FILE",
    "artifacts_dir",
    "download_trial_artifact",
    "epoch_checkpoint_path",
    "open_artifact_store",
    "upload_trial_artifact",
]

DEFAULT_ARTIFACTS_DIR = "torchcell-search-artifacts"
CHECKPOINT_FILE = "checkpoint.pt"
PREDICTIONS_FILE = "predictions.npz"


def artifacts_dir(storage: str | None, configured: str | os.PathLike | None = None) -> Path:
    """The artifact directory of a study in ``storage`` (see the module docstring)."""
    if configured:
        return Path(configured).expanduser().absolute()
    db = sqlite_path(resolve_storage(storage))
    if db:
        path = Path(db).expanduser().absolute()
        return path.with_name(f"{path.stem}-artifacts")
    return Path(DEFAULT_ARTIFACTS_DIR).absolute()


def open_artifact_store(directory: str | os.PathLike) -> FileSystemArtifactStore:
    """A file-system artifact store rooted at ``directory`` (created if missing).

    Raises:
        StorageError: the directory cannot be created.
    """
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"artifact directory {directory}: cannot create it ({e.strerror})") from e
    return FileSystemArtifactStore(str(directory))


def upload_trial_artifact(
    store: FileSystemArtifactStore,
    trial: optuna.Trial | optuna.trial.FrozenTrial,
    file_path: str | os.PathLike,
    *,
    storage: optuna.storages.BaseStorage | None = None,
) -> str:
    """Attach ``file_path`` to ``trial`` (its file name is the artifact's name); returns the id."""
    try:
        return optuna.artifacts.upload_artifact(
            artifact_store=store, file_path=str(file_path), study_or_trial=trial, storage=storage
        )
    except OSError as e:
        raise StorageError(f"artifact {Path(file_path).name}: upload failed ({e})") from e


def download_trial_artifact(
    store: FileSystemArtifactStore,
    storage: optuna.storages.BaseStorage,
    trial: optuna.trial.FrozenTrial,
    filename: str,
    dest: str | os.PathLike,
) -> Path:
    """Download the newest artifact called ``filename`` of ``trial`` to ``dest``.

    Raises:
        StorageError: the trial has no such artifact or its file is gone.
    """
    metas = [m for m in optuna.artifacts.get_all_artifact_meta(trial, storage=storage) if m.filename == filename]
    if not metas:
        raise StorageError(f"trial {trial.number} has no artifact {filename!r}")
    dest = Path(dest)
    if dest.exists():
        dest.unlink()
    try:
        optuna.artifacts.download_artifact(
            artifact_store=store, file_path=str(dest), artifact_id=metas[-1].artifact_id
        )
    except (OSError, optuna.artifacts.exceptions.ArtifactNotFound) as e:
        raise StorageError(f"trial {trial.number}: artifact {filename!r} is missing from the store ({e})") from e
    return dest


def epoch_checkpoint_path(directory: str | os.PathLike, study_name: str, trial_number: int) -> Path:
    """Where trial ``trial_number``'s latest per-epoch resume checkpoint lives."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in study_name)
    return Path(directory) / "epoch-checkpoints" / safe / f"trial-{trial_number}.pt"


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename (never a half file)."""
    import torch

    write_atomic(path, lambda f: torch.save(obj, f))
