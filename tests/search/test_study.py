"""Studies: configuration from options and recipes, conflicts on resume, status, workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from torchcell_search.errors import ConfigError, StudyError
from torchcell_search.search.study import (
    CONFIG_ATTR,
    build_study_config,
    create_study_command,
    format_status,
    status_command,
)

#: A tiny model on a small demo subset: a trial takes seconds, not minutes.
TINY_SPACE = {"parameters": {
    "model.num_layers": {"choices": [1, 2]},
    "model.hidden_channels": 8, "heads": 1, "cell_dataset.learnable_embedding_input_channels": 8,
    "model.prediction_head_config.hidden_channels": 8, "model.pooling": "attentional",
}}
TINY = {"space": TINY_SPACE, "subset": 200, "epochs": 2, "device": "cpu", "overrides": {"data_module.batch_size": 64}}


def _cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torchcell_search.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_defaults_come_from_the_report_space_and_the_objective() -> None:
    cfg = build_study_config({})
    assert (cfg.data, cfg.split, cfg.sampler, cfg.pruner, cfg.objective) == (
        "demo", "random", "tpe", "median", "val/gene_interaction/Pearson")
    assert cfg.direction == "maximize"
    # the demo is a smoke run: few epochs on a subset, 8 trials; real data trains longer on all records
    assert (cfg.epochs, cfg.subset, cfg.n_trials) == (4, 1200, 8)
    real = build_study_config({"data": str(Path(__file__).parent)})
    assert (real.epochs, real.subset) == (20, None)
    assert "regression_task.lambda_supcr" in cfg.space["parameters"]
    # an error objective is minimised
    assert build_study_config({"objective": "val/fitness/MSE"}).direction == "minimize"


def test_recipe_is_read_and_cli_options_win(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("epochs: 3\nn-trials: 5\nsampler: random\nspace: extended\n")
    cfg = build_study_config({"recipe": str(recipe), "epochs": 4})
    # the flag beats the recipe, the recipe beats the default
    assert (cfg.epochs, cfg.n_trials, cfg.sampler) == (4, 5, "random")
    assert "optimizer.lr" in cfg.space["parameters"]


@pytest.mark.parametrize(("options", "match"), [
    ({"epochs": 0}, "--epochs: expected an integer >= 1"),
    ({"objective": "test/fitness/MSE"}, "--objective 'test/fitness/MSE'"),
    ({"sampler": "cmaes"}, "--sampler 'cmaes'"),
    ({"space": "extended", "sampler": "grid"}, "float range has no grid"),
    ({"overrides": {"model.num_layers": "x"}}, "model.num_layers: expected an integer"),
    ({"overrides": {"seed": 3}}, "seed is set by the study"),
])
def test_bad_options_raise_config_error(options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_study_config(options)


def test_a_recipes_data_folder_is_relative_to_the_recipe_file(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "repo" / "configs").mkdir(parents=True)
    recipe = tmp_path / "repo" / "configs" / "r.yaml"
    recipe.write_text("data: ../../data\nepochs: 2\n")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory plays no part
    cfg = build_study_config({"recipe": str(recipe)})
    assert Path(cfg.data).resolve() == (tmp_path / "data").resolve()


def test_a_recipes_missing_data_folder_names_the_recipe_and_the_flag(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: ../nowhere\n")
    with pytest.raises(ConfigError, match=r"recipe .*r\.yaml: its data folder .*nowhere.* pass --data DIR"):
        build_study_config({"recipe": str(recipe)})
    # --data wins over the recipe, so the recipe's missing folder no longer matters
    data = tmp_path / "mine"
    data.mkdir()
    assert Path(build_study_config({"recipe": str(recipe), "data": str(data)}).data).resolve() == data.resolve()


def test_the_shipped_recipes_find_the_mirror_beside_the_clone_from_any_directory(monkeypatch) -> None:
    from datafiles import REAL_DATA_DIR

    from services import missing_service

    if not (REAL_DATA_DIR / "graph").is_dir():
        missing_service("the real data mirror", f"not found at {REAL_DATA_DIR}")
    monkeypatch.chdir("/")
    configs = Path(__file__).resolve().parents[2] / "configs"
    for name in ("real-pair.yaml", "real-gene.yaml", "real-gpu.yaml"):
        cfg = build_study_config({"recipe": str(configs / name)})
        assert Path(cfg.data).resolve() == REAL_DATA_DIR.resolve(), name


def test_bad_recipe_key_names_the_file(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochz: 3\n")
    with pytest.raises(ConfigError, match=f"recipe {recipe}: unknown option 'epochz'"):
        build_study_config({"recipe": str(recipe)})


def test_create_stores_config_and_refuses_a_different_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    first = create_study_command("a", url, {"epochs": 3, "n_trials": 4})
    assert first["created"]
    stored = optuna.load_study(study_name="a", storage=url).user_attrs[CONFIG_ATTR]
    assert stored["epochs"] == 3 and stored["n_trials"] == 4
    # the same configuration (or none given) is accepted; the budget may grow
    assert not create_study_command("a", url, {"epochs": 3})["created"]
    assert create_study_command("a", url, {"n_trials": 9})["config"]["n_trials"] == 9
    # a different one is refused, naming every differing field
    with pytest.raises(StudyError, match=r"epochs \(stored 3, given 5\); .*sampler \(stored 'tpe', given 'random'\)"):
        create_study_command("a", url, {"epochs": 5, "sampler": "random"})


def test_a_new_study_names_its_metrics_before_any_trial(tmp_path: Path) -> None:
    # Optuna's "Trial N finished with value" line and the dashboard's axes read the names; set
    # only after a first trial, trial 0's line showed a bare number and later ones a dict.
    url = f"sqlite:///{tmp_path / 's.db'}"
    create_study_command("one", url, {"objective": "val/fitness/MSE"})
    create_study_command("two", url, {"objective": ["val/combined/MSE", "val/combined/Pearson"]})
    assert optuna.load_study(study_name="one", storage=url).metric_names == ["val/fitness/MSE"]
    assert optuna.load_study(study_name="two", storage=url).metric_names == ["val/combined/MSE",
                                                                            "val/combined/Pearson"]


def test_invalid_options_write_nothing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with pytest.raises(ConfigError):
        create_study_command("a", f"sqlite:///{db}", {"epochs": -1})
    # validation comes before the storage is touched
    assert not db.exists()


@pytest.mark.parametrize(("name", "problem"), [
    ("-x", "begins with '-' (a command would read it as an option)"),
    ("--help", "begins with '-'"),
    (".hidden", "begins with '.'"),
    ("fit int", "contains ' ' (whitespace)"),
    ("fit\tint", "contains '\\t' (whitespace)"),
    ("a;rm", "contains ';'"),
    ("$(id)", "contains '$'"),
    ("x`y`", "contains '`'"),
    ("pair/v2", "contains '/'"),
    ("naïve", "contains 'ï'"),
])
@pytest.mark.parametrize("command", ["create", "start"])
def test_names_that_would_break_a_generated_command_are_refused(command: str, name: str, problem: str,
                                                                tmp_path: Path,
                                                                capfd: pytest.CaptureFixture[str]) -> None:
    from torchcell_search.cli import main

    db = tmp_path / "s.db"
    assert main([command, f"--study={name}", "--storage", f"sqlite:///{db}", "--epochs", "1"]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"torchcell-search: error: --study {name!r}: the name {problem}")
    assert not db.exists()  # refused before the storage is touched


def test_names_of_letters_digits_dots_underscores_and_dashes_are_accepted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    for name in ("fit-int", "exp_003.pair-v2", "_scratch", "7"):
        assert create_study_command(name, url, {})["created"]


def test_a_dash_name_from_the_shell_exits_2_with_one_line(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    proc = _cli("create", "--study=-x", "--storage", f"sqlite:///{db}")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "begins with '-'" in proc.stderr
    assert not db.exists()


def test_unknown_study_lists_the_studies_there(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    create_study_command("alpha", url, {})
    with pytest.raises(StudyError, match="study 'beta' not found in .*; studies there: alpha"):
        status_command("beta", url)


def test_cli_unknown_study_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = _cli("status", "--study", "nope", "--storage", f"sqlite:///{tmp_path / 's.db'}")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "study 'nope' not found" in proc.stderr


def test_cli_refuses_pooling_searched_under_a_perturbation_set_override(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("overrides: {model.kind: perturbation_set}\n"
                      "space: {parameters: {model.pooling: {choices: [sab, pma]}}}\n")
    db = tmp_path / "s.db"
    proc = _cli("start", "--study", "p", "--recipe", str(recipe), "--storage", f"sqlite:///{db}", "--data", "demo")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "model.pooling is searched but model.kind=perturbation_set pools nothing" in proc.stderr
    assert not db.exists()


def test_cli_never_prints_the_password(tmp_path: Path) -> None:
    proc = _cli("status", "--study", "x", "--storage", "postgresql+psycopg2://u:hunter2@127.0.0.1:1/db")
    assert proc.returncode == 2 and "hunter2" not in proc.stderr + proc.stdout and "***" in proc.stderr


def _add(study: optuna.Study, state: TrialState, value: float | None, heads: int, history: list[dict]) -> None:
    user_attrs = {"history": history}
    if state == TrialState.COMPLETE:
        user_attrs["best"] = {k: v for k, v in history[-1].items() if k != "epoch"}
    study.add_trial(optuna.create_trial(
        state=state, value=value, params={"heads": heads},
        distributions={"heads": CategoricalDistribution([1, 5, 10])}, user_attrs=user_attrs,
        intermediate_values={h["epoch"]: h["val/gene_interaction/Pearson"] for h in history},
    ))


def test_status_json_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    create_study_command("st", url, {"n_trials": 3})
    study = optuna.load_study(study_name="st", storage=url)
    epoch = {"epoch": 0, "val/gene_interaction/Pearson": 0.2, "val/fitness/MSE": 0.01}
    _add(study, TrialState.COMPLETE, 0.3, 5, [epoch, {**epoch, "epoch": 1, "val/gene_interaction/Pearson": 0.3}])
    _add(study, TrialState.PRUNED, None, 1, [{**epoch, "val/gene_interaction/Pearson": -0.1}])
    proc = _cli("status", "--study", "st", "--storage", url, "--json")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["study"]["name"] == "st" and status["study"]["n_trials"] == 3
    trials = status["trials"]
    assert [t["state"] for t in trials] == ["COMPLETE", "PRUNED"]
    assert set(trials[0]) >= {"number", "state", "params", "values", "metrics", "duration_s"}
    assert trials[0]["values"] == [0.3] and trials[0]["params"] == {"heads": 5}
    # a pruned trial shows its last epoch's metrics
    assert trials[1]["metrics"]["val/gene_interaction/Pearson"] == -0.1
    assert status["best"]["number"] == 0
    table = format_status(status_command("st", url))
    assert "COMPLETE" in table and "PRUNED" in table and "heads=5" in table


# --- real training: tiny models on a demo subset -----------------------------------------


@pytest.mark.slow
def test_start_runs_trials_and_stores_results(tmp_path: Path) -> None:
    from torchcell_search.search.study import best_command, start_command

    url = f"sqlite:///{tmp_path / 's.db'}"
    status = start_command("run", url, {**TINY, "n_trials": 2, "pruner": "none"}, jobs=1)
    finished = [t for t in status["trials"] if t["state"] in ("COMPLETE", "PRUNED")]
    assert len(finished) == 2
    trial = optuna.load_study(study_name="run", storage=url).trials[0]
    # per-epoch history, best-epoch results and both artifacts are stored
    assert len(trial.user_attrs["history"]) == 2 and set(trial.intermediate_values) == {0, 1}
    for key in ("best_epoch", "best", "test", "n_params", "device", "seconds", "config"):
        assert key in trial.user_attrs
    names = {m.filename for m in optuna.artifacts.get_all_artifact_meta(trial, storage=optuna.load_study(
        study_name="run", storage=url)._storage)}
    assert names == {"checkpoint.pt", "predictions.npz"}
    assert (tmp_path / "s-artifacts").is_dir()
    assert best_command("run", url)["value"] == pytest.approx(max(t.value for t in optuna.load_study(
        study_name="run", storage=url).trials))


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("workers", [2, 4])
def test_concurrent_workers_finish_exactly_the_budget(pg_url: str, tmp_path: Path, workers: int) -> None:
    # nine points for a budget of six: a spent discrete space would stop the study early
    space = {"parameters": {**TINY_SPACE["parameters"], "model.num_layers": {"choices": [1, 2, 3]},
                            "optimizer.lr": {"choices": [1e-3, 3e-3, 1e-2]}}}
    create_study_command("par", pg_url, {**TINY, "space": space, "epochs": 1, "n_trials": 6, "sampler": "random",
                                         "artifacts": str(tmp_path / "art")})
    env = {"TORCHCELL_SEARCH_STORAGE": pg_url}
    procs = [subprocess.Popen([sys.executable, "-m", "torchcell_search.cli", "worker", "--study", "par"],
                              env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    trials = optuna.load_study(study_name="par", storage=pg_url).trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                and "duplicate_of" not in t.user_attrs]  # a repeated draw is answered, not trained
    # exactly the budget finished, every trial number once
    assert len(finished) == 6
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    # any extra trial lost the race for the last slot and never trained
    for t in trials:
        if t.state == TrialState.FAIL:
            assert t.user_attrs.get("stopped_reason") == "over_budget"


# --- multi-objective studies ----------------------------------------------------------------


def test_objectives_take_a_direction_each() -> None:
    cfg = build_study_config({"objective": ["val/fitness/MSE", "val/gene_interaction/Pearson"]})
    # directions follow each name; pruning is off: Optuna does not prune multi-objective studies
    assert cfg.objective_directions == ["minimize", "maximize"] and cfg.pruner == "none"
    assert (cfg.objective, cfg.direction) == ("val/fitness/MSE", "minimize")
    cfg = build_study_config({"objective": ["val/combined/MSE", "val/combined/Pearson"],
                              "direction": ["minimize", "minimize"]})
    assert cfg.objective_directions == ["minimize", "minimize"]
    with pytest.raises(ConfigError, match="2 directions for 3 objectives"):
        build_study_config({"objective": ["val/fitness/MSE", "val/combined/MSE", "val/loss"],
                            "direction": ["minimize", "minimize"]})
    # a single objective is stored as before (old studies compare equal on resume)
    single = build_study_config({"objective": ["val/fitness/MSE"]})
    assert (single.objectives, single.directions) == ([], [])


def test_old_stored_configurations_read_as_one_objective() -> None:
    from torchcell_search.search.study_config import StudyConfig

    stored = {k: v for k, v in build_study_config({}).to_dict().items()
              if k not in ("objectives", "directions", "launcher", "pruner_min_resource", "pruner_reduction_factor")}
    cfg = StudyConfig.from_dict(stored)
    assert cfg.objective_names == [cfg.objective] and not cfg.is_multi_objective


def test_cli_two_objectives_notice_pruning_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mo.db'}"
    r = _cli("create", "--study", "mo", "--storage", url, "--objective", "val/combined/MSE",
             "--objective", "val/combined/Pearson")
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stderr.splitlines() if line.startswith("torchcell-search: note:")]
    assert len(notes) == 1 and "does not prune" in notes[0]
    study = optuna.load_study(study_name="mo", storage=url)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    assert study.user_attrs[CONFIG_ATTR]["objectives"] == ["val/combined/MSE", "val/combined/Pearson"]


@pytest.mark.slow
def test_multi_objective_start_returns_the_pareto_set(tmp_path: Path) -> None:
    from torchcell_search.search.study import best_command, start_command

    url = f"sqlite:///{tmp_path / 's.db'}"
    objectives = ["val/fitness/MSE", "val/gene_interaction/Pearson"]
    # three points for three trials: a spent discrete space would stop the study early
    space = {"parameters": {**TINY_SPACE["parameters"], "model.num_layers": {"choices": [1, 2, 3]}}}
    status = start_command("mo", url, {**TINY, "space": space, "epochs": 1, "n_trials": 3, "sampler": "random",
                                       "objective": objectives}, jobs=1)
    study = optuna.load_study(study_name="mo", storage=url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    # a repeated draw is answered from its twin (duplicate_of), not trained: three trained trials
    assert len([t for t in complete if "duplicate_of" not in t.user_attrs]) == 3
    # each trial holds one value per objective: the metrics at its best epoch; nothing is pruned
    for t in complete:
        assert t.values == [t.user_attrs["best"][o] for o in objectives] and not t.intermediate_values
    best = best_command("mo", url)
    # the Pareto set is Optuna's own
    assert [row["number"] for row in best["pareto"]] == sorted(t.number for t in study.best_trials)
    assert best["objectives"] == objectives and status["best"] is None
    assert "Pareto set (*)" in format_status(status)


def test_start_without_jobs_runs_a_worker_per_usable_core_never_more_than_trials_left() -> None:
    from torchcell_search.search.study import default_jobs

    cores = len(os.sched_getaffinity(0))
    # one worker per core this process may use (taskset, cgroups, a Slurm allocation) ...
    assert default_jobs(10_000) == cores
    # ... never more workers than trials left, and at least one
    assert default_jobs(1) == 1 and default_jobs(0) == 1
    assert default_jobs(cores + 1) == cores


def test_default_jobs_follow_the_cpu_affinity_mask() -> None:
    from torchcell_search.search.study import default_jobs

    # A child restricted to one core (as `taskset -c 0` or a one-CPU Slurm task) runs one worker.
    code = "import os; os.sched_setaffinity(0, {0}); from torchcell_search.search.study import default_jobs; " \
           "print(default_jobs(8))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "1"
