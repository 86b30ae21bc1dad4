"""Sweep files as researchers wrote them: TorchCell's real Hydra and W&B files, the Hydra
defaults chain and sweep grammar (hydra-core's own parser), every W&B distribution, the
notice line for unused keys and the refusal of keys that would change the model."""

from __future__ import annotations

import math
import os
from pathlib import Path

import optuna
import pytest
import yaml

from torchcell_search.errors import ConfigError
from torchcell_search.search.pruners import WandbHyperbandPruner
from torchcell_search.search.spaces import Choice, Fixed, Quantile, Range, SearchSpace
from torchcell_search.search.sweep_files import TORCHCELL_OBJECTIVES, read_sweep_file

TORCHCELL_CONF = Path(__file__).resolve().parents[3] / "shared" / "reference" / "torchcell-conf"
HYDRA_SWEEP = "igb_optuna-hetero_cell-sweep_2.5e4.yaml"
WANDB_SWEEP = "delta_wandb-hetero_cell-sweep_2.5e4.yaml"


@pytest.fixture(scope="module")
def conf() -> Path:
    """TorchCell's real config folder (read-only, never copied into the repository)."""
    if not (TORCHCELL_CONF / HYDRA_SWEEP).is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"TorchCell's configs are missing at {TORCHCELL_CONF}")
        pytest.skip(f"TorchCell's configs not found at {TORCHCELL_CONF}")
    return TORCHCELL_CONF


def _sample(space: SearchSpace, n: int = 30, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.suggest(study.ask()) for _ in range(n)]


# --- TorchCell's own files ------------------------------------------------------------------


def test_every_torchcell_file_is_read(conf: Path) -> None:
    files = sorted(conf.glob("*.yaml"))
    assert len(files) >= 5
    for path in files:
        sweep = read_sweep_file(path)
        # every value the space holds is one of our keys, and it survives the study's storage
        assert SearchSpace.from_dict(sweep.space.to_dict()).params == sweep.space.params


def test_hydra_optuna_sweep_is_the_whole_run(conf: Path) -> None:
    sweep = read_sweep_file(conf / HYDRA_SWEEP)
    p, o = sweep.space.params, sweep.options
    assert sweep.format == "hydra"
    # the sweep grammar, parsed by hydra-core, in each parameter's own type
    assert p["heads"] == Choice((1, 5, 10))
    assert p["model.num_layers"] == Choice((2, 3, 5, 6))  # written "choice (2, 3, 5, 6)"
    assert p["regression_task.lambda_dist"] == Choice((0.0, 1e-3, 1e-2, 1e-1, 1.0, 1.5, 2.0))
    assert p["model.prediction_head_config.residual"] == Choice((True, False))
    # norms: ${norms} reaches model.norm and head_norm: one sampled value sets both
    assert p["model.norm"] == Choice(("layer", "batch"))
    assert sweep.space.links["model.norm"] == ("model.prediction_head_config.head_norm",)
    for values in _sample(sweep.space):
        assert values["model.norm"] == values["model.prediction_head_config.head_norm"]
    # fixed values of hetero_cell.yaml, reached through the defaults chain
    assert p["model.hidden_channels"] == Choice((16, 32, 64))
    assert p["data_module.batch_size"] == Fixed(32)
    assert p["optimizer.weight_decay"] == Fixed(1e-9)
    assert p["trainer.grad_clip"] == Fixed(10.0)  # clip_grad_norm: true + clip_grad_norm_max_norm: 10.0
    assert p["trainer.lr_schedule"] == Fixed("plateau")  # ReduceLROnPlateau
    assert p["regression_task.lr_scheduler.factor"] == Fixed(0.2)
    # the study: epochs, subset, sampler and seed, two directions -> TorchCell's own two objectives
    assert (o["epochs"], o["subset"], o["n_trials"], o["sampler"], o["seed"]) == (20, 25000, 112, "tpe", 42)
    assert o["directions"] == ["minimize", "maximize"] and o["objectives"] == list(TORCHCELL_OBJECTIVES)
    assert o["launcher"] == {"partition": "mmli", "cpus_per_task": 12, "mem_gb": 100, "timeout_min": 10080,
                             "gres": "gpu:1", "n_jobs": 4}  # nodes 1, tasks_per_node 1: each array task
    # one notice line naming the machinery keys and the other machine's storage and study name
    (line,) = sweep.notices
    for key in ("wandb.*", "profiler.is_pytorch", "data_module.num_workers", "model.gene_num", "trainer.accelerator",
                "hydra.sweeper.storage", "hydra.sweeper.study_name", "hydra.launcher.submitit_folder",
                "regression_task.plot_sample_ceiling"):
        assert key in line, key
    assert "\n" not in line and "model.hidden_channels" not in line


def test_nested_wandb_sweep_is_the_whole_run(conf: Path) -> None:
    sweep = read_sweep_file(conf / WANDB_SWEEP)
    p, o = sweep.space.params, sweep.options
    assert sweep.format == "wandb" and sweep.space.sampler == "random"
    # three levels of parameters: blocks; 1e-5 (a string to YAML) read as a number
    assert p["optimizer.lr"] == Choice((1e-5, 1e-4, 1e-3))
    assert p["regression_task.lambda_supcr"] == Choice((0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0))
    # the three convolutions' heads (10 each) are our one heads setting
    assert p["heads"] == Fixed(10)
    assert p["model.prediction_head_config.head_num_layers"] == Fixed(2)
    assert p["optimizer.weight_decay"] == Fixed(1e-9)
    assert (o["epochs"], o["subset"]) == (60, 25000)  # perturbation_subset_size: 2.5e4
    (line,) = sweep.notices
    assert "program" in line and "command" in line and "profiler.is_pytorch" in line


