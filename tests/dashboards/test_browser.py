"""The dashboard and the report in headless Chromium (selenium).

Screenshots go to ``test-artifacts/dashboards/`` (gitignored). ``scripts/screenshots.py``
makes the committed ones under ``docs/``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from services import missing_service

pytestmark = pytest.mark.browser

try:
    from selenium import webdriver
except ImportError:
    missing_service("selenium", "pip install -e '.[test]'", allow_module_level=True)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from torchcell_search.dashboards.figures import FIGURES  # noqa: E402
from torchcell_search.dashboards.report import report_command  # noqa: E402

_CHROMIUM, _DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
_ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboards"
_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
          "--window-size=1400,1000")
# Every host name fails to resolve and every proxied request goes to a closed port.
_OFFLINE = ("--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9")

if not (_CHROMIUM and _DRIVER):
    missing_service("Chromium", "chromium and chromedriver are not on PATH (apt-get install chromium chromium-driver)",
                    allow_module_level=True)


def _browser(tmp_path: Path, *, offline: bool = False) -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = _CHROMIUM
    for flag in _FLAGS + (_OFFLINE if offline else ()):
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path / 'chrome-profile'}")
    drv = webdriver.Chrome(service=Service(_DRIVER), options=opts)
    drv.set_page_load_timeout(60)
    if offline:
        drv.execute_cdp_cmd("Network.enable", {})
        drv.execute_cdp_cmd("Network.emulateNetworkConditions",
                            {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
    return drv


def _wait(drv: webdriver.Chrome, script: str, *, timeout: float = 60.0) -> object:
    """Poll ``script`` (JS returning a value) until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = drv.execute_script(script)
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def _screenshot(drv: webdriver.Chrome, name: str) -> None:
    _ARTIFACTS.mkdir(parents=True, exist_ok=True)
    drv.save_screenshot(str(_ARTIFACTS / name))


