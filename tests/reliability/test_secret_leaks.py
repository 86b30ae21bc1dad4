"""Secrets: a password in the storage URL never leaves it, in any of the forms it is written.

Every command that prints a storage URL runs against the real PostgreSQL at 127.0.0.1:5432
(trust auth: any password connects, so every run is a real one) with the password written
in each form of ``PASSWORD_FORMS`` (tests/password_forms.py): plain; holding '/',
a space, ':' '?' '#'; percent-encoded (an '@', '/', ' ', '%'); under the psycopg2 driver; in
``?password=`` (with and after other parameters); and two forms that are refused with exit 2
(a raw '@', which SQLAlchemy would split, and a libpq ``key=value`` conninfo string).

Outputs searched for the secret and each piece of it:

- stdout and stderr of ``create`` (new study, and the conflict error), ``start`` (its status
  table), ``worker``, ``status`` and ``best`` (table and ``--json``), ``report``, ``slurm``,
  ``dashboard`` (its startup banner), and the error paths: unknown study, a server that does
  not listen (port 1), a database that does not exist;
- the files written: the HTML report, the sbatch script, artifacts and checkpoints;
- the dashboard's pages: the study page and the JSON API it reads (studies, the study with its
  trials, notes and figures);
- everything stored in the study (configuration, figures, notes, trial attributes).

The matrix of commands x forms runs in this process (``cli.main`` with the output captured at
the file descriptors, so worker processes and C libraries are captured too); a cross-section
runs in fresh interpreters as users and Slurm tasks do (the URL from the flag and from
``TORCHCELL_SEARCH_STORAGE``); the dashboard always runs as its own process.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from sqlalchemy.engine import make_url

from tests.reliability.conftest import TINY, child_env
from tests.password_forms import CONNECTING, PASSWORD_FORMS, form_url, leaks

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

_STUDY = "s"


@pytest.fixture(scope="module")
def world(pg_module_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Study ``s`` with one finished trial in a fresh database, made with a password-less URL."""
    root = tmp_path_factory.mktemp("secrets")
    space = root / "space.yaml"
    space.write_text(yaml.safe_dump(TINY["space"]))
    create = ["--space", str(space), "--subset", "200", "--epochs", "1", "--device", "cpu", "--n-trials", "1",
              "--pruner", "none", "--set", "data_module.batch_size=64", "--artifacts", str(root / "art")]
    r = subprocess.run([sys.executable, "-m", "torchcell_search.cli", "start", "--study", _STUDY, *create],
                       capture_output=True, text=True, timeout=600, env=child_env(pg_module_url))
    assert r.returncode == 0, r.stderr[-3000:]
    return {"db": make_url(pg_module_url).database, "root": root, "create": create}


