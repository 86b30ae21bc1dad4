"""Plotly figures over a study, read from the layout in ``docs/architecture.md``.

Every ``fig_*`` function takes an :class:`optuna.Study` and returns a
:class:`plotly.graph_objects.Figure`. None of them raises on an empty study or on trials that
lack an attribute: what cannot be drawn is left out and the figure says why in an annotation.
They only read the study (and, for predictions, its artifact store); they never write.

Metric values of a trial are taken at its best epoch (``user_attrs["best"]``, else
``history[best_epoch]``), as the test metrics are; learning curves use the whole ``history``.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

__all__ = [
    "FIGURES",
    "REPORT_PARAMS",
    "fig_baselines",
    "fig_importances",
    "fig_learning_curves",
    "fig_oversmoothing",
    "fig_parallel_coordinates",
    "fig_pareto",
    "fig_predictions",
]

# Same order as ``torchcell_search.data.types.LABELS`` (a test checks it); copied so that the
# dashboard process does not import torch just to name two columns.
_LABELS: tuple[str, str] = ("fitness", "gene_interaction")

# The parameters the report swept (its "Parameter / Choices" table), in the report's order.
REPORT_PARAMS: tuple[str, ...] = (
    "heads",
    "cell_dataset.learnable_embedding_input_channels",
    "model.num_layers",
    "model.hidden_channels",
    "model.prediction_head_config.hidden_channels",
    "regression_task.lambda_dist",
    "regression_task.lambda_supcr",
)

_DEFAULT_OBJECTIVE = "val/gene_interaction/Pearson"
_EMBEDDING_KEY = "embedding/mean_pairwise_distance"
_FIT_MSE = "val/fitness/MSE"
_GI_PEARSON = "val/gene_interaction/Pearson"
_BASELINE_STYLE = {
    "additive": {"color": "#d62728", "dash": "dash"},
    "matrix_factorisation": {"color": "#9467bd", "dash": "dot"},
}
_HIGHLIGHT = ("#1f77b4", "#ff7f0e", "#2ca02c", "#17becf", "#e377c2", "#8c564b")
_MUTED = "rgba(120,120,120,0.35)"
_HEIGHT = 450  # optuna-dashboard draws user figures in 450 px boxes


# --- reading the study ------------------------------------------------------------------


def _config(study: optuna.Study) -> dict[str, Any]:
    cfg = study.user_attrs.get("torchcell_search")
    return cfg if isinstance(cfg, dict) else {}


def _objectives(study: optuna.Study) -> list[tuple[str, bool]]:
    """Every objective's metric name and whether larger is better, in the study's order.

    Names and directions come from the stored configuration (``objectives``/``directions``
    lists of a multi-objective study, else ``objective``/``direction``); directions missing
    there are Optuna's ``study.directions``. A multi-objective study without stored names
    gets ``objective 0``, ``objective 1``, ... (its values still come from ``trial.values``).
    """
    cfg = _config(study)
    study_max = [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]
    names, directions = cfg.get("objectives"), cfg.get("directions")
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        names = [str(cfg.get("objective") or _DEFAULT_OBJECTIVE)] if len(study_max) == 1 else \
            [f"objective {i}" for i in range(len(study_max))]
        directions = [cfg["direction"]] if len(study_max) == 1 and cfg.get("direction") else None
    if isinstance(directions, list) and len(directions) == len(names):
        return [(str(n), d == "maximize") for n, d in zip(names, directions)]
    return [(str(n), study_max[i] if i < len(study_max) else False) for i, n in enumerate(names)]


def _objective(study: optuna.Study) -> tuple[str, bool]:
    """The (first) objective's metric name and whether larger is better."""
    return _objectives(study)[0]


def _value(trial: FrozenTrial, i: int = 0) -> float | None:
    """Objective ``i`` of ``trial`` (``trial.value`` raises on a multi-objective trial)."""
    values = trial.values
    return float(values[i]) if values is not None and i < len(values) and values[i] is not None else None


def _pareto_set(study: optuna.Study) -> list[FrozenTrial]:
    """Optuna's Pareto-optimal complete trials (``study.best_trials``) by number; [] when there is none."""
    try:
        return sorted(study.best_trials, key=lambda t: t.number)
    except (RuntimeError, ValueError):
        return []


