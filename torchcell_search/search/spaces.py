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

A spec may add ``also: [key, ...]``: the sampled value sets those keys too (one searched
value fanned out to several settings, as TorchCell's ``heads: ${heads}`` placeholders do).
Every W&B ``distribution`` is read: ``constant``, ``categorical`` (``probabilities`` are
checked, then dropped: Optuna draws categories unweighted), ``int_uniform``, ``uniform``,
``q_uniform``, ``log_uniform`` (natural-log bounds), ``log_uniform_values``,
``inv_log_uniform(_values)`` (the same log-uniform law), ``q_log_uniform(_values)``
(log-uniform, then rounded to a multiple of ``q``), and ``normal``, ``log_normal``,
``beta`` and their ``q_`` forms, which Optuna lacks: it samples their quantile in (0, 1)
and the value is the inverse CDF there, as W&B's own engine computes it. Numbers written
``1e-3`` (a string to YAML 1.1) are read as numbers.

Every value is checked against :class:`~torchcell_search.config.RunConfig` before a study
is touched, and stored in the parameter's own type (``1`` for an int key, ``1.0`` for a
float key).

Example:
    >>> space = parse_space({"parameters": {"heads": {"choices": [1, 5]}}})
    >>> space.grid()
    {'heads': [1, 5]}
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import optuna
import yaml

from torchcell_search.config import RunConfig, parameter_keys
from torchcell_search.errors import ConfigError

__all__ = ["Choice", "Fixed", "Quantile", "Range", "SearchSpace", "check_pooling", "load_space", "load_yaml", "parse_space"]

KIND, POOLING = "model.kind", "model.pooling"
#: Keys a study sets itself (``--epochs``, ``--seed``, ``--device``), so a space may not.
STUDY_KEYS = ("seed", "trainer.device", "trainer.max_epochs")
_OUR_SPEC_KEYS = {"choices", "low", "high", "step", "log", "value"}
_WANDB_SPEC_KEYS = {"values", "value", "min", "max", "distribution", "q", "probabilities", "mu", "sigma", "a", "b"}
#: W&B distributions by the fields they take (besides ``q``).
_WANDB_RANGES = ("int_uniform", "uniform", "q_uniform", "log_uniform", "log_uniform_values", "q_log_uniform",
                 "q_log_uniform_values", "inv_log_uniform", "inv_log_uniform_values")
_WANDB_SHAPES = {"normal": ("mu", "sigma"), "q_normal": ("mu", "sigma"), "log_normal": ("mu", "sigma"),
                 "q_log_normal": ("mu", "sigma"), "beta": ("a", "b"), "q_beta": ("a", "b")}
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
    """A numeric range; ``integer`` follows the parameter's type in :class:`RunConfig`.

    ``q``: sample a float in the range, then round it to a multiple of ``q`` (W&B's
    ``q_log_uniform``; Optuna's ``step`` cannot be combined with ``log``).
    """

    low: float
    high: float
    integer: bool
    step: float | None = None
    log: bool = False
    q: float | None = None


@dataclass(frozen=True)
class Quantile:
    """A W&B distribution Optuna has no counterpart for: ``normal``/``log_normal`` (``a`` = mu,
    ``b`` = sigma) or ``beta`` (``a``, ``b``), optionally rounded to a multiple of ``q``.

    Optuna samples the quantile u in (0, 1) under the name ``<key>~quantile``; the value is
    the distribution's inverse CDF at u.
    """

    distribution: str  # "normal" | "log_normal" | "beta"
    a: float
    b: float
    integer: bool
    q: float | None = None

    def value(self, u: float) -> float:
        from scipy import stats

        if self.distribution == "beta":
            x = float(stats.beta.ppf(u, self.a, self.b))
        else:
            x = float(stats.norm.ppf(u, loc=self.a, scale=self.b))
            x = math.exp(x) if self.distribution == "log_normal" else x
        return round(x / self.q) * self.q if self.q else x


@dataclass(frozen=True)
class Fixed:
    """A value every trial uses; not sampled."""

    value: Any


Param = Choice | Range | Quantile | Fixed
_QUANTILE_EPS = 1e-6


