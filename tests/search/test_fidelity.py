"""Data size as a fidelity: the ladder's grammar, nested rungs, the rung pruner, the rank
correlation between rungs, and a real fidelity study read by Optuna's own tools."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from torchcell_search.data.types import Split
from torchcell_search.errors import ConfigError
from torchcell_search.search.fidelity import (
    RungPruner,
    load_matching_weights,
    parse_fidelity,
    rank_correlations,
    resolve_rungs,
    rung_split,
)
from torchcell_search.search.study import build_study_config, format_status, start_command, status_command

TINY_SPACE = {"parameters": {
    "model.num_layers": 1, "optimizer.lr": {"choices": [1e-4, 1e-3, 3e-3, 1e-2]},
    "model.hidden_channels": 8, "heads": 1, "cell_dataset.learnable_embedding_input_channels": 8,
    "model.prediction_head_config.hidden_channels": 8, "model.pooling": "attentional",
}}
#: A fidelity study of a tiny model on 400 demo records: rungs of 60, 150 and all train records.
TINY_FIDELITY = {"space": TINY_SPACE, "subset": 400, "epochs": 2, "device": "cpu", "sampler": "random",
                 "overrides": {"data_module.batch_size": 64}, "fidelity": "subset:60,150,all", "n_trials": 6,
                 "fidelity_start": "warm"}  # the reliability test runs the default, scratch


@pytest.mark.parametrize(("given", "canonical"), [
    ("subset:25000,100000,all", "subset:25000,100000,all"),
    ("subset:2.5e4, 1e5, 4e5", "subset:25000,100000,400000"),  # TorchCell's file-name sizes
    ("subset:10,all", "subset:10,all"),
])
def test_ladder_is_parsed_to_one_canonical_form(given: str, canonical: str) -> None:
    assert parse_fidelity(given) == canonical


@pytest.mark.parametrize(("given", "match"), [
    ("25000,100000", "expected subset:"),
    ("subset:100000,25000", "must increase"),
    ("subset:all,100", "not a record count"),
    ("subset:1000", "at least two rungs"),
    ("subset:0,10", "positive whole number"),
    ("subset:1.5,10", "positive whole number"),
])
def test_bad_ladders_name_the_value_and_the_problem(given: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_fidelity(given)


def test_rungs_clip_to_the_train_set_and_never_repeat() -> None:
    assert resolve_rungs("subset:200,600,all", 900) == [200, 600, 900]
    # a rung beyond the train set is the whole train set, once
    assert resolve_rungs("subset:200,1000,5000", 900) == [200, 900]


def test_rung_splits_are_nested_seeded_subsets_of_train_and_leave_val_test_whole() -> None:
    split = Split(kind="pair", seed=0, train=torch.arange(100, 400), val=torch.arange(0, 50),
                  test=torch.arange(50, 100))
    small, large = rung_split(split, 30, seed=0), rung_split(split, 120, seed=0)
    assert len(small.train) == 30 and len(large.train) == 120
    assert set(small.train.tolist()) <= set(large.train.tolist()) <= set(split.train.tolist())
    assert torch.equal(small.val, split.val) and torch.equal(large.test, split.test)
    assert torch.equal(rung_split(split, 30, seed=0).train, small.train)
    assert not torch.equal(rung_split(split, 30, seed=1).train, small.train)
    assert rung_split(split, 300, seed=0) is split


def test_warm_start_copies_learned_parameters_not_data_buffers() -> None:
    source, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    source.register_buffer("profile_tables", torch.ones(4))
    target.register_buffer("profile_tables", torch.zeros(4))
    other = torch.nn.Linear(5, 2)  # another shape: left as built
    assert load_matching_weights(target, source.state_dict()) == 2
    assert torch.equal(target.weight, source.weight) and torch.equal(target.profile_tables, torch.zeros(4))
    assert load_matching_weights(other, source.state_dict()) == 1  # the bias only


def _report(study: optuna.Study, values: dict[int, float]) -> optuna.trial.FrozenTrial:
    """A finished trial that reported ``values`` (step -> value); pruned unless it reached step 900."""
    trial = study.ask()
    for step, value in values.items():
        trial.report(value, step)
    state = TrialState.COMPLETE if 900 in values else TrialState.PRUNED
    study.tell(trial, values[max(values)] if state == TrialState.COMPLETE else None, state=state)
    return study.trials[-1]


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_rung_pruner_keeps_the_best_third_of_the_trials_at_a_rung(direction: str) -> None:
    sign = 1.0 if direction == "maximize" else -1.0
    study = optuna.create_study(direction=direction, pruner=RungPruner(3))
    pruner = RungPruner(3)
    first = study.ask()
    first.report(sign * 0.1, 200)
    # the first trial at a rung is the best of one: promoted (asynchronous successive halving)
    assert not pruner.prune(study, study.trials[-1])
    study.tell(first, state=TrialState.PRUNED)
    for value in (0.2, 0.3, 0.4, 0.5):
        _report(study, {200: sign * value})
    # six values at the rung: the best two go on; a worse one stops
    better, worse = study.ask(), study.ask()
    better.report(sign * 0.45, 200)
    assert not pruner.prune(study, study.trials[better.number])
    worse.report(sign * 0.35, 200)
    assert pruner.prune(study, study.trials[worse.number])
    nan = study.ask()
    nan.report(math.nan, 200)
    assert pruner.prune(study, study.trials[nan.number])


def test_rank_correlation_between_rungs_and_its_warning() -> None:
    study = optuna.create_study(direction="maximize")
    # rung 200 ranks the trials in reverse of rung 600; rung 600 ranks them as the full data does
    for i in range(4):
        _report(study, {200: 0.4 - 0.1 * i, 600: 0.1 * i, 900: 0.2 * i})
    _report(study, {200: 0.9})  # pruned at the first rung: counts there only
    summary = rank_correlations(study.trials)
    assert summary["rungs"] == [{"records": 200, "trials": 5}, {"records": 600, "trials": 4},
                                {"records": 900, "trials": 4}]
    pairs = {(p["from"], p["to"]): p for p in summary["pairs"]}
    assert pairs[(200, 600)]["rho"] == pytest.approx(-1.0) and pairs[(200, 600)]["warning"]
    assert pairs[(200, 600)]["n"] == 4
    assert pairs[(600, 900)]["rho"] == pytest.approx(1.0) and not pairs[(600, 900)]["warning"]
    two = optuna.create_study(direction="maximize")
    for i in range(2):
        _report(two, {200: float(i), 600: float(i)})
    assert rank_correlations(two.trials)["pairs"][0] == {"from": 200, "to": 600, "rho": None, "n": 2,
                                                          "warning": False}


def test_fidelity_options_are_validated_and_exclude_several_objectives() -> None:
    cfg = build_study_config({"fidelity": "subset:2.5e4,1e5,all"})
    assert (cfg.fidelity, cfg.fidelity_eta, cfg.fidelity_start) == ("subset:25000,100000,all", 3, "scratch")
    with pytest.raises(ConfigError, match="--fidelity-eta"):
        build_study_config({"fidelity": "subset:10,all", "fidelity_eta": 1})
    with pytest.raises(ConfigError, match="--fidelity-start 'hot'"):
        build_study_config({"fidelity": "subset:10,all", "fidelity_start": "hot"})
    with pytest.raises(ConfigError, match="single-objective"):
        build_study_config({"fidelity": "subset:10,all", "objective": ["val/fitness/MSE", "val/loss"]})


def test_cli_bad_ladder_exits_2_with_one_line(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    out = subprocess.run([sys.executable, "-m", "torchcell_search.cli", "create", "--study", "f", "--storage",
                          f"sqlite:///{db}", "--fidelity", "subset:100,50"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert "--fidelity 'subset:100,50'" in out.stderr and not db.exists()


# --- a ladder from TorchCell's file family (one file per data size) -------------------------------

_CONF = Path(__file__).resolve().parents[3] / "shared" / "reference" / "torchcell-conf"
_SWEEP = "igb_optuna-hetero_cell-sweep_2.5e4.yaml"
# TorchCell's own 4e5 sibling (experiment 003, commit 99f150e) searches only the depth: the
# space was narrowed after the 2.5e4 sweep was read.
_NARROWED = "      model.num_layers: choice(2, 3)\n"


@pytest.fixture()
def family(tmp_path: Path) -> Path:
    """TorchCell's real Hydra sweep and its base configs, with same-space siblings at 1e5 and 4e5."""
    if not (_CONF / _SWEEP).is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"TorchCell's configs are missing at {_CONF}")
        pytest.skip(f"TorchCell's configs not found at {_CONF}")
    for name in ("default.yaml", "hetero_cell.yaml", _SWEEP):
        shutil.copy(_CONF / name, tmp_path / name)
    for size in ("1e5", "4e5"):
        shutil.copy(_CONF / _SWEEP, tmp_path / _SWEEP.replace("2.5e4", size))
    (tmp_path / _SWEEP.replace("2.5e4", "2.5e4_00")).write_text("not: [a member")  # another variant, unread
    return tmp_path


