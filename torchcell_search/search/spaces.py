"""Search spaces keyed by the report's dotted parameter names.

A space is data in one format, ours; the sweep-file readers (``sweep_files.py``, W&B's
vocabulary in ``_wandb.py``) translate the files they read into it, and this module knows
nothing of their formats::

    parameters:
      heads: {choices: [1, 5, 10]}
      model.num_layers: {choices: [2, 3, 4, 5, 6]}
      optimizer.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
      data_module.batch_size: {low: 16, high: 128, step: 16}
      model.dropout: {low: 0.0, high: 0.5, q: 0.1}       # sampled, then rounded to a multiple of q
      model.norm: {choices: [layer, batch], weights: [0.8, 0.2]}
      regression_task.lambda_dist: {distribution: normal, mu: 0.1, sigma: 0.02}
      model.kind: hetero_cell          # a fixed value
    metric: {name: val/gene_interaction/Pearson, goal: maximize}
    sampler: tpe

A spec may add ``also: [key, ...]``: the sampled value sets those keys too (one searched
value fanned out to several settings, as TorchCell's ``heads: ${heads}`` placeholders do).
``weights`` draw categories with those probabilities (Optuna samples the quantile u in
(0, 1) and the category is the first whose cumulative weight exceeds u). ``distribution``
``normal``/``log_normal`` (``mu``, ``sigma``) and ``beta`` (``a``, ``b``), which Optuna lacks,
are sampled the same way through their inverse CDF. Numbers written ``1e-3`` (a string to
YAML 1.1) are read as numbers.

Every value is checked against :class:`~torchcell_search.config.RunConfig` before a study
is touched, and stored in the parameter's own type (``1`` for an int key, ``1.0`` for a
float key).

Example:
    >>> space = parse_space({"parameters": {"heads": {"choices": [1, 5]}}})
    >>> space.grid()
    {'heads': [1, 5]}
"""

from __future__ import annotations

import bisect
import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import optuna
import yaml

from torchcell_search.config import RunConfig, parameter_keys
from torchcell_search.errors import ConfigError

__all__ = ["Choice", "Fixed", "Quantile", "Range", "SearchSpace", "check_pooling", "load_yaml", "parse_space",
           "read_number", "show", "unknown_key_message"]

KIND, POOLING = "model.kind", "model.pooling"
#: Keys a study sets itself (``--epochs``, ``--seed``, ``--device``), so a space may not.
STUDY_KEYS = ("seed", "trainer.device", "trainer.max_epochs")
_SPEC_KEYS = {"choices", "weights", "low", "high", "step", "log", "q", "value", "distribution", "mu", "sigma",
              "a", "b"}
#: Distributions Optuna lacks, sampled through their quantile: name -> its two parameters.
_SHAPES = {"normal": ("mu", "sigma"), "log_normal": ("mu", "sigma"), "beta": ("a", "b")}
_TOP_KEYS = {"parameters", "metric", "sampler"}
_SAMPLERS = ("tpe", "random", "grid")
_GOALS = ("maximize", "minimize")
#: Where every accepted key is listed, for messages about an unknown one.
KEYS_DOC = "docs/torchcell-keys.md"


@dataclass(frozen=True)
class Choice:
    """A categorical parameter; ``weights`` (summing to 1) draw the choices with those probabilities."""

    choices: tuple[Any, ...]
    weights: tuple[float, ...] | None = None

    def pick(self, u: float) -> Any:
        """The choice at quantile ``u``: the first whose cumulative weight exceeds ``u``."""
        cdf = [sum(self.weights[:i + 1]) for i in range(len(self.choices))] if self.weights else []
        return self.choices[min(bisect.bisect_right(cdf, u), len(self.choices) - 1)]


@dataclass(frozen=True)
class Range:
    """A numeric range; ``integer`` follows the parameter's type in :class:`RunConfig`.

    ``q``: sample a float in the range (log-uniform with ``log``), then round it to a
    multiple of ``q``: ``round(x / q) * q``, not a step from ``low``.
    """

    low: float
    high: float
    integer: bool
    step: float | None = None
    log: bool = False
    q: float | None = None


