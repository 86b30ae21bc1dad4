"""Figures over a study and their optuna-dashboard copies (real SQLite studies)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import optuna
import plotly.graph_objects as go
import pytest
from optuna.trial import TrialState

from tests.dashboards.conftest import BASELINES, MULTI_OBJECTIVES, PRUNE_AT, add_trial, build_multi_study
from torchcell_search.dashboards import figures as F
from torchcell_search.dashboards._study import study_artifact_store
from torchcell_search.dashboards.integration import graph_object_ids, refresh_dashboard, stored_figures
from torchcell_search.storage.artifacts import artifacts_dir


def _traces(fig: go.Figure, **meta: object) -> list:
    return [t for t in fig.data if all((t.meta or {}).get(k) == v for k, v in meta.items())]


def _text(fig: go.Figure) -> str:
    return " ".join(a.text for a in fig.layout.annotations)


def test_labels_match_the_data_package() -> None:
    from torchcell_search.data.types import LABELS

    # figures.py keeps its own copy to avoid importing torch; it must not drift.
    assert F._LABELS == LABELS


@pytest.mark.parametrize("name", list(F.FIGURES))
def test_every_figure_draws_an_empty_study(name: str) -> None:
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    fig = F.FIGURES[name](study)
    # No data, no exception, and the figure says why it is empty.
    assert isinstance(fig, go.Figure)
    assert not [t for t in fig.data if not (t.meta or {}).get("baseline")]
    assert fig.layout.annotations and ("no " in _text(fig) or "needs" in _text(fig))


@pytest.mark.parametrize("name", list(F.FIGURES))
def test_every_figure_ignores_trials_without_our_attributes(name: str) -> None:
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    # Plain Optuna trials (no history, best, baselines) must not break any figure.
    assert isinstance(F.FIGURES[name](study), go.Figure)


def test_learning_curves_draw_each_trial_in_four_panels(demo_study: tuple[optuna.Study, str]) -> None:
    study, _ = demo_study
    fig = F.fig_learning_curves(study)
    numbers = {t.number for t in study.trials}
    # One legend entry per trial, and val + train curves of both labels and metrics per trial.
    assert {t.meta["trial"] for t in fig.data if t.showlegend and "trial" in (t.meta or {})} == numbers
    for n in numbers:
        curves = [t for t in _traces(fig, trial=n) if "split" in t.meta]
        assert {(t.meta["split"], t.meta["metric"].split("/", 1)[1]) for t in curves} == {
            (s, f"{label}/{m}") for s in ("train", "val") for label in F._LABELS for m in ("MSE", "Pearson")}


def test_learning_curves_highlight_the_best_trials(demo_study: tuple[optuna.Study, str]) -> None:
    study, _ = demo_study
    fig = F.fig_learning_curves(study, highlight=2)
    top = [t.number for t in sorted((t for t in study.trials if t.state == TrialState.COMPLETE),
                                    key=lambda t: (-t.value, t.number))[:2]]
    for t in fig.data:
        if "split" not in (t.meta or {}):
            continue
        # Highlighted trials get a colour and a thicker line; the rest are grey.
        assert (t.line.color != F._MUTED) == (t.meta["trial"] in top)
    assert any("(#1)" in t.name for t in _traces(fig, trial=top[0]))


def test_pruned_trials_stop_early_and_mark_the_cut(demo_study: tuple[optuna.Study, str]) -> None:
    study, _ = demo_study
    fig = F.fig_learning_curves(study)
    for number, last in PRUNE_AT.items():
        val = [t for t in _traces(fig, trial=number, split="val")]
        cuts = [t for t in _traces(fig, trial=number) if "pruned_at" in t.meta]
        # Curves end at the pruning epoch; each of the 8 curves has an x marker there.
        assert all(len(t.x) == last + 1 for t in val)
        assert len(cuts) == 8 and {t.meta["pruned_at"] for t in cuts} == {last}
        assert all(t.marker.symbol == "x" for t in cuts)
    complete = next(t.number for t in study.trials if t.state == TrialState.COMPLETE)
    assert not [t for t in _traces(fig, trial=complete) if "pruned_at" in t.meta]


def test_baselines_are_drawn_on_every_pearson_panel(demo_study: tuple[optuna.Study, str]) -> None:
    study, _ = demo_study
    for fig in (F.fig_learning_curves(study), F.fig_pareto(study)):
        lines = [t for t in fig.data if (t.meta or {}).get("baseline")]
        # Every Pearson axis carries both baselines at their val Pearson of the panel's label.
        pearson_axes = {(t.xaxis, t.yaxis) for t in fig.data if "Pearson" in str((t.meta or {}).get("metric", ""))
                        and not (t.meta or {}).get("baseline")} or {("x", "y")}
        for axes in pearson_axes:
            here = {t.meta["baseline"]: t for t in lines if (t.xaxis or "x", t.yaxis or "y") == (axes[0] or "x", axes[1] or "y")}
            assert set(here) == set(BASELINES)
            for name, t in here.items():
                assert t.y[0] == t.y[1] == BASELINES[name][t.meta["metric"]]
                assert t.x[1] > t.x[0]


def test_pareto_front_is_the_non_dominated_trials(demo_study: tuple[optuna.Study, str]) -> None:
    study, _ = demo_study
    fig = F.fig_pareto(study)
    front = next(t for t in fig.data if t.name == "Pareto front")
    pts = {t.number: (F._metric(t, "val/fitness/MSE"), F._metric(t, "val/gene_interaction/Pearson"))
           for t in study.trials}
    expected = {n for n, (x, y) in pts.items()
                if not any(x2 <= x and y2 >= y and (x2 < x or y2 > y) for x2, y2 in pts.values())}
    assert set(front.meta["pareto_trials"]) == expected
    # Drawn left to right, so the step line reads as a front.
    assert list(front.x) == sorted(front.x)


def test_pareto_mask_on_hand_made_points() -> None:
    x = np.array([1.0, 2.0, 3.0, 2.0, 1.0])
    y = np.array([0.1, 0.5, 0.4, 0.2, 0.1])
    # (3, 0.4) and (2, 0.2) are dominated by (2, 0.5); the duplicate (1, 0.1) points both stay.
    assert F._pareto_mask(x, y).tolist() == [True, True, False, False, True]


def test_importances_need_two_complete_trials(tmp_path: Path) -> None:
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    study.add_trial(optuna.trial.create_trial(
        params={"model.num_layers": 2}, distributions={"model.num_layers": optuna.distributions.IntDistribution(2, 6)},
        value=0.1, user_attrs={"best": {"val/fitness/MSE": 0.1, "val/gene_interaction/Pearson": 0.2}}))
    fig = F.fig_importances(study)
    assert not fig.data and "needs ≥ 2 complete trials with val/fitness/MSE and val/gene_interaction/Pearson" in _text(fig)


def test_importances_cover_both_metrics(demo_study: tuple[optuna.Study, str]) -> None:
    study, _ = demo_study
    fig = F.fig_importances(study)
    bars = {t.meta["metric"]: t for t in fig.data}
    assert set(bars) == {"val/fitness/MSE", "val/gene_interaction/Pearson"}
    for bar in bars.values():
        # Importances of the sampled parameters, normalised to sum 1.
        assert set(bar.y) <= set(study.trials[0].params)
        assert math.isclose(sum(bar.x), 1.0, abs_tol=1e-3)


def test_parallel_coordinates_follow_the_report_order(demo_study: tuple[optuna.Study, str]) -> None:
    study, _ = demo_study
    (pc,) = F.fig_parallel_coordinates(study).data
    labels = [d.label for d in pc.dimensions]
    assert labels == ["heads", "model.num_layers", "model.hidden_channels", "regression_task.lambda_dist",
                      "val/fitness/MSE", "val/gene_interaction/Pearson"]
    # Only complete trials: pruned ones have no final objective to colour by.
    assert len(pc.meta["trials"]) == len(study.trials) - len(PRUNE_AT)
    heads = pc.dimensions[0]
    assert list(heads.ticktext) == ["1", "5", "10"]


def test_predictions_default_to_the_best_trial_from_artifacts(demo_study: tuple[optuna.Study, str]) -> None:
    study, url = demo_study
    store = study_artifact_store(study, url)
    assert store is not None
    fig = F.fig_predictions(study, artifact_store=store)
    assert f"trial {study.best_trial.number}" in fig.layout.title.text
    scatters = [t for t in fig.data if getattr(t, "mode", None) == "markers"]
    bars = [t for t in fig.data if isinstance(t, go.Bar)]
    # Both labels: a scatter of 300 records, and measured + predicted histograms of all records.
    assert len(scatters) == 2 and all(len(t.x) == 300 for t in scatters)
    assert len(bars) == 4 and all(sum(t.y) == 300 for t in bars)


def test_predictions_fall_back_to_the_user_attr_sample() -> None:
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), direction="maximize")
    rows = [[0.9, 0.01], [0.8, -0.02], [0.7, 0.05]]
    study.add_trial(optuna.trial.create_trial(value=0.3, user_attrs={
        "predictions_sample": {"val_pred": rows, "val_label": rows[::-1]}}))
    fig = F.fig_predictions(study)
    scatter = next(t for t in fig.data if getattr(t, "mode", None) == "markers")
    assert list(scatter.x) == [0.7, 0.8, 0.9] and list(scatter.y) == [0.9, 0.8, 0.7]
    # Missing test predictions are reported, not raised.
    assert "no test predictions" in _text(F.fig_predictions(study, split="test"))
    assert "no trial 7" in _text(F.fig_predictions(study, trial=7))


def test_oversmoothing_plots_distance_against_depth(demo_study: tuple[optuna.Study, str]) -> None:
    study, _ = demo_study
    (tr,) = F.fig_oversmoothing(study).data
    by_trial = {row[0]: (x, y) for row, x, y in zip(tr.customdata, tr.x, tr.y)}
    for t in study.trials:
        x, y = by_trial[t.number]
        assert x == t.params["model.num_layers"]
        assert y == pytest.approx(t.user_attrs["embedding_distance"], rel=1e-4)
    # Coloured by val fitness MSE with a colour bar.
    assert tr.marker.showscale and len(tr.marker.color) == len(study.trials)


def test_refresh_stores_every_figure_under_a_fixed_id(fresh_study: tuple[optuna.Study, str]) -> None:
    study, url = fresh_study
    refresh_dashboard(study, artifact_store=study_artifact_store(study, url))
    refresh_dashboard(study, artifact_store=study_artifact_store(study, url))
    stored = stored_figures(study)
    # A second refresh replaces, it does not add copies; what is stored parses as plotly JSON.
    assert sorted(stored) == sorted(graph_object_ids())
    assert all(isinstance(go.Figure(fig), go.Figure) for fig in stored.values())


def test_refresh_after_a_new_trial_updates_the_stored_figures(fresh_study: tuple[optuna.Study, str]) -> None:
    study, url = fresh_study
    refresh_dashboard(study, artifact_store=study_artifact_store(study, url))
    before = stored_figures(study)
    add_trial(study, artifacts_dir(url))
    refresh_dashboard(study, artifact_store=study_artifact_store(study, url))
    after = stored_figures(study)
    new = study.trials[-1].number

    def trials_in(fig: dict) -> set[int]:
        return {t["meta"]["trial"] for t in fig["data"] if "trial" in t.get("meta", {})}

    # The new trial appears in the learning curves (8 more curves) and in the Pareto plot.
    assert new in trials_in(after["torchcell-learning-curves"]) - trials_in(before["torchcell-learning-curves"])
    assert len(after["torchcell-learning-curves"]["data"]) == len(before["torchcell-learning-curves"]["data"]) + 8
    pts = lambda fig: sum(len(t["x"]) for t in fig["data"] if t.get("name") in ("trials", "Pareto front"))  # noqa: E731
    assert pts(after["torchcell-pareto"]) == pts(before["torchcell-pareto"]) + 1


def test_refresh_repairs_a_torn_figure(fresh_study: tuple[optuna.Study, str]) -> None:
    study, _ = fresh_study
    refresh_dashboard(study)
    # Simulate a concurrent writer leaving half a figure behind.
    key = "dashboard:plot_data:torchcell-pareto:0"
    study._storage.set_study_system_attr(study._study_id, key, '{"data": [')
    assert "torchcell-pareto" not in stored_figures(study)
    refresh_dashboard(study)
    assert json.dumps(stored_figures(study)["torchcell-pareto"])


# ---------------------------------------------------------------- multi-objective studies


def _optuna_front(study: optuna.Study) -> set[tuple[float, float]]:
    """The 'Best Trial' points of Optuna's own plot_pareto_front."""
    fig = optuna.visualization.plot_pareto_front(study)
    best = next(t for t in fig.data if "<extra>Best Trial</extra>" in (t.hovertemplate or ""))
    return {(round(x, 5), round(y, 5)) for x, y in zip(best.x, best.y)}