def test_a_file_family_of_one_space_is_a_ladder_of_its_sizes(family: Path) -> None:
    given = {"space": str(family / _SWEEP.replace("2.5e4", "1e5")), "fidelity": "family",
             "objective": "val/gene_interaction/Pearson", "data": str(family)}  # real data: a file subset would apply
    cfg = build_study_config(given)
    # TorchCell's sizes count records before its 80/10/10 split, rungs count train records; the
    # study takes all records (the base config's subset of 25000 is dropped), so a rung above the
    # train set (4e5 on the 350k mirror) trains on all of it instead of failing the subset draw
    assert (cfg.fidelity, cfg.subset) == ("subset:20000,80000,320000", None)
    assert cfg.n_trials == 112 and cfg.launcher["mem_gb"] == 100
    from torchcell_search.search.study import _given_options

    _, notices = _given_options(given)
    (line,) = [n for n in notices if "data-size ladder" in n]
    assert "sweep_2.5e4.yaml (25000 records: 20000 train)" in line and "sweep_4e5.yaml (400000 records: 320000 " \
                                                                         "train)" in line
    assert resolve_rungs(cfg.fidelity, 280237) == [20000, 80000, 280237]  # the mirror's pair split


def test_a_narrowed_sibling_or_a_contradicting_size_is_no_ladder(family: Path) -> None:
    base = {"fidelity": "family", "objective": "val/gene_interaction/Pearson", "space": str(family / _SWEEP)}
    text = (family / _SWEEP).read_text()
    params = text[text.index("    params:\n") + len("    params:\n"):text.index("\n  launcher:")]
    (family / _SWEEP.replace("2.5e4", "4e5")).write_text(text.replace(params, _NARROWED))
    with pytest.raises(ConfigError, match=r"sweep_2\.5e4\.yaml and igb_optuna-hetero_cell-sweep_4e5\.yaml differ "
                                          r"beyond the data size \(cell_dataset\.learnable_embedding_input_channels: "
                                          r"\[16, 32, 64\] vs fixed 16\)"):
        build_study_config(base)
    (family / _SWEEP.replace("2.5e4", "4e5")).unlink()
    # the base config's subset (hetero_cell.yaml: 25000) yields to a member's name, its own does not
    (family / _SWEEP.replace("2.5e4", "1e5")).write_text(text + "\ndata_module:\n  perturbation_subset_size: 25000\n")
    with pytest.raises(ConfigError, match="its name says 100000 records, its data_module.perturbation_subset_size "
                                          "says 25000"):
        build_study_config(base)
    (family / _SWEEP.replace("2.5e4", "1e05")).write_text(text)
    with pytest.raises(ConfigError, match="are both 100000 records"):
        build_study_config(base)
    for name in (_SWEEP.replace("2.5e4", "1e5"), _SWEEP.replace("2.5e4", "1e05")):
        (family / name).unlink()
    with pytest.raises(ConfigError, match="has no sibling of another size"):
        build_study_config(base)
    with pytest.raises(ConfigError, match="has no size tag"):
        build_study_config({**base, "space": str(family / "hetero_cell.yaml")})
    with pytest.raises(ConfigError, match="give --space FILE"):
        build_study_config({"fidelity": "family"})


