"""Sweep files as the researchers wrote them: ours, W&B sweeps and Hydra + Optuna sweeper configs.

:func:`read_sweep_file` detects the format from the content and returns a
:class:`SweepFile`: the search space (sampled and fixed values, by our dotted keys), the
study options the file sets (epochs, subset, n_trials, objectives and directions, sampler,
seed, pruner, Slurm launcher settings) and notices about keys that are not used here.

- **Ours**: ``parameters`` with ``choices`` / ``low``/``high`` / fixed values (``spaces.py``).
- **W&B**: ``parameters`` flat or nested (``cell_dataset: {parameters: {...}}`` at any
  depth), ``method``, ``metric: {name, goal}``, ``early_terminate`` (W&B's hyperband,
  ``pruners.py``), ``run_cap`` (``n_trials``); every setting as wandb/sweeps defines it
  (``_wandb.py`` translates W&B's vocabulary into our spec format). Ours and W&B's, flat or
  nested, take one path, so a key is accepted or refused the same way in each.

Data flows one way: this module and ``_wandb.py`` read files and hand ``spaces.parse_space``
our spec format; ``spaces`` knows no file format.
- **Hydra**: a config whose ``defaults:`` chain is composed from the file's folder as
  Hydra does (``_self_`` where listed, else last; ``override hydra/...`` entries select
  Hydra plugins and are not files), OmegaConf interpolations resolved, and
  ``hydra.sweeper.params`` parsed with hydra-core's ``OverridesParser`` and turned into
  distributions the way hydra-optuna-sweeper's ``create_optuna_distribution_from_override``
  does (``choice`` categorical; ``range`` int or float with step, ``shuffle(range)``
  categorical; ``interval`` int or float, ``tag(log, ...)`` log). A value one searched key
  fans out through interpolations (``heads: ${heads}`` in three convolutions) is one
  sampled parameter that sets every key it reaches.

TorchCell's keys are mapped onto ours by :data:`_RULES` (docs/torchcell-keys.md lists every
one). Keys about TorchCell's machinery are collected into one notice; a key that would
change the model in a way torchcell-search does not implement raises
:class:`~torchcell_search.errors.ConfigError` naming the file and the full dotted key.

Example:
    >>> from pathlib import Path
    >>> sweep = read_sweep_file(Path("configs/report.yaml"))  # doctest: +SKIP
    >>> sweep.format
    'torchcell-search'
"""

from __future__ import annotations

import fnmatch
import glob
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from torchcell_search.config import parameter_keys
from torchcell_search.errors import ConfigError
from torchcell_search.search import _wandb
from torchcell_search.search.spaces import (Choice, Fixed, SearchSpace, load_yaml, parse_space, show,
                                            unknown_key_message)

__all__ = ["SweepFile", "family_ladder", "load_space", "read_sweep_file", "TORCHCELL_OBJECTIVES"]

#: What TorchCell's Hydra main returns for its two directions (z-scored labels, pooled).
TORCHCELL_OBJECTIVES = ("val/combined/MSE", "val/combined/Pearson")
_SAMPLERS = {"TPESampler": "tpe", "RandomSampler": "random", "GridSampler": "grid",
             "tpe": "tpe", "random": "random", "grid": "grid"}
_WANDB_TOP = {"parameters", "method", "metric", "name", "description", "program", "command",
              "early_terminate", "project", "entity", "run_cap"}
_TORCHCELL_SECTIONS = {"cell_dataset", "data_module", "trainer", "model", "regression_task", "wandb",
                       "profiler", "heads", "norms", "transforms", "compile_mode"}
#: submitit launcher settings (hydra-submitit-launcher ``hydra_plugins/hydra_submitit_launcher/config.py``,
#: ``BaseQueueConf`` / ``SlurmQueueConf``) the study's sbatch script takes (``slurm.launcher_defaults``).
_SLURM_KEYS = ("partition", "cpus_per_task", "mem_gb", "timeout_min", "gres", "gpus_per_node", "gpus_per_task")
#: The others, with what happens instead; ``nodes``/``tasks_per_node`` only when not 1.
_SUBMITIT_UNUSED = {
    "nodes": "each trial is one Slurm array task on one node, one task; submitit's multi-node job is not built",
    "tasks_per_node": "each trial is one Slurm array task on one node, one task; submitit's multi-node job is "
                      "not built",
    "submitit_folder": "submitit's files: the sbatch script is written by `torchcell-search slurm`",
    "name": "the job name is the study's", "stderr_to_stdout": "submitit's log files",
    "signal_delay_s": "submitit's requeue; a trial resumes from its checkpoint",
    "max_num_timeout": "submitit's requeue; a trial resumes from its checkpoint",
    "array_parallelism": "submitit's array throttle; give --array 0-N%P to `torchcell-search slurm`",
    "setup": "submitit's shell setup lines; edit the written sbatch script",
    "srun_args": "submitit's srun arguments; the script runs the worker directly",
}
_SBATCH_ONLY = "not written to the sbatch script; add it there or pass it to sbatch"


@dataclass(frozen=True)
class SweepFile:
    """What a sweep file sets.

    Args:
        space: sampled and fixed parameters by our dotted keys.
        options: :class:`~torchcell_search.search.study_config.StudyConfig` fields the file
            sets (``epochs``, ``subset``, ``n_trials``, ``objectives``, ``directions``,
            ``sampler``, ``seed``, ``pruner``, ``launcher``, ...).
        notices: one line each, about keys that are not used here.
        format: ``"torchcell-search"``, ``"wandb"`` or ``"hydra"``.
    """

    space: SearchSpace
    options: dict[str, Any] = field(default_factory=dict)
    notices: tuple[str, ...] = ()
    format: str = "torchcell-search"


# --- the TorchCell key table ----------------------------------------------------------

_MACHINERY = "TorchCell's machinery"


@dataclass(frozen=True)
class _Rule:
    """What a TorchCell key becomes.

    kind: ``param`` (our dotted key ``target``, value mapped by ``convert``), ``option`` (a
    study option), ``notice`` (not used, ``reason``), ``accept`` (the value must satisfy
    ``allowed``, which is what torchcell-search always does; else refused with ``reason``),
    ``refuse`` (``reason``), ``pair`` (handled with its partner key), ``only_with`` (not used,
    ``target`` says why, when the sibling key ``sibling(key)`` is fixed at a value ``allowed``
    accepts, so the key has no effect; else refused with ``reason``).
    """

    kind: str
    target: str = ""
    reason: str = ""
    allowed: Callable[[Any], bool] | None = None
    convert: Callable[[Any], Any] | None = None
    sibling: Callable[[str], str] | None = None


def _same(key: str) -> _Rule:
    return _Rule("param", key)


def _notice(reason: str) -> _Rule:
    return _Rule("notice", reason=reason)


def _accept(allowed: Callable[[Any], bool], reason: str) -> _Rule:
    return _Rule("accept", reason=reason, allowed=allowed)


def _refuse(reason: str) -> _Rule:
    return _Rule("refuse", reason=reason)


def _only_with(sibling: str, value: str, unused: str, reason: str) -> _Rule:
    """Not used (``unused``) when ``sibling`` is fixed at ``value``; else refused with ``reason``.

    ``sibling`` is a dotted key, or a plain name for the key of that name beside this one.
    """
    return _Rule("only_with", target=unused, reason=reason, allowed=_is(value),
                 sibling=lambda key: sibling if "." in sibling else f"{key.rsplit('.', 1)[0]}.{sibling}")


def _is(*values: Any) -> Callable[[Any], bool]:
    return lambda v: any(v == x and type(v) is type(x) for x in values) or (
        isinstance(v, list) and any(isinstance(x, (set, frozenset)) and set(map(str, v)) == x for x in values))


_LR_SCHEDULERS = {"ReduceLROnPlateau": "plateau", None: "constant"}
_DATA_LOADING = "data loading of TorchCell's script; ours batches record indices in memory"
_HARDWARE = "hardware placement: use --device and the slurm options"
_IGNORED_BY_TORCHCELL = "TorchCell reads it but its model ignores it"
_LIGHTNING_DISPLAY = "Lightning's progress, summary and sanity-check output: no effect on training"
_OUR_LOSS = ("torchcell-search trains HeteroCell's loss MSE + lambda_dist * DistLoss + lambda_supcr * SupCR "
             "(TorchCell's 003 script, a file without regression_task.loss)")
