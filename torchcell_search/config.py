"""One run's configuration as data, addressed by the report's dotted names.

A :class:`RunConfig` holds everything one training run needs besides the data: the model
(:class:`ModelConfig`), the loss (:class:`LossConfig`) and the optimisation
(:class:`TrainConfig`). Every tunable field carries the dotted key the report's sweep
table uses (``model.num_layers``, ``regression_task.lambda_dist``, ``heads``, ...), so a
search space, a ``--set key=value`` flag and an Optuna trial's ``params`` all speak the
same language::

    cfg = RunConfig().with_overrides({"model.num_layers": 2, "heads": 5})
    cfg.model.num_layers  # 2

Unknown keys, wrong types and values outside an option's choices raise
:class:`~torchcell_search.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from torchcell_search.errors import ConfigError

__all__ = [
    "ACTIVATION_NAMES",
    "LossConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "parameter_keys",
]


#: ``model.activation`` names; ``model/head.py`` holds the matching registry (tested equal).
ACTIVATION_NAMES: tuple[str, ...] = ("relu", "gelu", "silu", "leaky_relu", "tanh", "sigmoid", "elu")


def _key(key: str, *, choices: tuple[Any, ...] | None = None, low: float | None = None) -> dict:
    """Field metadata: the dotted key, and optionally the allowed choices or a lower bound."""
    return {"key": key, "choices": choices, "low": low}


@dataclass(frozen=True)
class ModelConfig:
    """HeteroCell's architecture. Defaults are the report's printed model (64 wide, 3 layers), plus SGA roles."""

    # "hetero_cell": the report's model, z_p = z_wildtype - z_perturbed over the whole graph.
    # "perturbation_set": encode the wildtype once per batch, predict from the perturbed
    # genes' embeddings with masked self-attention (Dango-style).
    kind: str = field(default="hetero_cell", metadata=_key("model.kind", choices=("hetero_cell", "perturbation_set")))
    # Width of the learnable gene/reaction/metabolite embeddings.
    embedding_channels: int = field(default=64, metadata=_key("cell_dataset.learnable_embedding_input_channels", low=1))
    hidden_channels: int = field(default=64, metadata=_key("model.hidden_channels", low=1))
    num_layers: int = field(default=3, metadata=_key("model.num_layers", low=1))
    # Attention heads of the GATv2 convolutions on physical and regulatory edges.
    heads: int = field(default=1, metadata=_key("heads", low=1))
    head_hidden_channels: int = field(default=64, metadata=_key("model.prediction_head_config.hidden_channels", low=1))
    pooling: str = field(
        default="sorted_set_transformer",
        metadata=_key("model.pooling", choices=("sorted_set_transformer", "sab", "isab", "pma", "attentional")),
    )
    norm: str = field(default="layer", metadata=_key("model.norm", choices=("layer", "batch", "none")))
    dropout: float = field(default=0.0, metadata=_key("model.dropout", low=0.0))
    # Give the model the SGA roles (query vs array) of the two deleted genes. On by default,
    # the one default that is not the report's: SGA roles carry systematic effects (the two
    # orientations of a real pair agree only at r ~ 0.17), and with roles the head also reads
    # the deleted genes' own embeddings, which the report's whole-graph difference z_w - z_p
    # dilutes (demo, 6 epochs: val epsilon r 0.77 with roles; ~0.25 without, even at lr 3e-3).
    # model.use_roles=false with model.global_aggregator_config.layer_norm=false (the other
    # departure, model/pooling.py) gives the report's model exactly.
    use_roles: bool = field(default=True, metadata=_key("model.use_roles"))
    # Read collaborative-filtering features of each pair, fitted on the train split's
    # interaction profiles (model/collaborative.py), beside the graph embeddings.
    profile_features: bool = field(default=False, metadata=_key("model.profile_features"))
    # --- TorchCell HeteroCell options (issue 12), named with TorchCell's dotted keys. ---
    # Nonlinearity of the PreProcessor, conv blocks and head (registry: model/activations.py).
    activation: str = field(default="relu", metadata=_key("model.activation", choices=ACTIVATION_NAMES))
    # Linear layers of the prediction head in all (TorchCell's count): head_num_layers - 1
    # hidden blocks, then the output Linear. 4 is the report's head.
    head_num_layers: int = field(default=4, metadata=_key("model.prediction_head_config.head_num_layers", low=1))
    # x + block(x) around every hidden head block whose input and output widths agree.
    head_residual: bool = field(default=False, metadata=_key("model.prediction_head_config.residual"))
    # None: inherit model.norm / model.dropout / model.activation (TorchCell's own fallback).
    head_norm: str | None = field(
        default=None, metadata=_key("model.prediction_head_config.head_norm", choices=("layer", "batch", "none", None))
    )
    head_dropout: float | None = field(default=None, metadata=_key("model.prediction_head_config.dropout", low=0.0))
    head_activation: str | None = field(
        default=None, metadata=_key("model.prediction_head_config.activation", choices=(*ACTIVATION_NAMES, None))
    )
    # Set-transformer pooling (PyG SetTransformerAggregation's arguments, plus ISAB). None:
    # the model.pooling preset's value (model/pooling.py POOLINGS); model.dropout for dropout.
    pool_num_induced_points: int | None = field(
        default=None, metadata=_key("model.global_aggregator_config.num_induced_points", low=1)
    )
    pool_layer_norm: bool | None = field(default=None, metadata=_key("model.global_aggregator_config.layer_norm"))
    pool_num_encoder_blocks: int | None = field(
        default=None, metadata=_key("model.global_aggregator_config.num_encoder_blocks", low=0)
    )
    pool_heads: int | None = field(default=None, metadata=_key("model.global_aggregator_config.heads", low=1))
    pool_num_decoder_blocks: int | None = field(
        default=None, metadata=_key("model.global_aggregator_config.num_decoder_blocks", low=0)
    )
    pool_num_seed_points: int | None = field(
        default=None, metadata=_key("model.global_aggregator_config.num_seed_points", low=1)
    )
    pool_use_isab: bool | None = field(default=None, metadata=_key("model.global_aggregator_config.use_isab"))
    pool_dropout: float | None = field(default=None, metadata=_key("model.global_aggregator_config.dropout", low=0.0))
    # Issue 13, genes without records: which inputs an unseen gene still has feed the profile
    # features (model/collaborative.py INPUT_COLUMNS); a switched-off input reads zeros.
    input_smf: bool = field(default=True, metadata=_key("model.input_smf"))
    input_go: bool = field(default=True, metadata=_key("model.input_go"))
    input_learned_similarity: bool = field(default=True, metadata=_key("model.input_learned_similarity"))
    input_physical: bool = field(default=True, metadata=_key("model.input_physical"))
    input_regulatory: bool = field(default=True, metadata=_key("model.input_regulatory"))
    input_metabolic: bool = field(default=True, metadata=_key("model.input_metabolic"))
    # Genes with similar single-mutant fitness lend their profiles (kernel ridge on an SMF
    # kernel, columns 19-20); model.input_smf=false removes these too.
    input_smf_similarity: bool = field(default=True, metadata=_key("model.input_smf_similarity"))
    # Probability that a train record's own-profile features (factorisation, profile
    # neighbours) are hidden, so the model learns to predict from borrowed ones as it must
    # for a gene without records.
    profile_dropout: float = field(default=0.0, metadata=_key("model.profile_dropout", low=0.0))
    # What a gene enters the graph network with (model/gene_profiles.py): "embedding", a
    # learnable vector per gene (the report's); "profile", its train-only interaction profile
    # (embedded), GO components and SMF, so a gene without records still has inputs.
    gene_inputs: str = field(default="embedding", metadata=_key("model.gene_inputs", choices=("embedding", "profile")))
    # With gene_inputs=profile: the fraction of train genes whose profiles each training step
    # hides (rows and columns), so the network learns to rebuild a profile from neighbours
    # and annotations; only records with a hidden gene are scored. In (0, 1).
    gene_profile_dropout: float = field(default=0.3, metadata=_key("model.gene_profile_dropout", low=0.0))


@dataclass(frozen=True)
class LossConfig:
    """The composite loss MSE + lambda_dist * DistLoss + lambda_supcr * SupCR (report, 'Loss Function')."""

    lambda_dist: float = field(default=0.1, metadata=_key("regression_task.lambda_dist", low=0.0))
    lambda_supcr: float = field(default=0.001, metadata=_key("regression_task.lambda_supcr", low=0.0))
    # SupCR temperature tau.
    supcr_temperature: float = field(default=0.1, metadata=_key("regression_task.supcr_temperature", low=1e-6))
    # The report's noise model: L = sum_t w_t / (2 sigma_t^2) L_t + log sigma_t (+ lambda sum sigma_t^-2).
    uncertainty_weighting: bool = field(default=False, metadata=_key("regression_task.uncertainty_weighting"))
    # Z-score labels with train statistics (the report applies it in all later experiments).
    standardize_labels: bool = field(default=True, metadata=_key("regression_task.standardize_labels"))
    # TorchCell's label weighting: label t weighs w_t = 1 - n_t / sum_s n_s (n_t = records
    # with label t), normalised to sum 1, in every term (model/losses.py). Off: equal weights.
    weighted_phenotype_loss: bool = field(default=False, metadata=_key("regression_task.is_weighted_phenotype_loss"))


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of one run."""

    epochs: int = field(default=20, metadata=_key("trainer.max_epochs", low=1))
    batch_size: int = field(default=32, metadata=_key("data_module.batch_size", low=1))
    lr: float = field(default=1e-3, metadata=_key("optimizer.lr", low=0.0))
    weight_decay: float = field(default=1e-5, metadata=_key("optimizer.weight_decay", low=0.0))
    lr_schedule: str = field(
        default="cosine", metadata=_key("trainer.lr_schedule", choices=("cosine", "constant", "plateau"))
    )
    warmup_epochs: int = field(default=0, metadata=_key("trainer.warmup_epochs", low=0))
    grad_clip: float = field(default=1.0, metadata=_key("trainer.grad_clip", low=0.0))
    # Stop after this many epochs without a better validation objective; 0 disables it.
    patience: int = field(default=0, metadata=_key("trainer.patience", low=0))
    seed: int = field(default=0, metadata=_key("seed"))
    device: str = field(default="auto", metadata=_key("trainer.device", choices=("auto", "cpu", "cuda")))
    # Optimiser (TorchCell's regression_task.optimizer.type).
    optimizer: str = field(default="AdamW", metadata=_key("optimizer.type", choices=("AdamW", "Adam")))
    # ReduceLROnPlateau (trainer.lr_schedule=plateau), stepped on val/loss once per epoch.
    # Defaults: TorchCell's hetero_cell.yaml (torch's own are factor 0.1, patience 10, cooldown 0, min_lr 0, eps 1e-8).
    plateau_mode: str = field(default="min", metadata=_key("regression_task.lr_scheduler.mode", choices=("min", "max")))
    plateau_factor: float = field(default=0.2, metadata=_key("regression_task.lr_scheduler.factor", low=0.0))
    plateau_patience: int = field(default=3, metadata=_key("regression_task.lr_scheduler.patience", low=0))
    plateau_threshold: float = field(default=1e-4, metadata=_key("regression_task.lr_scheduler.threshold", low=0.0))
    plateau_threshold_mode: str = field(
        default="rel", metadata=_key("regression_task.lr_scheduler.threshold_mode", choices=("rel", "abs"))
    )
    plateau_cooldown: int = field(default=2, metadata=_key("regression_task.lr_scheduler.cooldown", low=0))
    plateau_min_lr: float = field(default=1e-9, metadata=_key("regression_task.lr_scheduler.min_lr", low=0.0))
    plateau_eps: float = field(default=1e-10, metadata=_key("regression_task.lr_scheduler.eps", low=0.0))


