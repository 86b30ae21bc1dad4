"""The ``model.activation`` registry: one name -> one ``nn.Module`` factory.

Every nonlinearity of the model (PreProcessor, conv blocks, prediction head) is built here,
so an unknown name fails in one place with the list of known ones, and the research
code's silent fallbacks (an unknown name turning into SiLU or into no activation) cannot
happen. Each call returns a fresh module; none has parameters, so the choice changes no
parameter count or checkpoint key.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from torchcell_search.errors import ConfigError

__all__ = ["ACTIVATIONS", "build_activation"]

#: ``model.activation`` options, in the order of ``config.ACTIVATION_NAMES`` (tested equal). ``leaky_relu`` uses torch's slope 0.01 (TorchCell's
#: ``nn.LeakyReLU()``); ``silu`` is also called Swish.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
}


def build_activation(name: str, *, key: str = "model.activation") -> nn.Module:
    """A new activation module ``name``.

    Args:
        name: one of :data:`ACTIVATIONS`.
        key: the dotted key named in the error (``model.prediction_head_config.activation``, ...).

    Raises:
        ConfigError: ``name`` is not a known activation.
    """
    if name not in ACTIVATIONS:
        raise ConfigError(f"{key}: {name!r} is not one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()
