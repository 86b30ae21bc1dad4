"""Search spaces keyed by the report's dotted parameter names.

Two file formats are read. Ours::

    parameters:
      heads: {choices: [1, 5, 10]}
      model.num_layers: {choices: [2, 3, 4, 5, 6]}
      optimizer.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
      data_module.batch_size: {low: 16, high: 128, step: 16}
      model.kind: hetero_cell          # a fixed value

and a W&B sweep file (``method``, ``metric: {name, goal}``, ``parameters`` whose entries
hold ``values``, ``value`` or ``min``/``max`` with a ``distribution``)::

    method: bayes
    metric: {name: val/gene_interaction/Pearson, goal: maximize}
    parameters:
      heads: {values: [1, 5, 10]}
      optimizer.lr: {min: 1.0e-4, max: 1.0e-2, distribution: log_uniform_values}

Every value is checked against :class:`~torchcell_search.config.RunConfig` before a study
is touched, and stored in the parameter's own type (``1`` for an int key, ``1.0`` for a
float key).

Example:
    >>> space = parse_space({"parameters": {"heads": {"choices": [1, 5]}}})
    >>> space.grid()
    {'heads': [1, 5]}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import optuna
import yaml

from torchcell_search.config import RunConfig, parameter_keys
from torchcell_search.errors import ConfigError

__all__ = ["Choice", "Fixed", "Range", "SearchSpace", "check_pooling", "load_space", "parse_space"]

KIND, POOLING = "model.kind", "model.pooling"
#: Keys a study sets itself (``--epochs``, ``--seed``, ``--device``), so a space may not.
STUDY_KEYS = ("seed", "trainer.device", "trainer.max_epochs")
_OUR_SPEC_KEYS = {"choices", "low", "high", "step", "log", "value"}
_WANDB_SPEC_KEYS = {"values", "value", "min", "max", "distribution", "q", "probabilities"}
_TOP_KEYS = {
    "parameters", "method", "metric", "name", "description", "program", "command",
    "early_terminate", "project", "entity", "run_cap",
}
_WANDB_METHODS = {"bayes": "tpe", "random": "random", "grid": "grid"}
_GOALS = ("maximize", "minimize")


@dataclass(frozen=True)
class Choice:
    """A categorical parameter."""

    choices: tuple[Any, ...]


@dataclass(frozen=True)
class Range:
    """A numeric range; ``integer`` follows the parameter's type in :class:`RunConfig`."""

    low: float
    high: float
    integer: bool
    step: float | None = None
    log: bool = False


@dataclass(frozen=True)
class Fixed:
    """A value every trial uses; not sampled."""

    value: Any


Param = Choice | Range | Fixed