_SECTIONS = (("model", ModelConfig), ("loss", LossConfig), ("train", TrainConfig))


def _fields_by_key() -> dict[str, tuple[str, dataclasses.Field]]:
    table: dict[str, tuple[str, dataclasses.Field]] = {}
    for section, cls in _SECTIONS:
        for f in dataclasses.fields(cls):
            table[f.metadata["key"]] = (section, f)
    return table


_FIELDS = _fields_by_key()


def parameter_keys() -> list[str]:
    """Every dotted key a search space, ``--set`` or a trial's params may use, sorted."""
    return sorted(_FIELDS)


def _coerce(key: str, f: dataclasses.Field, value: Any) -> Any:
    """Check ``value`` against the field's type, choices and bound; return it in that type.

    A field typed ``X | None`` also takes ``None`` (YAML ``null``, ``--set key=null``), which
    means "inherit" (see the field's comment); the string ``"none"`` stays a string.
    """
    name = f.type if isinstance(f.type, str) else f.type.__name__
    if name.endswith(" | None"):
        if value is None or (isinstance(value, str) and value.lower() == "null"):
            return None
        name = name[: -len(" | None")]
    kind = {"int": int, "float": float, "str": str, "bool": bool}[name]
    if kind is bool:
        if isinstance(value, bool):
            out: Any = value
        elif isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            out = value.lower() in ("true", "1", "yes")
        else:
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if not number.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        out = int(number)
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            out = float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if not math.isfinite(out):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    else:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        out = value
    choices, low = f.metadata["choices"], f.metadata["low"]
    if choices is not None and out not in choices:
        raise ConfigError(f"{key}: {out!r} is not one of {', '.join(map(str, choices))}")
    if low is not None and out < low:
        raise ConfigError(f"{key}: {out!r} is below the minimum {low}")
    return out