_OUR_ENCODERS = "our convolutions are GATv2 (genes, GPR) and the gated stoichiometric one; GIN is not implemented"

# Ordered: the first pattern that matches a dotted key decides (fnmatch, '*' spans dots).
_RULES: list[tuple[str, _Rule]] = [
    # --- cell graph and data
    ("cell_dataset.learnable_embedding_input_channels", _same("cell_dataset.learnable_embedding_input_channels")),
    ("cell_dataset.graphs", _accept(_is(frozenset({"physical", "regulatory"})),
                                    "our cell graph has exactly the physical and regulatory gene graphs")),
    ("cell_dataset.node_embeddings", _accept(_is(frozenset({"learnable"})), "our nodes have learnable embeddings only")),
    ("cell_dataset.incidence_graphs", _accept(_is(frozenset({"metabolism"}), frozenset({"metabolism_hypergraph"})),
                                              "our metabolism is the GPR + stoichiometric hypergraph representation "
                                              "(metabolism / metabolism_hypergraph)")),
    ("data_module.perturbation_subset_size", _Rule("pair")),
    ("data_module.is_perturbation_subset", _Rule("pair")),
    ("data_module.batch_size", _same("data_module.batch_size")),
    ("data_module.num_workers", _notice(_DATA_LOADING)),
    ("data_module.pin_memory", _notice(_DATA_LOADING)),
    ("data_module.prefetch", _notice(_DATA_LOADING)),
    ("data_module.prefetch_factor", _notice(_DATA_LOADING)),
    ("data_module.persistent_workers", _notice(_DATA_LOADING)),
    ("data_module.prefetch*", _notice(_DATA_LOADING)),
    # --- trainer
    ("trainer.max_epochs", _Rule("option", "epochs")),
    ("trainer.strategy", _notice(_HARDWARE)),
    ("trainer.accelerator", _notice(_HARDWARE)),
    ("trainer.devices", _notice(_HARDWARE)),
    ("trainer.num_nodes", _notice(_HARDWARE)),
    ("trainer.precision", _notice("mixed precision follows --device: CUDA uses it")),
    ("trainer.overfit_batches", _accept(_is(0, 0.0), "overfit_batches is a debugging mode torchcell-search "
                                                     "does not run")),
    ("trainer.log_every_n_steps", _notice("logging cadence: we record every epoch")),
    ("trainer.log_*", _notice("logging cadence: we record every epoch")),
    ("trainer.enable_progress_bar", _notice(_LIGHTNING_DISPLAY)),
    ("trainer.enable_model_summary", _notice(_LIGHTNING_DISPLAY)),
    ("trainer.num_sanity_val_steps", _notice(_LIGHTNING_DISPLAY)),
    ("trainer.profiler", _notice("TorchCell's profiling: no effect on training")),
    ("compile_mode", _notice("torch.compile mode: speed of the same computation, not the model")),
    # --- model
    ("heads", _same("heads")),
    ("norms", _Rule("placeholder")),
    ("model.gene_num", _notice("node counts: our graph determines them")),
    ("model.reaction_num", _notice("node counts: our graph determines them")),
    ("model.metabolite_num", _notice("node counts: our graph determines them")),
    ("model.out_channels", _accept(_is(2), "the model predicts fitness and gene_interaction: 2 outputs")),
    ("model.hidden_channels", _same("model.hidden_channels")),
    ("model.num_layers", _same("model.num_layers")),
    ("model.norm", _same("model.norm")),
    ("model.activation", _same("model.activation")),
    ("model.dropout", _same("model.dropout")),
    ("model.gene_encoder_config.heads", _same("heads")),
    ("model.gpr_conv_config.heads", _same("heads")),
    ("model.metabolism_config.heads", _same("heads")),
    ("model.gene_encoder_config.concat", _accept(_is(True), "the gene convolutions concatenate their heads")),
    ("model.gene_encoder_config.bias", _notice(_IGNORED_BY_TORCHCELL)),
    ("model.gene_encoder_config.add_self_loops", _notice(_IGNORED_BY_TORCHCELL)),
    ("model.gene_encoder_config.share_weights", _notice(_IGNORED_BY_TORCHCELL)),
    ("model.gpr_conv_config.concat", _notice("our GPR convolution has one head, so concat changes nothing")),
    ("model.gpr_conv_config.add_self_loops", _accept(_is(False), "a gene -> reaction convolution has no self loops")),
    ("model.metabolism_config.is_stoich_gated", _accept(_is(True), "our stoichiometric convolution is gated")),
    ("model.metabolism_config.use_attention", _accept(_is(True), "our stoichiometric convolution uses attention")),
    ("model.metabolism_config.concat", _notice("our stoichiometric convolution has one head, so concat changes nothing")),
    ("model.prediction_head_config.hidden_channels", _same("model.prediction_head_config.hidden_channels")),
    ("model.prediction_head_config.head_num_layers", _same("model.prediction_head_config.head_num_layers")),
    ("model.prediction_head_config.residual", _same("model.prediction_head_config.residual")),
    ("model.prediction_head_config.head_norm", _same("model.prediction_head_config.head_norm")),
    ("model.prediction_head_config.dropout", _same("model.prediction_head_config.dropout")),
    ("model.prediction_head_config.activation", _same("model.prediction_head_config.activation")),
    ("model.global_aggregator_config.num_induced_points", _same("model.global_aggregator_config.num_induced_points")),
    ("model.global_aggregator_config.layer_norm", _same("model.global_aggregator_config.layer_norm")),
    ("model.global_aggregator_config.num_encoder_blocks", _same("model.global_aggregator_config.num_encoder_blocks")),
    ("model.global_aggregator_config.heads", _same("model.global_aggregator_config.heads")),
    ("model.global_aggregator_config.num_decoder_blocks", _same("model.global_aggregator_config.num_decoder_blocks")),
    ("model.global_aggregator_config.num_seed_points", _same("model.global_aggregator_config.num_seed_points")),
    ("model.global_aggregator_config.use_isab", _same("model.global_aggregator_config.use_isab")),
    ("model.global_aggregator_config.dropout", _same("model.global_aggregator_config.dropout")),
    ("model.checkpoint_path", _accept(_is(None), "starting from a TorchCell checkpoint is not implemented")),
    ("model.attention_pattern", _Rule("refuse", reason="another model family's layer pattern (HeteroCell NSA); "
                                                       "torchcell-search implements HeteroCell's convolution stack")),
    ("model.local_predictor_config.*", _refuse("the Dango-style local predictor of HeteroCellBipartiteDangoGI, another "
                                               "model family; torchcell-search implements HeteroCell's prediction head")),
    ("model.*_config.encoder_type", _accept(_is("gatv2"), _OUR_ENCODERS)),
    ("model.*_config.gin_*", _only_with("encoder_type", "gatv2", "GIN settings; the encoder is GATv2",
                                        "a GIN encoder's setting: " + _OUR_ENCODERS)),
    ("model.gene_encoder_config.graph_aggregation_method",
     _accept(_is("sum"), "our HeteroConv sums the physical and regulatory convolutions per gene; TorchCell's "
                         "cross_attention / pairwise_interaction / mean are not implemented")),
    ("model.gene_encoder_config.graph_aggregation_config.*",
     _only_with("model.gene_encoder_config.graph_aggregation_method", "sum", "settings of TorchCell's other graph aggregations; ours sums",
                "settings of TorchCell's cross_attention / pairwise_interaction graph aggregation, which is not "
                "implemented (ours sums; set graph_aggregation_method: sum)")),
    # --- loss and optimisation
    ("regression_task.is_weighted_phenotype_loss", _same("regression_task.is_weighted_phenotype_loss")),
    ("regression_task.lambda_dist", _same("regression_task.lambda_dist")),
    ("regression_task.lambda_supcr", _same("regression_task.lambda_supcr")),
    ("regression_task.lambda_mse", _accept(_is(1, 1.0), "our MSE term has weight 1")),
    ("regression_task.lambda_wasserstein", _accept(_is(0, 0.0), "a Wasserstein loss term is not implemented; "
                                                               + _OUR_LOSS)),
    ("regression_task.lambda_*", _refuse("a loss term torchcell-search does not implement; " + _OUR_LOSS)),
    ("regression_task.loss", _refuse("TorchCell's later loss modules (logcosh, icloss, mle_dist_supcr, "
                                     "mle_wass_supcr) are not implemented; " + _OUR_LOSS)),
    ("regression_task.loss_config.*", _refuse("settings of TorchCell's later loss modules; " + _OUR_LOSS)),
    ("transforms.*", _refuse("TorchCell's per-label transforms are not implemented; ours is "
                             "regression_task.standardize_labels (both labels z-scored with train statistics)")),
    ("regression_task.optimizer.type", _same("optimizer.type")),
    ("regression_task.optimizer.lr", _same("optimizer.lr")),
    ("regression_task.optimizer.weight_decay", _same("optimizer.weight_decay")),
    ("regression_task.lr_scheduler.type", _Rule("param", "trainer.lr_schedule", reason="lr_scheduler.type",
                                                allowed=lambda v: v in _LR_SCHEDULERS,
                                                convert=lambda v: _LR_SCHEDULERS[v])),
    ("regression_task.lr_scheduler.*", _Rule("scheduler")),
    ("regression_task.clip_grad_norm", _Rule("pair")),
    ("regression_task.clip_grad_norm_max_norm", _Rule("pair")),
    ("regression_task.grad_accumulation_schedule", _notice("TorchCell never applies it")),
    # --- machinery
    ("*.plot_*", _notice("TorchCell's plots: ours are the report and dashboard")),
    ("plot_*", _notice("TorchCell's plots: ours are the report and dashboard")),
    ("wandb.*", _notice("W&B logging: trials record their metrics in the study")),
    ("wandb", _notice("W&B logging: trials record their metrics in the study")),
    ("profiler.*", _notice("TorchCell never reads it")),
    ("job", _notice("Hydra job settings written outside hydra:, so neither Hydra nor TorchCell's script reads them")),
    ("job.*", _notice("Hydra job settings written outside hydra:, so neither Hydra nor TorchCell's script reads them")),
]