@dataclass(frozen=True)
class SearchSpace:
    """Parameters by dotted key, plus what a W&B file says about the metric and method.

    Args:
        params: dotted key -> :class:`Choice` | :class:`Range` | :class:`Fixed`.
        source: where the space came from (a path or ``"<dict>"``), for messages.
        metric: ``{"name": ..., "goal": "maximize" | "minimize"}`` from a W&B file, or ``None``.
        sampler: ``"tpe" | "random" | "grid"`` from a W&B ``method``, or ``None``.
    """

    params: dict[str, Param]
    source: str = "<dict>"
    metric: dict[str, str] | None = None
    sampler: str | None = None
    _keys: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample every parameter (sorted by key) and return ``{key: value}``, fixed ones included."""
        out: dict[str, Any] = {}
        for key in sorted(self.params):  # "model.kind" sorts before "model.pooling"
            p = self.params[key]
            if key == POOLING and out.get(KIND) == "perturbation_set":
                continue  # that model does not pool: the trial neither samples nor records it
            if isinstance(p, Fixed):
                out[key] = p.value
            elif isinstance(p, Choice):
                out[key] = trial.suggest_categorical(key, list(p.choices))
            elif p.integer:
                out[key] = trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
            else:
                out[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
        return out

    def grid(self) -> dict[str, list[Any]]:
        """Every sampled parameter's values for :class:`optuna.samplers.GridSampler`.

        Raises:
            ConfigError: a float range without ``step`` (it has no finite grid).
        """
        out: dict[str, list[Any]] = {}
        for key in sorted(self.params):
            p = self.params[key]
            if isinstance(p, Choice):
                out[key] = list(p.choices)
            elif isinstance(p, Range):
                if p.integer:
                    out[key] = list(range(int(p.low), int(p.high) + 1, int(p.step or 1)))
                elif p.step:
                    n = int(math.floor((p.high - p.low) / p.step + 1e-9))
                    out[key] = [p.low + i * p.step for i in range(n + 1)]
                else:
                    raise ConfigError(f"{self.source}: {key}: a float range has no grid; "
                                      f"give choices or a step, or use --sampler tpe|random")
        if POOLING in self.params and not isinstance(self.params[POOLING], Fixed) and KIND in self.params:
            raise ConfigError(f"{self.source}: {POOLING}: searched with {KIND}, but only hetero_cell pools; a grid "
                              f"cannot skip it for perturbation_set: fix {KIND} or use --sampler tpe|random")
        return out

    def to_dict(self) -> dict[str, Any]:
        """Our YAML format as a JSON-safe dict (stored with the study); :meth:`from_dict` inverts it."""
        params: dict[str, Any] = {}
        for key in sorted(self.params):
            p = self.params[key]
            if isinstance(p, Fixed):
                params[key] = {"value": p.value}
            elif isinstance(p, Choice):
                params[key] = {"choices": list(p.choices)}
            else:
                spec: dict[str, Any] = {"low": p.low, "high": p.high}
                if p.step is not None:
                    spec["step"] = p.step
                if p.log:
                    spec["log"] = True
                params[key] = spec
        out: dict[str, Any] = {"parameters": params}
        if self.metric:
            out["metric"] = dict(self.metric)
        if self.sampler:
            out["sampler"] = self.sampler
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<stored space>") -> "SearchSpace":
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        sampler = data.pop("sampler", None)
        space = parse_space(data, source=source)
        return SearchSpace(space.params, source=source, metric=space.metric, sampler=sampler or space.sampler)


def load_space(path: str | Path) -> SearchSpace:
    """Read a search space file (ours or a W&B sweep file).

    Raises:
        ConfigError: the file is missing or unreadable, is not YAML, or a parameter is invalid;
            the message names the file and the key.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"search space {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from e
    return parse_space(text, source=str(path))


def parse_space(obj: Mapping[str, Any] | str, *, source: str = "<dict>") -> SearchSpace:
    """Parse and validate a search space given as a dict or YAML text.

    Raises:
        ConfigError: anything malformed; the message starts with ``source`` and the key.
    """
    if isinstance(obj, str):
        try:
            obj = yaml.safe_load(obj)
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            raise ConfigError(f"{source}: not valid YAML{line}") from e
        except (ValueError, TypeError, OverflowError, RecursionError) as e:
            raise ConfigError(f"{source}: not valid YAML ({type(e).__name__})") from e
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{source}: expected a mapping with a 'parameters' section")
    bad = [str(k) for k in obj if k not in _TOP_KEYS]
    if bad:
        raise ConfigError(f"{source}: unknown section {bad[0]!r}; expected {', '.join(sorted(_TOP_KEYS))}")
    params = obj.get("parameters")
    if not isinstance(params, Mapping) or not params:
        raise ConfigError(f"{source}: 'parameters' must be a non-empty mapping of dotted key -> spec")
    metric = _parse_metric(obj.get("metric"), source)
    sampler = _parse_method(obj.get("method"), source)
    known = set(parameter_keys())
    out: dict[str, Param] = {}
    for key in sorted(params, key=str):
        if not isinstance(key, str) or key not in known:
            raise ConfigError(f"{source}: unknown parameter {str(key)!r}; known: {', '.join(sorted(known))}")
        if key in STUDY_KEYS:
            raise ConfigError(f"{source}: {key}: set by the study (--epochs, --seed, --device), not by a space")
        out[key] = _parse_param(key, params[key], source)
    check_pooling(out, {}, source)
    return SearchSpace(out, source=source, metric=metric, sampler=sampler)


