"""Search spaces: both file formats, every validation error, and a fuzzed parser."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from torchcell_search.errors import ConfigError
from torchcell_search.search.spaces import Choice, Fixed, Range, SearchSpace, parse_space
from torchcell_search.search.sweep_files import load_space

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

REPORT_TABLE = {
    "heads": [1, 5, 10],
    "cell_dataset.learnable_embedding_input_channels": [16, 32, 64],
    "model.num_layers": [2, 3, 4, 5, 6],
    "model.hidden_channels": [16, 32, 64],
    "model.prediction_head_config.hidden_channels": [16, 32, 64],
    "regression_task.lambda_dist": [0, 1e-3, 1e-2, 1e-1, 1, 1.5, 2],
    "regression_task.lambda_supcr": [0, 1e-4, 1e-3, 1e-2, 1e-1, 1],
}


def test_report_yaml_is_exactly_the_reports_table() -> None:
    space = load_space(CONFIGS / "report.yaml")
    # every parameter of the table, nothing else, values in the parameter's type
    assert space.grid() == {
        k: [float(x) if k.startswith("regression_task") else int(x) for x in v] for k, v in REPORT_TABLE.items()
    }
    assert isinstance(space.grid()["regression_task.lambda_dist"][1], float)


def test_extended_yaml_adds_model_options_and_ranges() -> None:
    space = load_space(CONFIGS / "extended.yaml")
    for key in ("model.pooling", "model.kind", "model.use_roles", "regression_task.uncertainty_weighting",
                "optimizer.lr", "optimizer.weight_decay", "data_module.batch_size", "model.dropout"):
        assert key in space.params
    assert space.params["optimizer.lr"] == Range(1e-4, 1e-2, integer=False, log=True)
    assert space.params["data_module.batch_size"] == Range(16, 128, integer=True, step=16)
    # a float range has no grid
    with pytest.raises(ConfigError, match="a float range has no grid"):
        space.grid()


def test_suggest_samples_every_parameter_and_returns_fixed_values() -> None:
    space = parse_space({"parameters": {
        "heads": {"choices": [1, 5]}, "optimizer.lr": {"low": 1e-4, "high": 1e-2, "log": True},
        "data_module.batch_size": {"low": 16, "high": 64, "step": 16}, "model.kind": "hetero_cell",
    }})
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    values = space.suggest(trial)
    assert values["model.kind"] == "hetero_cell" and "model.kind" not in trial.params
    assert values["heads"] in (1, 5) and 1e-4 <= values["optimizer.lr"] <= 1e-2
    assert values["data_module.batch_size"] in (16, 32, 48, 64) and isinstance(values["data_module.batch_size"], int)


def test_pooling_is_sampled_only_where_the_model_pools() -> None:
    # extended.yaml searches model.kind and model.pooling: perturbation_set pools nothing, so its
    # trials neither sample nor record a pooling (the importances then cannot credit it).
    space = load_space(CONFIGS / "extended.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    kinds = set()
    for _ in range(30):
        trial = study.ask()
        values = space.suggest(trial)
        kinds.add(values["model.kind"])
        pools = values["model.kind"] == "hetero_cell"
        assert ("model.pooling" in values) == pools and ("model.pooling" in trial.params) == pools
    assert kinds == {"hetero_cell", "perturbation_set"}
    both = parse_space({"parameters": {"model.kind": {"choices": ["hetero_cell", "perturbation_set"]},
                                       "model.pooling": {"choices": ["sab", "pma"]}}})
    with pytest.raises(ConfigError, match="model.pooling: searched with model.kind"):
        both.grid()


@pytest.mark.parametrize("kind", ["perturbation_set", {"choices": ["perturbation_set"]}])
def test_searching_pooling_under_perturbation_set_alone_is_refused(kind: object) -> None:
    with pytest.raises(ConfigError, match="<dict>: model.pooling is searched but model.kind=perturbation_set"):
        parse_space({"parameters": {"model.kind": kind, "model.pooling": {"choices": ["sab", "pma"]}}})
    # a fixed pooling is harmless, and hetero_cell pools
    parse_space({"parameters": {"model.kind": kind, "model.pooling": "sab"}})
    parse_space({"parameters": {"model.kind": "hetero_cell", "model.pooling": {"choices": ["sab", "pma"]}}})


def test_to_dict_round_trips() -> None:
    space = load_space(CONFIGS / "extended.yaml")
    again = SearchSpace.from_dict(space.to_dict())
    assert again.params == space.params


def test_wandb_sweep_file(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "method: random\n"
        "metric: {name: val/fitness/MSE, goal: minimize}\n"
        "program: train.py\n"
        "parameters:\n"
        "  heads: {values: [1, 5, 10]}\n"
        "  model.kind: {value: hetero_cell}\n"
        "  optimizer.lr: {min: 1.0e-4, max: 1.0e-2, distribution: log_uniform_values}\n"
        "  model.num_layers: {min: 2, max: 6}\n"
        "  model.dropout: {min: 0.0, max: 0.5, distribution: uniform}\n"
        "  data_module.batch_size: {min: 16, max: 128, q: 16, distribution: q_uniform}\n"
    )
    space = load_space(path)
    assert space.sampler == "random" and space.metric == {"name": "val/fitness/MSE", "goal": "minimize"}
    assert space.params["heads"] == Choice((1, 5, 10))
    assert space.params["model.kind"] == Fixed("hetero_cell")
    assert space.params["optimizer.lr"] == Range(1e-4, 1e-2, integer=False, log=True)
    assert space.params["model.num_layers"] == Range(2, 6, integer=True)
    # W&B's q_uniform rounds a uniform draw to a multiple of q (wandb/sweeps src/sweeps/params.py)
    assert space.params["data_module.batch_size"] == Range(16, 128, integer=True, q=16)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("parameters: [heads", "not valid YAML"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("parameters: {}\n", "non-empty"),
        ("parmeters: {heads: {choices: [1]}}\n", "unknown section 'parmeters'"),
        ("parameters: {model.num_layer: {choices: [2]}}\n", "model.num_layer: unknown key.*did you mean model.num_layers"),
        ("parameters: {heads: {choices: []}}\n", "heads: choices are empty"),
        ("parameters: {model.num_layers: {low: 6, high: 2}}\n", "model.num_layers: low 6 is greater than high 2"),
        ("parameters: {model.num_layers: {choices: [2, two]}}\n", "model.num_layers: expected an integer"),
        ("parameters: {model.pooling: {choices: [sab, mean]}}\n", "model.pooling: 'mean' is not one of"),
        ("parameters: {optimizer.lr: {low: 0.0, high: 0.1, log: true}}\n", "optimizer.lr: a log range needs low > 0"),
        ("parameters: {optimizer.lr: {low: a, high: 0.1}}\n", "optimizer.lr: low must be a number"),
        ("parameters: {model.kind: {low: 1, high: 2}}\n", "model.kind: a range needs a numeric parameter"),
        ("parameters: {heads: {choices: [1], step: 2}}\n", "heads: 'choices' cannot be combined"),
        ("parameters: {heads: {chioces: [1]}}\n", "heads: unknown field 'chioces'"),
        ("parameters: {heads: {choices: [1, 1]}}\n", "heads: duplicate choice 1"),
        ("parameters: {seed: {choices: [1, 2]}}\n", "seed: set by the study"),
        ("parameters: {optimizer.lr: {min: 0.1, max: 1, distribution: normal}}\n", "distribution 'normal'"),
        ("method: hyperband\nparameters: {heads: [1]}\n", "method"),
    ],
)
def test_invalid_space_raises_config_error_naming_file_and_key(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_space(path)
    # the message names the file and is one line
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_space(tmp_path / "nope.yaml")


_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8))
_values = st.recursive(_scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                                      st.dictionaries(st.text(max_size=6), c, max_size=4)),
                       max_leaves=12)
_keys = st.sampled_from(["heads", "model.num_layers", "optimizer.lr", "model.kind", "model.use_roles",
                         "seed", "bogus", "choices", "weights", "low", "high", "step", "log", "q", "mu", "sigma",
                         "distribution", "value", "parameters"])
_fields = st.dictionaries(_keys, _values, max_size=5)
_spaces = st.one_of(
    _values,
    st.fixed_dictionaries({"parameters": st.dictionaries(_keys, st.one_of(_values, _fields), max_size=4)},
                          optional={"sampler": _values, "metric": _values}),
)


@settings(max_examples=300, deadline=None)
@given(obj=st.one_of(_spaces, st.text(max_size=80)))
# found by this test once: an unhashable W&B distribution raised TypeError
@example(obj={"parameters": {"heads": {"distribution": []}}})
def test_parse_space_raises_only_config_error(obj: object) -> None:
    # any input either parses or raises ConfigError, nothing else
    try:
        space = parse_space(obj)  # type: ignore[arg-type]
    except ConfigError:
        return
    assert SearchSpace.from_dict(space.to_dict()).params == space.params
