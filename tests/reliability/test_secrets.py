"""Secrets: a password in the storage URL never leaves it.

The password rides in the URL of a real run (trust auth ignores it); every command's
stdout and stderr, every file the run writes (report, sbatch script, artifacts, dashboard
figures and notes stored in the study) and the error messages are searched for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from tests.reliability.conftest import TINY

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PASSWORD = "s3cr3t-PW"


def test_password_in_the_storage_url_never_appears(pg_url: str, tmp_path: Path, cli) -> None:
    url = pg_url.replace("postgres@", f"postgres:{PASSWORD}@")
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(TINY["space"]))
    art, out = tmp_path / "art", tmp_path / "out"
    out.mkdir()
    create = ["--study", "s", "--space", str(space), "--subset", "200", "--epochs", "1", "--device", "cpu",
              "--n-trials", "1", "--pruner", "none", "--set", "data_module.batch_size=64", "--artifacts", str(art)]
    runs = [
        cli("create", *create, "--storage", url),
        cli("worker", "--study", "s", storage=url),
        cli("status", "--study", "s", "--storage", url),
        cli("status", "--study", "s", "--json", storage=url),
        cli("best", "--study", "s", "--json", storage=url),
        cli("report", "--study", "s", "--out", str(out / "report.html"), storage=url),
        cli("slurm", "--study", "s", "--array", "0-3", "--out", str(out / "s.sbatch"), "--storage", url),
        # error messages that name the storage
        cli("status", "--study", "missing", "--storage", url),
        cli("create", *create[:-2], "--epochs", "3", "--storage", url),
        cli("status", "--study", "s", "--storage", url.replace(":5432/", ":1/")),
        cli("status", "--study", "s", "--storage", url.replace("/tcs_", "/nodb_")),
    ]
    assert [r.returncode for r in runs] == [0] * 7 + [2] * 4, [r.stderr[-1500:] for r in runs]

    from torchcell_search.dashboards.integration import refresh_dashboard
    from torchcell_search.storage.artifacts import open_artifact_store
    from torchcell_search.storage.urls import open_storage

    study = optuna.load_study(study_name="s", storage=open_storage(url))
    refresh_dashboard(study, artifact_store=open_artifact_store(art))

    # every output of every command
    for r in runs:
        assert PASSWORD not in r.stdout + r.stderr, r.args
    # every file written: report, sbatch script, artifacts and checkpoints
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in files) and any(p.suffix == ".sbatch" for p in files)
    for path in files:
        assert PASSWORD.encode() not in path.read_bytes(), path
    # everything stored in the study: configuration, figures, notes, trial attributes
    storage = study._storage
    system_attrs = storage.get_study_system_attrs(study._study_id)
    stored = json.dumps([study.user_attrs, system_attrs,
                         [(t.user_attrs, t.system_attrs) for t in study.trials]], default=str)
    assert system_attrs and PASSWORD not in stored
