"""Studies: configuration, create / start / worker / status / best.

A study's whole configuration (:class:`StudyConfig`) is stored in
``study.user_attrs["torchcell_search"]``, so a worker needs only the study name and the
storage URL. Options come from the command line, a ``--recipe`` YAML file (CLI flags win)
and defaults (demo data, ``configs/report.yaml``, TPE, median pruner).

The budget ``n_trials`` is the study's total across all workers: a worker starts a trial
only while COMPLETE + PRUNED + RUNNING + WAITING trials number fewer than ``n_trials``, and
a trial that lost the race to the last slot ends as FAIL with
``user_attrs["stopped_reason"] = "over_budget"`` before training, so the study never
finishes more than ``n_trials`` trials.

Example:
    >>> cfg = build_study_config({"epochs": 2, "n_trials": 3})
    >>> (cfg.data, cfg.sampler, cfg.direction)
    ('demo', 'tpe', 'maximize')
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import random
import re
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import optuna
import yaml
from optuna.trial import TrialState

from torchcell_search.config import RunConfig
from torchcell_search.errors import ConfigError, DataError, StudyError, TorchcellSearchError
from torchcell_search.search.pruners import WandbHyperbandPruner, wandb_bands
from torchcell_search.search.duplicates import DUPLICATE_ATTR, REPLICA_ATTR
from torchcell_search.search.spaces import STUDY_KEYS, SearchSpace, check_pooling, parse_space
from torchcell_search.search.sweep_files import SweepFile, family_ladder, read_sweep_file
from torchcell_search.search.study_config import CONFIG_ATTR, DEFAULT_OBJECTIVE, StudyConfig
from torchcell_search.storage.urls import open_storage, redact, resolve_storage, sqlite_path

__all__ = [
    "DEFAULT_OBJECTIVE",
    "StudyConfig",
    "best_command",
    "build_study_config",
    "create_study_command",
    "default_jobs",
    "format_ensemble",
    "format_status",
    "start_command",
    "status_command",
    "worker_command",
]

BASELINES_ATTR = "baselines"
#: Study user attr: the notice that every point of a discrete space is done.
EXHAUSTED_ATTR = "exhausted"
_logger = logging.getLogger(__name__)
_PACKAGE_DIR = Path(__file__).resolve().parents[1]
_DEFAULT_SPACE = "configs/report.yaml"
_OBJECTIVE_RE = re.compile(
    r"^(train|val)/(fitness|gene_interaction|combined)/(MSE|Pearson|Spearman)$|^(train|val)/loss$")
_CHOICES = {
    "split": ("random", "pair", "gene"),
    "direction": ("maximize", "minimize"),
    "sampler": ("tpe", "random", "grid"),
    "pruner": ("median", "hyperband", "wandb_hyperband", "none"),
    "device": ("auto", "cpu", "cuda"),
    "ensemble_diversity": ("configs", "seeds"),
}
# Changing these on resume updates the study instead of conflicting with it.
_RUNTIME_FIELDS = ("n_trials", "timeout", "ensemble", "ensemble_diversity")
_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
_TAKEN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


# --- building and validating a configuration ------------------------------------------


def _read_recipe(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"recipe {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {path}: not valid YAML") from e
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"recipe {path}: expected a mapping of option -> value")
    out: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(StudyConfig)} - {"space_source"}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in names:
            raise ConfigError(f"recipe {path}: unknown option {key!r}; known: {', '.join(sorted(names))}")
        # Paths in a recipe are relative to the recipe file, so a recipe means the same
        # wherever the repository is cloned. A space may also name a packaged space file.
        if name in ("space", "data", "artifacts") and isinstance(value, str) and value != "demo":
            candidate = path.parent / os.path.expanduser(value)
            if name != "space" or candidate.exists():
                value = str(candidate)
        out[name] = value
    return out


def _space_path(value: str) -> Path:
    for candidate in (Path(value), _PACKAGE_DIR / value, _PACKAGE_DIR / "configs" / value,
                      _PACKAGE_DIR / "configs" / f"{value}.yaml"):
        if candidate.is_file():
            return candidate
    return Path(value)


def _int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"--{name.replace('_', '-')}: expected an integer >= {low}, got {value!r}")
    return value


def _normalise(given: Mapping[str, Any]) -> dict[str, Any]:
    """Validate each given option and return it in its stored form."""
    out: dict[str, Any] = {}
    for name in sorted(given):
        value = given[name]
        if name == "space":
            if isinstance(value, Mapping):
                space = parse_space(value, source="recipe space")
                out["space_source"] = "<recipe>"
            elif isinstance(value, SweepFile):
                space = value.space
                out["space_source"] = space.source
            elif isinstance(value, (str, os.PathLike)):
                path = _space_path(str(value))
                space = read_sweep_file(path).space
                out["space_source"] = str(path)
            else:
                raise ConfigError(f"--space: expected a file name, got {value!r}")
            out["space"] = space.to_dict()
        elif name == "data":
            if not isinstance(value, (str, os.PathLike)) or not str(value):
                raise ConfigError(f"--data: expected 'demo' or a directory, got {value!r}")
            if str(value) != "demo":
                path = Path(value).expanduser()
                if not path.is_dir():
                    raise DataError(f"--data {value}: no such directory; give a data directory or 'demo'")
                value = os.path.normpath(path.absolute())
            out["data"] = str(value)
        elif name == "subset":
            out["subset"] = None if value is None else _int(name, value, 1)
        elif name in ("epochs", "n_trials", "pruner_startup_trials", "pruner_min_resource", "ensemble"):
            out[name] = _int(name, value, 1 if name != "pruner_startup_trials" else 0)
        elif name == "pruner_reduction_factor":
            out[name] = _int(name, value, 2)
        elif name == "pruner_warmup_epochs":
            out[name] = None if value is None else _int(name, value, 0)
        elif name == "seed":
            out["seed"] = _int(name, value, 0)
        elif name == "timeout":
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value <= 0):
                raise ConfigError(f"--timeout: expected a positive number of seconds, got {value!r}")
            out["timeout"] = None if value is None else float(value)
        elif name in ("objective", "objectives"):
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, (list, tuple)) or not names:
                raise ConfigError(f"--objective {value!r}: expected one metric name or a list of them")
            for objective in names:
                if not isinstance(objective, str) or not _OBJECTIVE_RE.match(objective):
                    raise ConfigError(f"--objective {objective!r}: expected <train|val>/<fitness|gene_interaction|"
                                      f"combined>/<MSE|Pearson|Spearman> or val/loss (test metrics are never optimised)")
            if len(set(names)) != len(names):
                raise ConfigError(f"--objective {list(names)}: an objective is given twice")
            out["objective"] = names[0]
            if len(names) > 1:
                out["objectives"] = list(names)
        elif name in ("direction", "directions"):
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, (list, tuple)) or not names or any(
                    d not in _CHOICES["direction"] for d in names):
                raise ConfigError(f"--direction {value!r}: expected maximize or minimize (once per objective)")
            out["direction"] = names[0]
            if len(names) > 1:
                out["directions"] = list(names)
        elif name == "launcher":
            out["launcher"] = _launcher(value)
        elif name == "wandb_hyperband":
            out[name] = _wandb_hyperband(value)
        elif name in ("fidelity", "fidelity_eta", "fidelity_start"):
            out.update(_fidelity_option(name, value))
        elif name in _CHOICES:
            if value not in _CHOICES[name]:
                raise ConfigError(f"--{name} {value!r}: expected one of {', '.join(_CHOICES[name])}")
            out[name] = value
        elif name == "artifacts":
            out["artifacts"] = None if value is None else str(Path(value).expanduser().absolute())
        elif name == "overrides":
            if not isinstance(value, Mapping):
                raise ConfigError(f"overrides: expected a mapping of dotted key -> value, got {value!r}")
            clash = sorted(set(map(str, value)) & set(STUDY_KEYS))
            if clash:
                raise ConfigError(f"overrides: {clash[0]} is set by the study (--epochs, --seed, --device)")
            flat = RunConfig().with_overrides(dict(value)).flat()
            out["overrides"] = {str(k): flat[str(k)] for k in sorted(map(str, value))}
        elif name == "space_source":
            continue
        else:
            raise ConfigError(f"unknown study option {name!r}")
    return out


def _wandb_hyperband(value: Any) -> dict[str, Any]:
    """W&B early_terminate settings as ``sweep_files`` fills them (``search/_wandb.py``), checked again."""
    from torchcell_search.search._wandb import early_terminate

    if not isinstance(value, Mapping):
        raise ConfigError(f"wandb_hyperband: expected W&B's early_terminate settings, got {value!r}")
    return early_terminate({"type": "hyperband", **dict(value)}, "wandb_hyperband")
def _fidelity_option(name: str, value: Any) -> dict[str, Any]:
    from torchcell_search.search.fidelity import FIDELITY_STARTS, parse_fidelity

    if name == "fidelity":
        return {name: None if value in (None, "none") else parse_fidelity(value)}
    if name == "fidelity_eta":
        return {name: _int(name, value, 2)}
    if value not in FIDELITY_STARTS:
        raise ConfigError(f"--fidelity-start {value!r}: expected one of {', '.join(FIDELITY_STARTS)}")
    return {name: value}


def _launcher(value: Any) -> dict[str, Any]:
    """Slurm defaults of the study (from a Hydra file's submitit launcher), checked."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"launcher: expected a mapping of Slurm settings, got {value!r}")
    out: dict[str, Any] = {}
    for key in sorted(map(str, value)):
        item = value[key]
        if key in ("cpus_per_task", "mem_gb", "timeout_min", "tasks_per_node", "nodes", "n_jobs",
                   "gpus_per_node", "gpus_per_task"):
            out[key] = _int(f"launcher.{key}", item, 0 if key.startswith("gpus") else 1)
        elif key in ("partition", "gres"):
            if not isinstance(item, str) or not item:
                raise ConfigError(f"launcher.{key}: expected a string, got {item!r}")
            out[key] = item
        else:
            raise ConfigError(f"launcher.{key}: not a Slurm setting torchcell-search uses")
    return out


def _given_options(options: Mapping[str, Any] | None) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Sweep-file settings updated by the recipe, updated by the other options (CLI flags
    win), validated; and the sweep file's notices."""
    options = {str(k).replace("-", "_"): v for k, v in (options or {}).items() if v is not None}
    recipe = options.pop("recipe", None)
    from_recipe = _read_recipe(recipe) if recipe else {}
    if "data" in from_recipe and "data" not in options and from_recipe["data"] != "demo" \
            and not Path(from_recipe["data"]).is_dir():
        raise ConfigError(f"recipe {recipe}: its data folder {from_recipe['data']} (relative to the recipe file) "
                          f"is not a directory; pass --data DIR")
    merged = {**from_recipe, **options}
    notices: tuple[str, ...] = ()
    if merged.get("fidelity") == "family" and not isinstance(merged.get("space"), (str, os.PathLike)):
        raise ConfigError("--fidelity family: takes its rungs from the --space file's TorchCell family "
                          "(..._2.5e4.yaml, ..._1e5.yaml, ...); give --space FILE or --fidelity subset:N1,N2,...,all")
    if isinstance(merged.get("space"), (str, os.PathLike)):
        if merged.get("fidelity") == "family":
            from torchcell_search.data.splits import DEFAULT_FRACTIONS  # TorchCell's sizes count all records

            merged["fidelity"], sweep, family_notice = family_ladder(_space_path(str(merged["space"])),
                                                                     train_fraction=DEFAULT_FRACTIONS[0])
            notices = (*sweep.notices, family_notice)
        else:
            sweep = read_sweep_file(_space_path(str(merged["space"])))
            notices = sweep.notices
        from_file = {{"objectives": "objective", "directions": "direction"}.get(k, k): v
                     for k, v in sweep.options.items()}
        if "objective" in merged and "direction" not in merged:
            from_file.pop("direction", None)  # the given objectives take their own directions
        if str(merged.get("data", "demo")) == "demo" and from_file.get("subset") and "subset" not in merged:
            # The file sizes a real-data run; the embedded demo is a smoke run of its own size.
            notices = (*notices, f"{sweep.space.source}: data_module.perturbation_subset_size "
                                 f"{from_file.pop('subset')} is for real data; the demo data uses its default "
                                 f"subset (give --data DIR, or --subset)")
        merged = {**from_file, **merged, "space": sweep}
    return _normalise(merged), notices


def build_study_config(options: Mapping[str, Any] | None = None) -> StudyConfig:
    """A complete :class:`StudyConfig` from options (and ``recipe``) plus defaults.

    Raises:
        ConfigError: an option is invalid (named), or the grid sampler meets a float range.
        DataError: ``data`` is neither ``demo`` nor a directory.
    """
    given, _ = _given_options(options)
    if "space" not in given:
        given.update(_normalise({"space": _DEFAULT_SPACE}))
    return _complete(given)


def _complete(given: dict[str, Any]) -> StudyConfig:
    space = SearchSpace.from_dict(given["space"], source=given.get("space_source") or "<space>")
    values = dict(given)
    if "objective" not in values and space.metric:
        values.update(_metric_objective(space))
        if "direction" not in values and space.metric.get("goal"):
            values["direction"] = space.metric["goal"]
    if "sampler" not in values and space.sampler:
        values["sampler"] = space.sampler
    objectives = values.get("objectives") or [values.get("objective", DEFAULT_OBJECTIVE)]
    directions = values.get("directions") or ([values["direction"]] if "direction" in values else
                                              [_direction(o) for o in objectives])
    if len(directions) != len(objectives):
        raise ConfigError(f"--direction: {len(directions)} directions for {len(objectives)} objectives "
                          f"({', '.join(objectives)}); give one per --objective, or none")
    values.update(objective=objectives[0], direction=directions[0])
    if len(objectives) > 1:
        values.update(objectives=list(objectives), directions=list(directions), pruner="none")
    if values.get("data", "demo") == "demo":
        # The demo is a smoke run of the whole service: the report's full-graph model costs
        # one graph pass per sample, so 8 trials fit in minutes on 2 CPU cores only on a
        # small subset with few epochs.
        values.setdefault("epochs", 4)
        values.setdefault("subset", 1200)
        values.setdefault("n_trials", 8)
    else:
        values.setdefault("epochs", 20)
    cfg = StudyConfig(**values)
    if cfg.pruner == "wandb_hyperband" and not cfg.wandb_hyperband:
        raise ConfigError("--pruner wandb_hyperband: takes its bands from a W&B file's early_terminate; give --space "
                          "with one, or use --pruner hyperband")
    check_pooling(space.params, cfg.overrides or {}, space.source)
    if cfg.sampler == "grid":
        space.grid()  # raises ConfigError for float ranges
    if cfg.fidelity and cfg.is_multi_objective:
        raise ConfigError(f"--fidelity {cfg.fidelity}: Optuna prunes only single-objective studies; "
                          f"give one --objective or drop --fidelity")
    if cfg.pruner_warmup_epochs is not None and cfg.pruner_warmup_epochs >= cfg.epochs:
        raise ConfigError(f"pruner_warmup_epochs {cfg.pruner_warmup_epochs}: must be below epochs ({cfg.epochs})")
    return cfg


def _metric_objective(space: SearchSpace) -> dict[str, Any]:
    """The sweep file's ``metric.name`` as the objective; an error names the file and ``metric.name``."""
    try:
        return _normalise({"objective": space.metric["name"]})
    except ConfigError as e:
        raise ConfigError(f"{space.source}: metric.name {space.metric['name']!r}: expected "
                          f"<train|val>/<fitness|gene_interaction|combined>/<MSE|Pearson|Spearman> or val/loss "
                          f"(TorchCell's val/transformed/... names are read too)") from e


def _creation_notices(cfg: StudyConfig) -> list[str]:
    if cfg.is_multi_objective:
        return [f"{len(cfg.objective_names)} objectives ({', '.join(cfg.objective_names)}): Optuna does not prune "
                f"multi-objective studies, so every trial runs all {cfg.epochs} epochs"]
    return []


def _direction(objective: str) -> str:
    return "maximize" if objective.rsplit("/", 1)[-1] in ("Pearson", "Spearman") else "minimize"


# --- samplers, pruners, loading -------------------------------------------------------


def _make_sampler(cfg: StudyConfig, *, seed: int) -> optuna.samplers.BaseSampler:
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.sampler == "grid":
        return optuna.samplers.GridSampler(SearchSpace.from_dict(cfg.space).grid(), seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # constant_liar keeps parallel workers from sampling the same point.
        return optuna.samplers.TPESampler(n_startup_trials=min(10, max(2, cfg.n_trials // 3)), seed=seed,
                                          constant_liar=True)


def _make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    if cfg.fidelity:  # the rungs replace the per-epoch pruner
        from torchcell_search.search.fidelity import RungPruner

        return RungPruner(cfg.fidelity_eta)
    if cfg.pruner == "none" or cfg.is_multi_objective:
        return optuna.pruners.NopPruner()
    if cfg.pruner == "wandb_hyperband":
        return WandbHyperbandPruner(wandb_bands(cfg.wandb_hyperband), cfg.wandb_hyperband["eta"],
                                    strict=cfg.wandb_hyperband["strict"])
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=cfg.pruner_min_resource, max_resource=cfg.epochs,
                                              reduction_factor=cfg.pruner_reduction_factor)
    warmup = cfg.pruner_warmup_epochs if cfg.pruner_warmup_epochs is not None else cfg.epochs // 4
    return optuna.pruners.MedianPruner(n_startup_trials=cfg.pruner_startup_trials, n_warmup_steps=warmup)


def _names(storage: optuna.storages.BaseStorage) -> list[str]:
    return sorted(s.study_name for s in storage.get_all_studies())


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("--study: the study name must not be empty")


# A new study's name goes into generated commands (``worker --study NAME`` in the sbatch script
# and in each local worker), Slurm job and log file names and checkpoint paths.
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def _check_new_name(name: str) -> None:
    """Refuse a study name that would break a generated command, job name or file name."""
    _check_name(name)
    if _NAME_RE.fullmatch(name):
        return
    if name[0] in "-.":
        problem = f"begins with {name[0]!r}" + (" (a command would read it as an option)" if name[0] == "-" else "")
    else:
        bad = next(c for c in name if not re.fullmatch(r"[A-Za-z0-9._-]", c))
        problem = f"contains {bad!r}" + (" (whitespace)" if bad.isspace() else "")
    raise ConfigError(f"--study {name!r}: the name {problem}; use letters, digits, '_', '.' and '-' "
                      f"(not first): it goes into worker commands, Slurm job names and file names")


def _load(name: str, storage_url: str | None) -> tuple[optuna.storages.RDBStorage, StudyConfig]:
    """Open the storage and read a torchcell-search study's configuration.

    Raises:
        StudyError: no such study (the message lists the studies there), or it was not
            created by torchcell-search.
    """
    _check_name(name)
    url = resolve_storage(storage_url)
    db = sqlite_path(url)
    if db and db != ":memory:" and not Path(db).expanduser().exists():
        # Opening would create an empty database file: a typo must not leave one behind.
        raise StudyError(f"study {name!r} not found: {redact(url)} does not exist")
    rdb = open_storage(url)
    names = _names(rdb)
    if name not in names:
        raise StudyError(f"study {name!r} not found in {redact(url)}; studies there: "
                         f"{', '.join(names) if names else '(none)'}")
    attrs = rdb.get_study_user_attrs(rdb.get_study_id_from_name(name))
    if CONFIG_ATTR not in attrs:
        raise StudyError(f"study {name!r} in {redact(url)} has no torchcell-search configuration; "
                         f"create it with `torchcell-search create --study {name}`")
    return rdb, StudyConfig.from_dict(attrs[CONFIG_ATTR])


# --- create / start / worker ----------------------------------------------------------


def _differences(stored: StudyConfig, given: Mapping[str, Any]) -> list[str]:
    out = []
    for name in sorted(given):
        if name in ("space_source", *_RUNTIME_FIELDS):
            continue
        old, new = getattr(stored, name), given[name]
        if old != new:
            if name == "space":
                out.append(f"space (stored {stored.space_source or 'another space'}, given "
                           f"{given.get('space_source') or 'another space'})")
            else:
                out.append(f"{name} (stored {old!r}, given {new!r})")
    return out


def _enqueue_grid(study: optuna.Study, cfg: StudyConfig) -> None:
    """Queue the grid's points (seeded order, at most ``n_trials``) as WAITING trials.

    Parallel workers each pop a WAITING trial atomically, so every point runs exactly once;
    Optuna's grid sampler alone lets two workers draw the same point under load.
    """
    grid = SearchSpace.from_dict(cfg.space).grid()
    keys = sorted(grid)
    points = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    random.Random(cfg.seed).shuffle(points)
    for params in points[:cfg.n_trials]:
        study.enqueue_trial(params)


def _wait_for_config(rdb: optuna.storages.BaseStorage, name: str, timeout: float = 30.0) -> None:
    """Wait while another process that just created study ``name`` writes its configuration."""
    deadline = time.monotonic() + timeout
    study_id = rdb.get_study_id_from_name(name)
    while CONFIG_ATTR not in rdb.get_study_user_attrs(study_id) and time.monotonic() < deadline:
        time.sleep(0.2)


def _create_or_check(name: str, storage_url: str | None, options: Mapping[str, Any] | None, *,
                     cache_dir: Path | None = None) -> dict[str, Any]:
    _check_new_name(name)
    given, notices = _given_options(options)  # validated before the storage is touched
    fresh = _complete({**({} if "space" in given else _normalise({"space": _DEFAULT_SPACE})), **given})
    if fresh.data != "demo":
        # Missing or corrupt data files fail here, before a study is written (the load is
        # cached, so the worker that follows pays nothing for it).
        from torchcell_search.search.objective import load_study_data

        load_study_data(fresh, cache_dir=cache_dir)
    url = resolve_storage(storage_url)
    rdb = open_storage(url)
    if name not in _names(rdb):
        try:
            study = optuna.create_study(storage=rdb, study_name=name, directions=fresh.objective_directions,
                                        sampler=_make_sampler(fresh, seed=fresh.seed), pruner=_make_pruner(fresh))
        except optuna.exceptions.DuplicatedStudyError:
            pass  # another process created it a moment ago: check it below
        else:
            if fresh.sampler == "grid":
                _enqueue_grid(study, fresh)
            with warnings.catch_warnings():  # experimental in Optuna; every trial's log line names the metric
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(fresh.objective_names)
            # Written last: a process that lost the creation race waits for it (below).
            study.set_user_attr(CONFIG_ATTR, fresh.to_dict())
            return {"study": name, "storage": redact(url), "created": True, "config": fresh.to_dict(),
                    "notices": [*notices, *_creation_notices(fresh)]}
    _wait_for_config(rdb, name)
    _, stored = _load(name, url)
    diffs = _differences(stored, given)
    if diffs:
        raise StudyError(f"study {name!r} exists with a different configuration: {'; '.join(diffs)}; "
                         f"use another --study name or drop those options")
    updates = {k: given[k] for k in _RUNTIME_FIELDS if k in given and given[k] != getattr(stored, k)}
    if updates:
        stored = dataclasses.replace(stored, **updates)
        rdb.set_study_user_attr(rdb.get_study_id_from_name(name), CONFIG_ATTR, stored.to_dict())
    return {"study": name, "storage": redact(url), "created": False, "updated": sorted(updates),
            "config": stored.to_dict(), "notices": list(notices)}


def create_study_command(name: str, storage: str | None, options: Mapping[str, Any] | None, *,
                         cache_dir: Path | None = None) -> dict[str, Any]:
    """Create a study and store its configuration; run nothing.

    An existing study with the same configuration is accepted; ``n_trials`` and ``timeout``
    may change (the stored values are updated).

    Returns:
        ``{"study", "storage" (redacted), "created", "config"}``.

    Raises:
        ConfigError, DataError: an invalid option (nothing is written).
        StudyError: the study exists with a different configuration (the differing fields are named).
        StorageError: the storage cannot be opened.
    """
    return _create_or_check(name, storage, options, cache_dir=cache_dir)


def start_command(name: str, storage: str | None, options: Mapping[str, Any] | None, *, jobs: int | None = None,
                  cache_dir: Path | None = None, notify: Callable[[str], None] | None = None,
                  workers_per_gpu: int = 1, threads: int | None = None, slurm_cpus: int | None = None,
                  visible_gpus: str | None = None) -> dict[str, Any]:
    """Create or resume a study, then run trials until its budget is reached.

    Args:
        jobs: worker processes; 1 runs the trials in this process, more start that many
            ``torchcell-search worker`` processes and wait for them. ``None``: the worker plan
            of :func:`~torchcell_search.search.workers.worker_plan` (one per usable CPU, or
            ``workers_per_gpu`` per visible GPU), never more than the trials left.
        notify: called with each notice (unused keys of a sweep file, pruning off for
            several objectives) and the worker plan, before any trial runs.
        workers_per_gpu, threads, slurm_cpus, visible_gpus: see :func:`worker_plan`.

    Returns:
        The study's status (see :func:`status_command`).
    """
    from torchcell_search.search.workers import worker_plan

    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ConfigError(f"--jobs: expected an integer >= 1, got {jobs!r}")
    for flag, value in (("--threads", threads), ("--workers-per-gpu", workers_per_gpu)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{flag}: expected an integer >= 1, got {value!r}")  # before anything is written
    created = _create_or_check(name, storage, options, cache_dir=cache_dir)
    for line in created["notices"] if notify else ():
        notify(line)
    rdb, cfg = _load(name, storage)
    left = _budget_left(optuna.load_study(study_name=name, storage=rdb), cfg.n_trials)
    plan = worker_plan(left, device=cfg.device, jobs=jobs, workers_per_gpu=workers_per_gpu, threads=threads,
                       slurm_cpus=slurm_cpus, visible_gpus=visible_gpus)
    if notify:
        notify(plan.describe())
    if plan.workers == 1:
        _work_in_process(name, storage, cache_dir, cfg.seed, plan.threads)
    else:
        _spawn_workers(name, resolve_storage(storage), plan, cache_dir)
    return status_command(name, storage)


def default_jobs(trials_left: int) -> int:
    """Workers ``start`` runs on the CPU without ``--jobs``: one per usable CPU, at most one per trial left."""
    from torchcell_search.search.workers import worker_plan

    return worker_plan(trials_left, device="cpu").workers


def _work_in_process(name: str, storage: str | None, cache_dir: Path | None, seed: int, threads: int) -> None:
    """The one worker of a plan, in this process, with the plan's torch threads (restored after)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        worker_command(name, storage, cache_dir=cache_dir, sampler_seed=seed)
    finally:
        torch.set_num_threads(previous)


def _spawn_workers(name: str, url: str, plan: Any, cache_dir: Path | None) -> None:
    """Start the plan's workers, each with its threads and its GPU in its own environment."""
    env = dict(os.environ)
    env["TORCHCELL_SEARCH_STORAGE"] = url  # not on the command line, where ps would show a password
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(plan.threads)
    cmd = [sys.executable, "-m", "torchcell_search.cli", "worker", f"--study={name}"]
    if cache_dir is not None:
        cmd += ["--cache-dir", str(cache_dir)]
    procs = [subprocess.Popen(cmd, env=env if gpu is None else {**env, "CUDA_VISIBLE_DEVICES": gpu})
             for gpu in plan.gpus]
    try:
        codes = [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            p.terminate()
        raise
    failed = [f"worker {i} exited with status {c}" for i, c in enumerate(codes) if c != 0]
    if failed:
        raise StudyError(f"study {name!r}: {'; '.join(failed)}")


class _NoTracebackFor(logging.Filter):
    """Drop the traceback Optuna logs with a failed trial when the failure is expected
    (over budget, preempted): the one-line warning stays, the stack does not."""

    def __init__(self, *types: type[BaseException]) -> None:
        super().__init__()
        self.types = types

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.types):
            record.exc_info, record.exc_text = None, None
        return True


class _OverBudget(Exception):
    """A trial was created after the budget's last slot was taken (ends as FAIL, untrained)."""


def _counted(trials: list[optuna.trial.FrozenTrial], n_trials: int) -> int:
    """Trials of ``trials`` that use the search budget: seed replicas have their own
    (``ensemble - 1``), and duplicates answered from an earlier trial (no training, about a
    second each) are free, up to ``10 * n_trials`` of them so a sampler stuck on known points
    cannot run forever."""
    search = [t for t in trials if REPLICA_ATTR not in t.user_attrs]
    return len(search) - min(sum(DUPLICATE_ATTR in t.user_attrs for t in search), 10 * n_trials)


def _budget_left(study: optuna.Study, n_trials: int) -> int:
    # WAITING trials (enqueued or retried) are not counted here: asking pops them first.
    return n_trials - _counted(study.get_trials(deepcopy=False, states=_TAKEN), n_trials)


def _exhausted(study: optuna.Study, cfg: StudyConfig) -> str | None:
    """The notice that every point of the study's discrete space is done (stored with the study), or None."""
    from torchcell_search.search.duplicates import exhausted_notice

    notice = exhausted_notice(SearchSpace.from_dict(cfg.space), study.get_trials(deepcopy=False), cfg.seed)
    if notice and study.user_attrs.get(EXHAUSTED_ATTR) != notice:
        study.set_user_attr(EXHAUSTED_ATTR, notice)
    return notice


def _train_replicas(study: optuna.Study, cfg: StudyConfig, run_one: Callable[[optuna.Trial], Any],
                    stop: threading.Event) -> None:
    """Queue the seed replicas a ``seeds`` ensemble lacks and train queued ones until none is left."""
    from torchcell_search.search.ensemble import missing_replicas

    anchor, seeds = missing_replicas(study, cfg)
    for seed in seeds:
        study.enqueue_trial(dict(anchor.params), user_attrs={REPLICA_ATTR: seed}, skip_if_exists=False)
    while not stop.is_set() and any(REPLICA_ATTR in t.user_attrs for t in study.get_trials(
            deepcopy=False, states=(TrialState.WAITING,))):
        study.optimize(run_one, n_trials=1, catch=(_OverBudget,))


def _ensure_baselines(study: optuna.Study, dataset: Any, split: Any, seed: int) -> None:
    """Compute the study's null models once, on the worker's own data and split, and store them."""
    if BASELINES_ATTR in study.user_attrs:
        return
    from torchcell_search.model.baselines import evaluate_baselines
    from torchcell_search.search.objective import _json_safe

    study.set_user_attr(BASELINES_ATTR, _json_safe(evaluate_baselines(dataset, split, seed=seed)))


def worker_command(name: str, storage: str | None, *, cache_dir: Path | None = None,
                   sampler_seed: int | None = None, stop: threading.Event | None = None) -> dict[str, Any]:
    """Join a study and run trials until its total budget is reached (across all workers).

    Args:
        sampler_seed: the sampler's seed; default a per-process seed derived from the
            study seed, so parallel workers do not draw the same points.
        stop: set it (the CLI does on SIGTERM) to stop at the next safe point: the running
            trial ends after its next epoch checkpoint as FAIL with
            ``stopped_reason = "preempted"`` and is re-queued (WAITING) to resume from that
            checkpoint; no new trial starts.

    Once the budget is spent (or every point of a discrete space is done: ``notice`` says
    so), a study whose recipe asks for a ``seeds`` ensemble trains the best trial's missing
    seed replicas (``ensemble - 1``, outside the budget).

    Returns:
        ``{"study", "trials_run", "preempted", "notice"}``; ``preempted`` is the number of the
        trial handed back, or ``None``.

    Raises:
        StudyError: no such study (the names in the storage are listed), or a trial failed
            with an unexpected error.
    """
    from torchcell_search.search.objective import Objective, TrialPreempted

    stop = stop or threading.Event()
    url = resolve_storage(storage)
    rdb, cfg = _load(name, url)
    seed = sampler_seed if sampler_seed is not None else (cfg.seed * 1_000_003 + os.getpid()) % 2**31
    study = optuna.load_study(study_name=name, storage=rdb, sampler=_make_sampler(cfg, seed=seed),
                              pruner=_make_pruner(cfg))
    from torchcell_search.search.ensemble import missing_replicas

    notice = _exhausted(study, cfg)
    queued = any(REPLICA_ATTR in t.user_attrs for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    if (_budget_left(study, cfg.n_trials) <= 0 or notice) and not missing_replicas(study, cfg)[1] and not queued:
        return {"study": name, "trials_run": 0, "preempted": None, "notice": notice}
    objective = Objective(name, cfg, url, cache_dir=cache_dir, stop=stop)
    # The baselines use the data and split the objective loaded: one load per worker.
    _ensure_baselines(study, objective.dataset, objective.split, cfg.seed)
    run: dict[str, Any] = {"n": 0, "trial_id": None}

    def guarded(trial: optuna.Trial) -> float:
        run["trial_id"] = trial._trial_id
        if stop.is_set():
            trial.set_user_attr("stopped_reason", "preempted")
            raise TrialPreempted(f"trial {trial.number}: preempted before it started")
        earlier = [t for t in study.get_trials(deepcopy=False, states=_COUNTED) if t.number < trial.number]
        if REPLICA_ATTR not in trial.user_attrs and _counted(earlier, cfg.n_trials) >= cfg.n_trials:
            trial.set_user_attr("stopped_reason", "over_budget")
            study.stop()
            raise _OverBudget(f"trial {trial.number}: the budget of {cfg.n_trials} trials is taken")
        run["n"] += 1
        return objective(trial)

    def stop_when_spent(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if _budget_left(study, cfg.n_trials) <= 0 or _exhausted(study, cfg):
            study.stop()

    def refresh_figures(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        # optuna-dashboard shows the study's figures as saved here, after every finished trial.
        from torchcell_search.dashboards import refresh_dashboard

        try:
            refresh_dashboard(study, artifact_store=objective.store)
        except Exception as e:  # a figure must never cost a trial or stop a worker
            _logger.warning("study %r: dashboard figures not refreshed: %s: %s", name, type(e).__name__, e)

    quiet = _NoTracebackFor(_OverBudget, TrialPreempted)
    optimize_logger = logging.getLogger("optuna.study._optimize")
    optimize_logger.addFilter(quiet)
    try:
        if _budget_left(study, cfg.n_trials) > 0 and not notice:
            # stop_when_spent also does what optuna's MaxTrialsCallback would, counting as _counted does.
            study.optimize(guarded, timeout=cfg.timeout, catch=(_OverBudget,),
                           callbacks=[stop_when_spent, refresh_figures])
        _train_replicas(study, cfg, guarded, stop)
    except TrialPreempted:
        # Hand the trial back: a WAITING copy with the same params resumes from its checkpoint.
        failed = rdb.get_trial(run["trial_id"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)(study, failed)
        return {"study": name, "trials_run": run["n"], "preempted": failed.number}
    except TorchcellSearchError:
        raise
    except Exception as e:
        raise StudyError(f"study {name!r}: a trial failed: {type(e).__name__}: {e}") from e
    finally:
        optimize_logger.removeFilter(quiet)
    return {"study": name, "trials_run": run["n"], "preempted": None, "notice": _exhausted(study, cfg)}


# --- status / best --------------------------------------------------------------------


def _metrics(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """Train/val metrics at the best epoch (complete) or the last epoch (pruned, running)."""
    if trial.user_attrs.get("best"):
        return dict(trial.user_attrs["best"])
    history = trial.user_attrs.get("history") or []
    return {k: v for k, v in history[-1].items() if k != "epoch"} if history else {}


def _trial_row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return {
        "number": trial.number,
        "state": trial.state.name,
        "params": dict(sorted(trial.params.items())),
        "values": list(trial.values) if trial.values is not None else None,
        "metrics": _metrics(trial),
        "test": dict(trial.user_attrs.get("test") or {}),
        "best_epoch": trial.user_attrs.get("best_epoch"),
        "stopped_reason": trial.user_attrs.get("stopped_reason"),
        "duplicate_of": trial.user_attrs.get(DUPLICATE_ATTR),
        "replica_seed": trial.user_attrs.get(REPLICA_ATTR),
        "duration_s": duration,
        "rungs": list(trial.user_attrs.get("rungs") or []),
    }


def _best(study: optuna.Study) -> dict[str, Any] | None:
    if len(study.directions) > 1 or not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    trial = study.best_trial
    original = trial.user_attrs.get(DUPLICATE_ATTR)
    if original is not None:  # the trial it was answered from holds the model
        trial = study.trials[int(original)]
    return {**_trial_row(trial), "value": trial.value, "config": trial.user_attrs.get("config")}


def _pareto(study: optuna.Study) -> list[dict[str, Any]]:
    """The complete trials no other complete trial beats on every objective, by trial number."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    return [{**_trial_row(t), "config": t.user_attrs.get("config")}
            for t in sorted(study.best_trials, key=lambda t: t.number)]


def status_command(name: str, storage: str | None, *, as_json: bool = False, ensemble: int | None = None,
                   ensemble_diversity: str | None = None) -> dict[str, Any]:
    """A study's trials as one JSON-safe dict (``format_status`` renders the table).

    Args:
        ensemble, ensemble_diversity: score this ensemble (default: the study's, when it
            averages more than one trial).

    Returns:
        ``{"study": {name, direction, objective, n_trials, config, baselines, counts, notice},
        "trials": [{number, state, params, values, metrics, duration_s, ...}], "best": row | None,
        "ensemble": {k, diversity, members, val, test, best_single, gain} | {k, diversity, error} | None}``.

    Raises:
        StudyError: no such study (the names in the storage are listed).
        ConfigError: an invalid ensemble size or diversity.
    """
    rdb, cfg = _load(name, storage)
    study = optuna.load_study(study_name=name, storage=rdb)
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return {
        "study": {
            "name": name, "storage": redact(resolve_storage(storage)), "objective": cfg.objective,
            "direction": cfg.direction, "objectives": cfg.objective_names, "directions": cfg.objective_directions,
            "n_trials": cfg.n_trials, "counts": counts,
            "config": cfg.to_dict(), "baselines": study.user_attrs.get(BASELINES_ATTR),
            "notice": study.user_attrs.get(EXHAUSTED_ATTR),
        },
        "trials": [_trial_row(t) for t in trials],
        "best": _best(study),
        "pareto": _pareto(study) if cfg.is_multi_objective else None,
        "fidelity": _fidelity_status(cfg, trials),
        "ensemble": _ensemble(study, rdb, storage, cfg, ensemble, ensemble_diversity),
    }


def _fidelity_status(cfg: StudyConfig, trials: list[optuna.trial.FrozenTrial]) -> dict[str, Any] | None:
    """A fidelity study's rungs and rank correlations between them (None for a plain study)."""
    if not cfg.fidelity:
        return None
    from torchcell_search.search.fidelity import rank_correlations

    return {"ladder": cfg.fidelity, "eta": cfg.fidelity_eta, "start": cfg.fidelity_start,
            **rank_correlations(trials)}


def _ensemble(study: optuna.Study, rdb: optuna.storages.BaseStorage, storage: str | None, cfg: StudyConfig,
              k: int | None, diversity: str | None) -> dict[str, Any] | None:
    """The ensemble's scores for ``status``, or why there are none yet (``{"k", "diversity", "error"}``)."""
    from torchcell_search.search.ensemble import check_ensemble, ensemble_summary
    from torchcell_search.storage.artifacts import artifacts_dir, open_artifact_store

    k, diversity = check_ensemble(cfg.ensemble if k is None else k, diversity or cfg.ensemble_diversity)
    if k < 2:
        return None
    store = open_artifact_store(artifacts_dir(storage, cfg.artifacts))
    try:
        return ensemble_summary(study, rdb, store, k=k, diversity=diversity)
    except StudyError as e:  # too few members yet: status still shows the trials
        return {"k": k, "diversity": diversity, "error": str(e)}


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


# Table names of dotted keys whose last part is ambiguous or long.
_SHORT_NAMES = {
    "cell_dataset.learnable_embedding_input_channels": "embedding",
    "model.prediction_head_config.hidden_channels": "head_hidden",
}


def _short(key: str) -> str:
    return _SHORT_NAMES.get(key, key.rsplit(".", 1)[-1])


def format_status(status: Mapping[str, Any]) -> str:
    """The status dict as a table: number, state, objective, val fitness MSE, val ε Pearson, duration, params."""
    s = status["study"]
    objectives = s.get("objectives") or [s["objective"]]
    directions = s.get("directions") or [s["direction"]]
    aims = ", ".join(f"{o} ({d})" for o, d in zip(objectives, directions))
    lines = [f"study {s['name']} ({s['storage']}): objective{'s' if len(objectives) > 1 else ''} {aims}, "
             f"{sum(s['counts'].get(k, 0) for k in ('COMPLETE', 'PRUNED'))}/{s['n_trials']} trials finished "
             f"({', '.join(f'{k.lower()} {v}' for k, v in sorted(s['counts'].items())) or 'none yet'})"]
    pareto = {row["number"] for row in status.get("pareto") or []}
    width = 9 * len(objectives) + len(objectives) - 1
    header = (f"{'#':>4} {'state':<8} {'objective' + ('s' if len(objectives) > 1 else ''):>{width}} "
              f"{'val fit MSE':>11} {'val gi r':>8} {'time s':>7}  params")
    lines.append(header)
    for row in status["trials"]:
        m = row["metrics"]
        values = row["values"] or [m.get(o) for o in objectives]
        shown = " ".join(f"{_fmt(v, '9.4f'):>9}" for v in values)
        params = " ".join(f"{_short(k)}={v:g}" if isinstance(v, float) else f"{_short(k)}={v}"
                          for k, v in row["params"].items())
        if row.get("duplicate_of") is not None:
            params += f" (duplicate of {row['duplicate_of']})"
        if row.get("replica_seed") is not None:
            params += f" (seed replica, seed {row['replica_seed']})"
        mark = "*" if row["number"] in pareto else " "
        lines.append(f"{row['number']:>3}{mark} {row['state']:<8} {shown:>{width}} "
                     f"{_fmt(m.get('val/fitness/MSE'), '11.5f'):>11} "
                     f"{_fmt(m.get('val/gene_interaction/Pearson'), '8.3f'):>8} "
                     f"{_fmt(row['duration_s'], '7.1f'):>7}  {params}")
    best = status.get("best")
    if best:
        lines.append(f"best: trial {best['number']} {s['objective']} = {best['value']:.4f}")
    if pareto:
        lines.append(f"Pareto set (*): trials {', '.join(str(n) for n in sorted(pareto))}")
    if status.get("fidelity"):
        from torchcell_search.search.fidelity import format_fidelity

        lines.extend(format_fidelity(status["fidelity"], status["trials"]))
    lines += format_ensemble(status.get("ensemble"))
    if s.get("notice"):
        lines.append(f"note: {s['notice']}")
    return "\n".join(lines)


def format_ensemble(ensemble: Mapping[str, Any] | None) -> list[str]:
    """The ensemble beside its best member: val and test ε Pearson and fitness MSE."""
    if not ensemble:
        return []
    head = f"ensemble of {ensemble['k']} ({ensemble['diversity']})"
    if "error" in ensemble:
        return [f"{head}: {ensemble['error']}"]
    single = ensemble["best_single"]
    cells = []
    for part in ("val", "test"):
        r, mse = f"{part}/gene_interaction/Pearson", f"{part}/fitness/MSE"
        cells.append(f"{part} gi r {_fmt(ensemble[part].get(r), '.3f')} (best trial {_fmt(single[part].get(r), '.3f')}), "
                     f"fit MSE {_fmt(ensemble[part].get(mse), '.5f')} ({_fmt(single[part].get(mse), '.5f')})")
    return [f"{head}, trials {', '.join(map(str, ensemble['members']))}: {'; '.join(cells)}"]


def best_command(name: str, storage: str | None, *, as_json: bool = False, ensemble: int | None = None,
                 ensemble_diversity: str | None = None) -> dict[str, Any]:
    """The best complete trial: number, value, params, metrics, test metrics and full config.

    A multi-objective study has no single best trial: the result is its Pareto set,
    ``{"study", "objectives", "directions", "pareto": [rows with "values"]}``. With an
    ensemble (``ensemble`` > 1, or the study's default) the result's ``"ensemble"`` holds its
    members and val / test metrics beside the best single trial's (see ``status_command``).

    Raises:
        StudyError: no such study, it has no complete trial yet, or the ensemble asked for
            has too few members.
    """
    status = status_command(name, storage, ensemble=ensemble, ensemble_diversity=ensemble_diversity)
    if status["ensemble"] and "error" in status["ensemble"] and ensemble is not None:
        raise StudyError(status["ensemble"]["error"])
    s = status["study"]
    if status["pareto"] is not None:
        if not status["pareto"]:
            raise StudyError(f"study {name!r} has no complete trial yet; run `torchcell-search start --study {name}`")
        return {"study": name, "objectives": s["objectives"], "directions": s["directions"],
                "pareto": status["pareto"], "ensemble": status["ensemble"]}
    if status["best"] is None:
        raise StudyError(f"study {name!r} has no complete trial yet; run `torchcell-search start --study {name}`")
    return {"study": name, "objective": s["objective"], **status["best"], "ensemble": status["ensemble"]}