def test_multi_objective_pareto_figure_is_optunas_front(multi_study: tuple[optuna.Study, str]) -> None:
    study, _ = multi_study
    fig = F.fig_pareto(study)
    front = next(t for t in fig.data if t.name == "Pareto front")
    # The front is Optuna's: study.best_trials, and the points its plot_pareto_front marks best.
    assert front.meta["pareto_trials"] == sorted((t.number for t in study.best_trials),
                                                 key=lambda n: (study.trials[n].values[0], n))
    assert {(x, y) for x, y in zip(front.x, front.y)} == _optuna_front(study)
    assert 1 < len(front.x) < len(study.trials)  # a real trade-off, not one winner
    # the axes are the study's objectives with their directions, not the single-objective pair
    assert fig.layout.xaxis.title.text == "val/combined/MSE (lower is better)"
    assert fig.layout.yaxis.title.text == "val/combined/Pearson (higher is better)"
    others = next(t for t in fig.data if t.name == "trials")
    assert len(others.x) + len(front.x) == len(study.trials)


def test_multi_objective_names_fall_back_to_optunas_directions(tmp_path: Path) -> None:
    study, _ = build_multi_study(tmp_path / "s.db", n_trials=6, stored_names=False)
    # no objectives/directions stored: the directions come from study.directions
    assert F._objectives(study) == [("objective 0", False), ("objective 1", True)]
    fig = F.fig_pareto(study)
    front = next(t for t in fig.data if t.name == "Pareto front")
    assert set(front.meta["pareto_trials"]) == {t.number for t in study.best_trials}
    assert fig.layout.yaxis.title.text == "objective 1 (higher is better)"


