"""The rung-correlation figure and table of a fidelity study (report and optuna-dashboard).

For each pair of rungs, the objective of every trial that reached both, one point per
trial, titled with the Spearman correlation, its count and a warning below
:data:`~torchcell_search.search.fidelity.RANK_WARNING`. A plain study has none.
"""

from __future__ import annotations

import html
import math
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.trial import TrialState
from plotly.subplots import make_subplots

from torchcell_search.search.fidelity import RANK_WARNING, rank_correlations

__all__ = ["FIDELITY_FIGURE", "fidelity_figure", "fidelity_table_html", "is_fidelity_study", "pair_label"]

#: Name of the figure (optuna-dashboard id ``torchcell-fidelity``, report section ``section-fidelity``).
FIDELITY_FIGURE = "fidelity"


def is_fidelity_study(study: optuna.Study) -> bool:
    cfg = study.user_attrs.get("torchcell_search")
    return isinstance(cfg, dict) and bool(cfg.get("fidelity"))


def pair_label(pair: dict[str, Any]) -> str:
    """``25000 -> 100000: Spearman +0.80 over 5 trials`` (with a warning when below the threshold)."""
    rho = f"{pair['rho']:+.2f}" if pair["rho"] is not None else "n/a"
    warn = f" (WARNING: below {RANK_WARNING})" if pair["warning"] else ""
    return f"{pair['from']} -> {pair['to']}: Spearman {rho} over {pair['n']} trials{warn}"


def _values_at(trials: list[optuna.trial.FrozenTrial], records: int) -> dict[int, float]:
    out = {}
    for t in trials:
        values = {int(d["records"]): float(d["value"]) for d in t.user_attrs.get("rungs") or []}
        if records in values and math.isfinite(values[records]):
            out[t.number] = values[records]
    return out


def fidelity_figure(study: optuna.Study) -> go.Figure:
    """One scatter per pair of rungs: objective at the smaller rung (x) vs the larger (y)."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL]
    summary = rank_correlations(trials)
    pairs = summary["pairs"] or [{"from": "-", "to": "-", "rho": None, "n": 0, "warning": False}]
    fig = make_subplots(rows=1, cols=len(pairs), subplot_titles=[
        f"{p['from']} -> {p['to']}: rho {p['rho']:+.2f}, n={p['n']}" if p["rho"] is not None
        else f"{p['from']} -> {p['to']}: n={p['n']}" for p in pairs])
    for i, p in enumerate(summary["pairs"], start=1):
        a, b = _values_at(trials, p["from"]), _values_at(trials, p["to"])
        both = sorted(set(a) & set(b))
        fig.add_trace(go.Scatter(x=[a[n] for n in both], y=[b[n] for n in both], mode="markers+text",
                                 text=[f"#{n}" for n in both], textposition="top center",
                                 marker={"color": "#d62728" if p["warning"] else "#1f77b4"},
                                 name=pair_label(p), showlegend=False), row=1, col=i)
        fig.update_xaxes(title_text=f"objective at {p['from']} records", row=1, col=i)
        fig.update_yaxes(title_text=f"objective at {p['to']} records", row=1, col=i)
    warned = [p for p in summary["pairs"] if p["warning"]]
    title = "Can the small rung be trusted? Rank correlation of the objective between rungs"
    if warned:
        title += f"<br><sub>WARNING: Spearman below {RANK_WARNING} for " + \
                 ", ".join(f"{p['from']} -> {p['to']}" for p in warned) + "</sub>"
    fig.update_layout(title=title, template="plotly_white", height=420)
    return fig


def fidelity_table_html(study: optuna.Study) -> str:
    """The report's table: rungs reached, then one row per pair of rungs."""
    summary = rank_correlations([t for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL])
    rungs = " &rarr; ".join(f"{r['records']} ({r['trials']} trials)" for r in summary["rungs"]) or "none yet"
    rows = "".join(
        f"<tr{' class=warning' if p['warning'] else ''}><td class='num'>{p['from']}</td><td class='num'>{p['to']}</td>"
        f"<td class='num'>{'' if p['rho'] is None else format(p['rho'], '+.3f')}</td>"
        f"<td class='num'>{p['n']}</td><td>{html.escape('below ' + str(RANK_WARNING) if p['warning'] else '')}</td></tr>"
        for p in summary["pairs"])
    return (f"<p>Rungs (train records): {rungs}</p><table id='fidelity-pairs'><thead><tr><th>from records</th>"
            f"<th>to records</th><th>Spearman</th><th>trials at both</th><th>warning</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")