#: TorchCell keys of the table written out (no wildcard), offered as close matches of an unknown key.
_TABLE_KEYS = frozenset(pattern for pattern, _ in _RULES if "*" not in pattern)


def _rule(key: str) -> _Rule | None:
    for pattern, rule in _RULES:
        if fnmatch.fnmatchcase(key, pattern):
            return rule
    return None


# --- entry point ----------------------------------------------------------------------


def read_sweep_file(path: str | Path) -> SweepFile:
    """Read a sweep file in any of the three formats.

    Raises:
        ConfigError: the file is missing, unreadable or malformed, a key cannot be mapped,
            or it would change the model in a way torchcell-search does not implement; the
            message names the file and the full dotted key.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"search space {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from e
    source = str(path)
    data = load_yaml(text, source)
    if _is_hydra(data):
        return _read_hydra(path, source)
    if data is None or not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping with a 'parameters' section")
    # Ours and W&B's, flat or nested, take one path, so a key means the same in each.
    return _read_wandb(data, source)


#: TorchCell's data-size tag at the end of a file name: ``..._2.5e4.yaml``, ``..._1e05.yaml``.
_SIZE_TAG = re.compile(r"^(?P<stem>.+_)(?P<size>\d+(?:\.\d+)?e\d+)$")
#: Options a family's files may set differently: the data size is the point of the family,
#: the trial count is the first rung's and the Slurm resources the largest file's.
_FAMILY_MAY_DIFFER = {"subset", "n_trials", "launcher"}


def family_ladder(path: str | Path, train_fraction: float) -> tuple[str, SweepFile, str]:
    """The data-size ladder a TorchCell file family states, where it is unambiguous.

    TorchCell sweeps one configuration at growing data sizes by hand, one file per size
    (``igb_optuna-hetero_cell-sweep_2.5e4.yaml``, ``..._1e5.yaml``, ``..._4e5.yaml``). The
    family of ``path`` is every file in its folder whose name differs from it only in that
    size tag. It states a ladder when every member reads (:func:`read_sweep_file`) to the
    same study but for the data size, the trial count and the Slurm resources.

    Args:
        path: one member of the family.
        train_fraction: the share of a subset's records the split trains on (TorchCell's
            size counts records before its train/val/test split; our rungs count train records).

    Returns:
        ``(fidelity, largest, notice)``: the ladder, ``subset:R1,R2,...`` with each member's
        size as train records (a rung above the data's train set trains on all of it,
        ``fidelity.resolve_rungs``); the largest member read, without a subset (the rungs size
        the data) and with the smallest member's trial count; a notice line naming the rungs.

    Raises:
        ConfigError: the name has no size tag, the family has one member, two members have
            one size, a member's own subset contradicts its name, or members differ beyond
            the data size (the first difference is named).
    """
    path = Path(path)
    match = _SIZE_TAG.match(path.stem)
    if not match:
        raise ConfigError(f"--fidelity family: {path.name} has no size tag (TorchCell's _2.5e4, _1e5, ... "
                          f"before .yaml); give --fidelity subset:N1,N2,...,all")
    members: dict[int, Path] = {}
    for other in sorted(path.parent.glob(f"{glob.escape(match['stem'])}*{path.suffix}")):
        tag = _SIZE_TAG.match(other.stem)
        if not tag or tag["stem"] != match["stem"]:
            continue  # ..._5e4_00.yaml is another variant, not a size of this one
        size = int(float(tag["size"]))
        if size in members:
            raise ConfigError(f"--fidelity family: {members[size].name} and {other.name} are both {size} records; "
                              f"no ladder follows from them")
        members[size] = other
    if len(members) < 2:
        raise ConfigError(f"--fidelity family: {path.name} has no sibling of another size in {path.parent} "
                          f"(files {match['stem']}<size>{path.suffix}); give --fidelity subset:N1,N2,...,all")
    sizes = sorted(members)
    read = {size: read_sweep_file(members[size]) for size in sizes}
    for size, sweep in read.items():
        # A base config's subset (TorchCell edits hetero_cell.yaml's by hand) yields to the name;
        # the member's own perturbation_subset_size must agree with it.
        own = sweep.options.get("subset")
        if own is not None and own != size and _sets_key(load_yaml(members[size].read_text(encoding="utf-8"),
                                                                   str(members[size])), "perturbation_subset_size"):
            raise ConfigError(f"--fidelity family: {members[size].name}: its name says {size} records, its "
                              f"data_module.perturbation_subset_size says {own}; no ladder follows from it")
    first, *rest = sizes
    for size in rest:
        difference = _family_difference(read[first], read[size])
        if difference:
            raise ConfigError(f"--fidelity family: {members[first].name} and {members[size].name} differ beyond "
                              f"the data size ({difference}), as when a space is narrowed after a sweep; give "
                              f"--fidelity subset:N1,N2,...,all with one file")
    largest = read[sizes[-1]]
    options = {key: value for key, value in largest.options.items() if key != "subset"}
    if "n_trials" in read[first].options:
        options["n_trials"] = read[first].options["n_trials"]
    rungs = [round(size * train_fraction) for size in sizes]
    shown = ", ".join(f"{members[s].name} ({s} records: {r} train)" for s, r in zip(sizes, rungs))
    notice = (f"{path.name}: its family is a data-size ladder: rungs {shown}; a rung above the data's train "
              f"records trains on all of them; trials of the smallest file, Slurm resources of the largest")
    return (f"subset:{','.join(map(str, rungs))}",
            SweepFile(space=largest.space, options=options, notices=largest.notices, format=largest.format), notice)


def _sets_key(data: Any, name: str) -> bool:
    """Whether ``name`` is a key (or the last part of a dotted key) anywhere in ``data``."""
    if isinstance(data, Mapping):
        return any(str(k).split(".")[-1] == name or _sets_key(v, name) for k, v in data.items())
    return isinstance(data, list) and any(_sets_key(v, name) for v in data)


def _family_difference(a: SweepFile, b: SweepFile) -> str:
    """The first setting two members of a family set differently (data size aside), or ``""``."""
    for key in sorted(set(a.space.params) | set(b.space.params)):
        if a.space.params.get(key) != b.space.params.get(key):
            return f"{key}: {_shown_param(a.space.params.get(key))} vs {_shown_param(b.space.params.get(key))}"
    for name in ("links", "metric", "sampler"):
        if getattr(a.space, name) != getattr(b.space, name):
            return f"{name}: {getattr(a.space, name)} vs {getattr(b.space, name)}"
    for key in sorted((set(a.options) | set(b.options)) - _FAMILY_MAY_DIFFER):
        if a.options.get(key) != b.options.get(key):
            return f"{key}: {a.options.get(key)} vs {b.options.get(key)}"
    return ""


def _shown_param(param: Any) -> str:
    if param is None:
        return "not searched"
    if isinstance(param, Fixed):
        return f"fixed {param.value!r}"
    if isinstance(param, Choice):
        return show(list(param.choices))
    return show(param)


def load_space(path: str | Path) -> SearchSpace:
    """The search space of a sweep file in any format (:func:`read_sweep_file`)."""
    return read_sweep_file(path).space


def _is_hydra(data: Any) -> bool:
    if not isinstance(data, Mapping) or "parameters" in data:
        return False
    keys = set(map(str, data))
    return "defaults" in keys or "hydra" in keys or not keys or keys <= _TORCHCELL_SECTIONS


def _is_nested_wandb(data: Mapping[str, Any]) -> bool:
    params = data.get("parameters")
    return isinstance(params, Mapping) and any(isinstance(v, Mapping) and "parameters" in v for v in params.values())


# --- W&B ------------------------------------------------------------------------------


def _flatten_wandb(params: Mapping[str, Any], prefix: str, source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, spec in params.items():
        name = f"{prefix}{key}"
        if isinstance(spec, Mapping) and "parameters" in spec:
            if set(spec) != {"parameters"} or not isinstance(spec["parameters"], Mapping):
                raise ConfigError(f"{source}: {name}: a nested block holds only 'parameters: {{...}}'")
            out.update(_flatten_wandb(spec["parameters"], f"{name}.", source))
        else:
            out[name] = spec
    return out


def _wandb_options(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Study options from W&B's top-level keys: early_terminate (W&B's hyperband, ``pruners.py``), run_cap."""
    out: dict[str, Any] = {}
    if data.get("early_terminate") is not None:
        out["pruner"] = "wandb_hyperband"
        out["wandb_hyperband"] = _wandb.early_terminate(data["early_terminate"], source)
    run_cap = data.get("run_cap")
    if run_cap is not None:
        if isinstance(run_cap, bool) or not isinstance(run_cap, int) or run_cap < 1:
            raise ConfigError(f"{source}: run_cap: expected an integer >= 1, got {run_cap!r}")
        out["n_trials"] = run_cap
    return out