def _baselines(study: optuna.Study) -> dict[str, dict[str, float]]:
    raw = study.user_attrs.get("baselines")
    if not isinstance(raw, dict):
        return {}
    # Sorted so that traces (and the stored JSON) come out in the same order every time.
    return {str(k): v for k, v in sorted(raw.items()) if isinstance(v, dict)}


def _finite(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def _history(trial: FrozenTrial) -> list[dict[str, Any]]:
    hist = trial.user_attrs.get("history")
    return [h for h in hist if isinstance(h, dict)] if isinstance(hist, list) else []


def _best_epoch(trial: FrozenTrial) -> int | None:
    be = trial.user_attrs.get("best_epoch")
    return be if isinstance(be, int) and not isinstance(be, bool) else None


def _metric(trial: FrozenTrial, name: str) -> float:
    """``name`` at the trial's best epoch, NaN when the trial does not have it."""
    best = trial.user_attrs.get("best")
    if isinstance(best, dict) and name in best:
        return _finite(best[name])
    hist = _history(trial)
    be = _best_epoch(trial)
    if be is not None and 0 <= be < len(hist):
        return _finite(hist[be].get(name))
    if name == _EMBEDDING_KEY and "embedding_distance" in trial.user_attrs:
        return _finite(trial.user_attrs["embedding_distance"])
    return math.nan


def _usable_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Finished and running trials (failed ones carry no metrics worth drawing), by number."""
    keep = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return sorted(study.get_trials(deepcopy=False, states=keep), key=lambda t: t.number)


def _ranked(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials with finite objectives, best first (ties broken by trial number).

    With several objectives the Pareto set (``study.best_trials``) comes first, each part
    ordered by the first objective.
    """
    objectives = _objectives(study)
    maximize = objectives[0][1]
    done = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values is not None and all(v is not None and math.isfinite(v) for v in t.values)
    ]
    sign = -1.0 if maximize else 1.0
    front = {t.number for t in _pareto_set(study)} if len(objectives) > 1 else set()
    return sorted(done, key=lambda t: (t.number not in front, sign * float(_value(t)), t.number))  # type: ignore[arg-type]


def _round(values: Sequence[float], digits: int = 5) -> list[float | None]:
    """Plain lists with limited precision: stored figures are chunked into study attributes."""
    out: list[float | None] = []
    for v in values:
        f = _finite(v)
        out.append(None if math.isnan(f) else float(f"{f:.{digits}g}"))
    return out


def _empty(fig: go.Figure, text: str) -> go.Figure:
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font={"size": 14, "color": "#555"})
    return fig


def _layout(fig: go.Figure, title: str, **kw: Any) -> go.Figure:
    fig.update_layout(title={"text": title, "x": 0.01}, height=kw.pop("height", _HEIGHT),
                      margin=kw.pop("margin", {"l": 55, "r": 20, "t": 60, "b": 45}), template="plotly_white", **kw)
    return fig


def _add_baselines(fig: go.Figure, study: optuna.Study, metric: str, *, row: int | None = None,
                   col: int | None = None, show_legend: bool = True) -> None:
    """Horizontal line per baseline at its value of ``metric`` (one legend entry per baseline)."""
    for name, metrics in _baselines(study).items():
        value = _finite(metrics.get(metric))
        if math.isnan(value):
            continue
        style = _BASELINE_STYLE.get(name, {"color": "#7f7f7f", "dash": "dashdot"})
        # A two-point trace rather than a layout shape: it gets a legend entry and hover text.
        # Its x values are set to the panel's data range by _stretch_baselines.
        fig.add_trace(
            go.Scatter(
                x=[0, 1], y=[value, value], mode="lines", name=f"{name} baseline",
                legendgroup=f"baseline-{name}", showlegend=show_legend,
                line={"color": style["color"], "dash": style["dash"], "width": 2},
                hovertemplate=f"{name}: {value:.3f}<extra></extra>",
                meta={"baseline": name, "metric": metric},
            ),
            row=row, col=col,
        )


