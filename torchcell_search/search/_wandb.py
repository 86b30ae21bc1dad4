"""W&B sweep settings as W&B's own sweep engine defines them, turned into our space specs and study options.

Every meaning here is read from wandb/sweeps (github.com/wandb/sweeps, commit b1dfc5f):

- ``src/sweeps/config/schema.json``: which fields each distribution takes (``param_*``
  definitions, ``additionalProperties: false``), the type W&B infers when ``distribution``
  is absent (``int_uniform`` for integer ``min``/``max``, ``categorical_w_probabilities`` for
  ``values`` with ``probabilities``), ``metric.goal``'s default ``minimize``, and
  ``hyperband_stopping``'s defaults (``eta: 3``, ``strict: true``).
- ``src/sweeps/params.py`` (``HyperParameter.ppf``): ``q_uniform`` is
  ``round(uniform(min, max) / q) * q``, an integer when ``q`` is; ``int_uniform`` draws
  integers; ``log_uniform`` takes natural-log bounds; ``categorical_w_probabilities`` picks
  ``values[argmin(u >= cumsum(probabilities))]``.
- ``src/sweeps/grid_search.py``: a grid takes categorical, constant, ``int_uniform``
  (``range(min, max + 1)``) and ``q_uniform`` (``np.arange(min, max, q)``) parameters, and no
  probabilities.
- ``src/sweeps/hyperband_stopping.py``: the bands (``pruners.wandb_bands``).

The output is our spec format (``spaces.py``), so ``spaces`` never reads W&B's vocabulary.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from torchcell_search.errors import ConfigError
from torchcell_search.search.pruners import wandb_bands
from torchcell_search.search.spaces import read_number, show

#: A spec is W&B's when it has one of these fields (ours: choices, low/high/step/log/q, value).
WANDB_FIELDS = frozenset({"values", "min", "max", "distribution", "probabilities", "mu", "sigma", "a", "b"})
_OUR_FIELDS = frozenset({"choices", "low", "high", "step", "log", "also"})
METHODS = {"bayes": "tpe", "random": "random", "grid": "grid"}
_GOALS = ("maximize", "minimize")
_RANGES = ("int_uniform", "uniform", "q_uniform", "log_uniform", "log_uniform_values", "q_log_uniform",
           "q_log_uniform_values", "inv_log_uniform", "inv_log_uniform_values")
_SHAPES = {"normal": ("mu", "sigma"), "q_normal": ("mu", "sigma"), "log_normal": ("mu", "sigma"),
           "q_log_normal": ("mu", "sigma"), "beta": ("a", "b"), "q_beta": ("a", "b")}
_DISTRIBUTIONS = ("constant", "categorical", "categorical_w_probabilities", *_RANGES, *_SHAPES)


def is_wandb_spec(spec: Any) -> bool:
    return isinstance(spec, Mapping) and bool(set(map(str, spec)) & WANDB_FIELDS)


def wandb_spec(key: str, spec: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A W&B parameter spec as our spec (``choices``/``weights``, ``low``/``high``/``step``/``log``/``q``,
    ``value``, or a ``distribution`` of normal / log_normal / beta).

    Raises:
        ConfigError: a field the distribution does not take, or a bad value; names the key.
    """
    names = set(map(str, spec))
    mixed = sorted(names & _OUR_FIELDS - {"also"})
    if mixed:
        raise ConfigError(f"{source}: {key}: mixes our field {mixed[0]!r} with W&B fields")
    also = {"also": spec["also"]} if "also" in spec else {}
    spec = {k: v for k, v in spec.items() if k != "also"}
    dist = spec.get("distribution")
    if dist is not None and (not isinstance(dist, str) or dist not in _DISTRIBUTIONS):
        raise ConfigError(f"{source}: {key}: W&B distribution {show(dist)} is not one of {', '.join(_DISTRIBUTIONS)}")
    if "value" in spec or dist == "constant":
        if names - {"value", "distribution", "also"} or "value" not in spec:
            raise ConfigError(f"{source}: {key}: the constant distribution takes only value")
        return {"value": spec["value"], **also}
    if "values" in spec or dist in ("categorical", "categorical_w_probabilities"):
        return {**_categorical(key, spec, dist, source), **also}
    if dist in _SHAPES:
        return {**_shape(key, dist, spec, source), **also}
    return {**_range(key, spec, dist, source), **also}


