"""torchcell-search: Optuna hyperparameter search for HeteroCell models of yeast
double-mutant ``fitness`` and genetic interaction (``gene_interaction``, ε)."""

from torchcell_search.errors import (
    ConfigError,
    DataError,
    StorageError,
    StudyError,
    TorchcellSearchError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "StorageError",
    "StudyError",
    "TorchcellSearchError",
    "__version__",
]