def _stretch_baselines(fig: go.Figure) -> None:
    """Give each baseline trace the x range of the data traces on its axes."""
    ranges: dict[tuple[str, str], list[float]] = {}
    for tr in fig.data:
        if (tr.meta or {}).get("baseline") or tr.x is None:
            continue
        key = (tr.xaxis or "x", tr.yaxis or "y")
        xs = [float(v) for v in tr.x if isinstance(v, (int, float)) and math.isfinite(float(v))]
        if xs:
            lo, hi = ranges.get(key, [math.inf, -math.inf])
            ranges[key] = [min(lo, *xs), max(hi, *xs)]
    for tr in fig.data:
        if (tr.meta or {}).get("baseline"):
            lo, hi = ranges.get((tr.xaxis or "x", tr.yaxis or "y"), [0.0, 1.0])
            tr.x = [lo, hi] if hi > lo else [lo - 0.5, lo + 0.5]


# --- a. learning curves -------------------------------------------------------------------


def fig_learning_curves(study: optuna.Study, *, highlight: int = 3, max_trials: int | None = None) -> go.Figure:
    """The report's four-panel view: MSE and Pearson of each label per epoch, train and val.

    Rows are labels (fitness, gene_interaction), columns are metrics (MSE, Pearson). Each
    trial is one legend group: val solid, train dotted. The ``highlight`` best complete trials
    are coloured, the others grey. A pruned trial's curves stop where it was pruned and end in
    an ``x`` marker. The baselines' val Pearson is drawn on the Pearson panels.

    Args:
        study: the study to read.
        highlight: number of best trials drawn in colour (default: 3).
        max_trials: draw at most this many trials, the highlighted ones and then the most
            recent others (default: all).

    Returns:
        A figure with 2 × 2 subplots.
    """
    titles = [f"{label} {metric}" for label in _LABELS for metric in ("MSE", "Pearson")]
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles, horizontal_spacing=0.1, vertical_spacing=0.16)
    trials = [t for t in _usable_trials(study) if _history(t)]
    best = [t.number for t in _ranked(study)[: max(highlight, 0)]]
    if max_trials is not None and len(trials) > max_trials:
        others = [t for t in trials if t.number not in best]
        keep = set(best[:max_trials]) | {t.number for t in others[-max(max_trials - len(best), 0):]}
        trials = [t for t in trials if t.number in keep]
    # Grey trials first so the highlighted ones are drawn on top.
    trials.sort(key=lambda t: (t.number in best, -best.index(t.number) if t.number in best else 0, t.number))
    for t in trials:
        hist = _history(t)
        epochs = list(range(len(hist)))
        is_best = t.number in best
        color = _HIGHLIGHT[best.index(t.number) % len(_HIGHLIGHT)] if is_best else _MUTED
        pruned = t.state == TrialState.PRUNED
        name = f"trial {t.number}" + (f" (#{best.index(t.number) + 1})" if is_best else "") + (" pruned" if pruned else "")
        first = True
        for r, label in enumerate(_LABELS, start=1):
            for c, metric in enumerate(("MSE", "Pearson"), start=1):
                for split, dash in (("val", "solid"), ("train", "dot")):
                    key = f"{split}/{label}/{metric}"
                    ys = [h.get(key) for h in hist]
                    if all(math.isnan(_finite(y)) for y in ys):
                        continue
                    fig.add_trace(
                        go.Scatter(
                            x=epochs, y=_round(ys), mode="lines", name=name, legendgroup=f"trial-{t.number}",
                            showlegend=first, line={"color": color, "dash": dash, "width": 2.5 if is_best else 1.2},
                            hovertemplate=f"trial {t.number} {split}<br>epoch %{{x}}<br>{key} %{{y:.4f}}<extra></extra>",
                            meta={"trial": t.number, "split": split, "metric": key, "state": t.state.name},
                        ),
                        row=r, col=c,
                    )
                    first = False
                    if pruned:
                        # Mark the cut: the last epoch a pruned trial reached.
                        last = max(i for i, y in enumerate(ys) if not math.isnan(_finite(y)))
                        fig.add_trace(
                            go.Scatter(
                                x=[last], y=_round([ys[last]]), mode="markers", legendgroup=f"trial-{t.number}",
                                showlegend=False, marker={"symbol": "x", "size": 9, "color": "#444"},
                                hovertemplate=f"trial {t.number} pruned after epoch {last}<extra></extra>",
                                meta={"trial": t.number, "pruned_at": last, "metric": key},
                            ),
                            row=r, col=c,
                        )
    for r, label in enumerate(_LABELS, start=1):
        _add_baselines(fig, study, f"val/{label}/Pearson", row=r, col=2, show_legend=(r == 1))
    _stretch_baselines(fig)
    fig.update_xaxes(title_text="epoch", row=2)
    _layout(fig, "Learning curves (val solid, train dotted; x = pruned)", height=620)
    if not trials:
        _empty(fig, "no trial has a history yet")
    return fig