def _entry(key: str, spec: Any, source: str) -> _Entry:
    """A parameter of a W&B or our file: fixed, or sampled as our spec (W&B's translated, ``_wandb.py``)."""
    if isinstance(spec, list):
        return _Entry(spec={"choices": spec}, group=key)
    if not isinstance(spec, Mapping):
        return _Entry(value=spec)
    if _wandb.is_wandb_spec(spec):
        spec = _wandb.wandb_spec(key, spec, source)
    if set(spec) == {"value"}:
        return _Entry(value=spec["value"])
    return _Entry(spec=dict(spec), group=key)


def _read_wandb(data: Mapping[str, Any], source: str) -> SweepFile:
    unknown = [str(k) for k in data if k not in _WANDB_TOP | {"sampler"}]
    if unknown:
        raise ConfigError(f"{source}: unknown section {unknown[0]!r}; expected {', '.join(sorted(_WANDB_TOP))}")
    params = data.get("parameters")
    if not isinstance(params, Mapping) or not params:
        raise ConfigError(f"{source}: 'parameters' must be a non-empty mapping of dotted key -> spec")
    flat = _flatten_wandb(params, "", source)
    entries = {key: _entry(key, spec, source) for key, spec in flat.items()}
    mapped = _map(entries, source)
    metric, metric_notices = _wandb.wandb_metric(data.get("metric"), source)
    sampler = _wandb.wandb_method(data.get("method"), source) if "method" in data else data.get("sampler")
    space_data: dict[str, Any] = {"parameters": mapped.specs, "sampler": sampler}
    if metric is not None:
        space_data["metric"] = {**metric, "name": _torchcell_metric(metric["name"])}
    options = {**_wandb_options(data, source), **mapped.options}
    space = parse_space({k: v for k, v in space_data.items() if v is not None}, source=source)
    notices = [*mapped.notices, *metric_notices]
    _trial_count(space, options, source, notices, from_grid=data.get("method") == "grid")
    line = _unused_line(source, {**mapped.unused, **_wandb_unused(data)})
    wandb = _is_nested_wandb(data) or bool(set(map(str, data)) - {"parameters", "metric", "sampler"}) or any(
        _wandb.is_wandb_spec(spec) for spec in flat.values())
    return SweepFile(space, options, tuple(([line] if line else []) + notices), "wandb" if wandb else "torchcell-search")


def _trial_count(space: SearchSpace, options: dict[str, Any], source: str, notices: list[str], *,
                 from_grid: bool) -> None:
    """The file's trial count where it gives none: a grid's size (W&B's grid runs every point once,
    wandb/sweeps src/sweeps/grid_search.py), one trial for a file that searches nothing."""
    if "n_trials" in options:
        return
    if not space.sampled_keys():
        options["n_trials"] = 1
        notices.append(f"{source}: searches nothing: one trial of its configuration (every trial would be the same; "
                       f"--n-trials N repeats it)")
    elif from_grid:
        grid = space.grid()
        options["n_trials"] = math.prod(len(v) for v in grid.values())


def _wandb_unused(data: Mapping[str, Any]) -> dict[str, str]:
    unused = {k: "W&B's launcher: torchcell-search runs the trials itself" for k in ("program", "command")
              if k in data}
    unused.update({k: "W&B bookkeeping" for k in ("project", "entity", "name", "description") if k in data})
    return unused


def _torchcell_metric(name: str) -> str:
    """TorchCell's logged names onto ours: ``val/transformed/combined/MSE`` -> ``val/combined/MSE``."""
    return re.sub(r"^(train|val)/transformed/", r"\1/", name)


# --- mapping onto our keys ------------------------------------------------------------


@dataclass
class _Entry:
    """A TorchCell key's value: fixed (``value``) or sampled (``spec`` in our/W&B form, ``group``:
    the searched key it comes from, shared by every key one searched value reaches)."""

    value: Any = None
    spec: dict[str, Any] | None = None
    group: str | None = None


@dataclass
class _Mapped:
    specs: dict[str, Any] = field(default_factory=dict)  # our key -> spec
    options: dict[str, Any] = field(default_factory=dict)
    unused: dict[str, str] = field(default_factory=dict)  # TorchCell key -> reason
    notices: list[str] = field(default_factory=list)


def _values_of(entry: _Entry) -> list[Any] | None:
    """Every value an entry can take, or None for a range."""
    if entry.spec is None:
        return [entry.value]
    for name in ("choices", "values"):
        if name in entry.spec:
            return list(entry.spec[name])
    return None


