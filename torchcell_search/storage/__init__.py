"""Study storage: URLs (SQLite default, PostgreSQL), heartbeats and retries, artifacts."""

from torchcell_search.storage.artifacts import artifacts_dir, open_artifact_store
from torchcell_search.storage.urls import DEFAULT_STORAGE, open_storage, redact, resolve_storage

__all__ = ["DEFAULT_STORAGE", "artifacts_dir", "open_artifact_store", "open_storage", "redact", "resolve_storage"]
