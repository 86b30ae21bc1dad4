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
    "LossConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "parameter_keys",
]


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
    # model.use_roles=false gives the report's model exactly.
    use_roles: bool = field(default=True, metadata=_key("model.use_roles"))
    # Read collaborative-filtering features of each pair, fitted on the train split's
    # interaction profiles (model/collaborative.py), beside the graph embeddings.
    profile_features: bool = field(default=False, metadata=_key("model.profile_features"))
    # Issue 13, genes without records: which inputs an unseen gene still has feed the profile
    # features (model/collaborative.py INPUT_COLUMNS); a switched-off input reads zeros.
    input_smf: bool = field(default=True, metadata=_key("model.input_smf"))
    input_go: bool = field(default=True, metadata=_key("model.input_go"))
    input_learned_similarity: bool = field(default=True, metadata=_key("model.input_learned_similarity"))
    input_physical: bool = field(default=True, metadata=_key("model.input_physical"))
    input_regulatory: bool = field(default=True, metadata=_key("model.input_regulatory"))
    input_metabolic: bool = field(default=True, metadata=_key("model.input_metabolic"))
    # Probability that a train record's own-profile features (factorisation, profile
    # neighbours) are hidden, so the model learns to predict from borrowed ones as it must
    # for a gene without records.
    profile_dropout: float = field(default=0.0, metadata=_key("model.profile_dropout", low=0.0))


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


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of one run."""

    epochs: int = field(default=20, metadata=_key("trainer.max_epochs", low=1))
    batch_size: int = field(default=32, metadata=_key("data_module.batch_size", low=1))
    lr: float = field(default=1e-3, metadata=_key("optimizer.lr", low=0.0))
    weight_decay: float = field(default=1e-5, metadata=_key("optimizer.weight_decay", low=0.0))
    lr_schedule: str = field(default="cosine", metadata=_key("trainer.lr_schedule", choices=("cosine", "constant")))
    warmup_epochs: int = field(default=0, metadata=_key("trainer.warmup_epochs", low=0))
    grad_clip: float = field(default=1.0, metadata=_key("trainer.grad_clip", low=0.0))
    # Stop after this many epochs without a better validation objective; 0 disables it.
    patience: int = field(default=0, metadata=_key("trainer.patience", low=0))
    seed: int = field(default=0, metadata=_key("seed"))
    device: str = field(default="auto", metadata=_key("trainer.device", choices=("auto", "cpu", "cuda")))


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
    """Check ``value`` against the field's type, choices and bound; return it in that type."""
    kind = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str, "bool": bool}[f.type]
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