@dataclass(frozen=True)
class Quantile:
    """A distribution Optuna has no counterpart for: ``normal``/``log_normal`` (``a`` = mu,
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
    """Parameters by dotted key, plus the metric and sampler a sweep file names.

    Args:
        params: dotted key -> :class:`Choice` | :class:`Range` | :class:`Fixed`.
        source: where the space came from (a path or ``"<dict>"``), for messages.
        metric: ``{"name": ..., "goal": "maximize" | "minimize"}``, or ``None``.
        sampler: ``"tpe" | "random" | "grid"``, or ``None``.
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
            elif isinstance(p, Choice) and p.weights:
                value = p.pick(trial.suggest_float(f"{key}~quantile", 0.0, 1 - _QUANTILE_EPS))
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

    def sampled_keys(self) -> list[str]:
        """The keys a trial samples (not fixed), sorted."""
        return [key for key in sorted(self.params) if not isinstance(self.params[key], Fixed)]

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
            if isinstance(p, Choice) and p.weights:
                raise ConfigError(f"{self.source}: {key}: weighted choices have no grid (W&B's grid refuses "
                                  f"probabilities too); drop the weights, or use --sampler tpe|random")
            elif isinstance(p, Choice):
                out[key] = list(p.choices)
            elif isinstance(p, Quantile) or (isinstance(p, Range) and p.q and p.log):
                raise ConfigError(f"{self.source}: {key}: a sampled distribution has no grid; "
                                  f"give values, or use --sampler tpe|random")
            elif isinstance(p, Range) and p.q:
                # W&B's grid over q_uniform: np.arange(min, max, q) (wandb/sweeps src/sweeps/grid_search.py).
                n = max(0, math.ceil((p.high - p.low) / p.q))
                points = [p.low + i * p.q for i in range(n)]
                out[key] = [int(round(v)) for v in points] if p.integer else points
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
                params[key] = {"choices": list(p.choices), **({"weights": list(p.weights)} if p.weights else {})}
            elif isinstance(p, Quantile):
                names = _SHAPES[p.distribution]
                params[key] = {"distribution": p.distribution, names[0]: p.a, names[1]: p.b,
                               **({"q": p.q} if p.q else {})}
            else:
                spec: dict[str, Any] = {"low": p.low, "high": p.high}
                if p.step is not None:
                    spec["step"] = p.step
                if p.log:
                    spec["log"] = True
                if p.q:
                    spec["q"] = p.q
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
        params = data.get("parameters")
        if isinstance(params, Mapping):
            data = {**data, "parameters": {k: _stored_before_issue_20(v) for k, v in params.items()}}
        return parse_space(data, source=source, allow_empty=True)


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
    sampler = obj.get("sampler")
    if sampler is not None and sampler not in _SAMPLERS:
        raise ConfigError(f"{source}: sampler: {show(sampler)} is not one of {', '.join(_SAMPLERS)}")
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