def check_pooling(params: Mapping[str, Param], overrides: Mapping[str, Any], source: str) -> None:
    """Refuse a searched ``model.pooling`` where every trial is ``model.kind=perturbation_set``.

    That model reads the perturbed genes with a self-attention block and pools nothing, so
    the parameter would change no trial yet be recorded and credited by the importances.
    Where ``model.kind`` itself is searched, :meth:`SearchSpace.suggest` samples the pooling
    only in hetero_cell trials.

    Raises:
        ConfigError: the combination, naming both keys.
    """
    pooling = params.get(POOLING)
    if pooling is None or isinstance(pooling, Fixed):
        return
    kind = params.get(KIND)
    if isinstance(kind, Fixed):
        kinds: tuple[Any, ...] = (kind.value,)
    elif isinstance(kind, Choice):
        kinds = kind.choices
    else:
        kinds = (overrides.get(KIND, RunConfig().model.kind),)
    if set(kinds) == {"perturbation_set"}:
        raise ConfigError(f"{source}: {POOLING} is searched but {KIND}=perturbation_set pools nothing; "
                          f"remove {POOLING} from the space or search {KIND}=hetero_cell")


def _parse_metric(metric: Any, source: str) -> dict[str, str] | None:
    if metric is None:
        return None
    if not isinstance(metric, Mapping) or not isinstance(metric.get("name"), str):
        raise ConfigError(f"{source}: metric: expected {{name: ..., goal: maximize|minimize}}")
    goal = metric.get("goal")
    if goal is not None and goal not in _GOALS:
        raise ConfigError(f"{source}: metric.goal: {goal!r} is not maximize or minimize")
    return {"name": metric["name"], **({"goal": goal} if goal else {})}


def _parse_method(method: Any, source: str) -> str | None:
    if method is None:
        return None
    if not isinstance(method, str) or method not in _WANDB_METHODS:
        raise ConfigError(f"{source}: method: {method!r} is not one of {', '.join(_WANDB_METHODS)}")
    return _WANDB_METHODS[method]


def _coerce(key: str, value: Any, source: str) -> Any:
    """``value`` checked by :class:`RunConfig` and returned in the parameter's type."""
    if isinstance(value, (Mapping, list, tuple, set)) or value is None:
        raise ConfigError(f"{source}: {key}: {_show(value)} is not a single value")
    try:
        return RunConfig().with_overrides({key: value}).flat()[key]
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from e
    except (ValueError, TypeError, OverflowError) as e:
        raise ConfigError(f"{source}: {key}: {_show(value)} is not a valid value") from e


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse_param(key: str, spec: Any, source: str) -> Param:
    if isinstance(spec, (list, tuple)):
        return _choice(key, spec, source)
    if not isinstance(spec, Mapping):
        return Fixed(_coerce(key, spec, source))
    names = set(spec)
    unknown = [str(n) for n in names if n not in _OUR_SPEC_KEYS | _WANDB_SPEC_KEYS]
    if unknown:
        raise ConfigError(f"{source}: {key}: unknown field {unknown[0]!r}; use choices | low/high(/step/log) | value "
                          f"(or W&B values | value | min/max with distribution)")
    if not names:
        raise ConfigError(f"{source}: {key}: empty spec; give choices, low/high or value")
    if names & _OUR_SPEC_KEYS - {"value"} and names & _WANDB_SPEC_KEYS - {"value"}:
        raise ConfigError(f"{source}: {key}: mixes our fields and W&B fields")
    if "value" in names:
        if len(names) > 1:
            raise ConfigError(f"{source}: {key}: 'value' cannot be combined with other fields")
        return Fixed(_coerce(key, spec["value"], source))
    if "choices" in names:
        if len(names) > 1:
            raise ConfigError(f"{source}: {key}: 'choices' cannot be combined with other fields")
        return _choice(key, spec["choices"], source)
    if "values" in names:
        extra = names - {"values", "distribution", "probabilities"}
        if extra or spec.get("distribution", "categorical") != "categorical" or "probabilities" in names:
            raise ConfigError(f"{source}: {key}: W&B 'values' supports only the categorical distribution "
                              f"without probabilities")
        return _choice(key, spec["values"], source)
    if names & {"low", "high", "step", "log"}:
        return _range(key, spec.get("low"), spec.get("high"), spec.get("step"), spec.get("log", False), source)
    return _wandb_range(key, spec, source)


