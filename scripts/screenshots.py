"""Write docs/dashboard.png and docs/report.png for a study (headless Chromium).

Usage (from the repository root, with the test extra installed)::

    torchcell-search start --study demo --n-trials 8          # a real study, or:
    python scripts/screenshots.py --storage sqlite:///torchcell-search.db --study demo
    python scripts/screenshots.py --synthetic                  # the tests' synthetic 8-trial study
    python scripts/screenshots.py --synthetic-multi --figure pareto --out-dir /tmp   # one report figure

Chromium runs with networking off for the report, and only against localhost for the dashboard.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")


def _browser(profile: Path, width: int, height: int) -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in FLAGS + (f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def _wait(drv: webdriver.Chrome, script: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not drv.execute_script(script):
        if time.monotonic() > deadline:
            raise TimeoutError(script)
        time.sleep(0.5)


def dashboard_png(storage: str, study: str, out: Path, tmp: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "torchcell_search.cli", "dashboard", "--study", study,
                             "--storage", storage, "--port", "0"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        proc.stdout.readline()  # type: ignore[union-attr]
        url = re.search(r"http://\S+", proc.stdout.readline()).group(0)  # type: ignore[union-attr]
        drv = _browser(tmp / "dash-profile", 1600, 2400)
        try:
            drv.get(url)
            _wait(drv, "return document.querySelectorAll('[id^=\"user-defined-plot:\"] .main-svg').length >= 14")
            # Our figures sit below optuna-dashboard's own history plot: start the shot at them.
            drv.execute_script("var top = Math.min(...Array.from(document.querySelectorAll("
                               "'[id^=\"user-defined-plot:\"]')).map(e => e.getBoundingClientRect().top));"
                               "window.scrollBy(0, top - 140);")
            time.sleep(1.5)
            drv.save_screenshot(str(out))
        finally:
            drv.quit()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def report_png(storage: str, study: str, out: Path, tmp: Path) -> None:
    from torchcell_search.dashboards.report import report_command

    html = report_command(study, storage, out=tmp / "report.html")
    drv = _browser(tmp / "report-profile", 1400, 1800)
    try:
        drv.get(html.as_uri())
        _wait(drv, "return document.querySelectorAll('.js-plotly-plot svg.main-svg').length >= 7")
        time.sleep(1.0)
        drv.save_screenshot(str(out))
    finally:
        drv.quit()


def figure_png(storage: str, study: str, figure: str, out: Path, tmp: Path) -> None:
    """One figure of the report (its ``section-<figure>`` element), as the report draws it."""
    from torchcell_search.dashboards.report import report_command

    html = report_command(study, storage, out=tmp / "report.html")
    drv = _browser(tmp / "figure-profile", 1400, 1800)
    try:
        drv.get(html.as_uri())
        _wait(drv, f"return document.querySelectorAll('#section-{figure} svg.main-svg').length >= 1")
        section = drv.find_element("id", f"section-{figure}")
        drv.execute_script("arguments[0].scrollIntoView();", section)
        time.sleep(1.0)
        section.screenshot(str(out))
    finally:
        drv.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", help="Optuna storage URL of an existing study")
    parser.add_argument("--study", default="demo")
    parser.add_argument("--synthetic", action="store_true", help="use the tests' synthetic 8-trial study")
    parser.add_argument("--synthetic-multi", action="store_true",
                        help="use the tests' synthetic two-objective study (val/combined/MSE, val/combined/Pearson)")
    parser.add_argument("--figure", help="write only this report figure (a FIGURES id, e.g. pareto) "
                                         "to OUT_DIR/report-FIGURE.png")
    parser.add_argument("--out-dir", default=str(ROOT / "docs"))
    args = parser.parse_args()
    out_dir = Path(args.out_dir)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        storage = args.storage
        if args.synthetic:
            sys.path.insert(0, str(ROOT))
            from tests.dashboards.conftest import build_study

            _, storage = build_study(tmp / "search.db", name=args.study, n_trials=8)
        if args.synthetic_multi:
            sys.path.insert(0, str(ROOT))
            from tests.dashboards.conftest import build_multi_study

            _, storage = build_multi_study(tmp / "search.db", name=args.study, n_trials=10)
        if not storage:
            parser.error("give --storage (and --study) of a real study, or --synthetic / --synthetic-multi")
        if args.figure:
            out = out_dir / f"report-{args.figure}.png"
            figure_png(storage, args.study, args.figure, out, tmp)
            print(out)
            return
        dashboard_png(storage, args.study, out_dir / "dashboard.png", tmp)
        report_png(storage, args.study, out_dir / "report.png", tmp)
    print(out_dir / "dashboard.png", out_dir / "report.png")


if __name__ == "__main__":
    main()