def unknown_key_message(source: str, key: Any, known: set[str] | list[str]) -> str:
    """One line under 300 characters: the bad key, up to three close matches, where every key is listed."""
    name = str(key)[:80]
    close = difflib.get_close_matches(name, sorted(known), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"{source}: {name}: unknown key, refused rather than ignored{hint} (every key: {KEYS_DOC})"


def _check_key(key: Any, known: set[str], source: str) -> None:
    if not isinstance(key, str) or key not in known:
        raise ConfigError(unknown_key_message(source, key, known))
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
            raise ConfigError(f"{source}: {key}: also {other}: {show(value)} is not the same value there")


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


def _coerce(key: str, value: Any, source: str) -> Any:
    """``value`` checked by :class:`RunConfig` and returned in the parameter's type."""
    if isinstance(value, (Mapping, list, tuple, set)):
        raise ConfigError(f"{source}: {key}: {show(value)} is not a single value")
    try:
        return RunConfig().with_overrides({key: value}).flat()[key]
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from e
    except (ValueError, TypeError, OverflowError) as e:
        raise ConfigError(f"{source}: {key}: {show(value)} is not a valid value") from e


def show(value: Any) -> str:
    """``repr(value)``, shortened to 60 characters for messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse_param(key: str, spec: Any, source: str) -> Param:
    if isinstance(spec, (list, tuple)):
        return _choice(key, spec, None, source)
    if not isinstance(spec, Mapping):
        return Fixed(_coerce(key, spec, source))
    names = set(map(str, spec))
    unknown = sorted(n for n in names if n not in _SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{source}: {key}: unknown field {unknown[0]!r}; use choices(/weights) | "
                          f"low/high(/step/log/q) | value | distribution normal|log_normal|beta")
    if not names:
        raise ConfigError(f"{source}: {key}: empty spec; give choices, low/high or value")
    if "value" in names:
        if len(names) > 1:
            raise ConfigError(f"{source}: {key}: 'value' cannot be combined with other fields")
        return Fixed(_coerce(key, spec["value"], source))
    if "choices" in names:
        if names - {"choices", "weights"}:
            raise ConfigError(f"{source}: {key}: 'choices' cannot be combined with other fields")
        return _choice(key, spec["choices"], spec.get("weights"), source)
    if "distribution" in names:
        return _shape(key, spec, source)
    if "weights" in names:
        raise ConfigError(f"{source}: {key}: weights need choices")
    if "q" in names:
        if "step" in names:
            raise ConfigError(f"{source}: {key}: q and step cannot be combined")
        return _rounded(key, spec, source)
    return _range(key, spec.get("low"), spec.get("high"), spec.get("step"), spec.get("log", False), source)


def _choice(key: str, choices: Any, weights: Any, source: str) -> Choice:
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
    if weights is None:
        return Choice(tuple(values))
    if not isinstance(weights, (list, tuple)) or len(weights) != len(values):
        raise ConfigError(f"{source}: {key}: weights must be {len(values)} numbers, one per choice")
    ws = tuple(read_number(key, "weights", w, source) for w in weights)
    if any(w < 0 for w in ws) or not math.isclose(sum(ws), 1.0, abs_tol=1e-6):
        raise ConfigError(f"{source}: {key}: weights must be >= 0 and sum to 1, got {sum(ws):g}")
    return Choice(tuple(values), ws)


def read_number(key: str, name: str, value: Any, source: str) -> float:
    """A finite number (``"1e-3"`` strings included); else :class:`ConfigError` naming ``key`` and ``name``."""
    if isinstance(value, str):
        value = _numeric_string(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{source}: {key}: {name} must be a number, got {show(value)}")
    try:
        out = float(value)
    except OverflowError as e:
        raise ConfigError(f"{source}: {key}: {name} {show(value)} is too large") from e
    if not math.isfinite(out):
        raise ConfigError(f"{source}: {key}: {name} must be finite, got {show(value)}")
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
    lo, hi = read_number(key, "low", low, source), read_number(key, "high", high, source)
    if not isinstance(log, bool):
        raise ConfigError(f"{source}: {key}: log must be true or false, got {show(log)}")
    kind = _numeric_kind(key)
    if kind is None:
        raise ConfigError(f"{source}: {key}: a range needs a numeric parameter; give choices instead")
    integer = kind is int
    lo, hi = _coerce(key, lo, source), _coerce(key, hi, source)
    if lo > hi:
        raise ConfigError(f"{source}: {key}: low {lo} is greater than high {hi}")
    st: float | None = None
    if step is not None:
        st = read_number(key, "step", step, source)
        if st <= 0:
            raise ConfigError(f"{source}: {key}: step must be positive, got {show(step)}")
        if integer and not float(st).is_integer():
            raise ConfigError(f"{source}: {key}: step of an integer range must be an integer, got {show(step)}")
        if log and (not integer or st != 1):
            raise ConfigError(f"{source}: {key}: log and step cannot be combined")
        st = (int(st) if st != 1 else None) if integer else st  # an int range's step 1 is its default
    if log and lo <= 0:
        raise ConfigError(f"{source}: {key}: a log range needs low > 0, got {lo}")
    return Range(low=lo, high=hi, integer=integer, step=st, log=log)


def _numeric_kind(key: str) -> type | None:
    """``int`` or ``float`` for a numeric parameter (``X | None`` fields included), else None."""
    try:
        value = RunConfig().with_overrides({key: 1}).flat()[key]
    except ConfigError:
        return None
    return type(value) if type(value) in (int, float) else None


def _rounded(key: str, spec: Mapping[str, Any], source: str) -> Range:
    """``{low, high, q, log?}``: sampled in the range, then rounded to a multiple of ``q``."""
    if spec.get("low") is None or spec.get("high") is None:
        raise ConfigError(f"{source}: {key}: a range needs both low and high")
    # The bounds stay floats on an int key too: only the rounded values must be integers.
    lo, hi = read_number(key, "low", spec["low"], source), read_number(key, "high", spec["high"], source)
    log, q = spec.get("log", False), read_number(key, "q", spec["q"], source)
    if not isinstance(log, bool):
        raise ConfigError(f"{source}: {key}: log must be true or false, got {show(log)}")
    kind = _numeric_kind(key)
    if kind is None:
        raise ConfigError(f"{source}: {key}: a range needs a numeric parameter; give choices instead")
    if q <= 0:
        raise ConfigError(f"{source}: {key}: q must be positive, got {show(spec['q'])}")
    if lo > hi or (log and lo <= 0):
        raise ConfigError(f"{source}: {key}: needs {'0 < ' if log else ''}low <= high, got {lo}..{hi}")
    for end in (lo, hi):
        _coerce(key, round(end / q) * q if kind is float else int(round(round(end / q) * q)), source)
    return Range(low=lo, high=hi, integer=kind is int, log=log, q=q)


def _shape(key: str, spec: Mapping[str, Any], source: str) -> Quantile:
    dist = spec["distribution"]
    if not isinstance(dist, str) or dist not in _SHAPES:
        raise ConfigError(f"{source}: {key}: distribution {show(dist)} is not one of {', '.join(_SHAPES)}")
    names = _SHAPES[dist]
    extra = sorted(set(map(str, spec)) - {*names, "distribution", "q"})
    if extra or any(n not in spec for n in names):
        raise ConfigError(f"{source}: {key}: distribution {dist!r} requires {' and '.join(names)}"
                          + (f" and does not use {extra[0]!r}" if extra else ""))
    a, b = (read_number(key, n, spec[n], source) for n in names)
    if b <= 0 or (dist == "beta" and a <= 0):
        raise ConfigError(f"{source}: {key}: distribution {dist!r}: "
                          f"{' and '.join(names if dist == 'beta' else names[1:])} must be > 0")
    q = read_number(key, "q", spec["q"], source) if "q" in spec else None
    if q is not None and q <= 0:
        raise ConfigError(f"{source}: {key}: q must be positive, got {show(spec['q'])}")
    kind = _numeric_kind(key)
    if kind is None:
        raise ConfigError(f"{source}: {key}: distribution {dist!r} needs a numeric parameter; give choices instead")
    return Quantile(dist, a, b, integer=kind is int, q=q)


def _stored_before_issue_20(spec: Any) -> Any:
    """Spaces stored by earlier versions spelt a q-rounded log range and a rounded quantile law
    in W&B's words; read them as the same parameters."""
    if not isinstance(spec, Mapping):
        return spec
    dist = spec.get("distribution")
    if dist == "q_log_uniform_values" and {"min", "max", "q"} <= set(spec):
        return {"low": spec["min"], "high": spec["max"], "log": True, "q": spec["q"],
                **({"also": spec["also"]} if "also" in spec else {})}
    if isinstance(dist, str) and dist.startswith("q_") and dist[2:] in _SHAPES:
        return {**spec, "distribution": dist[2:]}
    return spec