def test_multi_objective_ranking_puts_the_pareto_set_first(multi_study: tuple[optuna.Study, str]) -> None:
    study, _ = multi_study
    ranked = [t.number for t in F._ranked(study)]
    front = {t.number for t in study.best_trials}
    assert set(ranked[: len(front)]) == front and sorted(ranked) == [t.number for t in study.trials]
    # each part ordered by the first objective (val/combined/MSE, minimised)
    first = [study.trials[n].values[0] for n in ranked[: len(front)]]
    assert first == sorted(first)


@pytest.mark.parametrize("name", list(F.FIGURES))
def test_every_figure_draws_a_multi_objective_study(name: str, multi_study: tuple[optuna.Study, str]) -> None:
    study, url = multi_study
    store = study_artifact_store(study, url)
    fig = F.FIGURES[name](study, artifact_store=store) if name == "predictions" else F.FIGURES[name](study)
    # trial.value raises on a multi-objective trial; no figure may touch it
    assert isinstance(fig, go.Figure) and fig.data


def test_parallel_coordinates_show_the_objectives(multi_study: tuple[optuna.Study, str]) -> None:
    study, _ = multi_study
    fig = F.fig_parallel_coordinates(study)
    labels = [d.label for d in fig.data[0].dimensions]
    assert labels[-2:] == MULTI_OBJECTIVES
    # coloured by the first objective's values
    assert list(fig.data[0].line.color) == F._round([t.values[0] for t in study.trials])


def test_refresh_stores_the_figures_of_a_multi_objective_study(tmp_path: Path) -> None:
    study, _ = build_multi_study(tmp_path / "s.db", n_trials=4)
    refresh_dashboard(study)
    stored = stored_figures(optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{tmp_path / 's.db'}"))
    assert set(stored) == set(graph_object_ids())