# --- b. fitness MSE vs gene_interaction Pearson ---------------------------------------------


def _pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points not dominated when minimising ``x`` and maximising ``y``."""
    n = x.size
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        better_eq = (x <= x[i]) & (y >= y[i])
        strictly = (x < x[i]) | (y > y[i])
        if np.any(better_eq & strictly):
            mask[i] = False
    return mask


def fig_pareto(study: optuna.Study) -> go.Figure:
    """Val fitness MSE against val gene_interaction Pearson per trial, at its best epoch.

    The Pareto front (lower MSE, higher Pearson) is joined by a line and drawn with
    diamonds; baselines appear as stars and as horizontal lines at their Pearson.

    A study with several objectives shows the Pareto front of its own objectives instead
    (:func:`_fig_objectives_front`).
    """
    if len(_objectives(study)) > 1:
        return _fig_objectives_front(study)
    fig = go.Figure()
    trials = [t for t in _usable_trials(study) if t.state != TrialState.RUNNING]
    pts = [(t, _metric(t, _FIT_MSE), _metric(t, _GI_PEARSON)) for t in trials]
    pts = [(t, x, y) for t, x, y in pts if not (math.isnan(x) or math.isnan(y))]
    if pts:
        x = np.array([p[1] for p in pts])
        y = np.array([p[2] for p in pts])
        front = _pareto_mask(x, y)
        nums = [p[0].number for p in pts]
        states = [p[0].state.name.lower() for p in pts]
        rest = ~front
        fig.add_trace(go.Scatter(
            x=_round(x[rest]), y=_round(y[rest]), mode="markers", name="trials",
            marker={"size": 9, "color": "#7f7f7f", "symbol": ["circle-open" if states[i] == "pruned" else "circle"
                                                              for i in np.flatnonzero(rest)]},
            customdata=[[nums[i], states[i]] for i in np.flatnonzero(rest)],
            hovertemplate="trial %{customdata[0]} (%{customdata[1]})<br>MSE %{x:.4f}<br>Pearson %{y:.4f}<extra></extra>",
        ))
        order = np.flatnonzero(front)[np.argsort(x[front])]
        fig.add_trace(go.Scatter(
            x=_round(x[order]), y=_round(y[order]), mode="lines+markers+text", name="Pareto front",
            marker={"size": 12, "color": "#1f77b4", "symbol": "diamond"}, line={"color": "#1f77b4", "shape": "hv"},
            text=[f"#{nums[i]}" for i in order], textposition="top center",
            customdata=[[nums[i], states[i]] for i in order],
            hovertemplate="trial %{customdata[0]} (%{customdata[1]})<br>MSE %{x:.4f}<br>Pearson %{y:.4f}<extra></extra>",
            meta={"pareto_trials": [nums[i] for i in order]},
        ))
    for name, metrics in _baselines(study).items():
        bx, by = _finite(metrics.get(_FIT_MSE)), _finite(metrics.get(_GI_PEARSON))
        if not (math.isnan(bx) or math.isnan(by)):
            fig.add_trace(go.Scatter(
                x=[bx], y=[by], mode="markers", name=name, legendgroup=f"baseline-{name}",
                marker={"symbol": "star", "size": 14, "color": _BASELINE_STYLE.get(name, {}).get("color", "#7f7f7f")},
                hovertemplate=f"{name}<br>MSE %{{x:.4f}}<br>Pearson %{{y:.4f}}<extra></extra>",
            ))
    _add_baselines(fig, study, _GI_PEARSON, show_legend=False)
    _stretch_baselines(fig)
    _layout(fig, "val fitness MSE vs val gene_interaction Pearson (best epoch)",
            xaxis_title="val/fitness/MSE (lower is better)", yaxis_title="val/gene_interaction/Pearson")
    if not pts:
        _empty(fig, "no finished trial has val fitness MSE and gene_interaction Pearson yet")
    return fig


def _fig_objectives_front(study: optuna.Study) -> go.Figure:
    """The Pareto front of a multi-objective study over its first two objectives.

    Points are the complete trials' ``trial.values`` (what Optuna optimised); the front is
    Optuna's own, ``study.best_trials`` (with three or more objectives it is the front in
    all of them, drawn in the first two). Baselines that carry both objective metrics
    appear as stars.
    """
    objectives = _objectives(study)
    (xname, xmax), (yname, ymax) = objectives[0], objectives[1]
    fig = go.Figure()
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if _value(t, 0) is not None and _value(t, 1) is not None]
    done.sort(key=lambda t: t.number)
    front = [t for t in _pareto_set(study) if _value(t, 0) is not None and _value(t, 1) is not None]
    front_numbers = {t.number for t in front}
    hover = "trial %{customdata[0]}<br>" + xname + " %{x:.4f}<br>" + yname + " %{y:.4f}<extra></extra>"
    rest = [t for t in done if t.number not in front_numbers]
    if rest:
        fig.add_trace(go.Scatter(
            x=_round([_value(t, 0) for t in rest]), y=_round([_value(t, 1) for t in rest]), mode="markers",
            name="trials", marker={"size": 9, "color": "#7f7f7f"}, customdata=[[t.number] for t in rest],
            hovertemplate=hover,
        ))
    if front:
        front.sort(key=lambda t: (_value(t, 0), t.number))
        fig.add_trace(go.Scatter(
            x=_round([_value(t, 0) for t in front]), y=_round([_value(t, 1) for t in front]),
            mode="lines+markers+text", name="Pareto front", marker={"size": 12, "color": "#1f77b4", "symbol": "diamond"},
            line={"color": "#1f77b4", "shape": "hv"}, text=[f"#{t.number}" for t in front], textposition="top center",
            customdata=[[t.number] for t in front], hovertemplate=hover,
            meta={"pareto_trials": [t.number for t in front]},
        ))
    for name, metrics in _baselines(study).items():
        bx, by = _finite(metrics.get(xname)), _finite(metrics.get(yname))
        if not (math.isnan(bx) or math.isnan(by)):
            fig.add_trace(go.Scatter(
                x=[bx], y=[by], mode="markers", name=name, legendgroup=f"baseline-{name}",
                marker={"symbol": "star", "size": 14, "color": _BASELINE_STYLE.get(name, {}).get("color", "#7f7f7f")},
                hovertemplate=f"{name}<br>{xname} %{{x:.4f}}<br>{yname} %{{y:.4f}}<extra></extra>",
            ))

    def better(maximize: bool) -> str:
        return "higher is better" if maximize else "lower is better"

    more = f" ({len(objectives)} objectives; front in all of them)" if len(objectives) > 2 else ""
    _layout(fig, f"Pareto front of the study's objectives{more}",
            xaxis_title=f"{xname} ({better(xmax)})", yaxis_title=f"{yname} ({better(ymax)})")
    if not done:
        _empty(fig, "no complete trial yet")
    return fig


# --- c. importances and parallel coordinates -------------------------------------------------


def _importances(study: optuna.Study, metric: str) -> dict[str, float]:
    """Parameter importances for ``metric`` over complete trials where it is finite."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.params and not math.isnan(_metric(t, metric))]
    if len(done) < 2:
        return {}
    # PED-ANOVA (Optuna's default) needs no scikit-learn and is deterministic.
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    try:
        return _importances_on(done, metric, evaluator)
    except (RuntimeError, ValueError):
        # Fewer than two distinct values of every parameter, or no parameter shared by all trials.
        return {}