def _in_process(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from torchcell_search.cli import main

    capfd.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse usage errors
        code = int(e.code or 0)
    gc.collect()  # each command's engine and its pooled connection go now (the server has 100 slots)
    out = capfd.readouterr()
    return code, out.out + out.err


def _files_and_store(world: dict, url: str, studies: list[str]) -> list[tuple[str, str]]:
    """Every file under the test's directory, and everything stored in ``studies``."""
    found = [(str(p), p.read_bytes().decode("latin-1")) for p in world["root"].rglob("*") if p.is_file()]
    for name in studies:
        study = optuna.load_study(study_name=name, storage=url)
        storage = study._storage
        found.append((f"stored study {name}", json.dumps(
            [study.user_attrs, storage.get_study_system_attrs(study._study_id),
             [(t.user_attrs, t.system_attrs, t.params) for t in study.trials]], default=str)))
    return found


@pytest.mark.parametrize("form", sorted(PASSWORD_FORMS))
def test_no_command_shows_the_password_in_any_form(world: dict, form: str, monkeypatch: pytest.MonkeyPatch,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("TORCHCELL_SEARCH_STORAGE", raising=False)
    for key, value in child_env().items():
        if key.endswith("_THREADS"):
            monkeypatch.setenv(key, value)
    url, root, db = form_url(form, world["db"]), world["root"], world["db"]
    new = f"c-{form}"
    commands = {
        "create": ["create", "--study", new, *world["create"], "--storage", url],
        "worker-new": ["worker", "--study", new, "--storage", url],  # trains its one trial
        "create-conflict": ["create", "--study", new, *world["create"][:-2], "--epochs", "3", "--storage", url],
        "start": ["start", "--study", _STUDY, *world["create"], "--storage", url],
        "worker": ["worker", "--study", _STUDY, "--storage", url],
        "status": ["status", "--study", _STUDY, "--storage", url],
        "status-json": ["status", "--study", _STUDY, "--json", "--storage", url],
        "best": ["best", "--study", _STUDY, "--storage", url],
        "best-json": ["best", "--study", _STUDY, "--json", "--storage", url],
        "report": ["report", "--study", _STUDY, "--out", str(root / f"report-{form}.html"), "--storage", url],
        "slurm": ["slurm", "--study", _STUDY, "--array", "0-3", "--out", str(root / f"{form}.sbatch"),
                  "--storage", url],
        "unknown-study": ["status", "--study", "missing", "--storage", url],
        "unreachable-server": ["status", "--study", _STUDY, "--storage", form_url(form, db, port=1)],
        "unknown-database": ["best", "--study", _STUDY, "--storage", form_url(form, f"nodb_{db}")],
    }
    ok = form in CONNECTING
    expected = {name: 0 if ok and name in ("create", "worker-new", "start", "worker", "status", "status-json", "best", "best-json",
                                           "report", "slurm") else 2 for name in commands}
    if not ok:
        expected["slurm"] = 2  # the URL is refused before the study is looked up
    outputs = {name: _in_process(argv, capfd) for name, argv in commands.items()}
    assert {name: code for name, (code, _) in outputs.items()} == expected, \
        {name: text[-800:] for name, (_, text) in outputs.items()}
    for name, (code, text) in outputs.items():
        assert not leaks(form, text), (name, text[-2000:])
        if ok and name in ("create", "start", "status", "status-json", "unknown-study"):
            # the URL was shown, redacted: the output was not just dropped
            assert "postgresql" in text and "***" in text, (name, text[-800:])
        if code == 2:
            assert text.startswith("torchcell-search: error: ") and text.count("\n") == 1, (name, text[-800:])
    if ok:
        trained = optuna.load_study(study_name=new, storage=form_url("plain", db))
        assert [t.state.name for t in trained.trials] == ["COMPLETE"]
        for path, text in _files_and_store(world, form_url("plain", db), [_STUDY, new]):
            assert not leaks(form, text), path
        assert (root / f"report-{form}.html").is_file() and (root / f"{form}.sbatch").is_file()
    else:
        # refused with one line naming the storage URL (redacted), nothing written
        assert all(text.strip().count("\n") == 0 and "storage URL" in text for _, text in outputs.values())
        assert not (root / f"report-{form}.html").exists() and not (root / f"{form}.sbatch").exists()


def _serve_dashboard(url: str) -> tuple[int, str, list[tuple[str, str]]]:
    """Run ``dashboard`` as its own process; its exit status, its output and the pages it served."""
    proc = subprocess.Popen([sys.executable, "-m", "torchcell_search.cli", "dashboard", "--study", _STUDY,
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(url))
    pages: list[tuple[str, str]] = []
    banner: list[str] = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            banner.append(line)
            if line.startswith("Dashboard: "):
                page = line.split(" ", 1)[1].strip()
                base, study_id = page.split("/dashboard/")[0], page.rsplit("/", 1)[1]
                for address in (page, f"{base}/api/meta", f"{base}/api/studies",
                                f"{base}/api/studies/{study_id}?after=0"):
                    pages.append((address, _get(address)))
                break
    finally:
        proc.terminate()
        rest, err = proc.communicate(timeout=60)
    return proc.returncode, "".join(banner) + rest + err, pages


def _get(address: str) -> str:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(address, timeout=30) as res:
                return res.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.mark.parametrize("form", sorted(PASSWORD_FORMS))
def test_fresh_processes_and_the_dashboard_never_show_the_password(world: dict, form: str) -> None:
    url = form_url(form, world["db"])
    # the URL from the flag here, from the environment (as workers and Slurm tasks get it) below
    status = subprocess.run([sys.executable, "-m", "torchcell_search.cli", "status", "--study", _STUDY,
                             "--storage", url], capture_output=True, text=True, timeout=300, env=child_env())
    code, shown, pages = _serve_dashboard(url)
    for where, text in [("status", status.stdout + status.stderr), ("dashboard", shown), *pages]:
        assert not leaks(form, text), (where, text[-2000:])
    if form in CONNECTING:
        assert status.returncode == 0 and "***" in status.stdout, status.stderr[-1500:]
        assert f"Study {_STUDY!r} in postgresql" in shown and "***" in shown
        assert len(pages) == 4 and _STUDY in pages[2][1]
    else:
        assert status.returncode == code == 2 and not pages
        assert "storage URL" in shown and "storage URL" in status.stderr
