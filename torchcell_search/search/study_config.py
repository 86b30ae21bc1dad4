"""A study's stored configuration, shared by the study runner and the trial objective.

:class:`StudyConfig` lives here, apart from ``study.py`` (create / start / status) and
``objective.py`` (one trial), so each of those imports it without importing the other.

Example:
    >>> cfg = StudyConfig(objectives=["val/combined/MSE", "val/combined/Pearson"],
    ...                   directions=["minimize", "maximize"])
    >>> (cfg.objective, cfg.direction, cfg.is_multi_objective)
    ('val/combined/MSE', 'minimize', True)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from torchcell_search.errors import StudyError

__all__ = ["CONFIG_ATTR", "DEFAULT_OBJECTIVE", "StudyConfig"]

#: Study user attribute holding the :class:`StudyConfig`.
CONFIG_ATTR = "torchcell_search"
DEFAULT_OBJECTIVE = "val/gene_interaction/Pearson"


@dataclass(frozen=True)
class StudyConfig:
    """Everything a worker needs to run a study's trials (stored with the study).

    ``objectives`` / ``directions`` list every objective of a multi-objective study; the
    first pair always equals ``objective`` / ``direction`` (kept for studies stored before
    multi-objective studies existed, whose lists are empty and read as one objective).
    """

    data: str = "demo"  # "demo" or an absolute data directory
    subset: int | None = None  # records drawn reproducibly, None = all
    split: str = "random"
    space: dict[str, Any] = field(default_factory=dict)  # SearchSpace.to_dict()
    space_source: str = ""  # the file the space came from (informational, never compared)
    objective: str = DEFAULT_OBJECTIVE
    direction: str = "maximize"
    epochs: int = 8
    sampler: str = "tpe"
    pruner: str = "median"
    # The median pruner compares a trial with the others once this many have finished ...
    pruner_startup_trials: int = 2
    # ... and never before this epoch (None: a quarter of the epochs).
    pruner_warmup_epochs: int | None = None
    n_trials: int = 20  # total across all workers
    timeout: float | None = None  # seconds per worker
    seed: int = 0
    device: str = "auto"
    artifacts: str | None = None  # None: next to a SQLite file, else ./torchcell-search-artifacts
    overrides: dict[str, Any] = field(default_factory=dict)  # fixed dotted-key values for every trial
    objectives: list[str] = field(default_factory=list)  # all objectives, [objective] when empty
    directions: list[str] = field(default_factory=list)  # one per objective
    # Hyperband's smallest budget (epochs) and reduction factor (W&B early_terminate min_iter / eta).
    pruner_min_resource: int = 1
    pruner_reduction_factor: int = 3
    # pruner "wandb_hyperband": W&B's early_terminate settings (max_iter + s | min_iter, eta, strict), filled.
    wandb_hyperband: dict[str, Any] = field(default_factory=dict)
    # Slurm settings from a sweep file's launcher: defaults of `torchcell-search slurm` for this study.
    launcher: dict[str, Any] = field(default_factory=dict)
    # Data size as a fidelity (search/fidelity.py): "subset:N1,N2,...[,all]" train records per
    # rung, None for a plain study; the top 1/eta of a rung go on, from its weights or from scratch.
    fidelity: str | None = None
    fidelity_eta: int = 3
    fidelity_start: str = "scratch"
    # `predict` averages this many trials by default (1: the best trial alone); "configs" takes
    # the best distinct configurations, "seeds" the best one retrained with other seeds.
    ensemble: int = 1
    ensemble_diversity: str = "configs"

    @property
    def objective_names(self) -> list[str]:
        """Every objective, in order (``[objective]`` for a single-objective study)."""
        return list(self.objectives) or [self.objective]

    @property
    def objective_directions(self) -> list[str]:
        """One direction per objective."""
        return list(self.directions) or [self.direction]

    @property
    def is_multi_objective(self) -> bool:
        return len(self.objective_names) > 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StudyConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise StudyError(f"stored study configuration has unknown fields {unknown}; "
                             f"it was written by another torchcell-search version")
        return cls(**dict(data))