def _importances_on(trials: list[FrozenTrial], metric: str, evaluator: Any) -> dict[str, float]:
    # get_param_importances refuses NaN targets, so score only the trials that have the metric.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created in memory" line
    try:
        tmp = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    finally:
        optuna.logging.set_verbosity(verbosity)
    for t in trials:
        tmp.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=_metric(t, metric)))
    # PED-ANOVA scores what makes the target low: negate metrics where higher is better.
    sign = 1.0 if metric.endswith(("/MSE", "/loss")) else -1.0
    with warnings.catch_warnings():
        # It warns whenever a target is given, to remind of exactly this sign convention.
        warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes", category=UserWarning)
        return optuna.importance.get_param_importances(tmp, evaluator=evaluator, target=lambda t: sign * t.value)


def fig_importances(study: optuna.Study) -> go.Figure:
    """Parameter importances (PED-ANOVA) for val fitness MSE and val gene_interaction Pearson.

    One bar per parameter and metric, grouped by parameter (each metric's importances sum to
    1). Needs at least two complete trials that have the metric; with fewer the figure says so.
    """
    metrics = (_FIT_MSE, _GI_PEARSON)
    fig = go.Figure()
    missing = []
    for metric, color in zip(metrics, ("#1f77b4", "#ff7f0e")):
        imp = _importances(study, metric)
        if not imp:
            missing.append(metric)
            continue
        names = sorted(imp)
        fig.add_trace(go.Bar(x=_round([imp[k] for k in names], 4), y=names, orientation="h", name=metric,
                             marker={"color": color}, hovertemplate="%{y}: %{x:.3f}<extra>" + metric + "</extra>",
                             meta={"metric": metric}))
    if missing:
        _empty(fig, "needs ≥ 2 complete trials with " + " and ".join(missing))
    fig.update_layout(barmode="group", legend={"orientation": "h", "y": -0.2})
    fig.update_xaxes(title_text="importance")
    fig.update_yaxes(automargin=True, autorange="reversed")
    return _layout(fig, "Parameter importances", margin={"l": 20, "r": 20, "t": 60, "b": 45})


