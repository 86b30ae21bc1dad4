"""What a test does when a service it needs is missing: skip on a developer machine, fail under CI.

A CI run where every PostgreSQL, Slurm, Chromium or real-data test skipped would be green
while testing nothing, so under ``CI=true`` (``.ci/run`` sets it) :func:`missing_service`
fails the test with a message naming the service and how to provide it. Import it as
``from services import missing_service`` (``tests/`` is on ``sys.path``).
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["STRICT", "missing_service", "require_cuda"]

#: True under CI: a missing service fails the test instead of skipping it.
STRICT = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing_service(service: str, detail: str, *, allow_module_level: bool = False) -> NoReturn:
    """Skip (or under ``CI=true`` fail) the current test because ``service`` is unavailable.

    Args:
        service: what is missing, as a reader names it (``PostgreSQL at 127.0.0.1:5432``).
        detail: why it counts as missing and how to provide it.
        allow_module_level: called while a test module is imported (skip the whole module).
    """
    message = f"{service} is missing: {detail}"
    if STRICT:
        pytest.fail(f"CI=true: {message} (under CI every test must run, none may skip)",
                    pytrace=False)
    pytest.skip(message, allow_module_level=allow_module_level)


def require_cuda() -> None:
    """Skip (fail under ``CI=true``) a ``cuda``-marked test on a machine without a CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        missing_service("a CUDA GPU", "torch.cuda.is_available() is False (run on a GPU machine: scripts/gpu-check.sh)")
