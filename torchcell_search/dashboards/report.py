"""``torchcell-search report``: one self-contained HTML file with every figure of a study.

plotly.js is embedded once, inline; the file loads nothing from the network (no CDN script,
no web font), so it opens offline and can be mailed or archived as is.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from torchcell_search._atomic import write_atomic
from torchcell_search.dashboards._study import open_study, study_artifact_store
from torchcell_search.dashboards.figures import (
    _LABELS,
    FIGURES,
    _baselines,
    _metric,
    _objectives,
    _param_order,
    _pareto_set,
    _ranked,
    _value,
)
from torchcell_search.errors import ConfigError
from torchcell_search.storage.urls import redact

__all__ = ["render_report", "report_command"]

_TABLE_METRICS = tuple(
    f"{s}/{label}/{m}" for s in ("val", "test") for label in (*_LABELS, "combined") for m in ("MSE", "Pearson")
)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.meta { color: #555; } pre { background: #f6f8fa; padding: 8px; overflow-x: auto; font-size: 12px; }
table { border-collapse: collapse; font-size: 12px; } th, td { border: 1px solid #ddd; padding: 3px 6px; }
th { background: #e8eef7; position: sticky; top: 0; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.pruned td { color: #888; } tr.warning td { color: #b00; } tr.best td { font-weight: 600; }
.figure { margin: 12px 0 28px; }
"""