def _param_order(trials: list[FrozenTrial]) -> list[str]:
    present = sorted({k for t in trials for k in t.params})
    return [p for p in REPORT_PARAMS if p in present] + [p for p in present if p not in REPORT_PARAMS]


def fig_parallel_coordinates(study: optuna.Study) -> go.Figure:
    """Parallel coordinates over the report's parameters, then val fitness MSE and
    val gene_interaction Pearson, coloured by the objective (complete trials only)."""
    trials = [t for t in _usable_trials(study) if t.state == TrialState.COMPLETE and _value(t) is not None]
    objectives = _objectives(study)
    obj_name, maximize = objectives[0]
    fig = go.Figure()
    if not trials:
        return _empty(_layout(fig, "Parallel coordinates"), "no complete trial yet")
    dims = []
    for p in _param_order(trials):
        vals = [t.params.get(p) for t in trials]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals if v is not None) and \
                not isinstance(trials[0].distributions.get(p), optuna.distributions.CategoricalDistribution):
            dims.append({"label": p, "values": _round([math.nan if v is None else v for v in vals])})
        else:
            # Categorical: axis positions with the choices as tick labels (in the distribution's order).
            dist = next((t.distributions[p] for t in trials if p in t.distributions), None)
            choices = list(dist.choices) if isinstance(dist, optuna.distributions.CategoricalDistribution) \
                else sorted({v for v in vals if v is not None}, key=str)
            index = {repr(c): i for i, c in enumerate(choices)}
            dims.append({"label": p, "values": [index.get(repr(v)) for v in vals],
                         "tickvals": list(range(len(choices))), "ticktext": [str(c) for c in choices]})
    metrics = [_FIT_MSE, _GI_PEARSON] + [n for n, _ in objectives if n not in (_FIT_MSE, _GI_PEARSON)]
    for metric in metrics:
        values = [_metric(t, metric) for t in trials]
        if metric in (_FIT_MSE, _GI_PEARSON) or not all(math.isnan(v) for v in values):
            dims.append({"label": metric, "values": _round(values)})
    fig.add_trace(go.Parcoords(
        dimensions=dims, labelangle=-20, labelside="top",
        line={"color": _round([_value(t) for t in trials]), "colorscale": "Viridis", "reversescale": not maximize,
              "showscale": True, "colorbar": {"title": {"text": obj_name.replace("/", "<br>")}}},
        meta={"trials": [t.number for t in trials]},
    ))
    return _layout(fig, f"Parallel coordinates (colour: {obj_name})", margin={"l": 80, "r": 80, "t": 110, "b": 30})


# --- d. predictions ------------------------------------------------------------------------