def _categorical(key: str, spec: Mapping[str, Any], dist: str | None, source: str) -> dict[str, Any]:
    weighted = "probabilities" in spec
    if dist == "categorical" and weighted:
        # schema.json param_categorical has additionalProperties: false.
        raise ConfigError(f"{source}: {key}: W&B's categorical takes no probabilities; write "
                          f"distribution: categorical_w_probabilities")
    if dist == "categorical_w_probabilities" and not weighted:
        raise ConfigError(f"{source}: {key}: categorical_w_probabilities needs probabilities, one per value")
    extra = sorted(set(map(str, spec)) - {"values", "distribution", "probabilities"})
    if extra or "values" not in spec:
        raise ConfigError(f"{source}: {key}: W&B 'values' takes only probabilities besides"
                          + (f"; {extra[0]!r} is not used" if extra else "; values missing"))
    values = spec["values"]
    if not weighted:
        return {"choices": values}
    probabilities = spec["probabilities"]
    if not isinstance(values, list) or not isinstance(probabilities, list) or len(probabilities) != len(values):
        raise ConfigError(f"{source}: {key}: probabilities must be a list of one number per value")
    weights = [read_number(key, "probabilities", p, source) for p in probabilities]
    if any(w < 0 for w in weights) or not math.isclose(sum(weights), 1.0, abs_tol=1e-6):
        raise ConfigError(f"{source}: {key}: probabilities must be >= 0 and sum to 1, got {sum(weights):g}")
    return {"choices": values, "weights": weights}


def _range(key: str, spec: Mapping[str, Any], dist: str | None, source: str) -> dict[str, Any]:
    extra = sorted(set(map(str, spec)) - {"min", "max", "distribution", "q"})
    if "min" not in spec or "max" not in spec or extra:
        what = f"does not use {extra[0]!r}" if extra else "needs min and max"
        raise ConfigError(f"{source}: {key}: distribution {dist or 'uniform'!r} {what}")
    lo, hi = read_number(key, "min", spec["min"], source), read_number(key, "max", spec["max"], source)
    if dist is None:  # schema.json: integer min and max validate as param_int_uniform first
        dist = "int_uniform" if all(_is_int(spec[n]) for n in ("min", "max")) else "uniform"
    q = spec.get("q")
    if q is not None and not dist.startswith("q_"):
        raise ConfigError(f"{source}: {key}: distribution {dist!r} does not use 'q'")
    step = (1 if q is None else q) if dist.startswith("q_") else None
    if step is not None:
        step = read_number(key, "q", step, source) if not isinstance(step, int) or isinstance(step, bool) else step
        if step <= 0:
            raise ConfigError(f"{source}: {key}: q must be positive, got {show(q)}")
    if dist == "int_uniform":
        if not all(_is_int(spec[n]) for n in ("min", "max")):
            raise ConfigError(f"{source}: {key}: int_uniform takes integer min and max, got {show(spec['min'])}.."
                              f"{show(spec['max'])}")
        return {"low": int(lo), "high": int(hi), "step": 1}  # integers, also on a float key
    if dist == "uniform":
        return {"low": lo, "high": hi}
    if dist == "q_uniform":
        return {"low": lo, "high": hi, "q": step}
    if dist in ("log_uniform", "q_log_uniform", "inv_log_uniform"):
        # Natural-log bounds (inv_: of 1/x, the same log-uniform law between exp(-max) and exp(-min)).
        if max(abs(lo), abs(hi)) > 700:
            raise ConfigError(f"{source}: {key}: {dist} bounds are exponents; {lo}..{hi} overflow")
        lo, hi = (math.exp(-hi), math.exp(-lo)) if dist == "inv_log_uniform" else (math.exp(lo), math.exp(hi))
    elif lo <= 0:
        raise ConfigError(f"{source}: {key}: {dist} needs min > 0, got {lo}")
    return {"low": lo, "high": hi, "log": True, **({"q": step} if step is not None else {})}


def _shape(key: str, dist: str, spec: Mapping[str, Any], source: str) -> dict[str, Any]:
    names = _SHAPES[dist]
    extra = sorted(set(map(str, spec)) - {*names, "distribution", "q"})
    if extra or any(n not in spec for n in names):
        raise ConfigError(f"{source}: {key}: distribution {dist!r} requires {' and '.join(names)}"
                          + (f" and does not use {extra[0]!r}" if extra else ""))
    q = spec.get("q")
    if q is not None and not dist.startswith("q_"):
        raise ConfigError(f"{source}: {key}: distribution {dist!r} does not use 'q'")
    out: dict[str, Any] = {"distribution": dist.removeprefix("q_"), **{n: spec[n] for n in names}}
    if dist.startswith("q_"):
        out["q"] = 1 if q is None else q
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def wandb_method(method: Any, source: str) -> str | None:
    """``method`` as our sampler name (bayes -> tpe)."""
    if method is None:
        return None
    if not isinstance(method, str) or method not in METHODS:
        raise ConfigError(f"{source}: method: {method!r} is not one of {', '.join(METHODS)}")
    return METHODS[method]