# Click a header to sort by it (numbers numerically, empty cells last); click again to reverse.
_SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[col], v = cell.getAttribute("data-value");
        if (v === null) v = cell.textContent;
        var n = parseFloat(v);
        return v === "" ? null : (isNaN(n) || !isFinite(v) ? v : n);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) return x === y ? 0 : (x === null ? 1 : -1);
        var c = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return f"<td>{'' if value is None else html.escape(str(value))}</td>"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return '<td class="num" data-value=""></td>'
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        return f'<td class="num" data-value="{value!r}">{html.escape(text)}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _table(head: list[str], rows: list[list[Any]], *, table_id: str, row_classes: list[str] | None = None) -> str:
    out = [f'<table class="sortable" id="{table_id}"><thead><tr>']
    out += [f"<th>{html.escape(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        out.append(f"<tr{cls}>" + "".join(_cell(v) for v in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _trial_rows(study: optuna.Study, trials: list[FrozenTrial]) -> tuple[list[str], list[list[Any]], list[str]]:
    params = _param_order(trials)
    objectives = _objectives(study)
    # one value column per objective; several objectives mark the whole Pareto set as best
    values = ["value"] if len(objectives) == 1 else [f"value: {name}" for name, _ in objectives]
    head = ["trial", "state", *values, "best_epoch", "epochs"] + params + list(_TABLE_METRICS) + \
        ["n_params", "seconds", "stopped_reason"]
    best = {t.number for t in (_ranked(study)[:1] if len(objectives) == 1 else _pareto_set(study))}
    rows, classes = [], []
    for t in trials:
        test = t.user_attrs.get("test") if isinstance(t.user_attrs.get("test"), dict) else {}
        history = t.user_attrs.get("history")
        metrics = [test.get(m, math.nan) if m.startswith("test/") else _metric(t, m) for m in _TABLE_METRICS]
        rows.append(
            [t.number, t.state.name.lower(), *[_value(t, i) for i in range(len(values))], t.user_attrs.get("best_epoch"),
             len(history) if isinstance(history, list) else None]
            + [t.params.get(p) for p in params] + [float(m) if m is not None else None for m in metrics]
            + [t.user_attrs.get("n_params"), t.user_attrs.get("seconds"), t.user_attrs.get("stopped_reason")]
        )
        classes.append("best" if t.number in best else ("pruned" if t.state == TrialState.PRUNED else ""))
    return head, rows, classes


def _ensemble_section(study: optuna.Study, artifact_store: Any) -> str:
    """The study's ensemble (its recipe's, else the 3 best configurations) beside its best single trial."""
    from torchcell_search.errors import StudyError
    from torchcell_search.search.ensemble import ensemble_summary

    cfg = study.user_attrs.get("torchcell_search") or {}
    k, diversity = int(cfg.get("ensemble") or 1), str(cfg.get("ensemble_diversity") or "configs")
    if k < 2:
        k, diversity = 3, "configs"
    head = ["model"] + list(_TABLE_METRICS)
    try:
        if artifact_store is None:
            raise StudyError("no artifact store")
        summary = ensemble_summary(study, study._storage, artifact_store, k=k, diversity=diversity)
    except StudyError as e:
        return f"<h2>Ensemble</h2><p id='ensemble'>No ensemble of {k} ({html.escape(diversity)}): {html.escape(str(e))}</p>"
    single = summary["best_single"]
    rows = [[f"best trial #{single['trial']}"] + [single[m.split("/")[0]].get(m) for m in _TABLE_METRICS],
            [f"ensemble of {k} ({diversity}): " + ", ".join(f"#{n}" for n in summary["members"])]
            + [summary[m.split("/")[0]].get(m) for m in _TABLE_METRICS]]
    return "<h2>Ensemble</h2>" + _table(head, rows, table_id="ensemble")


def render_report(study: optuna.Study, *, storage_label: str = "",
                  artifact_store: optuna.artifacts.FileSystemArtifactStore | None = None) -> str:
    """The report of ``study`` as one HTML document (plotly.js inline, nothing fetched)."""
    objectives = _objectives(study)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    label = "objective" if len(objectives) == 1 else "objectives"
    shown = ", ".join(f"{name} ({'maximize' if up else 'minimize'})" for name, up in objectives)
    pareto = ""
    if len(objectives) > 1:
        numbers = [t.number for t in _pareto_set(study)]
        pareto = (" · Pareto set: <span id='pareto-set'>" + (", ".join(f"#{n}" for n in numbers) or "none yet")
                  + "</span>")
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>torchcell-search report: {html.escape(study.study_name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Study <span id='study-name'>{html.escape(study.study_name)}</span></h1>",
        f"<p class='meta'>storage {html.escape(storage_label)} · {label} {html.escape(shown)} · "
        + ", ".join(f"{n} {k}" for k, n in counts.items() if n) + (" · no trials" if not trials else "")
        + pareto + "</p>",
    ]
    parts.append("<h2>Baselines</h2>")
    baselines = _baselines(study)
    if baselines:
        parts.append(_table(["baseline"] + list(_TABLE_METRICS),
                            [[name] + [m.get(k) for k in _TABLE_METRICS] for name, m in baselines.items()],
                            table_id="baselines"))
    else:
        parts.append("<p>No baselines stored with the study.</p>")
    parts.append(_ensemble_section(study, artifact_store))
    first = True
    for name, fn in FIGURES.items():
        fig = fn(study, artifact_store=artifact_store) if name == "predictions" else fn(study)
        div = fig.to_html(full_html=False, include_plotlyjs=first, div_id=f"fig-{name}",
                          config={"displaylogo": False, "responsive": True})
        parts.append(f"<section class='figure' id='section-{name}'>{div}</section>")
        first = False
    parts.extend(_fidelity_section(study))
    parts.append("<h2>Trials</h2>")
    head, rows, classes = _trial_rows(study, trials)
    parts.append(_table(head, rows, table_id="trials", row_classes=classes) if rows else "<p>No trials yet.</p>")
    cfg = study.user_attrs.get("torchcell_search")
    if isinstance(cfg, dict):
        parts.append("<h2>Configuration</h2><pre>"
                     + html.escape(json.dumps(cfg, indent=2, sort_keys=True, default=str)) + "</pre>")
    parts.append(f"<script>{_SORT_JS}</script></body></html>")
    return "".join(parts)


def _fidelity_section(study: optuna.Study) -> list[str]:
    """A fidelity study's rank correlations between rungs (search/fidelity.py); nothing for a plain study."""
    from torchcell_search.dashboards.fidelity import fidelity_figure, fidelity_table_html, is_fidelity_study

    if not is_fidelity_study(study):
        return []
    div = fidelity_figure(study).to_html(full_html=False, include_plotlyjs=False, div_id="fig-fidelity",
                                         config={"displaylogo": False, "responsive": True})
    return ["<h2>Fidelity rungs: can the small rung be trusted?</h2>", fidelity_table_html(study),
            f"<section class='figure' id='section-fidelity'>{div}</section>"]


def _write_atomic(text: str, out: Path) -> None:
    if out.is_dir():
        raise ConfigError(f"report --out {out}: is a directory; name a file such as {out / 'report.html'}")
    try:
        write_atomic(out, lambda f: f.write(text), text=True)
    except OSError as e:
        raise ConfigError(f"report --out {out}: cannot write there ({e.strerror or e})") from e


def report_command(study: str, storage: str | None, *, out: Path) -> Path:
    """Write the HTML report of ``study`` to ``out`` (atomically) and return its path.

    Example::

        torchcell-search report --study demo --out demo.html

    Raises:
        ConfigError: the storage URL is invalid, or ``out`` cannot be written.
        StorageError: the storage cannot be opened.
        StudyError: the study does not exist.
    """
    out = Path(out).expanduser()
    if not out.parent.is_dir():
        raise ConfigError(f"report --out {out}: directory {out.parent} does not exist")
    loaded, url = open_study(study, storage)
    text = render_report(loaded, storage_label=redact(url), artifact_store=study_artifact_store(loaded, url))
    _write_atomic(text, out)
    return out
