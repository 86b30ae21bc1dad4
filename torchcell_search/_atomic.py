"""Atomic file writes: a temporary file beside the target, renamed into place.

A reader (or a crash) never sees half a file: either the old content or the new one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

__all__ = ["write_atomic"]


def write_atomic(path: Path, write: Callable[[IO[Any]], None], *, text: bool = False,
                 permissions: int = 0o644) -> None:
    """Call ``write(f)`` on a temporary file in ``path``'s directory, then rename it to ``path``.

    Args:
        path: the file to create or replace; its directory is created if missing.
        write: writes the content to the open file object it is given.
        text: open the temporary file in text mode (UTF-8) instead of binary.
        permissions: mode of the final file (``mkstemp`` creates 0600; shared caches and
            scripts need others to read, or run, them).

    Raises:
        OSError: the directory or the file cannot be written (the temporary file is removed);
            callers turn it into the project error that names their input.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w" if text else "wb", **({"encoding": "utf-8", "newline": ""} if text else {})) as f:
            write(f)
        os.chmod(tmp, permissions)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