def _map(entries: Mapping[str, _Entry], source: str) -> _Mapped:
    out = _Mapped()
    by_key: dict[str, tuple[str, _Entry, Callable[[Any], Any] | None]] = {}  # our key -> (TorchCell key, entry, convert)
    known = set(parameter_keys())
    for key in entries:  # in the file's order: the first unknown key is the one named
        if _rule(key) is None and key not in known:
            raise ConfigError(unknown_key_message(source, key, known | _TABLE_KEYS))
    for key in sorted(entries):
        entry = entries[key]
        rule = _rule(key) or _same(key)
        if rule.kind == "notice":
            out.unused[key] = rule.reason
        elif rule.kind == "only_with":
            sibling = entries.get(rule.sibling(key))
            if sibling is None or sibling.spec is not None or not rule.allowed(sibling.value):
                shown = "not given" if sibling is None else "searched" if sibling.spec is not None else repr(
                    sibling.value)
                raise ConfigError(f"{source}: {key}: not supported ({rule.sibling(key)} is {shown}): {rule.reason}")
            out.unused[key] = rule.target
        elif rule.kind == "refuse":
            raise ConfigError(f"{source}: {key}: not supported: {rule.reason}")
        elif rule.kind == "placeholder":
            continue  # a Hydra placeholder: the keys its value reaches carry it
        elif rule.kind == "accept":
            values = _values_of(entry)
            bad = ["a range"] if values is None else [repr(v) for v in values if not rule.allowed(v)]
            if bad:
                raise ConfigError(f"{source}: {key}: {bad[0]} is not supported: {rule.reason}")
        elif rule.kind == "option":
            if entry.spec is not None:
                raise ConfigError(f"{source}: {key}: set by the study (--epochs), not searched; fix it to one value")
            out.options[rule.target] = _int_option(key, entry.value, source)
        elif rule.kind in ("pair", "scheduler"):
            continue  # below, with their partners
        else:  # param
            convert = rule.convert
            if rule.allowed is not None:
                values = _values_of(entry)
                bad = [v for v in values or [object()] if not rule.allowed(v)]
                if bad:
                    shown = "a range" if values is None else repr(bad[0])
                    raise ConfigError(f"{source}: {key}: {shown} is not supported; torchcell-search implements "
                                      f"{', '.join(repr(k) for k in _LR_SCHEDULERS)}")
            _put(by_key, rule.target, key, entry, convert, source)
    _map_subset(entries, out, source)
    _map_grad_clip(entries, by_key, source)
    _map_scheduler(entries, by_key, out, source)
    _emit(by_key, out, source)
    return out