def test_cli_family_without_a_ladder_exits_2_with_one_line(family: Path) -> None:
    (family / _SWEEP.replace("2.5e4", "4e5")).write_text((family / _SWEEP).read_text().replace(
        "n_jobs: 4", "n_jobs: 2"))  # same space, another launcher: still one ladder
    db = family / "s.db"
    (family / _SWEEP.replace("2.5e4", "1e5")).write_text("defaults:\n  - hetero_cell\n  - _self_\nhydra:\n  sweeper:\n"
                                                         "    params:\n" + _NARROWED)
    out = subprocess.run([sys.executable, "-m", "torchcell_search.cli", "create", "--study", "f", "--storage",
                          f"sqlite:///{db}", "--space", str(family / _SWEEP), "--fidelity", "family",
                          "--objective", "val/gene_interaction/Pearson"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0, out.stderr
    assert "differ beyond the data size" in out.stderr and not db.exists()


@pytest.fixture(scope="module")
def fidelity_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A finished fidelity study: 6 trials on rungs of 60, 150 and 280 train records."""
    db = tmp_path_factory.mktemp("fidelity") / "f.db"
    url = f"sqlite:///{db}"
    start_command("fid", url, TINY_FIDELITY, jobs=1)
    return url, db


@pytest.mark.slow
def test_fidelity_study_promotes_by_rung_and_records_every_rung(fidelity_study: tuple[str, Path]) -> None:
    url, _ = fidelity_study
    trials = optuna.load_study(study_name="fid", storage=url).trials
    assert len(trials) == 6 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    steps = sorted({s for t in trials for s in t.intermediate_values})
    assert steps[:2] == [60, 150] and len(steps) <= 3
    for t in trials:
        rungs = t.user_attrs["rungs"]
        # the steps reported are the rungs' train-record counts, in order, with the rung values
        assert [r["records"] for r in rungs][:len(t.intermediate_values)] == sorted(t.intermediate_values)
        assert all(t.intermediate_values[r["records"]] == r["value"] for r in rungs if r["records"] in
                   t.intermediate_values)
        if t.state == TrialState.PRUNED:
            assert t.user_attrs["stopped_reason"].startswith(f"pruned at rung {len(rungs) - 1} ")
            assert len(rungs) < 3
        else:  # a complete trial trained on every rung; its value is the last rung's
            assert len(rungs) == 3 and t.value == rungs[-1]["value"]
            assert {h["rung"] for h in t.user_attrs["history"]} == {0, 1, 2}
    # trial 0 is the first at every rung, so it is promoted to the end; some trial is pruned
    assert trials[0].state == TrialState.COMPLETE
    assert any(t.state == TrialState.PRUNED for t in trials)


@pytest.mark.slow
def test_status_shows_rungs_and_rank_correlation(fidelity_study: tuple[str, Path]) -> None:
    url, _ = fidelity_study
    status = status_command("fid", url)
    fid = status["fidelity"]
    assert fid["ladder"] == "subset:60,150,all" and fid["eta"] == 3
    assert fid["rungs"][0] == {"records": 60, "trials": 6}
    assert json.loads(json.dumps(status, allow_nan=False))  # strict JSON: no NaN
    text = format_status(status)
    assert "rungs (train records): 60 (6 trials) -> 150" in text
    assert "rank correlation 60 -> 150 records: Spearman" in text
    assert status["best"]["rungs"][-1]["records"] == fid["rungs"][-1]["records"]


@pytest.mark.slow
def test_optuna_cli_and_dashboard_read_the_fidelity_study(fidelity_study: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = fidelity_study
    optuna_cli = Path(sys.executable).with_name("optuna")
    out = subprocess.run([str(optuna_cli) if optuna_cli.exists() else shutil.which("optuna"), "trials",
                          "--study-name", "fid", "--storage", url, "-f", "json"],
                         capture_output=True, text=True, timeout=120, env={**os.environ})
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout)
    trials = optuna.load_study(study_name="fid", storage=url).trials
    assert [r["state"] for r in rows] == [t.state.name for t in trials]

    from torchcell_search.dashboards.integration import refresh_dashboard, stored_figures
    from torchcell_search.dashboards.report import report_command

    study = optuna.load_study(study_name="fid", storage=url)
    refresh_dashboard(study)
    figure = stored_figures(study)["torchcell-fidelity"]
    assert "60 -> 150" in json.dumps(figure["layout"])
    html = report_command("fid", url, out=tmp_path / "r.html").read_text()
    assert "id='fidelity-pairs'" in html and "<td class='num'>60</td><td class='num'>150</td>" in html
