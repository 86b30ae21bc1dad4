"""The prediction head: ``z_p`` -> (fitness, gene_interaction), with TorchCell's head options.

``model.prediction_head_config.*`` (TorchCell's keys) configure it: ``head_num_layers``
(Linear layers in all, TorchCell's count), ``residual``, ``head_norm``, ``dropout``,
``activation``; the last three fall back to ``model.norm``, ``model.dropout`` and
``model.activation`` when null, as TorchCell's ``pred_config.get("head_norm", norm)`` does.

**Batch norm in the head.** The head sees one row per perturbed sample, ``z_p = z_w - z_pert``
``(B, C)``: the wildtype graph is not a head input (its embedding is subtracted before), so
the batched ``(N, B+1, C)`` layout of the convs does not reach here and ``head_norm=batch``
normalises over the ``B`` samples of the training batch, as TorchCell's ``BatchNorm1d``
over its PyG ``Batch`` of perturbed graphs does. In evaluation it uses the running
statistics, so a prediction does not depend on which records share its batch. A training
batch of a single sample (the last, short batch of an epoch) has no batch variance; it is
normalised with the running statistics and does not update them (``nn.BatchNorm1d`` would
raise there).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from torchcell_search.errors import ConfigError
from torchcell_search.model.activations import build_activation
from torchcell_search.model.layers import NORMS, MaskedBatchNorm, _MLP, build_norm

__all__ = ["PredictionHead"]


class _SampleBatchNorm(MaskedBatchNorm):
    """Batch norm over the samples of a ``(B, C)`` batch; a one-sample training batch uses the running statistics."""

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        if self.training and x.dim() == 2 and x.size(0) == 1:
            bn = self.bn
            return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)
        return super().forward(x, keep)


def _head_norm(name: str, channels: int) -> nn.Module:
    if name not in NORMS:
        raise ConfigError(f"model.prediction_head_config.head_norm: {name!r} is not one of {', '.join(sorted(NORMS))}")
    return _SampleBatchNorm(channels) if name == "batch" else build_norm(name, channels)


class PredictionHead(_MLP):
    """``num_layers - 1`` hidden blocks, then a Linear to the outputs.

    .. math::
        \\mathbf{h}_0 = \\mathbf{z}_p, \\qquad
        \\mathbf{h}_\\ell = [\\mathbf{h}_{\\ell-1}] + \\mathrm{Drop}\\big(\\sigma(\\mathrm{Norm}_\\ell
            (\\mathbf{W}_\\ell \\mathbf{h}_{\\ell-1} + \\mathbf{b}_\\ell))\\big), \\qquad
        \\hat{\\mathbf{y}} = \\mathbf{W}_{\\text{out}} \\mathbf{h}_{L-1} + \\mathbf{b}_{\\text{out}}

    The bracketed skip term is there only with ``residual=True`` and only for blocks whose
    input and output widths agree (all of them when ``in_channels == hidden_channels``; the
    first block has none when they differ, rather than a learned projection). TorchCell's
    configs set ``residual`` but its head ignores it (the argument is commented out); here
    it is real. ``num_layers=1`` is a single Linear.

    Args:
        in_channels (int): width ``C`` of ``z_p``.
        hidden_channels (int): width of the hidden blocks.
        out_channels (int, optional): (default: ``2``: fitness, gene_interaction)
        num_layers (int, optional): Linear layers in all (default: ``4``, the report's head).
        norm (str, optional): ``layer | batch | none`` (default: ``"layer"``); see the module
            docstring for what batch statistics mean here.
        activation (str, optional): :math:`\\sigma`, a ``model/activations.py`` name (default: ``"relu"``).
        dropout (float, optional): (default: ``0.0``)
        residual (bool, optional): add the skip (default: ``False``, the report's head).

    Shapes:
        - **input:** ``(B, in_channels)``
        - **output:** ``(B, out_channels)``

    Raises:
        ConfigError: ``num_layers < 1``, or an unknown norm or activation.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int = 2,
        *,
        num_layers: int = 4,
        norm: str = "layer",
        activation: str = "relu",
        dropout: float = 0.0,
        residual: bool = False,
    ) -> None:
        if num_layers < 1:
            raise ConfigError(f"model.prediction_head_config.head_num_layers={num_layers}: needs at least 1")
        dims = [in_channels] + [hidden_channels] * (num_layers - 1)
        # _MLP's attribute names (lins, norms, act, dropout, out), so older checkpoints still load
        super().__init__(dims, norm=norm, dropout=dropout, out_channels=out_channels, activation=activation,
                         norm_builder=_head_norm, activation_key="model.prediction_head_config.activation")
        self.skips = [residual and a == b for a, b in zip(dims[:-1], dims[1:])]
        self.norm_name, self.activation_name, self.residual = norm, activation, residual

    def forward(self, z: Tensor) -> Tensor:
        h = z  # (B, C)
        for lin, norm, skip in zip(self.lins, self.norms, self.skips):
            block = self.dropout(self.act(norm(lin(h))))  # (B, hidden)
            h = h + block if skip else block
        return self.out(h)  # (B, out)

    def __repr__(self) -> str:
        dims = [self.lins[0].in_features] if len(self.lins) else [self.out.in_features]
        dims += [lin.out_features for lin in self.lins]
        return (
            f"{self.__class__.__name__}({' -> '.join(map(str, dims))}, out={self.out.out_features}, "
            f"norm={self.norm_name}, act={self.activation_name}, residual={self.residual})"
        )