def _choice(key: str, choices: Any, source: str) -> Choice:
    if not isinstance(choices, (list, tuple)):
        raise ConfigError(f"{source}: {key}: choices must be a list")
    if not choices:
        raise ConfigError(f"{source}: {key}: choices are empty")
    values = [_coerce(key, c, source) for c in choices]
    seen: list[Any] = []
    for v in values:
        if v in seen:
            raise ConfigError(f"{source}: {key}: duplicate choice {v!r}")
        seen.append(v)
    return Choice(tuple(values))


def _number(key: str, name: str, value: Any, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{source}: {key}: {name} must be a number, got {_show(value)}")
    try:
        out = float(value)
    except OverflowError as e:
        raise ConfigError(f"{source}: {key}: {name} {_show(value)} is too large") from e
    if not math.isfinite(out):
        raise ConfigError(f"{source}: {key}: {name} must be finite, got {_show(value)}")
    return out


def _range(key: str, low: Any, high: Any, step: Any, log: Any, source: str) -> Range:
    if low is None or high is None:
        raise ConfigError(f"{source}: {key}: a range needs both low and high")
    lo, hi = _number(key, "low", low, source), _number(key, "high", high, source)
    if not isinstance(log, bool):
        raise ConfigError(f"{source}: {key}: log must be true or false, got {_show(log)}")
    kind = type(_coerce(key, lo, source)) if not isinstance(RunConfig().flat()[key], (bool, str)) else None
    if kind not in (int, float):
        raise ConfigError(f"{source}: {key}: a range needs a numeric parameter; give choices instead")
    integer = kind is int
    lo, hi = _coerce(key, lo, source), _coerce(key, hi, source)
    if lo > hi:
        raise ConfigError(f"{source}: {key}: low {lo} is greater than high {hi}")
    st: float | None = None
    if step is not None:
        st = _number(key, "step", step, source)
        if st <= 0:
            raise ConfigError(f"{source}: {key}: step must be positive, got {_show(step)}")
        if integer and not float(st).is_integer():
            raise ConfigError(f"{source}: {key}: step of an integer range must be an integer, got {_show(step)}")
        if log and (not integer or st != 1):
            raise ConfigError(f"{source}: {key}: log and step cannot be combined")
        st = int(st) if integer else st
    if log and lo <= 0:
        raise ConfigError(f"{source}: {key}: a log range needs low > 0, got {lo}")
    return Range(low=lo, high=hi, integer=integer, step=st, log=log)


def _wandb_range(key: str, spec: Mapping[str, Any], source: str) -> Param:
    if "min" not in spec or "max" not in spec:
        raise ConfigError(f"{source}: {key}: give values, value, or min and max")
    dist = spec.get("distribution")
    lo, hi, q = spec["min"], spec["max"], spec.get("q")
    if dist is None:
        # W&B infers int_uniform from integer bounds, uniform otherwise.
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi))
        dist = "int_uniform" if ints else "uniform"
    if dist in ("uniform", "int_uniform"):
        return _range(key, lo, hi, None, False, source)
    if dist == "q_uniform":
        return _range(key, lo, hi, 1 if q is None else q, False, source)
    if dist == "log_uniform_values":
        return _range(key, lo, hi, None, True, source)
    if dist == "log_uniform":
        # W&B's log_uniform takes natural-log bounds.
        lo_v, hi_v = _number(key, "min", lo, source), _number(key, "max", hi, source)
        if max(abs(lo_v), abs(hi_v)) > 700:
            raise ConfigError(f"{source}: {key}: log_uniform bounds are exponents; {lo_v}..{hi_v} overflow")
        return _range(key, math.exp(lo_v), math.exp(hi_v), None, True, source)
    raise ConfigError(f"{source}: {key}: W&B distribution {dist!r} is not supported; use uniform, int_uniform, "
                      f"q_uniform, log_uniform_values or log_uniform")
