"""The HTML report and the dashboard command's checks (no browser: see test_browser.py)."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from torchcell_search.cli import main
from torchcell_search.dashboards.figures import FIGURES
from torchcell_search.dashboards.report import report_command
from torchcell_search.dashboards.server import dashboard_command
from torchcell_search.errors import ConfigError, StorageError, StudyError


@pytest.fixture(scope="module")
def report(demo_study: tuple[optuna.Study, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    _, url = demo_study
    out = tmp_path_factory.mktemp("report") / "demo.html"
    assert report_command("demo", url, out=out) == out
    return out.read_text(encoding="utf-8")


def test_report_is_self_contained(report: str) -> None:
    # plotly.js inline exactly once, and nothing loaded from elsewhere: no script src, no
    # stylesheet link, no web font.
    assert report.count("plotly.js v") >= 1
    assert len(re.findall(r"<script[^>]*>\s*/\*\*\s*\n?\s*\* plotly\.js", report)) == 1
    assert not re.search(r"<script[^>]+src=", report, flags=re.I)
    assert not re.search(r"<link[^>]+(stylesheet|font)", report, flags=re.I)
    assert "@font-face" not in report and "@import" not in report


def test_report_has_every_figure_the_baselines_and_the_trials(report: str, demo_study: tuple[optuna.Study, str]) -> None:
    study, _ = demo_study
    for name in FIGURES:
        assert f'id="fig-{name}"' in report
    assert "matrix_factorisation" in report and "additive" in report
    table = report[report.index('id="trials"'):]
    rows = re.findall(r"<tr[^>]*><td class=\"num\" data-value=\"(\d+)\"", table)
    assert sorted(map(int, rows)) == [t.number for t in study.trials]
    assert table.count('class="pruned"') == 2 and table.count('class="best"') == 1
    # these hand-made predictions carry no record indices: the ensemble section says why it is missing
    assert "<p id='ensemble'>No ensemble of 3 (configs): ensemble member trial" in report


def test_report_of_an_unknown_study_is_a_study_error(demo_study: tuple[optuna.Study, str], tmp_path: Path) -> None:
    _, url = demo_study
    with pytest.raises(StudyError, match="'nope' not found.*studies there: demo"):
        report_command("nope", url, out=tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_report_on_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match="does not exist"):
        report_command("demo", f"sqlite:///{tmp_path}/missing.db", out=tmp_path / "r.html")
    # A viewer must not leave an empty database behind.
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["missing-dir", "unwritable-dir", "is-a-dir"])
def test_unwritable_report_path_is_a_config_error(where: str, demo_study: tuple[optuna.Study, str], tmp_path: Path) -> None:
    _, url = demo_study
    # /proc refuses new files even to root, unlike a chmod-ed directory.
    target = {"missing-dir": tmp_path / "no" / "r.html", "unwritable-dir": Path("/proc/torchcell-report.html"),
              "is-a-dir": tmp_path}[where]
    with pytest.raises(ConfigError, match="report --out"):
        report_command("demo", url, out=target)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_the_old_report_and_no_temp_file(
        demo_study: tuple[optuna.Study, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, url = demo_study
    out = tmp_path / "r.html"
    out.write_text("previous report")

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("torchcell_search._atomic.os.replace", fail)
    with pytest.raises(ConfigError, match="No space left"):
        report_command("demo", url, out=out)
    assert out.read_text() == "previous report" and list(tmp_path.iterdir()) == [out]


def test_cli_report_prints_the_path_and_maps_errors(demo_study: tuple[optuna.Study, str], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _, url = demo_study
    assert main(["report", "--study", "demo", "--storage", url, "--out", str(tmp_path / "r.html")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r.html")
    # Bad input: one line on stderr, exit status 2.
    assert main(["report", "--study", "nope", "--storage", url, "--out", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "study 'nope' not found" in err


def test_dashboard_unknown_study_is_a_study_error(demo_study: tuple[optuna.Study, str]) -> None:
    _, url = demo_study
    with pytest.raises(StudyError, match="'nope' not found"):
        dashboard_command("nope", url, port=0)


def test_passwords_never_appear_in_errors(tmp_path: Path) -> None:
    url = "postgresql+psycopg2://me:hunter2@127.0.0.1:1/nowhere"
    # Nothing listens on port 1: the connection fails, and the message must not echo the password.
    with pytest.raises(StorageError) as info:
        report_command("demo", url, out=tmp_path / "r.html")
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


def test_dashboard_port_in_use_is_a_config_error(demo_study: tuple[optuna.Study, str]) -> None:
    import socket

    _, url = demo_study
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1"):
            dashboard_command("demo", url, port=s.getsockname()[1])


def test_report_of_a_two_objective_study_shows_its_pareto_set(multi_study: tuple[optuna.Study, str],
                                                              tmp_path: Path) -> None:
    study, url = multi_study
    out = report_command(study.study_name, url, out=tmp_path / "pair.html")
    text = out.read_text(encoding="utf-8")
    front = sorted(t.number for t in study.best_trials)
    # the header names both objectives with their directions and lists Optuna's Pareto set
    assert "objectives val/combined/MSE (minimize), val/combined/Pearson (maximize)" in text
    assert re.search(r"id='pareto-set'>([^<]*)<", text).group(1) == ", ".join(f"#{n}" for n in front)
    # one value column per objective; the Pareto set's rows are the best rows
    table = text[text.index('id="trials"'):]
    assert "<th>value: val/combined/MSE</th><th>value: val/combined/Pearson</th>" in table
    best_rows = re.findall(r'<tr class="best"><td class="num" data-value="(\d+)"', table)
    assert sorted(map(int, best_rows)) == front
    # the Pareto figure is the objectives' front
    assert "Pareto front of the study" in text