@pytest.fixture(scope="module")
def dashboard(demo_study: tuple[optuna.Study, str]) -> Iterator[str]:
    """``torchcell-search dashboard`` in a subprocess on a free port; yields the page URL."""
    _, url = demo_study
    proc = subprocess.Popen(
        [sys.executable, "-m", "torchcell_search.cli", "dashboard", "--study", "demo", "--storage", url, "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first, second = proc.stdout.readline(), proc.stdout.readline()  # type: ignore[union-attr]
        match = re.search(r"http://127\.0\.0\.1:\d+/\S+", second)
        assert match, f"no URL printed: {first!r} {second!r} {proc.stderr.read() if proc.poll() is not None else ''}"  # type: ignore[union-attr]
        assert "demo" in first
        yield match.group(0)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_dashboard_shows_the_study_its_trials_and_our_figures(
        dashboard: str, demo_study: tuple[optuna.Study, str], tmp_path: Path) -> None:
    study, _ = demo_study
    drv = _browser(tmp_path)
    try:
        drv.get(dashboard)
        n_plots = _wait(drv, "var n = document.querySelectorAll('[id^=\"user-defined-plot:torchcell-\"] .main-svg')"
                             ".length; return n >= %d ? n : 0" % (2 * len(FIGURES)))
        body = drv.find_element(By.TAG_NAME, "body").text
        _screenshot(drv, "dashboard-top.png")
        # The study's name in the header and every one of our figures drawn (each plot has two svg layers).
        assert f"{study.study_name} (id=" in body
        assert n_plots >= 2 * len(FIGURES)
        ids = drv.execute_script("return Array.from(document.querySelectorAll('[id^=\"user-defined-plot:\"]'))"
                                 ".map(e => e.id)")
        assert sorted(ids) == sorted(f"user-defined-plot:torchcell-{name}" for name in FIGURES)
        titles = drv.execute_script("return Array.from(document.querySelectorAll('.gtitle')).map(e => e.textContent)")
        for text in ("Learning curves", "val fitness MSE vs val gene_interaction Pearson", "Parameter importances",
                     "Parallel coordinates", f"Predictions of trial {study.best_trial.number}", "Oversmoothing"):
            assert any(text in t for t in titles), text
        # The learning curves have a legend entry per trial, pruned ones marked.
        legend = drv.execute_script(
            "return Array.from(document.getElementById('user-defined-plot:torchcell-learning-curves')"
            ".querySelectorAll('.legendtext')).map(e => e.textContent)")
        assert {f"trial {t.number}" for t in study.trials} <= {s.split(" (")[0].replace(" pruned", "") for s in legend}
        assert sum("pruned" in s for s in legend) == 2
        # The axes are named after the objective, not "Objective 0".
        assert "val/gene_interaction/Pearson" in body
        drv.execute_script("document.getElementById('user-defined-plot:torchcell-learning-curves').scrollIntoView()")
        _screenshot(drv, "dashboard-figures.png")

        drv.get(dashboard + "/trials")
        _wait(drv, "return document.body.innerText.indexOf('Trial %d') >= 0" % study.trials[-1].number)
        text = drv.find_element(By.TAG_NAME, "body").text
        _screenshot(drv, "dashboard-trials.png")
        assert f"{len(study.trials)} Trials" in text
        assert all(f"Trial {t.number}" in text for t in study.trials) and text.count("Pruned") >= 2
    finally:
        drv.quit()


@pytest.fixture(scope="module")
def report_file(demo_study: tuple[optuna.Study, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, url = demo_study
    return report_command("demo", url, out=tmp_path_factory.mktemp("report") / "report.html")


def test_report_renders_offline_and_sorts(report_file: Path, tmp_path: Path) -> None:
    drv = _browser(tmp_path, offline=True)
    try:
        drv.get(report_file.as_uri())
        drawn = ("return Array.from(document.querySelectorAll('.js-plotly-plot'))"
                 ".filter(p => p.querySelector('svg.main-svg g.trace, svg.main-svg g.table, svg.main-svg g.parcoords'))"
                 ".length")
        n = _wait(drv, drawn.replace("return ", "var n = ") + "; return n >= %d ? n : 0" % len(FIGURES))
        _screenshot(drv, "report.png")
        # Every figure drew its traces into svg, with plotly.js from the file itself.
        assert n == len(FIGURES)
        plots = drv.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
        assert len(plots) == len(FIGURES)
        assert all(p.find_elements(By.CSS_SELECTOR, "svg.main-svg") for p in plots)
        assert drv.execute_script("return typeof Plotly") == "object"
        # Nothing was fetched over the network.
        fetched = drv.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert not [u for u in fetched if u.startswith(("http:", "https:"))]

        def column(i: int) -> list[str]:
            return drv.execute_script(
                "return Array.from(document.querySelectorAll('#trials tbody tr'))"
                ".map(r => r.cells[%d].getAttribute('data-value') || r.cells[%d].textContent)" % (i, i))

        head = [th.text for th in drv.find_elements(By.CSS_SELECTOR, "#trials th")]
        trial_th = drv.find_elements(By.CSS_SELECTOR, "#trials th")[0]
        numbers = [int(v) for v in column(0)]
        assert numbers == sorted(numbers)
        trial_th.click()  # ascending (already), then descending
        trial_th.click()
        assert [int(v) for v in column(0)] == sorted(numbers, reverse=True)
        mse = head.index("val/fitness/MSE")
        drv.find_elements(By.CSS_SELECTOR, "#trials th")[mse].click()
        values = [float(v) for v in column(mse)]
        # Numeric, not lexical, order; the header shows the direction.
        assert values == sorted(values)
        assert drv.find_elements(By.CSS_SELECTOR, "#trials th")[mse].get_attribute("aria-sort") == "ascending"
        _screenshot(drv, "report-sorted.png")
    finally:
        drv.quit()