def _int_option(key: str, value: Any, source: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{source}: {key}: expected a whole number, got {value!r}") from None
    if isinstance(value, bool) or not number.is_integer() or number < 1:
        raise ConfigError(f"{source}: {key}: expected a whole number >= 1, got {value!r}")
    return int(number)


def _put(by_key: dict, target: str, key: str, entry: _Entry, convert: Callable[[Any], Any] | None,
         source: str) -> None:
    if target in by_key:
        other_key, other, _ = by_key[target]
        same = (other.group is not None and other.group == entry.group) or (
            other.spec is None and entry.spec is None and other.value == entry.value)
        if not same:
            raise ConfigError(f"{source}: {key}: differs from {other_key}, and torchcell-search has one "
                              f"setting for both ({target})")
        return
    by_key[target] = (key, entry, convert)


def _converted(entry: _Entry, convert: Callable[[Any], Any] | None) -> Any:
    """The entry as a spec of our format, values passed through ``convert``."""
    if entry.spec is None:
        return {"value": convert(entry.value) if convert else entry.value}
    if convert is None:
        return dict(entry.spec)
    values = _values_of(entry)
    if values is None:
        raise ConfigError("a converted key cannot take a range")
    return {"choices": [convert(v) for v in values]}


def _emit(by_key: dict, out: _Mapped, source: str) -> None:
    """Specs by our key; keys reached by one searched value become one parameter with ``also``."""
    groups: dict[str, list[str]] = {}
    for target in sorted(by_key):
        key, entry, convert = by_key[target]
        if entry.group is not None:
            groups.setdefault(entry.group, []).append(target)
    for target in sorted(by_key):
        key, entry, convert = by_key[target]
        if entry.group is not None:
            members = groups[entry.group]
            if target != members[0]:
                continue
            spec = _converted(entry, convert)
            if len(members) > 1:
                spec["also"] = members[1:]
            out.specs[target] = spec
        else:
            out.specs[target] = _converted(entry, convert)


def _map_subset(entries: Mapping[str, _Entry], out: _Mapped, source: str) -> None:
    flag, size = entries.get("data_module.is_perturbation_subset"), entries.get("data_module.perturbation_subset_size")
    for key, entry in (("data_module.is_perturbation_subset", flag), ("data_module.perturbation_subset_size", size)):
        if entry is not None and entry.spec is not None:
            raise ConfigError(f"{source}: {key}: the study's data (--subset) is one value, not searched")
    if flag is not None and flag.value is False:
        out.options["subset"] = None
    elif size is not None and size.value is not None:
        out.options["subset"] = _int_option("data_module.perturbation_subset_size", size.value, source)
    elif flag is not None and flag.value is True:
        raise ConfigError(f"{source}: data_module.perturbation_subset_size: is_perturbation_subset is true "
                          f"but no size is given")


def _map_grad_clip(entries: Mapping[str, _Entry], by_key: dict, source: str) -> None:
    """clip_grad_norm (bool) and clip_grad_norm_max_norm -> trainer.grad_clip (0 = off)."""
    clip = entries.get("regression_task.clip_grad_norm")
    norm = entries.get("regression_task.clip_grad_norm_max_norm")
    if clip is None and norm is None:
        return
    if clip is not None and clip.spec is not None and norm is not None and norm.spec is not None:
        raise ConfigError(f"{source}: regression_task.clip_grad_norm_max_norm: searched together with "
                          f"clip_grad_norm; search one of them")
    if clip is not None and not all(isinstance(v, bool) for v in _values_of(clip) or [None]):
        raise ConfigError(f"{source}: regression_task.clip_grad_norm: expected true or false")
    if clip is None or (clip.spec is None and clip.value):
        if norm is None or norm.value is None and norm.spec is None:
            raise ConfigError(f"{source}: regression_task.clip_grad_norm_max_norm: clipping is on but no norm is given")
        _put(by_key, "trainer.grad_clip", "regression_task.clip_grad_norm_max_norm", norm, None, source)
    elif clip.spec is None:  # clipping off
        _put(by_key, "trainer.grad_clip", "regression_task.clip_grad_norm", _Entry(value=0.0), None, source)
    else:  # clipping searched, norm fixed
        if norm is None or norm.value is None:
            raise ConfigError(f"{source}: regression_task.clip_grad_norm_max_norm: needed when clip_grad_norm "
                              f"is searched")
        _put(by_key, "trainer.grad_clip", "regression_task.clip_grad_norm", clip,
             lambda on, n=norm.value: float(n) if on else 0.0, source)


def _map_scheduler(entries: Mapping[str, _Entry], by_key: dict, out: _Mapped, source: str) -> None:
    """lr_scheduler.* parameters: ours when the scheduler is ReduceLROnPlateau, unused otherwise."""
    kind = entries.get("regression_task.lr_scheduler.type")
    plateau = kind is not None and "ReduceLROnPlateau" in (_values_of(kind) or [])
    for key in sorted(entries):
        if key.startswith("regression_task.lr_scheduler.") and key != "regression_task.lr_scheduler.type":
            if kind is None:
                raise ConfigError(f"{source}: {key}: lr_scheduler parameters without lr_scheduler.type")
            if plateau:
                _put(by_key, key, key, entries[key], None, source)
            else:
                out.unused[key] = "the scheduler is not ReduceLROnPlateau"


def _unused_line(source: str, unused: Mapping[str, str]) -> str:
    """One line: the keys not used here, grouped by reason."""
    if not unused:
        return ""
    by_reason: dict[str, list[str]] = {}
    for key in sorted(unused):
        by_reason.setdefault(unused[key], []).append(key)
    parts = [f"{', '.join(_compact(keys))} ({reason})" for reason, keys in by_reason.items()]
    return f"{source}: not used here: {'; '.join(parts)}"



def _compact(keys: list[str]) -> list[str]:
    """``wandb.project, wandb.tags`` -> ``wandb.*`` where every key of a section shares a reason."""
    sections: dict[str, list[str]] = {}
    for key in keys:
        sections.setdefault(key.split(".", 1)[0], []).append(key)
    out = []
    for section, members in sections.items():
        if section in ("wandb", "profiler") and len(members) > 1:
            out.append(f"{section}.*")
        else:
            out.extend(members)
    return out


# --- Hydra ----------------------------------------------------------------------------


def _read_hydra(path: Path, source: str) -> SweepFile:
    from omegaconf import OmegaConf

    notes: list[str] = []
    composed, plugins = _compose(path, (), source, None, notes)
    hydra_node = composed.pop("hydra", None) if "hydra" in composed else None
    hydra = OmegaConf.to_container(hydra_node, resolve=False) if hydra_node is not None else {}
    sweeper = hydra.get("sweeper") or {} if isinstance(hydra, Mapping) else {}
    if not isinstance(sweeper, Mapping):
        raise ConfigError(f"{source}: hydra.sweeper: expected a mapping")
    unused: dict[str, str] = {}
    options: dict[str, Any] = {}
    sweeper_kind = plugins.get("hydra/sweeper")
    if sweeper and sweeper_kind not in (None, "optuna"):
        raise ConfigError(f"{source}: defaults: hydra/sweeper {sweeper_kind!r}: only the Optuna sweeper is read")
    params = sweeper.get("params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"{source}: hydra.sweeper.params: expected a mapping of key -> sweep")
    sampled: dict[str, dict[str, Any]] = {}
    for key in sorted(params, key=str):
        rule = _rule(str(key))
        if rule is not None and rule.kind == "refuse":
            # The model key is the reason, whatever its sweep is written as (NSA's choice of lists).
            raise ConfigError(f"{source}: {key}: not supported (searched in hydra.sweeper.params): {rule.reason}")
        value = _sweep_value(params, key, source)
        spec = _parse_sweep(str(key), value, source)
        if spec is None:  # a fixed override, applied as Hydra does before interpolations resolve
            if not _has_key(composed, str(key)):
                raise ConfigError(f"{source}: hydra.sweeper.params.{key}: not a key of the composed config "
                                  f"(Hydra would need +{key})")
            OmegaConf.update(composed, str(key), _fixed_value(str(key), value, source), merge=False)
        else:
            sampled[str(key)] = spec
    run = _resolve(composed, source)
    entries: dict[str, _Entry] = {key: _Entry(value=value) for key, value in _leaves(run)}
    for key, spec in sampled.items():
        targets = _targets(composed, key, source)
        for target in targets:
            entries[target] = _Entry(spec=spec, group=key)
        if not targets:
            raise ConfigError(f"{source}: hydra.sweeper.params.{key}: not a key of the composed config "
                              f"(Hydra would need +{key})")
    mapped = _map(entries, source)
    options.update(mapped.options)
    options.update(_sweeper_options(sweeper, plugins, source, unused))
    launcher = _launcher(hydra.get("launcher") if isinstance(hydra, Mapping) else None, plugins, source, unused)
    if launcher:
        options["launcher"] = {**launcher, **options.get("launcher", {})}
    for key in sorted(map(str, hydra)) if isinstance(hydra, Mapping) else ():
        if key not in ("sweeper", "launcher"):
            unused[f"hydra.{key}"] = "Hydra's own run settings: output folders, logging"
    for group, choice in sorted(plugins.items()):
        if group not in ("hydra/sweeper", "hydra/launcher", "hydra/sweeper/sampler"):
            unused[f"defaults: override {group}"] = "a Hydra plugin selection"
    for note in sorted(set(notes)):
        unused[note] = ("read as Hydra 1.0/1.1 did (the group path, the option's name); under version_base >= 1.2 "
                        "Hydra takes it as a literal key")
    line = _unused_line(source, {**mapped.unused, **unused})
    notices = [line] if line else []
    specs = _variant_pooling(path, mapped.specs, source, notices)
    space = parse_space({"parameters": specs}, source=source, allow_empty=True)
    if options.get("sampler") == "grid" and space.sampled_keys():
        # hydra-optuna-sweeper _impl.py: a GridSampler runs min(n_trials, grid points).
        size = math.prod(len(v) for v in space.grid().values())
        options["n_trials"] = min(options.get("n_trials", size), size)
    _trial_count(space, options, source, notices, from_grid=False)
    return SweepFile(space, options, tuple(notices), "hydra")


# --- TorchCell's model variants -------------------------------------------------------

_AGG = "model.global_aggregator_config."
#: TorchCell experiment 003 runs ``hetero_cell_pma*`` and ``hetero_cell_isab*`` configs with
#: scripts whose model differs from hetero_cell's only in the global aggregator; the file
#: does not say so, its name does (``igb_optuna-hetero_cell_pma-sweep_2.5e4.yaml`` composes
#: ``hetero_cell_isab`` and runs the PMA script).
_VARIANT = re.compile(r"hetero_cell_(pma|isab)(?![A-Za-z0-9_])")
#: torchcell/models/hetero_cell_isab.py ``HeteroCell.__init__``: ``agg_config.get(key, default)``.
_ISAB_DEFAULTS = {"num_seed_points": 1, "num_decoder_blocks": 1, "num_encoder_blocks": 4, "heads": 8,
                  "layer_norm": False, "use_isab": True, "num_induced_points": 128}


def _variant(path: Path) -> str | None:
    """``pma`` / ``isab`` from the file's name, else from the names in its defaults list."""
    m = _VARIANT.search(path.stem)
    if m:
        return m.group(1)
    try:
        defaults = yaml.safe_load(path.read_text(encoding="utf-8")).get("defaults") or []
    except (AttributeError, OSError, yaml.YAMLError):
        return None
    for entry in defaults if isinstance(defaults, list) else []:
        if isinstance(entry, str) and entry != "_self_":
            file = path.parent / f"{entry.lstrip('/')}.yaml"
            found = _variant(file) if file.is_file() else None
            if found:
                return found
    return None


def _variant_pooling(path: Path, specs: Mapping[str, Any], source: str, notices: list[str]) -> dict[str, Any]:
    """``specs`` with the aggregator TorchCell's script for this file builds.

    - **PMA** (torchcell/models/hetero_cell_pma.py, ``SimplePMA``): one PyG
      ``PoolingByMultiheadAttention`` with one seed, ``heads`` from
      ``global_aggregator_config.heads`` (default 8), ``layer_norm=True`` always, the
      model's dropout, then a LayerNorm: ``model.pooling=pma``. It reads no other
      ``global_aggregator_config`` key.
    - **ISAB** (torchcell/models/hetero_cell_isab.py, ``SortedSetTransformerAggregation``): the
      file's ``global_aggregator_config``, absent keys at that script's defaults
      (:data:`_ISAB_DEFAULTS`), attention dropout = the model's dropout.

    Raises:
        ConfigError: a key the variant's model does not read is searched.
    """
    kind = _variant(path)
    if kind is None:
        return dict(specs)
    out = dict(specs)
    read = {"heads", "layer_norm"} if kind == "pma" else set(_ISAB_DEFAULTS)
    ignored = sorted(k for k in _spec_keys(out) if k.startswith(_AGG) and k[len(_AGG):] not in read)
    for key in ignored:
        if key in out and set(out[key]) != {"value"}:
            raise ConfigError(f"{source}: {key}: searched, but TorchCell's hetero_cell_{kind} model does not read "
                              f"it (its aggregator takes the model's dropout{', heads only' if kind == 'pma' else ''})")
        _drop(out, key)
    if kind == "pma":
        given = out.get(f"{_AGG}layer_norm", {}).get("value", True)
        out[f"{_AGG}layer_norm"] = {"value": True}  # SimplePMA passes layer_norm=True whatever the file says
        forced = [] if given is True else [f"{_AGG}layer_norm: true, as SimplePMA always builds it"]
        out["model.pooling"] = {"value": "pma"}
        defaults = {"heads": 8}
    else:
        out["model.pooling"] = {"value": "sorted_set_transformer"}
        defaults, forced = dict(_ISAB_DEFAULTS), []
    for name, value in defaults.items():
        if f"{_AGG}{name}" not in _spec_keys(out):
            out[f"{_AGG}{name}"] = {"value": value}
    built = ("one PMA block (1 seed) + LayerNorm, as SimplePMA" if kind == "pma"
             else "the set transformer of its global_aggregator_config, absent keys at that script's defaults")
    line = (f"{source}: TorchCell runs this file with its hetero_cell_{kind} script: model.pooling="
            f"{out['model.pooling']['value']} ({built})")
    if ignored:
        line += f"; not used: {', '.join(ignored)} (that model does not read them; the model's dropout applies)"
    if forced:
        line += f"; {forced[0]}"
    notices.append(line)
    return out


def _spec_keys(specs: Mapping[str, Any]) -> set[str]:
    """Every key the specs set, ``also`` targets included."""
    return set(specs) | {k for spec in specs.values() if isinstance(spec, Mapping) for k in spec.get("also", ())}


def _drop(specs: dict[str, Any], key: str) -> None:
    specs.pop(key, None)
    for name, spec in list(specs.items()):
        if isinstance(spec, Mapping) and key in spec.get("also", ()):
            also = [k for k in spec["also"] if k != key]
            specs[name] = {**{k: v for k, v in spec.items() if k != "also"}, **({"also": also} if also else {})}


def _compose(path: Path, chain: tuple[Path, ...], source: str,
             overrides: dict[str, list[Any]] | None = None,
             notes: list[str] | None = None) -> tuple[Any, dict[str, str]]:
    """The config at ``path`` with its defaults list merged in Hydra's order, and the plugin selections.

    ``override group: option`` entries replace that group's choice anywhere below in the
    defaults tree (the outermost override wins); one that matches no group is refused, as
    Hydra refuses it. ``overrides`` maps a group to ``[choice, used]``.
    """
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    top = overrides is None
    overrides = {} if overrides is None else overrides
    notes = [] if notes is None else notes

    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(p.name for p in (*chain, resolved))
        raise ConfigError(f"{source}: defaults: a cycle: {cycle}")
    try:
        cfg = OmegaConf.load(resolved)
    except (OmegaConfBaseException, yaml.YAMLError, ValueError) as e:
        raise ConfigError(f"{source}: {path.name}: not a valid config ({str(e).splitlines()[0][:120]})") from e
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{source}: {path.name}: expected a mapping")
    defaults = cfg.pop("defaults", None) if "defaults" in cfg else None
    plugins: dict[str, str] = {}
    if defaults is None:
        return cfg, plugins
    defaults = OmegaConf.to_container(defaults, resolve=False)
    if not isinstance(defaults, list):
        raise ConfigError(f"{source}: {path.name}: defaults: expected a list")
    merged = OmegaConf.create({})
    here = (*chain, resolved)
    self_seen = False
    for entry in defaults:
        if isinstance(entry, Mapping) and len(entry) == 1:
            (group, choice), = entry.items()
            name = str(group).split(" ", 1)[1].strip().lstrip("/") if str(group).startswith("override ") else ""
            if name and not name.startswith("hydra/"):
                overrides.setdefault(name, [choice, False])  # an outer override wins over an inner one
    for entry in defaults:
        if entry == "_self_":
            if self_seen:
                raise ConfigError(f"{source}: {path.name}: defaults: _self_ listed twice")
            merged, self_seen = OmegaConf.merge(merged, cfg), True
        elif isinstance(entry, str):
            child, child_plugins = _compose(_default_file(path, entry.lstrip("/"), source), here, source, overrides,
                                            notes)
            merged = OmegaConf.merge(merged, child)
            plugins.update(child_plugins)
        elif isinstance(entry, Mapping) and len(entry) == 1:
            (group, choice), = entry.items()
            group = str(group)
            optional = group.startswith("optional ")
            override = group.startswith("override ")
            group = group.split(" ", 1)[1].strip() if optional or override else group
            if group.lstrip("/").startswith("hydra/"):
                plugins[group.lstrip("/")] = str(choice)
                continue
            if override:
                continue  # applied where the group is listed
            group_path, _, package = group.lstrip("/").partition("@")
            if group_path in overrides:
                choice = overrides[group_path][0]
                overrides[group_path][1] = True
            if choice is None:
                continue
            for option in choice if isinstance(choice, list) else [choice]:
                file = _default_file(path, f"{group_path}/{option}", source, optional=optional)
                if file is None:
                    continue
                child, child_plugins = _compose(file, here, source, overrides, notes)
                node = _package(file, group_path, package or None, notes)
                merged = OmegaConf.merge(merged, child if node == "" else OmegaConf.create(_nest(node, child)))
                plugins.update(child_plugins)
        else:
            raise ConfigError(f"{source}: {path.name}: defaults: {entry!r} is not a Hydra defaults entry")
    if not self_seen:
        merged = OmegaConf.merge(merged, cfg)  # Hydra appends _self_ when it is not listed
    unused = sorted(group for group, (_, used) in overrides.items() if not used)
    if top and unused:
        raise ConfigError(f"{source}: defaults: override {unused[0]}: no config group {unused[0]!r} in the "
                          f"defaults list to override")
    return merged, plugins


def _default_file(path: Path, name: str, source: str, *, optional: bool = False) -> Path | None:
    file = path.parent / (name if name.endswith(".yaml") else f"{name}.yaml")
    if not file.is_file():
        if optional:
            return None
        raise ConfigError(f"{source}: defaults: {name!r}: {file} does not exist")
    return file


def _package(file: Path, group: str, package: str | None, notes: list[str]) -> str:
    """A config group file's package (dotted, ``""`` for the root), as Hydra 1.3 resolves it.

    The ``@pkg`` of its defaults entry wins over the file's ``# @package`` header, which wins
    over the group path (Hydra's default since 1.1). ``_global_`` is the root, ``_group_`` the
    group path, ``_name_`` the option's name: Hydra 1.0/1.1's keywords (hydra-core 1.3
    ``core/default_element.py``, ``set_package_header`` and ``_get_final_package``, which
    still apply them under ``version_base`` < 1.2; the header is read from the comment lines
    opening the file). A file using them is named in ``notes``.
    """
    header = None
    for line in file.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        if not line.lstrip().startswith("#"):
            break
        m = re.match(r"#\s*@package\s+(\S+)", line.strip())
        if m:
            header = m.group(1)
    chosen = package if package is not None else header if header is not None else group.replace("/", ".")
    parts = []
    for part in chosen.split("."):
        if part == "_global_":
            parts = []
        elif part == "_group_":
            parts.extend(group.replace("/", ".").split("."))
            notes.append(f"{file.name}: @package _group_")
        elif part == "_name_":
            parts.append(file.stem)
            notes.append(f"{file.name}: @package _name_")
        elif part:
            parts.append(part)
    return ".".join(parts)


def _nest(node: str, child: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    out: Any = OmegaConf.to_container(child, resolve=False)
    for part in reversed(node.split(".")):
        out = {part: out}
    return out


def _resolve(cfg: Any, source: str) -> dict[str, Any]:
    """The config as plain data with every interpolation resolved.

    An interpolation that resolves to nothing names its key, unless the key is machinery
    that is not used here anyway (then it reads as null).
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    for _ in range(10_000):
        try:
            return OmegaConf.to_container(cfg, resolve=True)
        except OmegaConfBaseException as e:
            key = str(getattr(e, "full_key", None) or "")
            rule = _rule(key) if key else None
            if rule is None or rule.kind != "notice":
                raise ConfigError(f"{source}: {key or '?'}: interpolation cannot be resolved "
                                  f"({str(e).splitlines()[0][:120]})") from e
            OmegaConf.update(cfg, key, None, merge=False)
    raise ConfigError(f"{source}: too many unresolvable interpolations")


def _leaves(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, Mapping) and (data or not prefix):
        return [leaf for k, v in data.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    return [(prefix[:-1], data)]


def _sweep_value(params: Mapping[str, Any], key: Any, source: str) -> str:
    """The override text Hydra's Optuna sweeper builds: ``f"{k!s}={v}"``, so ``2`` reads as 2 and
    ``true`` as True (hydra-optuna-sweeper ``_impl.py``, ``_parse_sweeper_params_config``)."""
    value = params[key]
    if isinstance(value, str) and "${" in value:
        raise ConfigError(f"{source}: hydra.sweeper.params.{key}: interpolations in a sweep are not supported")
    return f"{value}"


def _parse_sweep(key: str, value: str, source: str) -> dict[str, Any] | None:
    """A sweep as our spec (hydra-optuna-sweeper's conversion), or None for a fixed value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep, Transformer
    from hydra.errors import HydraException

    text = value
    where = f"{source}: hydra.sweeper.params.{key}"
    try:
        override = OverridesParser.create().parse_override(f"{key}={text}")
    except HydraException as e:
        raise ConfigError(f"{where}: {text!r} is not Hydra sweep syntax ({str(e).splitlines()[0][:120]})") from e
    if not override.is_sweep_override():
        return None
    sweep = override.value()
    try:
        if isinstance(sweep, ChoiceSweep) or (isinstance(sweep, RangeSweep) and sweep.shuffle):
            choices = list(override.sweep_iterator(transformer=Transformer.encode)) if isinstance(
                sweep, RangeSweep) else list(override.sweep_iterator())
            if any(isinstance(c, (list, dict)) for c in choices):
                raise ConfigError(f"{where}: a choice of lists or mappings cannot be searched")
            if isinstance(sweep, RangeSweep):
                # shuffle() only orders the grid; a stored space must not change from one read to the next.
                choices = sorted(choices, key=lambda c: (type(c).__name__, c))
            return {"choices": choices}
        if isinstance(sweep, RangeSweep):
            if any(isinstance(v, float) for v in (sweep.start, sweep.stop, sweep.step)):
                return {"low": float(sweep.start), "high": float(sweep.stop),
                        **({"step": float(sweep.step)} if sweep.step else {})}
            return {"low": int(sweep.start), "high": int(sweep.stop), "step": int(sweep.step)}
        if isinstance(sweep, IntervalSweep):
            log = "log" in sweep.tags
            both_int = isinstance(sweep.start, int) and isinstance(sweep.end, int)
            low, high = (int(sweep.start), int(sweep.end)) if both_int else (float(sweep.start), float(sweep.end))
            return {"low": low, "high": high, **({"log": True} if log else {})}
    except HydraException as e:
        raise ConfigError(f"{where}: {str(e).splitlines()[0][:120]}") from e
    raise ConfigError(f"{where}: {text!r} is not supported by the Optuna sweeper")


def _fixed_value(key: str, text: str, source: str) -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(f"{key}={text}").value()


_MARKER = "__torchcell_search_sweep_{}__"


def _targets(composed: Any, key: str, source: str) -> list[str]:
    """Every leaf whose resolved value is the searched key's value (the key itself and its interpolations)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    probe = OmegaConf.create(OmegaConf.to_container(composed, resolve=False))
    if not _has_key(probe, key):
        return []
    marker = _MARKER.format(key.replace(".", "_"))
    try:
        OmegaConf.update(probe, key, marker, merge=False)
        resolved = OmegaConf.to_container(probe, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: hydra.sweeper.params.{key}: {str(e).splitlines()[0][:120]}") from e
    targets = []
    for leaf, value in _leaves(resolved):
        if value == marker:
            targets.append(leaf)
        elif isinstance(value, str) and marker in value and _rule(leaf) is not None and _rule(leaf).kind != "notice":
            raise ConfigError(f"{source}: {leaf}: takes hydra.sweeper.params.{key} inside a string; "
                              f"only whole-value interpolations can be searched")
    return targets


def _has_key(cfg: Any, key: str) -> bool:
    from omegaconf import OmegaConf

    node: Any = OmegaConf.to_container(cfg, resolve=False)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _sweeper_options(sweeper: Mapping[str, Any], plugins: Mapping[str, str], source: str,
                     unused: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sampler_choice = plugins.get("hydra/sweeper/sampler")
    sampler = sweeper.get("sampler") or {}
    if not isinstance(sampler, Mapping):
        raise ConfigError(f"{source}: hydra.sweeper.sampler: expected a mapping")
    target = sampler.get("_target_")
    name = str(target).rsplit(".", 1)[-1] if target else sampler_choice
    if name is not None:
        if name not in _SAMPLERS:
            key = "hydra.sweeper.sampler._target_" if target else "defaults: override hydra/sweeper/sampler"
            raise ConfigError(f"{source}: {key}: {target or name!r} is not supported; torchcell-search runs "
                              f"TPESampler, RandomSampler or GridSampler")
        out["sampler"] = _SAMPLERS[name]
    if sampler.get("seed") is not None:
        seed = sampler["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"{source}: hydra.sweeper.sampler.seed: expected an integer >= 0, got {seed!r}")
        out["seed"] = seed
    for extra in sorted(set(map(str, sampler)) - {"_target_", "seed"}):
        unused[f"hydra.sweeper.sampler.{extra}"] = "our sampler has its own settings: TPE with constant liar"
    if sweeper.get("direction") is not None:
        direction = sweeper["direction"]
        directions = [direction] if isinstance(direction, str) else direction
        if not isinstance(directions, list) or not directions or not all(
                d in ("minimize", "maximize") for d in directions):
            raise ConfigError(f"{source}: hydra.sweeper.direction: expected minimize, maximize or a list of them, "
                              f"got {direction!r}")
        if len(directions) > len(TORCHCELL_OBJECTIVES):
            raise ConfigError(f"{source}: hydra.sweeper.direction: TorchCell's training returns "
                              f"{len(TORCHCELL_OBJECTIVES)} values; got {len(directions)} directions")
        if len(directions) == 2:
            out["objectives"] = list(TORCHCELL_OBJECTIVES)
        else:
            out["objectives"] = [TORCHCELL_OBJECTIVES[0 if directions[0] == "minimize" else 1]]
        out["directions"] = list(directions)
    if sweeper.get("n_trials") is not None:
        out["n_trials"] = _int_option("hydra.sweeper.n_trials", sweeper["n_trials"], source)
    if sweeper.get("n_jobs") is not None:
        out["launcher"] = {"n_jobs": _int_option("hydra.sweeper.n_jobs", sweeper["n_jobs"], source)}
    for key in ("storage", "study_name"):
        if sweeper.get(key) is not None:
            unused[f"hydra.sweeper.{key}"] = "a path or name of another machine; use --storage / --study"
    if sweeper.get("max_failure_rate") is not None:
        unused["hydra.sweeper.max_failure_rate"] = "failed trials are retried from their checkpoint here"
    if sweeper.get("custom_search_space") is not None:
        raise ConfigError(f"{source}: hydra.sweeper.custom_search_space: a Python search-space function "
                          f"cannot be read; write its parameters into hydra.sweeper.params")
    unknown = sorted(set(map(str, sweeper)) - {"sampler", "direction", "n_trials", "n_jobs", "storage",
                                                "study_name", "max_failure_rate", "custom_search_space",
                                                "params", "_target_", "defaults"})
    if unknown:
        raise ConfigError(f"{source}: hydra.sweeper.{unknown[0]}: not a setting of the Optuna sweeper")
    return out


def _launcher(launcher: Any, plugins: Mapping[str, str], source: str, unused: dict[str, str]) -> dict[str, Any]:
    """Slurm settings of a submitit launcher, kept as the study's `slurm` defaults."""
    if not launcher:
        return {}
    if not isinstance(launcher, Mapping):
        raise ConfigError(f"{source}: hydra.launcher: expected a mapping")
    target = str(launcher.get("_target_") or plugins.get("hydra/launcher") or "")
    if "slurm" not in target.lower():
        for key in launcher:
            unused[f"hydra.launcher.{key}"] = "a non-Slurm Hydra launcher"
        return {}
    out: dict[str, Any] = {}
    extra = dict(launcher.get("additional_parameters") or {})
    for key in _SLURM_KEYS:
        value = launcher.get(key, extra.pop(key, None))
        if value is None:
            continue
        if isinstance(value, str) and "${" in value:
            raise ConfigError(f"{source}: hydra.launcher.{key}: interpolations in launcher settings are not supported")
        out[key] = value
    for key in sorted(set(map(str, launcher)) - set(_SLURM_KEYS) - {"additional_parameters", "_target_"}):
        if key in ("nodes", "tasks_per_node") and launcher[key] in (1, None):
            continue  # what each array task is
        unused[f"hydra.launcher.{key}"] = _SUBMITIT_UNUSED.get(key, _SBATCH_ONLY)
    for key in sorted(extra):
        unused[f"hydra.launcher.additional_parameters.{key}"] = _SBATCH_ONLY
    return out