@dataclass(frozen=True)
class RunConfig:
    """Model, loss and training configuration of one run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def with_overrides(self, overrides: Mapping[str, Any]) -> "RunConfig":
        """Return a copy with ``overrides`` (dotted key -> value) applied.

        Raises:
            ConfigError: a key is unknown, or a value has the wrong type, is not among the
                option's choices or is below its minimum.
        """
        changes: dict[str, dict[str, Any]] = {name: {} for name, _ in _SECTIONS}
        for key in sorted(overrides):
            if key not in _FIELDS:
                raise ConfigError(f"unknown parameter {key!r}; known: {', '.join(parameter_keys())}")
            section, f = _FIELDS[key]
            changes[section][f.name] = _coerce(key, f, overrides[key])
        return RunConfig(
            model=dataclasses.replace(self.model, **changes["model"]),
            loss=dataclasses.replace(self.loss, **changes["loss"]),
            train=dataclasses.replace(self.train, **changes["train"]),
        )

    def flat(self) -> dict[str, Any]:
        """Every parameter as ``{dotted key: value}``, sorted by key (JSON-safe)."""
        out = {}
        for section, _ in _SECTIONS:
            obj = getattr(self, section)
            for f in dataclasses.fields(obj):
                out[f.metadata["key"]] = getattr(obj, f.name)
        return dict(sorted(out.items()))

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> "RunConfig":
        """Inverse of :meth:`flat` (missing keys keep their defaults)."""
        return cls().with_overrides(values)