@dataclass(frozen=True)
class SearchSpace:
    """Parameters by dotted key, plus what a W&B file says about the metric and method.

    Args:
        params: dotted key -> :class:`Choice` | :class:`Range` | :class:`Fixed`.
        source: where the space came from (a path or ``"<dict>"``), for messages.
        metric: ``{"name": ..., "goal": "maximize" | "minimize"}`` from a W&B file, or ``None``.
        sampler: ``"tpe" | "random" | "grid"`` from a W&B ``method``, or ``None``.
        links: key -> further keys its value also sets (``also:``).
    """

    params: dict[str, Param]
    source: str = "<dict>"
    metric: dict[str, str] | None = None
    sampler: str | None = None
    links: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample every parameter (sorted by key) and return ``{key: value}``, fixed and linked ones included."""
        out: dict[str, Any] = {}
        for key in sorted(self.params):  # "model.kind" sorts before "model.pooling"
            p = self.params[key]
            if key == POOLING and out.get(KIND) == "perturbation_set":
                continue  # that model does not pool: the trial neither samples nor records it
            if isinstance(p, Fixed):
                value = p.value
            elif isinstance(p, Choice):
                value = trial.suggest_categorical(key, list(p.choices))
            elif isinstance(p, Quantile):
                value = p.value(trial.suggest_float(f"{key}~quantile", _QUANTILE_EPS, 1 - _QUANTILE_EPS))
                value = int(round(value)) if p.integer else value
            elif p.q:
                value = trial.suggest_float(key, p.low, p.high, log=p.log)
                value = round(value / p.q) * p.q
                value = int(round(value)) if p.integer else value
            elif p.integer:
                value = trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
            else:
                value = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
            for name in (key, *self.links.get(key, ())):
                out[name] = value
        return out

    def fixed(self) -> dict[str, Any]:
        """The fixed values (``{key: value}``, linked keys included)."""
        return {name: p.value for key, p in sorted(self.params.items()) if isinstance(p, Fixed)
                for name in (key, *self.links.get(key, ()))}

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
            elif isinstance(p, Quantile) or (isinstance(p, Range) and p.q):
                raise ConfigError(f"{self.source}: {key}: a sampled distribution has no grid; "
                                  f"give values, or use --sampler tpe|random")
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
            elif isinstance(p, Quantile):
                names = _WANDB_SHAPES[p.distribution]
                params[key] = {"distribution": f"q_{p.distribution}" if p.q else p.distribution,
                               names[0]: p.a, names[1]: p.b, **({"q": p.q} if p.q else {})}
            elif p.q:
                params[key] = {"distribution": "q_log_uniform_values", "min": p.low, "max": p.high, "q": p.q}
            else:
                spec: dict[str, Any] = {"low": p.low, "high": p.high}
                if p.step is not None:
                    spec["step"] = p.step
                if p.log:
                    spec["log"] = True
                params[key] = spec
            if self.links.get(key):
                params[key] = {**params[key], "also": list(self.links[key])}
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
        space = parse_space(data, source=source, allow_empty=True)
        return dataclasses.replace(space, sampler=sampler or space.sampler)


def load_space(path: str | Path) -> SearchSpace:
    """Read a search space file (ours, a W&B sweep file or a Hydra config; see ``sweep_files.py``).

    Raises:
        ConfigError: the file is missing or unreadable, is not YAML, or a parameter is invalid;
            the message names the file and the key.
    """
    from torchcell_search.search.sweep_files import read_sweep_file

    return read_sweep_file(path).space


def load_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` whose every failure is a :class:`ConfigError` naming ``source`` (and the line)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"{source}: not valid YAML{line}") from e
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        raise ConfigError(f"{source}: not valid YAML ({type(e).__name__})") from e


def parse_space(obj: Mapping[str, Any] | str, *, source: str = "<dict>", allow_empty: bool = False) -> SearchSpace:
    """Parse and validate a search space given as a dict or YAML text.

    Args:
        allow_empty: accept no parameters (a Hydra run config that searches nothing).

    Raises:
        ConfigError: anything malformed; the message starts with ``source`` and the key.
    """
    if isinstance(obj, str):
        obj = load_yaml(obj, source)
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{source}: expected a mapping with a 'parameters' section")
    bad = [str(k) for k in obj if k not in _TOP_KEYS]
    if bad:
        raise ConfigError(f"{source}: unknown section {bad[0]!r}; expected {', '.join(sorted(_TOP_KEYS))}")
    params = obj.get("parameters")
    if not isinstance(params, Mapping) or not (params or allow_empty):
        raise ConfigError(f"{source}: 'parameters' must be a non-empty mapping of dotted key -> spec")
    metric = _parse_metric(obj.get("metric"), source)
    sampler = _parse_method(obj.get("method"), source)
    known = set(parameter_keys())
    out: dict[str, Param] = {}
    links: dict[str, tuple[str, ...]] = {}
    for key in sorted(params, key=str):
        _check_key(key, known, source)
        spec = params[key]
        if isinstance(spec, Mapping) and "also" in spec:
            spec = dict(spec)
            links[key] = _links(key, spec.pop("also"), known, source)
        out[key] = _parse_param(key, spec, source)
        for other in links.get(key, ()):
            _check_linked(key, other, out[key], source)
    taken = sorted(set(out) & {k for ks in links.values() for k in ks})
    if taken or sum(map(len, links.values())) != len({k for ks in links.values() for k in ks}):
        raise ConfigError(f"{source}: {taken[0] if taken else 'also'}: a key is set by two parameters (via also)")
    check_pooling(out, {}, source)
    return SearchSpace(out, source=source, metric=metric, sampler=sampler, links=links)


def _check_key(key: Any, known: set[str], source: str) -> None:
    if not isinstance(key, str) or key not in known:
        raise ConfigError(f"{source}: unknown parameter {str(key)!r}; known: {', '.join(sorted(known))}")
    if key in STUDY_KEYS:
        raise ConfigError(f"{source}: {key}: set by the study (--epochs, --seed, --device), not by a space")


def _links(key: str, also: Any, known: set[str], source: str) -> tuple[str, ...]:
    if not isinstance(also, (list, tuple)) or not also:
        raise ConfigError(f"{source}: {key}: also must be a non-empty list of parameter keys")
    for other in also:
        _check_key(other, known, source)
        if other == key:
            raise ConfigError(f"{source}: {key}: also names the key itself")
    return tuple(sorted(set(also)))


def _check_linked(key: str, other: str, param: Param, source: str) -> None:
    """Every value ``param`` can take must be valid for ``other`` too, in the same type."""
    if isinstance(param, Fixed):
        values = [param.value]
    elif isinstance(param, Choice):
        values = list(param.choices)
    else:
        values = [param.low, param.high] if isinstance(param, Range) else []
        kind = _numeric_kind(other)
        if kind is None or kind is not (int if param.integer else float) and not (kind is float and param.integer):
            raise ConfigError(f"{source}: {key}: also {other}: a {'integer' if param.integer else 'float'} "
                              f"range cannot set a {kind.__name__} parameter")
    for value in values:
        if _coerce(other, value, source) != value:
            raise ConfigError(f"{source}: {key}: also {other}: {_show(value)} is not the same value there")


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
    if isinstance(value, (Mapping, list, tuple, set)):
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
    if "value" in names and spec.get("distribution") != "constant":
        if len(names) > 1:
            raise ConfigError(f"{source}: {key}: 'value' cannot be combined with other fields")
        return Fixed(_coerce(key, spec["value"], source))
    if "choices" in names:
        if len(names) > 1:
            raise ConfigError(f"{source}: {key}: 'choices' cannot be combined with other fields")
        return _choice(key, spec["choices"], source)
    if "values" in names:
        extra = names - {"values", "distribution", "probabilities"}
        if extra or spec.get("distribution", "categorical") != "categorical":
            raise ConfigError(f"{source}: {key}: W&B 'values' takes only the categorical distribution "
                              f"(and probabilities)")
        choice = _choice(key, spec["values"], source)
        if "probabilities" in names:
            _check_probabilities(key, spec["probabilities"], len(spec["values"]), source)
        return choice
    if spec.get("distribution") == "constant":
        if names - {"distribution", "value"} or "value" not in names:
            raise ConfigError(f"{source}: {key}: the constant distribution takes only value")
        return Fixed(_coerce(key, spec["value"], source))
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
    if isinstance(value, str):
        value = _numeric_string(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{source}: {key}: {name} must be a number, got {_show(value)}")
    try:
        out = float(value)
    except OverflowError as e:
        raise ConfigError(f"{source}: {key}: {name} {_show(value)} is too large") from e
    if not math.isfinite(out):
        raise ConfigError(f"{source}: {key}: {name} must be finite, got {_show(value)}")
    return out


def _numeric_string(text: str) -> Any:
    """``"1e-3"`` -> 0.001 (YAML 1.1 reads exponents without a dot as strings); other text unchanged."""
    try:
        return int(text) if text.strip().lstrip("+-").isdigit() else float(text)
    except ValueError:
        return text


def _range(key: str, low: Any, high: Any, step: Any, log: Any, source: str) -> Range:
    if low is None or high is None:
        raise ConfigError(f"{source}: {key}: a range needs both low and high")
    lo, hi = _number(key, "low", low, source), _number(key, "high", high, source)
    if not isinstance(log, bool):
        raise ConfigError(f"{source}: {key}: log must be true or false, got {_show(log)}")
    kind = _numeric_kind(key)
    if kind is None:
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


def _check_probabilities(key: str, probabilities: Any, n: int, source: str) -> None:
    if (not isinstance(probabilities, (list, tuple)) or len(probabilities) != n
            or not all(isinstance(_numeric_string(p) if isinstance(p, str) else p, (int, float))
                       and not isinstance(p, bool) for p in probabilities)):
        raise ConfigError(f"{source}: {key}: probabilities must be {n} numbers, one per value")
    total = sum(float(_numeric_string(p) if isinstance(p, str) else p) for p in probabilities)
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ConfigError(f"{source}: {key}: probabilities must sum to 1, got {total:g}")


def _numeric_kind(key: str) -> type | None:
    """``int`` or ``float`` for a numeric parameter (``X | None`` fields included), else None."""
    try:
        value = RunConfig().with_overrides({key: 1}).flat()[key]
    except ConfigError:
        return None
    return type(value) if type(value) in (int, float) else None


def _kind(key: str, source: str) -> type:
    kind = _numeric_kind(key)
    if kind is None:
        raise ConfigError(f"{source}: {key}: a W&B distribution needs a numeric parameter; give values instead")
    return kind


def _wandb_range(key: str, spec: Mapping[str, Any], source: str) -> Param:
    dist = spec.get("distribution")
    if dist is not None and not isinstance(dist, str):
        raise ConfigError(f"{source}: {key}: W&B distribution must be a name, got {dist!r}")
    if dist in _WANDB_SHAPES:
        return _wandb_shape(key, dist, spec, source)
    if dist is not None and dist not in _WANDB_RANGES:
        raise ConfigError(f"{source}: {key}: W&B distribution {dist!r} is not one of constant, categorical, "
                          f"{', '.join(_WANDB_RANGES)}, {', '.join(_WANDB_SHAPES)}")
    extra = sorted(set(spec) - {"min", "max", "distribution", "q"})
    if "min" not in spec or "max" not in spec or extra:
        what = f"does not use {extra[0]!r}" if extra else "needs min and max"
        raise ConfigError(f"{source}: {key}: distribution {dist or 'uniform'!r} {what}")
    lo, hi = _number(key, "min", spec["min"], source), _number(key, "max", spec["max"], source)
    q = spec.get("q")
    if dist is None:
        # W&B infers int_uniform from integer bounds, uniform otherwise.
        ints = all(float(v).is_integer() and not isinstance(_numeric_string(str(v)), float)
                   for v in (spec["min"], spec["max"]))
        dist = "int_uniform" if ints else "uniform"
    if q is not None and not dist.startswith("q_"):
        raise ConfigError(f"{source}: {key}: distribution {dist!r} does not use 'q'")
    if dist in ("uniform", "int_uniform"):
        return _range(key, lo, hi, None, False, source)
    if dist == "q_uniform":
        return _range(key, lo, hi, 1 if q is None else q, False, source)
    if dist in ("log_uniform", "q_log_uniform", "inv_log_uniform"):
        # Natural-log bounds (inv_: of 1/x, which is the same log-uniform law between exp(-max) and exp(-min)).
        if max(abs(lo), abs(hi)) > 700:
            raise ConfigError(f"{source}: {key}: {dist} bounds are exponents; {lo}..{hi} overflow")
        lo, hi = (math.exp(-hi), math.exp(-lo)) if dist == "inv_log_uniform" else (math.exp(lo), math.exp(hi))
    elif dist == "inv_log_uniform_values" and lo <= 0:
        raise ConfigError(f"{source}: {key}: {dist} needs min > 0, got {lo}")
    if dist in ("q_log_uniform", "q_log_uniform_values"):
        step = _number(key, "q", 1 if q is None else q, source)
        if step <= 0:
            raise ConfigError(f"{source}: {key}: q must be positive, got {_show(q)}")
        r = _range(key, lo, hi, None, True, source) if _kind(key, source) is float else None
        if lo <= 0 or lo > hi:
            raise ConfigError(f"{source}: {key}: {dist} needs 0 < min <= max, got {lo}..{hi}")
        _coerce(key, round(lo / step) * step or step, source)
        return Range(low=lo, high=hi, integer=r is None, log=True, q=step)
    return _range(key, lo, hi, None, True, source)


def _wandb_shape(key: str, dist: str, spec: Mapping[str, Any], source: str) -> Quantile:
    names = _WANDB_SHAPES[dist]
    extra = sorted(set(spec) - {*names, "distribution", "q"})
    if extra or any(n not in spec for n in names):
        raise ConfigError(f"{source}: {key}: distribution {dist!r} requires {' and '.join(names)}"
                          + (f" and does not use {extra[0]!r}" if extra else ""))
    a, b = (_number(key, n, spec[n], source) for n in names)
    if b <= 0 or (dist.endswith("beta") and a <= 0):
        raise ConfigError(f"{source}: {key}: distribution {dist!r}: {' and '.join(names[1:] if dist.endswith('normal') else names)} must be > 0")
    q = spec.get("q")
    if q is not None and not dist.startswith("q_"):
        raise ConfigError(f"{source}: {key}: distribution {dist!r} does not use 'q'")
    step = _number(key, "q", 1 if q is None else q, source) if dist.startswith("q_") else None
    if step is not None and step <= 0:
        raise ConfigError(f"{source}: {key}: q must be positive, got {_show(q)}")
    return Quantile(dist.removeprefix("q_"), a, b, integer=_kind(key, source) is int, q=step)