def _load_predictions(study: optuna.Study, trial: FrozenTrial,
                      artifact_store: optuna.artifacts.FileSystemArtifactStore | None) -> dict[str, np.ndarray]:
    """``predictions.npz`` from the artifact store, else the ``predictions_sample`` user attr."""
    if artifact_store is not None:
        try:
            metas = optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
        except Exception:  # noqa: BLE001 - a storage without artifact metadata: use the fallback
            metas = []
        for meta in sorted(metas, key=lambda m: m.artifact_id):
            if meta.filename != "predictions.npz":
                continue
            try:
                with artifact_store.open_reader(meta.artifact_id) as f:
                    data = np.load(io.BytesIO(f.read()))
                    return {k: np.asarray(data[k], dtype=np.float64) for k in data.files}
            except Exception:  # noqa: BLE001 - a missing or corrupt artifact: use the fallback
                break
    sample = trial.user_attrs.get("predictions_sample")
    if isinstance(sample, dict):
        out = {}
        for k, v in sample.items():
            try:
                out[str(k)] = np.asarray(v, dtype=np.float64).reshape(-1, len(_LABELS))
            except (TypeError, ValueError):
                continue
        return out
    return {}


def _pick_trial(study: optuna.Study, trial: int | None) -> FrozenTrial | None:
    if trial is not None:
        return next((t for t in study.get_trials(deepcopy=False) if t.number == trial), None)
    ranked = _ranked(study)
    return ranked[0] if ranked else None


def fig_predictions(study: optuna.Study, trial: int | None = None, *, split: str = "val",
                    artifact_store: optuna.artifacts.FileSystemArtifactStore | None = None,
                    max_points: int = 2000, bins: int = 40, seed: int = 0) -> go.Figure:
    """Predicted against measured, and the prediction histogram over the label histogram, per label.

    Args:
        study: the study to read.
        trial: trial number (default: the best complete trial).
        split: ``"val"`` or ``"test"``.
        artifact_store: where ``predictions.npz`` lives; without it (or without the artifact)
            the trial's ``predictions_sample`` user attribute is used.
        max_points: scatter points drawn per label, a seeded sample (histograms use all).
        bins: histogram bins per label.
        seed: seed of the scatter sample.
    """
    fig = make_subplots(rows=2, cols=2, horizontal_spacing=0.1, vertical_spacing=0.24,
                        subplot_titles=[f"{split} {label}: predicted vs measured" for label in _LABELS]
                        + [f"{split} {label}: distributions" for label in _LABELS])
    t = _pick_trial(study, trial)
    title = "Predictions" + (f" of trial {t.number}" if t is not None else "")
    if t is None:
        return _empty(_layout(fig, title, height=620), "no complete trial yet" if trial is None else f"no trial {trial}")
    data = _load_predictions(study, t, artifact_store)
    pred, label = data.get(f"{split}_pred"), data.get(f"{split}_label")
    if pred is None or label is None or pred.shape != label.shape or pred.ndim != 2:
        return _empty(_layout(fig, title, height=620), f"trial {t.number} has no {split} predictions")
    rng = np.random.default_rng(seed)
    for j, name in enumerate(_LABELS):
        ok = np.isfinite(pred[:, j]) & np.isfinite(label[:, j])
        p, y = pred[ok, j], label[ok, j]
        if p.size == 0:
            continue
        idx = np.sort(rng.choice(p.size, size=max_points, replace=False)) if p.size > max_points else np.arange(p.size)
        fig.add_trace(go.Scattergl(x=_round(y[idx], 4), y=_round(p[idx], 4), mode="markers", name=f"{name} records",
                                   showlegend=False, marker={"size": 4, "opacity": 0.5, "color": "#1f77b4"},
                                   hovertemplate="measured %{x:.3f}<br>predicted %{y:.3f}<extra></extra>"),
                      row=1, col=j + 1)
        lo, hi = float(min(p.min(), y.min())), float(max(p.max(), y.max()))
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", showlegend=False, name="y = x",
                                 line={"color": "#444", "dash": "dash", "width": 1}, hoverinfo="skip"),
                      row=1, col=j + 1)
        # Binned here rather than by plotly.js: the stored figure stays small for any R.
        edges = np.linspace(lo, hi, bins + 1) if hi > lo else np.linspace(lo - 0.5, hi + 0.5, bins + 1)
        centers, width = (edges[:-1] + edges[1:]) / 2, float(edges[1] - edges[0])
        for series, values, color in (("measured", y, "#ff7f0e"), ("predicted", p, "#1f77b4")):
            counts, _ = np.histogram(values, bins=edges)
            fig.add_trace(go.Bar(x=_round(centers, 4), y=counts.tolist(), width=width, name=series, legendgroup=series,
                                 showlegend=(j == 0), marker={"color": color}, opacity=0.55,
                                 hovertemplate=f"{series} %{{x:.3f}}: %{{y}}<extra></extra>"),
                          row=2, col=j + 1)
        fig.update_xaxes(title_text="measured", row=1, col=j + 1)
        fig.update_yaxes(title_text="predicted", row=1, col=j + 1)
        fig.update_xaxes(title_text=name, row=2, col=j + 1)
    fig.update_layout(barmode="overlay", bargap=0)
    return _layout(fig, title, height=620)


