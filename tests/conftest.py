"""Shared fixtures: the real data mirror (skipped when absent) and a tiny data directory.

The writers live in ``datafiles.py`` (import them as ``from datafiles import ...``: several
``conftest`` modules exist, so ``from conftest import`` would be ambiguous).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from datafiles import REAL_DATA_DIR, make_tiny_data_dir


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The read-only real data mirror at ``../shared/data``; skips the test when absent."""
    if not (REAL_DATA_DIR / "graph").is_dir():
        pytest.skip(f"real data mirror not found at {REAL_DATA_DIR}")
    return REAL_DATA_DIR


@pytest.fixture(scope="session")
def real_dataset(real_data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The real data set, built once per test session into a temporary cache."""
    from torchcell_search.data.dataset import load_dataset

    return load_dataset(real_data_dir, cache_dir=tmp_path_factory.mktemp("real-cache"))


@pytest.fixture
def tiny_data_dir(tmp_path: Path) -> Path:
    """A fresh tiny data directory (mirror layout) in ``tmp_path / "data"``."""
    return make_tiny_data_dir(tmp_path / "data")


def pytest_configure(config: pytest.Config) -> None:
    # As the CLI does by default: one torch thread per process. The graph kernels gain little
    # from more, and tests that start worker processes would otherwise oversubscribe the cores.
    import torch

    torch.set_num_threads(1)