def wandb_metric(metric: Any, source: str) -> tuple[dict[str, str] | None, list[str]]:
    """``metric`` as ``{name, goal}`` with W&B's default goal (minimize), and notices.

    ``impute`` / ``impute_while_running`` feed W&B's Bayesian search for failed runs; here a
    failed trial is retried from its checkpoint and Optuna's samplers skip it, so they are named.
    """
    if metric is None:
        return None, []
    if not isinstance(metric, Mapping) or not isinstance(metric.get("name"), str):
        raise ConfigError(f"{source}: metric: expected {{name: ..., goal: maximize|minimize}}")
    unknown = sorted(set(map(str, metric)) - {"name", "goal", "target", "impute", "impute_while_running"})
    if unknown:
        raise ConfigError(f"{source}: metric.{unknown[0]}: not a field of W&B's metric")
    if "target" in metric:
        raise ConfigError(f"{source}: metric.target: stopping the study at a target value is not supported; "
                          f"remove it and use run_cap / --n-trials")
    goal = metric.get("goal")
    notices = []
    if goal is None:
        goal = "minimize"  # schema.json definitions.metric.goal default
        notices.append(f"{source}: metric.goal not given: minimize {metric['name']}, W&B's default "
                       f"(write goal: maximize to maximise it)")
    elif goal not in _GOALS:
        raise ConfigError(f"{source}: metric.goal: {goal!r} is not maximize or minimize")
    imputes = [f"metric.{k}" for k in ("impute", "impute_while_running") if k in metric]
    if imputes:
        notices.append(f"{source}: not used here: {', '.join(imputes)} (W&B's value for failed runs in "
                       f"bayes; a failed trial here is retried from its checkpoint, and samplers skip it)")
    return {"name": metric["name"], "goal": goal}, notices


def early_terminate(early: Any, source: str) -> dict[str, Any]:
    """``early_terminate`` as W&B reads it, defaults filled (``eta: 3``, ``strict: true``).

    Raises:
        ConfigError: not hyperband, an unknown field, neither ``max_iter`` + ``s`` nor
            ``min_iter``, or settings that give no band.
    """
    if not isinstance(early, Mapping) or early.get("type") != "hyperband":
        kind = early.get("type") if isinstance(early, Mapping) else early
        raise ConfigError(f"{source}: early_terminate.type: {kind!r} is not supported; W&B's only type is hyperband")
    unknown = sorted(set(map(str, early)) - {"type", "min_iter", "max_iter", "eta", "s", "strict"})
    if unknown:
        raise ConfigError(f"{source}: early_terminate.{unknown[0]}: not a field of W&B's hyperband")
    out: dict[str, Any] = {"eta": 3, "strict": True}
    for name in ("min_iter", "max_iter", "s"):
        value = early.get(name)
        if value is not None:
            if not _is_int(value) or value < 1:
                raise ConfigError(f"{source}: early_terminate.{name}: expected an integer >= 1, got {show(value)}")
            out[name] = value
    if early.get("eta") is not None:
        eta = early["eta"]
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta > 1:
            raise ConfigError(f"{source}: early_terminate.eta: expected a number > 1, got {show(eta)}")
        out["eta"] = eta
    if early.get("strict") is not None:
        if not isinstance(early["strict"], bool):
            raise ConfigError(f"{source}: early_terminate.strict: expected true or false, got {show(early['strict'])}")
        out["strict"] = early["strict"]
    if "max_iter" in out and "s" not in out:
        raise ConfigError(f"{source}: early_terminate.s: W&B needs s with max_iter (or give min_iter)")
    if "max_iter" not in out and "min_iter" not in out:
        raise ConfigError(f"{source}: early_terminate: give max_iter and s, or min_iter")
    if not wandb_bands(out):
        raise ConfigError(f"{source}: early_terminate: max_iter {out['max_iter']}, s {out['s']}, eta {out['eta']} "
                          f"give no band; increase max_iter or decrease eta")
    return out