def test_a_two_direction_file_makes_a_two_objective_study(conf: Path) -> None:
    from torchcell_search.search.study import build_study_config

    cfg = build_study_config({"space": str(conf / HYDRA_SWEEP)})
    assert cfg.objective_names == list(TORCHCELL_OBJECTIVES) and cfg.objective_directions == ["minimize", "maximize"]
    assert cfg.pruner == "none" and cfg.seed == 42 and cfg.epochs == 20
    # the demo data is smaller than the file's real-data subset: it keeps its own
    assert cfg.subset == 1200
    # flags win over the file
    cfg = build_study_config({"space": str(conf / HYDRA_SWEEP), "epochs": 2, "n_trials": 4,
                              "objective": ["val/fitness/MSE"]})
    assert (cfg.epochs, cfg.n_trials, cfg.objective_names, cfg.objective_directions) == (
        2, 4, ["val/fitness/MSE"], ["minimize"])


# --- Hydra: defaults chain, interpolation, sweep grammar -----------------------------------------


def _write(folder: Path, name: str, data: dict | str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(("defaults", "expected"), [
    (["base", "_self_"], 32),  # _self_ last: this file wins
    (["_self_", "base"], 16),  # _self_ first: the listed file wins
    (["base"], 32),  # no _self_: Hydra appends it
])
def test_defaults_chain_follows_self_order(tmp_path: Path, defaults: list, expected: int) -> None:
    _write(tmp_path, "base.yaml", {"model": {"hidden_channels": 16, "num_layers": 2}})
    path = _write(tmp_path, "run.yaml", {"defaults": defaults, "model": {"hidden_channels": 32}})
    p = read_sweep_file(path).space.params
    assert p["model.hidden_channels"] == Fixed(expected) and p["model.num_layers"] == Fixed(2)


def test_defaults_config_groups_and_plugin_selections(tmp_path: Path) -> None:
    _write(tmp_path, "model/small.yaml", {"hidden_channels": 8})
    path = _write(tmp_path, "run.yaml", {"defaults": [{"model": "small"}, {"override hydra/sweeper": "optuna"},
                                                      {"override hydra/launcher": "submitit_slurm"}, "_self_"],
                                         "model": {"num_layers": 1}})
    p = read_sweep_file(path).space.params
    # a group file lands under its group; hydra/* entries select plugins and are not files
    assert p["model.hidden_channels"] == Fixed(8) and p["model.num_layers"] == Fixed(1)


def test_override_replaces_a_group_choice_in_the_defaults_tree(tmp_path: Path) -> None:
    _write(tmp_path, "model/small.yaml", {"hidden_channels": 8})
    _write(tmp_path, "model/large.yaml", {"hidden_channels": 128})
    _write(tmp_path, "base.yaml", {"defaults": [{"model": "small"}, "_self_"], "model": {"num_layers": 2}})
    path = _write(tmp_path, "run.yaml", {"defaults": ["base", {"override model": "large"}, "_self_"]})
    assert read_sweep_file(path).space.params["model.hidden_channels"] == Fixed(128)
    # an override of a group nobody lists is refused, as Hydra refuses it
    path = _write(tmp_path, "bad.yaml", {"defaults": ["base", {"override optimizer": "adam"}, "_self_"]})
    with pytest.raises(ConfigError, match="override optimizer"):
        read_sweep_file(path)


def test_one_searched_placeholder_fans_out_through_interpolations(tmp_path: Path) -> None:
    _write(tmp_path, "base.yaml", {"heads": 2, "model": {
        "num_layers": 2, "gene_encoder_config": {"heads": "${heads}"}, "gpr_conv_config": {"heads": "${heads}"},
        "metabolism_config": {"heads": "${heads}"}, "global_aggregator_config": {"heads": "${heads}"}}})
    path = _write(tmp_path, "sweep.yaml", {"defaults": ["base", "_self_"], "hydra": {"sweeper": {
        "params": {"heads": "choice(1, 4)", "model.num_layers": "3"}}}})
    space = read_sweep_file(path).space
    assert space.params["heads"] == Choice((1, 4))
    assert space.links["heads"] == ("model.global_aggregator_config.heads",)
    # a fixed value in params overrides the config before interpolations resolve
    assert space.params["model.num_layers"] == Fixed(3)
    for values in _sample(space):
        assert values["heads"] == values["model.global_aggregator_config.heads"]


@pytest.mark.parametrize(("key", "sweep", "expected"), [
    # hydra-optuna-sweeper's create_optuna_distribution_from_override, case by case
    ("heads", "choice(1, 5, 10)", Choice((1, 5, 10))),
    ("optimizer.lr", "tag(log, interval(1e-6, 1))", Range(1e-6, 1.0, integer=False, log=True)),
    ("model.num_layers", "int(interval(1, 10))", Range(1, 10, integer=True)),
    ("model.num_layers", "range(1, 5)", Range(1, 5, integer=True)),
    ("model.dropout", "range(0.0, 0.5, step=0.1)", Range(0.0, 0.5, integer=False, step=0.1)),
    ("model.num_layers", "shuffle(range(1, 4))", Choice((1, 2, 3))),
    ("model.dropout", "interval(0, 0.5)", Range(0.0, 0.5, integer=False)),
])
def test_sweep_grammar_converts_like_the_optuna_sweeper(tmp_path: Path, key: str, sweep: str, expected) -> None:
    path = _write(tmp_path, "sweep.yaml", {"model": {"num_layers": 3, "dropout": 0.0}, "heads": 1,
                                           "optimizer": {"lr": 1e-3},
                                           "hydra": {"sweeper": {"params": {key: sweep}}}})
    assert read_sweep_file(path).space.params[key] == expected


# --- W&B: every distribution, early termination, run cap ------------------------------------------


@pytest.mark.parametrize(("spec", "check"), [
    ({"values": ["1e-3", "1e-2"]}, lambda v: v in (1e-3, 1e-2)),
    ({"value": "1e-3"}, lambda v: v == 1e-3),
    ({"distribution": "constant", "value": 0.5}, lambda v: v == 0.5),
    ({"distribution": "categorical_w_probabilities", "values": [0.1, 0.2], "probabilities": [0.5, 0.5]},
     lambda v: v in (0.1, 0.2)),
    ({"min": "1e-4", "max": "1e-2"}, lambda v: 1e-4 <= v <= 1e-2),
    ({"distribution": "uniform", "min": 0.1, "max": 0.2}, lambda v: 0.1 <= v <= 0.2),
    ({"distribution": "q_uniform", "min": 0.1, "max": 0.5, "q": 0.1}, lambda v: math.isclose(v * 10, round(v * 10))),
    ({"distribution": "log_uniform", "min": -9.2, "max": -4.6}, lambda v: math.exp(-9.2) <= v <= math.exp(-4.6)),
    ({"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}, lambda v: 1e-4 <= v <= 1e-2),
    ({"distribution": "inv_log_uniform", "min": 4.6, "max": 9.2}, lambda v: math.exp(-9.2) <= v <= math.exp(-4.6)),
    ({"distribution": "inv_log_uniform_values", "min": 1e-4, "max": 1e-2}, lambda v: 1e-4 <= v <= 1e-2),
    ({"distribution": "q_log_uniform_values", "min": 1e-4, "max": 1e-2, "q": 1e-4},
     lambda v: math.isclose(v / 1e-4, round(v / 1e-4))),
    ({"distribution": "log_normal", "mu": -6.9, "sigma": 0.5}, lambda v: v > 0),
    ({"distribution": "q_log_normal", "mu": -6.9, "sigma": 0.5, "q": 1e-4}, lambda v: v >= 0),
    ({"distribution": "normal", "mu": 0.01, "sigma": 0.001}, lambda v: 0.0 < v < 0.02),
    ({"distribution": "q_normal", "mu": 0.01, "sigma": 0.001, "q": 0.001}, lambda v: math.isclose(v * 1e3, round(v * 1e3))),
    ({"distribution": "beta", "a": 2, "b": 5}, lambda v: 0 < v < 1),
    ({"distribution": "q_beta", "a": 2, "b": 5, "q": 0.05}, lambda v: 0 <= v <= 1),
])
def test_every_wandb_distribution_samples_inside_its_law(tmp_path: Path, spec: dict, check) -> None:
    path = _write(tmp_path, "sweep.yaml", {"method": "random", "parameters": {
        "regression_task": {"parameters": {"optimizer": {"parameters": {"lr": spec}}}}}})
    space = read_sweep_file(path).space
    values = [v["optimizer.lr"] for v in _sample(space, n=40)]
    assert all(isinstance(v, float) and check(v) for v in values), values
    # the stored form reads back as the same parameter
    assert SearchSpace.from_dict(space.to_dict()).params == space.params


def test_quantised_log_sizes_are_integers_on_a_grid(tmp_path: Path) -> None:
    path = _write(tmp_path, "sweep.yaml", {"parameters": {"data_module.batch_size": {
        "distribution": "q_log_uniform_values", "min": 32, "max": 256, "q": 8}}})
    values = [v["data_module.batch_size"] for v in _sample(read_sweep_file(path).space, n=40)]
    assert all(isinstance(v, int) and v % 8 == 0 and 32 <= v <= 256 for v in values)
    assert isinstance(read_sweep_file(path).space.params["data_module.batch_size"], Range)


def test_normal_laws_are_sampled_through_their_quantile(tmp_path: Path) -> None:
    path = _write(tmp_path, "sweep.yaml", {"parameters": {"optimizer.lr": {
        "distribution": "log_normal", "mu": math.log(1e-3), "sigma": 1.0}}})
    space = read_sweep_file(path).space
    assert space.params["optimizer.lr"] == Quantile("log_normal", math.log(1e-3), 1.0, integer=False)
    # the median quantile is exp(mu)
    assert space.params["optimizer.lr"].value(0.5) == pytest.approx(1e-3)


def test_early_terminate_and_run_cap_become_the_pruner_and_budget(tmp_path: Path) -> None:
    path = _write(tmp_path, "sweep.yaml", {
        "method": "bayes", "metric": {"name": "val/transformed/combined/MSE", "goal": "minimize"},
        "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 3}, "run_cap": 7,
        "program": "train.py", "parameters": {"model": {"parameters": {"num_layers": {"values": [1, 2]}}}}})
    sweep = read_sweep_file(path)
    # W&B's defaults filled (schema.json hyperband_stopping: eta 3, strict true)
    assert sweep.options == {"pruner": "wandb_hyperband", "wandb_hyperband": {"min_iter": 2, "eta": 3, "strict": True},
                             "n_trials": 7}
    # TorchCell's logged name of the z-scored pooled labels is our val/combined/MSE
    assert sweep.space.metric == {"name": "val/combined/MSE", "goal": "minimize"}
    assert sweep.space.sampler == "tpe"
    from torchcell_search.search.study import _make_pruner, build_study_config

    pruner = _make_pruner(build_study_config({"space": str(path), "epochs": 9}))
    # min_iter bands: min_iter * eta**i (wandb/sweeps hyperband_stopping.py)
    assert isinstance(pruner, WandbHyperbandPruner) and pruner.bands[:3] == [2, 6, 18] and pruner.strict


# --- refusals: one line naming the file and the full dotted key --------------------------------------


def _hydra_with(**model: object) -> dict:
    return {"model": {"num_layers": 2, **model}}


@pytest.mark.parametrize(("files", "words"), [
    ({"run.yaml": _hydra_with(attention_pattern=["S", "M"])}, "model.attention_pattern"),
    ({"run.yaml": {"cell_dataset": {"incidence_graphs": ["metabolism_bipartite"]}}}, "cell_dataset.incidence_graphs"),
    ({"run.yaml": {"model": {"gene_encoder_config": {"heads": 5}, "gpr_conv_config": {"heads": 2}}}},
     "model.gpr_conv_config.heads"),
    ({"run.yaml": {"defaults": ["nowhere", "_self_"]}}, "nowhere"),
    ({"run.yaml": {"defaults": ["other"]}, "other.yaml": {"defaults": ["run"]}}, "cycle"),
    ({"run.yaml": {"model": {"norm": "${norms}"}}}, "model.norm"),
    ({"run.yaml": {**_hydra_with(), "hydra": {"sweeper": {"params": {"model.num_layers": "choice()"}}}}},
     "model.num_layers"),
    ({"run.yaml": {**_hydra_with(), "hydra": {"sweeper": {"params": {"model.num_layers": "interval(1,"}}}}},
     "model.num_layers"),
    ({"run.yaml": {**_hydra_with(norm="layer"), "hydra": {"sweeper": {"params": {"model.norm": "range(1, 3)"}}}}},
     "model.norm"),
    ({"run.yaml": {**_hydra_with(), "hydra": {"sweeper": {"sampler": {"_target_": "optuna.samplers.CmaEsSampler"},
                                                        "params": {}}}}}, "hydra.sweeper.sampler._target_"),
    ({"run.yaml": {"trainer": {"max_epochs": 5}, "hydra": {"sweeper": {"params": {
        "trainer.max_epochs": "choice(1, 2)"}}}}}, "trainer.max_epochs"),
    ({"run.yaml": {**_hydra_with(), "hydra": {"sweeper": {"params": {"model.no_such": "choice(1, 2)"}}}}},
     "model.no_such"),
    ({"run.yaml": {"model": {"no_such_option": 1}}}, "model.no_such_option"),
    ({"run.yaml": {"parameters": {"model": {"parameters": {"num_layers": {"value": 2}}}},
                   "early_terminate": {"type": "not_a_real_type"}}}, "early_terminate"),
    ({"run.yaml": {"parameters": {"model": {"parameters": {"dropout": {"distribution": "normal", "min": 0,
                                                                        "max": 1}}}}}}, "model.dropout"),
])
def test_bad_sweep_files_are_refused_naming_file_and_key(tmp_path: Path, files: dict, words: str) -> None:
    for name, data in files.items():
        _write(tmp_path, name, data)
    with pytest.raises(ConfigError) as info:
        read_sweep_file(tmp_path / "run.yaml")
    message = str(info.value)
    assert str(tmp_path / "run.yaml") in message and words in message and "\n" not in message


def _file_keys(data: object, prefix: str = "") -> list[str]:
    """Dotted leaf keys of a YAML file, W&B ``parameters:`` blocks unwrapped."""
    if isinstance(data, dict):
        if "parameters" in data and isinstance(data["parameters"], dict) and not prefix:
            return _file_keys(data["parameters"]) + [k for k in data if k != "parameters"]
        if set(data) == {"parameters"} or set(data) & {"value", "values", "min", "max"}:
            return _file_keys(data.get("parameters"), prefix) if "parameters" in data else [prefix[:-1]]
        return [k for key, value in data.items() for k in _file_keys(value, f"{prefix}{key}.")]
    return [prefix[:-1]] if prefix else []


def test_every_key_of_torchcell_files_is_in_the_docs_and_the_table(conf: Path) -> None:
    from torchcell_search.config import parameter_keys
    from torchcell_search.search.sweep_files import _rule

    doc = (Path(__file__).resolve().parents[2] / "docs" / "torchcell-keys.md").read_text()
    for path in sorted(conf.glob("*.yaml")):
        for key in _file_keys(yaml.safe_load(path.read_text())):
            key = key.removeprefix("hydra.sweeper.params.")  # a searched run key
            last = key.rsplit(".", 1)[-1]
            # every key is documented, and the run keys are in the mapping table
            section = key.split(".", 1)[0]
            assert f"`{key}`" in doc or f"`{last}`" in doc or f"`{section}.*`" in doc, (path.name, key)
            if not key.startswith(("hydra.", "defaults")) and key not in ("program", "project", "method", "command"):
                assert _rule(key) is not None or key in parameter_keys(), (path.name, key)


_PMA_SWEEP = (
    "defaults:\n  - hetero_cell_isab\n  - override hydra/sweeper: optuna\n"
    "  - override hydra/launcher: submitit_slurm\n  - _self_\n"
    "hydra:\n  sweeper:\n    sampler:\n      _target_: optuna.samplers.TPESampler\n      seed: 42\n"
    "    direction: [\"minimize\", \"maximize\"]\n    n_trials: 100\n    n_jobs: 4\n    params:\n"
    "      model.num_layers: choice(2, 3, 4, 5)\n"
    "      regression_task.lambda_dist: tag(log, interval(1e-6, 1))\n"
    "      heads: choice(4, 8)\n")


def test_a_family_sweep_over_another_base_config(conf: Path, tmp_path: Path) -> None:
    # TorchCell's PMA sweep lists hetero_cell_isab as its base and runs with the PMA script
    # (its name says so): the model is one PMA block, whatever the base's aggregator keys say.
    for name in ("default.yaml", "hetero_cell_isab.yaml"):
        (tmp_path / name).write_text((conf / name).read_text())
    path = _write(tmp_path, "igb_optuna-hetero_cell_pma-sweep_2.5e4.yaml", _PMA_SWEEP)
    sweep = read_sweep_file(path)
    p = sweep.space.params
    assert p["regression_task.lambda_dist"] == Range(1e-6, 1.0, integer=False, log=True)
    assert p["model.pooling"] == Fixed("pma") and p["model.global_aggregator_config.layer_norm"] == Fixed(True)
    # ${heads} reaches the pooling's heads too: one sampled value for both settings
    assert sweep.space.links["heads"] == ("model.global_aggregator_config.heads",)
    # the ISAB keys of the base are not read by TorchCell's PMA model: dropped and named
    assert "model.global_aggregator_config.num_induced_points" not in p
    (line,) = [n for n in sweep.notices if "hetero_cell_pma script" in n]
    assert "model.global_aggregator_config.num_induced_points" in line and "use_isab" in line
    assert (sweep.options["epochs"], sweep.options["n_trials"]) == (300, 100)
    # searching a key that model does not read is refused, naming it
    _write(tmp_path, "igb_optuna-hetero_cell_pma-sweep_2.5e4.yaml",
           _PMA_SWEEP + "      model.global_aggregator_config.use_isab: choice(false, true)\n")
    with pytest.raises(ConfigError, match="model.global_aggregator_config.use_isab: searched, but TorchCell's "
                                          "hetero_cell_pma model does not read it"):
        read_sweep_file(path)


# --- the rest of TorchCell's family (synthetic files shaped like its later configs) ---------------

_BASE_RUN = {"defaults": ["_self_"], "heads": 4, "model": {"num_layers": 2, "gene_encoder_config": {
    "heads": "${heads}"}}, "regression_task": {"lambda_dist": 0.1}}


def _family_run(**sections: object) -> dict:
    """A HeteroCell run config like TorchCell's, with ``sections`` merged in (dotted keys nest)."""
    import copy

    data = copy.deepcopy(_BASE_RUN)
    for dotted, value in sections.items():
        node = data
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return data


@pytest.mark.parametrize(("extra", "unused"), [
    # machinery of later TorchCell scripts: named once in the notice line, the run unchanged
    ({"compile_mode": "max-autotune"}, "compile_mode (torch.compile mode"),
    ({"job": {"chdir": True}}, "job.chdir (Hydra job settings written outside hydra:"),
    ({"profiler": {"enabled": False, "is_pytorch": True}}, "profiler.* (TorchCell never reads it)"),
    ({"data_module": {"prefetch_factor": 2, "persistent_workers": True, "num_workers": 6}},
     "data_module.num_workers, data_module.persistent_workers, data_module.prefetch_factor (data loading"),
    ({"trainer": {"log_every_n_steps": 10, "log_grad_norm": True}}, "trainer.log_every_n_steps, trainer.log_grad_norm"),
    ({"trainer": {"enable_progress_bar": False, "num_sanity_val_steps": 0}},
     "trainer.enable_progress_bar, trainer.num_sanity_val_steps (Lightning's"),
    ({"regression_task__plot_every_n_epochs": 2}, "regression_task.plot_every_n_epochs (TorchCell's plots"),
    # settings of an option that is off: no effect, so not used
    ({"model__gene_encoder_config__encoder_type": "gatv2", "model__gene_encoder_config__gin_num_layers": 4},
     "model.gene_encoder_config.gin_num_layers (GIN settings; the encoder is GATv2)"),
    ({"model__gene_encoder_config__graph_aggregation_method": "sum",
      "model__gene_encoder_config__graph_aggregation_config": {"dropout": 0.1}},
     "model.gene_encoder_config.graph_aggregation_config.dropout (settings of TorchCell's other graph"),
])
def test_family_machinery_keys_are_named_not_used(tmp_path: Path, extra: dict, unused: str) -> None:
    plain = read_sweep_file(_write(tmp_path / "plain", "run.yaml", _family_run()))
    sweep = read_sweep_file(_write(tmp_path / "family", "run.yaml", _family_run(**extra)))
    (line,) = [n for n in sweep.notices if "not used here" in n]
    assert unused in line and line.startswith(str(tmp_path / "family" / "run.yaml"))
    # the keys change nothing: the same space and options as the file without them
    assert sweep.space.to_dict() == plain.space.to_dict() and sweep.options == plain.options


@pytest.mark.parametrize(("extra", "key", "why"), [
    # later TorchCell models and losses: refused with the full dotted key and the reason
    ({"model__local_predictor_config": {"num_heads": 4}}, "model.local_predictor_config.num_heads", "Dango"),
    ({"model__gene_encoder_config__encoder_type": "gin"}, "model.gene_encoder_config.encoder_type", "GIN"),
    ({"model__gpr_conv_config": {"encoder_type": "gatv2", "gin_num_layers": 4},
      "model__metabolism_config": {"encoder_type": "gin"}}, "model.metabolism_config.encoder_type", "GIN"),
    # a GIN setting without its encoder type: TorchCell's default may be GIN, so not assumed away
    ({"model__gpr_conv_config__gin_num_layers": 4}, "model.gpr_conv_config.gin_num_layers", "encoder_type is not given"),
    ({"model__gene_encoder_config__graph_aggregation_method": "pairwise_interaction"},
     "model.gene_encoder_config.graph_aggregation_method", "sums"),
    ({"model__gene_encoder_config__graph_aggregation_config": {"pairwise_hidden_dim": 8}},
     "model.gene_encoder_config.graph_aggregation_config.pairwise_hidden_dim", "not implemented"),
    ({"regression_task__loss": "logcosh"}, "regression_task.loss", "MSE + lambda_dist"),
    ({"regression_task__loss_config": {"buffer_size": 344}}, "regression_task.loss_config.buffer_size", "loss"),
    ({"regression_task__lambda_wasserstein": 0.1}, "regression_task.lambda_wasserstein", "Wasserstein"),
    ({"regression_task__lambda_mse": 2.0}, "regression_task.lambda_mse", "weight 1"),
    ({"regression_task__lambda_cell": 0.5}, "regression_task.lambda_cell", "loss term"),
    ({"transforms": {"use_transforms": True}}, "transforms.use_transforms", "standardize_labels"),
    ({"model__brand_new_block": {"width": 3}}, "model.brand_new_block.width", "refused rather than ignored"),
    # one line under 300 characters: the key, close matches, where every key is listed
    ({"model__num_layer": 3}, "model.num_layer", "did you mean model.num_layers"),
])
def test_family_keys_that_change_the_model_are_refused(tmp_path: Path, extra: dict, key: str, why: str) -> None:
    path = _write(tmp_path, "run.yaml", _family_run(**extra))
    with pytest.raises(ConfigError) as info:
        read_sweep_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: ") and why in message and "\n" not in message


def test_family_loss_weights_at_our_values_are_accepted(tmp_path: Path) -> None:
    # lambda_mse 1 and lambda_wasserstein 0 are our loss exactly
    sweep = read_sweep_file(_write(tmp_path, "run.yaml", _family_run(
        regression_task__lambda_mse=1.0, regression_task__lambda_wasserstein=0)))
    assert sweep.space.params["regression_task.lambda_dist"] == Fixed(0.1)


def test_a_searched_model_key_of_another_family_is_refused_for_the_model_not_the_grammar(tmp_path: Path) -> None:
    # TorchCell's NSA sweep searches a choice of lists; the reason to refuse is the model key
    _write(tmp_path, "base.yaml", _family_run(model__attention_pattern=["S", "M"]))
    path = _write(tmp_path, "sweep.yaml", {"defaults": ["base", {"override hydra/sweeper": "optuna"}, "_self_"],
                                           "hydra": {"sweeper": {"params": {
                                               "model.attention_pattern": 'choice(["S", "M"], ["S", "M", "S"])'}}}})
    with pytest.raises(ConfigError) as info:
        read_sweep_file(path)
    assert str(info.value).startswith(f"{path}: model.attention_pattern: not supported") and "NSA" in str(info.value)


def test_every_rule_of_the_table_is_in_the_docs() -> None:
    from torchcell_search.search.sweep_files import _RULES

    doc = (Path(__file__).resolve().parents[2] / "docs" / "torchcell-keys.md").read_text()
    for pattern, _ in _RULES:
        last = pattern.rsplit(".", 1)[-1]
        section = pattern.split(".", 1)[0]
        assert any(f"`{name}`" in doc for name in (pattern, last, f"{section}.*")), pattern


# --- issue 20: every W&B / Hydra setting means what its tool defines ------------------------------


def _wandb_file(tmp_path: Path, params: dict, **top: object) -> Path:
    return _write(tmp_path, "sweep.yaml", {**top, "parameters": params})


@pytest.mark.parametrize(("settings", "bands"), [
    ({"max_iter": 27, "s": 2, "eta": 3}, [3, 9]),  # W&B's first band is at 3
    ({"max_iter": 81, "s": 3}, [3, 9, 27]),  # eta defaults to 3
    ({"max_iter": 5, "s": 2, "eta": 2}, [1, 2]),  # hyperband_stop_runs' docstring example
])
def test_hyperband_bands_are_wandbs(tmp_path: Path, settings: dict, bands: list) -> None:
    from torchcell_search.search.study import _make_pruner, build_study_config

    path = _wandb_file(tmp_path, {"heads": {"values": [1, 5]}}, metric={"name": "val/fitness/MSE"},
                       early_terminate={"type": "hyperband", **settings})
    pruner = _make_pruner(build_study_config({"space": str(path), "epochs": 30}))
    assert isinstance(pruner, WandbHyperbandPruner) and pruner.bands == bands and pruner.strict


def test_grid_without_run_cap_runs_every_grid_point(tmp_path: Path) -> None:
    from torchcell_search.search.study import build_study_config

    path = _wandb_file(tmp_path, {"model.num_layers": {"values": [2, 3, 4, 5, 6, 7]},
                                  "regression_task.lambda_dist": {"values": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}},
                       method="grid")
    # 6 x 7 = 42 points, not the default trial count (8 on the demo data)
    assert build_study_config({"space": str(path)}).n_trials == 42
    # int_uniform is range(min, max + 1), q_uniform np.arange(min, max, q) (wandb/sweeps grid_search.py)
    path = _wandb_file(tmp_path, {"model.num_layers": {"min": 2, "max": 4},
                                  "model.dropout": {"distribution": "q_uniform", "min": 0.0, "max": 0.3, "q": 0.1}},
                       method="grid")
    sweep = read_sweep_file(path)
    grid = sweep.space.grid()
    assert grid["model.num_layers"] == [2, 3, 4] and grid["model.dropout"] == pytest.approx([0.0, 0.1, 0.2])
    assert sweep.options["n_trials"] == 9
    # a grid over weighted values is refused, as W&B's grid refuses probabilities
    path = _wandb_file(tmp_path, {"model.norm": {"values": ["layer", "batch"], "probabilities": [0.5, 0.5]}},
                       method="grid")
    with pytest.raises(ConfigError, match="model.norm: weighted choices have no grid"):
        read_sweep_file(path)


def test_int_uniform_on_a_float_key_draws_integers(tmp_path: Path) -> None:
    path = _wandb_file(tmp_path, {"regression_task.lambda_dist": {"distribution": "int_uniform", "min": 0, "max": 3}})
    values = [v["regression_task.lambda_dist"] for v in _sample(read_sweep_file(path).space, n=40)]
    assert all(isinstance(v, float) and v.is_integer() for v in values) and set(values) == {0.0, 1.0, 2.0, 3.0}
    with pytest.raises(ConfigError, match="int_uniform takes integer min and max"):
        read_sweep_file(_wandb_file(tmp_path, {"model.dropout": {"distribution": "int_uniform", "min": 0.5, "max": 3}}))


def test_q_uniform_rounds_to_multiples_of_q_not_steps_from_min(tmp_path: Path) -> None:
    # W&B: round(uniform(min, max) / q) * q; 0.05 + k * 0.1 would never be a multiple of 0.1
    path = _wandb_file(tmp_path, {"model.dropout": {"distribution": "q_uniform", "min": 0.05, "max": 0.45, "q": 0.1},
                                  "data_module.batch_size": {"distribution": "q_uniform", "min": 10, "max": 70,
                                                             "q": 16}})
    samples = _sample(read_sweep_file(path).space, n=60)
    dropouts = [v["model.dropout"] for v in samples]
    assert all(math.isclose(d * 10, round(d * 10), abs_tol=1e-9) for d in dropouts)
    assert {round(d, 9) for d in dropouts} <= {0.0, 0.1, 0.2, 0.3, 0.4, 0.5}
    sizes = [v["data_module.batch_size"] for v in samples]
    assert all(isinstance(b, int) and b % 16 == 0 for b in sizes) and set(sizes) <= {16, 32, 48, 64}


def test_metric_without_goal_is_minimised_with_a_notice(tmp_path: Path) -> None:
    from torchcell_search.search.study import build_study_config

    path = _wandb_file(tmp_path, {"heads": {"values": [1, 5]}}, metric={"name": "val/gene_interaction/Pearson"})
    sweep = read_sweep_file(path)
    # schema.json: metric.goal defaults to minimize, even for a correlation
    assert sweep.space.metric["goal"] == "minimize"
    assert any("metric.goal not given" in n and "W&B's default" in n for n in sweep.notices)
    assert build_study_config({"space": str(path)}).direction == "minimize"


def test_categorical_w_probabilities_draws_with_the_weights(tmp_path: Path) -> None:
    path = _wandb_file(tmp_path, {"model.norm": {"values": ["layer", "batch"], "probabilities": [0.9, 0.1]}})
    space = read_sweep_file(path).space
    assert space.params["model.norm"] == Choice(("layer", "batch"), (0.9, 0.1))
    # W&B's ppf: values[argmin(u >= cumsum(p))]
    assert (space.params["model.norm"].pick(0.85), space.params["model.norm"].pick(0.95)) == ("layer", "batch")
    norms = [v["model.norm"] for v in _sample(space, n=300)]
    assert 0.8 < norms.count("layer") / len(norms) < 0.97
    # W&B's plain categorical takes no probabilities (schema additionalProperties: false)
    with pytest.raises(ConfigError, match="model.norm: W&B's categorical takes no probabilities"):
        read_sweep_file(_wandb_file(tmp_path, {"model.norm": {
            "distribution": "categorical", "values": ["layer", "batch"], "probabilities": [0.9, 0.1]}}))


def test_a_run_config_that_searches_nothing_makes_one_trial(conf: Path) -> None:
    from torchcell_search.search.study import build_study_config

    sweep = read_sweep_file(conf / "hetero_cell.yaml")
    assert sweep.options["n_trials"] == 1 and any("searches nothing: one trial" in n for n in sweep.notices)
    assert build_study_config({"space": str(conf / "hetero_cell.yaml")}).n_trials == 1
    # a flag still wins
    assert build_study_config({"space": str(conf / "hetero_cell.yaml"), "n_trials": 3}).n_trials == 3


def test_hydra_fixed_scalars_of_every_type_are_overrides(tmp_path: Path) -> None:
    # hydra-optuna-sweeper builds f"{k}={v}": 2 is an int, true a bool, 1e-05 a float
    path = _write(tmp_path, "run.yaml", (
        "model:\n  num_layers: 3\n  prediction_head_config:\n    residual: false\n"
        "regression_task:\n  optimizer:\n    lr: 0.1\n"
        "hydra:\n  sweeper:\n    params:\n      model.num_layers: 2\n"
        "      model.prediction_head_config.residual: true\n      regression_task.optimizer.lr: 1.0e-5\n"))
    p = read_sweep_file(path).space.params
    assert p["model.num_layers"] == Fixed(2) and p["model.prediction_head_config.residual"] == Fixed(True)
    assert p["optimizer.lr"] == Fixed(1e-5)


def test_package_group_header_is_the_group(tmp_path: Path) -> None:
    _write(tmp_path, "model/deep.yaml", "# @package _group_\nnum_layers: 5\n")
    _write(tmp_path, "model/wide.yaml", "# @package _global_.model\nhidden_channels: 32\n")
    path = _write(tmp_path, "run.yaml", "defaults:\n  - model: deep\n  - model@model: wide\n  - _self_\n")
    sweep = read_sweep_file(path)
    assert sweep.space.params["model.num_layers"] == Fixed(5)
    assert sweep.space.params["model.hidden_channels"] == Fixed(32)
    (line,) = [n for n in sweep.notices if "not used here" in n]
    assert "deep.yaml: @package _group_" in line and "version_base" in line


def test_submitit_settings_are_used_or_named(tmp_path: Path) -> None:
    launcher = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                "partition": "gpu", "nodes": 2, "tasks_per_node": 4, "mem_gb": 8, "array_parallelism": 3,
                "qos": "high"}
    path = _write(tmp_path, "run.yaml", {"model": {"num_layers": 2}, "hydra": {"launcher": launcher}})
    sweep = read_sweep_file(path)
    assert sweep.options["launcher"] == {"partition": "gpu", "mem_gb": 8}
    (line,) = [n for n in sweep.notices if "not used here" in n]
    for key in ("hydra.launcher.nodes", "hydra.launcher.tasks_per_node", "hydra.launcher.array_parallelism",
                "hydra.launcher.qos"):
        assert key in line
    # nodes: 1 and tasks_per_node: 1 are what each array task is: nothing to name
    launcher.update(nodes=1, tasks_per_node=1)
    sweep = read_sweep_file(_write(tmp_path, "run.yaml", {"model": {"num_layers": 2}, "hydra": {"launcher": launcher}}))
    assert "hydra.launcher.nodes" not in " ".join(sweep.notices)


def test_hydra_grid_runs_at_most_its_points(tmp_path: Path) -> None:
    path = _write(tmp_path, "run.yaml", {"model": {"num_layers": 2}, "hydra": {"sweeper": {
        "sampler": {"_target_": "optuna.samplers.GridSampler"}, "n_trials": 50,
        "params": {"model.num_layers": "choice(2, 3, 4)"}}}})
    assert read_sweep_file(path).options["n_trials"] == 3


def test_unknown_key_message_is_short_and_actionable(tmp_path: Path) -> None:
    path = _wandb_file(tmp_path, {"model.num_layerz": {"values": [2]}, "zzz.bad": {"values": [1]},
                                  **{f"model.{k}": {"values": [1]} for k in ("num_layers",)}})
    with pytest.raises(ConfigError) as info:
        read_sweep_file(path)
    message = str(info.value)
    # the first bad key in the file, at most three close matches, the docs, one line under 300 characters
    assert message.startswith(f"{path}: model.num_layerz: ") and "did you mean model.num_layers" in message
    assert len(message.split("did you mean ")[1].split("?")[0].split(", ")) <= 3 and "docs/torchcell-keys.md" in message
    assert len(message) - len(str(path)) < 300 and "\n" not in message


@pytest.mark.parametrize("nested", [False, True])
def test_a_key_means_the_same_in_flat_and_nested_files(tmp_path: Path, nested: bool) -> None:
    params = {"trainer.max_epochs": {"value": 7}, "heads": {"values": [1, 5]}}
    if nested:
        params = {"trainer": {"parameters": {"max_epochs": {"value": 7}}}, "heads": {"values": [1, 5]}}
    path = _wandb_file(tmp_path, params, metric={"name": "val/transformed/combined/MSE", "goal": "minimize"})
    sweep = read_sweep_file(path)
    assert sweep.options["epochs"] == 7
    # TorchCell's transformed name is mapped in flat files too
    assert sweep.space.metric["name"] == "val/combined/MSE"


def test_a_bad_metric_name_names_the_file_and_metric_name(tmp_path: Path) -> None:
    from torchcell_search.search.study import build_study_config

    path = _wandb_file(tmp_path, {"heads": {"values": [1, 5]}}, metric={"name": "val/accuracy", "goal": "maximize"})
    with pytest.raises(ConfigError) as info:
        build_study_config({"space": str(path)})
    assert str(info.value).startswith(f"{path}: metric.name 'val/accuracy'") and "--objective" not in str(info.value)
