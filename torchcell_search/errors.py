"""The project's one error hierarchy.

Library code raises a subclass of :class:`TorchcellSearchError` whose message names the
input and the problem (and, where there is one, the fix). ``cli.py`` turns any of them into
one line on stderr and exit status 2. Any other exception is a bug: it prints its traceback
(passwords scrubbed, storage/secrets.py) and exits 1, as Python itself would.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "StorageError",
    "StudyError",
    "TorchcellSearchError",
]


class TorchcellSearchError(Exception):
    """Base of every error this package raises on bad input or a failed dependency."""


class DataError(TorchcellSearchError):
    """A data file or directory is missing, unreadable or malformed."""


class ConfigError(TorchcellSearchError):
    """A configuration, search space, recipe or command-line value is invalid."""


class StorageError(TorchcellSearchError):
    """The study storage (SQLite file, PostgreSQL server, artifact store) failed."""


class StudyError(TorchcellSearchError):
    """A study is missing, conflicts with the requested configuration, or has no usable trial."""
