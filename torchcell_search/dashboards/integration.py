"""Show the study's figures inside optuna-dashboard.

optuna-dashboard draws every plotly figure saved with
:func:`optuna_dashboard.save_plotly_graph_object` on the study's page. :func:`refresh_dashboard`
re-renders each figure of :data:`~torchcell_search.dashboards.figures.FIGURES` and saves it
under a fixed id (``torchcell-<name>``), so a refresh replaces the previous version instead of
adding a copy, and ``optuna-dashboard <storage>`` alone shows them.
"""

from __future__ import annotations

import json
import logging
import warnings

import optuna
import plotly.graph_objects as go
from optuna_dashboard import save_plotly_graph_object
from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

from torchcell_search.dashboards.figures import FIGURES

__all__ = ["GRAPH_ID_PREFIX", "graph_object_ids", "refresh_dashboard", "stored_figures"]

_logger = logging.getLogger(__name__)

GRAPH_ID_PREFIX = "torchcell-"
# Learning curves of every trial make the largest figure; the dashboard keeps the best and the
# most recent ones (the HTML report draws all). Stored figures are split into ~2 kB study
# attributes, one storage write each, so their size is the cost of a refresh.
_DASHBOARD_MAX_TRIALS = 40


def graph_object_ids() -> list[str]:
    """Ids under which :func:`refresh_dashboard` stores the figures, in report order."""
    return [GRAPH_ID_PREFIX + name for name in FIGURES]


def _compact(fig: go.Figure) -> go.Figure:
    # The plotly_white template is ~8 kB of JSON per figure; the dashboard's plotly.js defaults
    # look the same for these figures, so only the white backgrounds are kept.
    # The dashboard draws each figure in a fixed 450 px box: let plotly.js size it to the box.
    fig.update_layout(template=None, plot_bgcolor="white", paper_bgcolor="white", height=None, autosize=True)
    fig.update_xaxes(gridcolor="#eee", zerolinecolor="#ddd")
    fig.update_yaxes(gridcolor="#eee", zerolinecolor="#ddd")
    return fig


def refresh_dashboard(study: optuna.Study, *,
                      artifact_store: optuna.artifacts.FileSystemArtifactStore | None = None) -> None:
    """Re-render the figures and save them to the study for optuna-dashboard.

    The search worker calls this after each trial finishes. Two workers refreshing at once
    write the same keys; chunks of one figure could interleave, so a figure that does not read
    back as valid JSON is written again once (the next refresh repairs anything left).

    Args:
        study: the study; its storage receives the figures as study system attributes.
        artifact_store: where trials' ``predictions.npz`` live (default: the predictions
            figure falls back to the ``predictions_sample`` user attribute).
    """
    cfg = study.user_attrs.get("torchcell_search")
    objective = cfg.get("objective") if isinstance(cfg, dict) else None
    if objective and len(study.directions) == 1 and study.metric_names != [str(objective)]:
        # The dashboard then labels axes with the metric instead of "Objective 0".
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([str(objective)])
    rendered: dict[str, str] = {}
    for name, fn in FIGURES.items():
        if name == "predictions":
            fig = fn(study, artifact_store=artifact_store)
        elif name == "learning-curves":
            fig = fn(study, max_trials=_DASHBOARD_MAX_TRIALS)
        else:
            fig = fn(study)
        gid = GRAPH_ID_PREFIX + name
        save_plotly_graph_object(study, _compact(fig), graph_object_id=gid)
        rendered[gid] = fig.to_json()
    rendered.update(_save_fidelity_figure(study))
    stored = get_plotly_graph_objects(study._storage.get_study_system_attrs(study._study_id))
    for gid, text in rendered.items():
        try:
            json.loads(stored.get(gid, ""))
        except ValueError:
            _logger.warning("figure %s was torn by a concurrent refresh; writing it again", gid)
            save_plotly_graph_object(study, go.Figure(json.loads(text)), graph_object_id=gid)


def _save_fidelity_figure(study: optuna.Study) -> dict[str, str]:
    """A fidelity study's rank correlations between rungs, as one more figure; none for a plain study."""
    from torchcell_search.dashboards.fidelity import FIDELITY_FIGURE, fidelity_figure, is_fidelity_study

    if not is_fidelity_study(study):
        return {}
    fig = fidelity_figure(study)
    save_plotly_graph_object(study, _compact(fig), graph_object_id=GRAPH_ID_PREFIX + FIDELITY_FIGURE)
    return {GRAPH_ID_PREFIX + FIDELITY_FIGURE: fig.to_json()}


def stored_figures(study: optuna.Study) -> dict[str, dict]:
    """The figures optuna-dashboard will draw for ``study``: ``{graph id: plotly JSON dict}``.

    Figures that do not parse (torn by a concurrent write) are left out.
    """
    out: dict[str, dict] = {}
    for gid, text in sorted(get_plotly_graph_objects(study._storage.get_study_system_attrs(study._study_id)).items()):
        try:
            out[gid] = json.loads(text)
        except ValueError:
            continue
    return out
