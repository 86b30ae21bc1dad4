"""Opening a study for the dashboard and the report (read only)."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore

from torchcell_search.errors import StudyError
from torchcell_search.storage.artifacts import artifacts_dir
from torchcell_search.storage.urls import open_storage, redact, resolve_storage, sqlite_path


def open_study(study: str, storage: str | None) -> tuple[optuna.Study, str]:
    """Load an existing study; returns it and the resolved storage URL.

    Raises:
        ConfigError: the storage URL is invalid.
        StorageError: the storage cannot be opened.
        StudyError: the study does not exist (the message lists those that do).
    """
    url = resolve_storage(storage)
    db = sqlite_path(url)
    # Opening a missing SQLite file would create an empty database; a viewer must not.
    if db and not Path(db).expanduser().is_file():
        raise StudyError(f"study {study!r}: storage {redact(url)} does not exist; "
                         f"create the study first (torchcell-search create --study {study})")
    rdb = open_storage(url)
    try:
        return optuna.load_study(study_name=study, storage=rdb), url
    except KeyError as e:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(rdb, include_best_trial=False))
        known = ", ".join(names) if names else "none"
        raise StudyError(f"study {study!r} not found in {redact(url)} (studies there: {known})") from e


def study_artifact_store(study: optuna.Study, url: str) -> FileSystemArtifactStore | None:
    """The study's artifact store when its directory exists, else ``None`` (never creates it)."""
    cfg = study.user_attrs.get("torchcell_search")
    configured = cfg.get("artifacts") if isinstance(cfg, dict) else None
    directory = artifacts_dir(url, configured)
    return FileSystemArtifactStore(str(directory)) if directory.is_dir() else None