# --- e. oversmoothing ----------------------------------------------------------------------


def fig_oversmoothing(study: optuna.Study) -> go.Figure:
    """Mean pairwise embedding distance at the best epoch against ``model.num_layers``,
    coloured by val fitness MSE (the report: deeper models oversmooth, the best runs do not)."""
    fig = go.Figure()
    trials = [t for t in _usable_trials(study) if t.state != TrialState.RUNNING and "model.num_layers" in t.params]
    pts = [(t, t.params["model.num_layers"], _metric(t, _EMBEDDING_KEY), _metric(t, _FIT_MSE)) for t in trials]
    pts = [p for p in pts if not math.isnan(p[2])]
    if pts:
        mse = [p[3] for p in pts]
        fig.add_trace(go.Scatter(
            x=[p[1] for p in pts], y=_round([p[2] for p in pts]), mode="markers", name="trials",
            marker={"size": 11, "color": _round(mse), "colorscale": "Viridis", "reversescale": True, "showscale": True,
                    "colorbar": {"title": {"text": "val fitness<br>MSE"}}, "line": {"width": 1, "color": "#333"}},
            customdata=[[p[0].number, p[0].state.name.lower(), "n/a" if math.isnan(p[3]) else f"{p[3]:.4f}"] for p in pts],
            hovertemplate="trial %{customdata[0]} (%{customdata[1]})<br>layers %{x}<br>distance %{y:.4f}"
                          "<br>val fitness MSE %{customdata[2]}<extra></extra>",
        ))
    _layout(fig, "Oversmoothing: embedding distance vs depth", xaxis_title="model.num_layers",
            yaxis_title="mean pairwise embedding distance")
    fig.update_xaxes(dtick=1)
    if not pts:
        _empty(fig, "no trial has model.num_layers and an embedding distance yet")
    return fig


# --- f. baselines --------------------------------------------------------------------------


def fig_baselines(study: optuna.Study) -> go.Figure:
    """Table of val and test metrics of the baselines beside the best trial."""
    fig = go.Figure()
    rows: list[tuple[str, dict[str, Any]]] = list(_baselines(study).items())
    ranked = _ranked(study)
    if ranked:
        best = ranked[0]
        merged = {**(best.user_attrs.get("best") or {}), **(best.user_attrs.get("test") or {})}
        rows.append((f"best trial ({best.number})", merged if isinstance(merged, dict) else {}))
    if not rows:
        return _empty(_layout(fig, "Baselines"), "no baselines stored with the study")
    cols = [f"{s}/{label}/{m}" for s in ("val", "test") for label in _LABELS for m in ("MSE", "Pearson")]
    cells = [[name for name, _ in rows]] + [
        ["" if math.isnan(_finite(m.get(c))) else f"{_finite(m.get(c)):.4f}" for _, m in rows] for c in cols
    ]
    fig.add_trace(go.Table(
        header={"values": ["model"] + [c.replace("/", "<br>") for c in cols], "fill": {"color": "#e8eef7"},
                "align": "left"},
        cells={"values": cells, "align": "left"}, columnwidth=[2.2] + [1] * len(cols),
    ))
    return _layout(fig, "Baselines vs best trial")


FIGURES: dict[str, Callable[..., go.Figure]] = {
    "learning-curves": fig_learning_curves,
    "pareto": fig_pareto,
    "importances": fig_importances,
    "parallel-coordinates": fig_parallel_coordinates,
    "predictions": fig_predictions,
    "oversmoothing": fig_oversmoothing,
    "baselines": fig_baselines,
}
"""Every figure by a stable id, in the order the report shows them."""
