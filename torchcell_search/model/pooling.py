"""Global pooling of a graph's gene nodes into one vector, with a mask of kept genes.

Every option takes ``x: (S, N, C)`` (``S`` graphs of up to ``N`` genes in node-index
order) and ``mask: (S, N)`` (True = the gene is present) and returns ``(S, C)``; masked
genes neither attend nor are attended to, so a deleted gene counts exactly as an absent one.

Options (``model.pooling``), one registry, :func:`build_pooling`:

- ``sorted_set_transformer`` (default, the report's ``SortedSetTransformerAggregation``):
  2 ISAB encoders (64 induced points), PMA with one seed, 2 SAB decoders, no layer norm.
  This is the configuration whose size reproduces the report's parameter count.
- ``isab``: 2 ISAB encoders (32 induced points), PMA, 1 SAB decoder, layer norm.
- ``sab``: 2 SAB encoders, PMA, 1 SAB decoder, layer norm. Full self-attention over the
  genes costs ``N^2`` per graph and head (~44M entries for 6,600 genes). Attention runs
  through ``F.scaled_dot_product_attention``, which uses a memory-efficient kernel on
  CUDA; on CPU with a mask PyTorch materialises the ``(S, heads, N, N)`` matrix, so SAB on
  the real graph is only practical on a GPU.
- ``pma``: PMA with one seed, no encoder, 1 SAB decoder, layer norm.
- ``attentional``: gated attention pooling (``AttentionalAggregation`` with the research
  code's gate/transform MLPs).

Attention heads: the largest of 8, 4, 2, 1 dividing ``C``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchcell_search.errors import ConfigError

__all__ = [
    "POOLINGS",
    "AttentionalPooling",
    "InducedSetAttentionBlock",
    "MultiheadAttentionBlock",
    "PoolingByMultiheadAttention",
    "SetAttentionBlock",
    "SetTransformerPooling",
    "build_pooling",
    "pooling_heads",
]


def pooling_heads(channels: int) -> int:
    """The attention heads the pooling uses for width ``channels``: the largest of 8, 4, 2, 1 dividing it."""
    return next(h for h in (8, 4, 2, 1) if channels % h == 0)


class MultiheadAttentionBlock(nn.Module):
    """MAB of the Set Transformer (`Lee et al. 2019 <https://arxiv.org/abs/1810.00825>`_), as PyG's.

    .. math::
        \\mathbf{H} = \\mathrm{LN}(\\mathbf{X} + \\mathrm{MHA}(\\mathbf{X}, \\mathbf{Y}, \\mathbf{Y})), \\qquad
        \\mathrm{MAB}(\\mathbf{X}, \\mathbf{Y}) = \\mathrm{LN}(\\mathbf{H} + \\mathrm{ReLU}(\\mathrm{Lin}(\\mathbf{H})))

    The multi-head attention has ``nn.MultiheadAttention``'s parameters (``in_proj`` of
    ``(3C, C)``, ``out_proj``) and runs through ``F.scaled_dot_product_attention``.

    Args:
        channels (int): ``C``.
        heads (int, optional): (default: ``1``)
        layer_norm (bool, optional): (default: ``True``)
        dropout (float, optional): attention dropout (default: ``0.0``)

    Shapes:
        - **input:** ``x: (S, Nq, C)``, ``y: (S, Nk, C)``, ``x_mask: (S, Nq)``, ``y_mask: (S, Nk)``
        - **output:** ``(S, Nq, C)``; rows outside ``x_mask`` get the attention output 0
    """

    def __init__(self, channels: int, heads: int = 1, *, layer_norm: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if channels % heads:
            raise ConfigError(f"attention heads={heads} must divide channels={channels}")
        self.channels = channels
        self.heads = heads
        self.dropout = dropout
        self.in_proj = nn.Linear(channels, 3 * channels)
        self.out_proj = nn.Linear(channels, channels)
        self.lin = nn.Linear(channels, channels)
        self.layer_norm1 = nn.LayerNorm(channels) if layer_norm else None
        self.layer_norm2 = nn.LayerNorm(channels) if layer_norm else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.in_proj.weight)
        nn.init.zeros_(self.in_proj.bias)
        for mod in (self.out_proj, self.lin, self.layer_norm1, self.layer_norm2):
            if mod is not None:
                mod.reset_parameters()
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor, y: Tensor, x_mask: Tensor | None = None, y_mask: Tensor | None = None) -> Tensor:
        S, Nq, C = x.shape
        Nk, h = y.size(1), self.heads
        wq, wk, wv = self.in_proj.weight.chunk(3)
        bq, bk, bv = self.in_proj.bias.chunk(3)
        q = F.linear(x, wq, bq).view(S, Nq, h, C // h).transpose(1, 2)  # (S, h, Nq, d)
        k = F.linear(y, wk, bk).view(S, Nk, h, C // h).transpose(1, 2)  # (S, h, Nk, d)
        v = F.linear(y, wv, bv).view(S, Nk, h, C // h).transpose(1, 2)
        attn_mask = None
        if y_mask is not None:
            # A set with no element left would give NaN; let it attend everywhere instead.
            y_mask = y_mask | ~y_mask.any(dim=1, keepdim=True)
            attn_mask = y_mask[:, None, None, :]  # (S, 1, 1, Nk) True = attend
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (S, h, Nq, d)
        out = self.out_proj(a.transpose(1, 2).reshape(S, Nq, C))
        if x_mask is not None:
            out = out * x_mask.unsqueeze(-1).to(out.dtype)
        out = out + x
        if self.layer_norm1 is not None:
            out = self.layer_norm1(out)
        out = out + F.relu(self.lin(out))
        if self.layer_norm2 is not None:
            out = self.layer_norm2(out)
        return out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, heads={self.heads}, layer_norm={self.layer_norm1 is not None})"


class SetAttentionBlock(nn.Module):
    """SAB: ``MAB(X, X)`` with the mask on both sides.

    Shapes:
        - **input:** ``x: (S, N, C)``, ``mask: (S, N)`` or ``None``
        - **output:** ``(S, N, C)``
    """

    def __init__(self, channels: int, heads: int = 1, *, layer_norm: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.mab = MultiheadAttentionBlock(channels, heads, layer_norm=layer_norm, dropout=dropout)

    def reset_parameters(self) -> None:
        self.mab.reset_parameters()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.mab(x, x, mask, mask)


class InducedSetAttentionBlock(nn.Module):
    """ISAB: ``MAB(X, MAB(I, X))`` with ``num_induced_points`` learned points ``I``.

    Cost ``O(N * I)`` instead of SAB's ``O(N^2)``.

    Shapes:
        - **input:** ``x: (S, N, C)``, ``mask: (S, N)`` or ``None``
        - **output:** ``(S, N, C)``
    """

    def __init__(
        self, channels: int, num_induced_points: int, heads: int = 1, *, layer_norm: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.ind = nn.Parameter(torch.empty(1, num_induced_points, channels))
        self.mab1 = MultiheadAttentionBlock(channels, heads, layer_norm=layer_norm, dropout=dropout)
        self.mab2 = MultiheadAttentionBlock(channels, heads, layer_norm=layer_norm, dropout=dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.ind)
        self.mab1.reset_parameters()
        self.mab2.reset_parameters()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self.mab1(self.ind.expand(x.size(0), -1, -1), x, y_mask=mask)  # (S, I, C)
        return self.mab2(x, h, x_mask=mask)


class PoolingByMultiheadAttention(nn.Module):
    """PMA: ``MAB(S, ReLU(Lin(X)))`` with ``num_seed_points`` learned seeds.

    Shapes:
        - **input:** ``x: (S, N, C)``, ``mask: (S, N)`` or ``None``
        - **output:** ``(S, num_seed_points, C)``
    """

    def __init__(
        self, channels: int, num_seed_points: int = 1, heads: int = 1, *, layer_norm: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.seed = nn.Parameter(torch.empty(1, num_seed_points, channels))
        self.lin = nn.Linear(channels, channels)
        self.mab = MultiheadAttentionBlock(channels, heads, layer_norm=layer_norm, dropout=dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.seed)
        self.lin.reset_parameters()
        self.mab.reset_parameters()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.mab(self.seed.expand(x.size(0), -1, -1), F.relu(self.lin(x)), y_mask=mask)


class SetTransformerPooling(nn.Module):
    """Set Transformer readout: encoders -> PMA -> decoders -> flatten.

    .. math::
        \\mathbf{z} = \\mathrm{SAB}^{D}\\big(\\mathrm{PMA}_k(\\mathrm{Enc}^{E}(\\mathbf{X}))\\big)

    Args:
        channels (int): ``C``.
        encoder (str, optional): ``"isab"``, ``"sab"`` or ``"none"`` (default: ``"isab"``).
        num_encoder_blocks (int, optional): (default: ``2``)
        num_decoder_blocks (int, optional): (default: ``1``)
        num_seed_points (int, optional): output is ``(S, num_seed_points * C)`` (default: ``1``).
        num_induced_points (int, optional): ISAB points (default: ``32``).
        heads (int, optional): (default: :func:`pooling_heads` of ``C``)
        layer_norm (bool, optional): (default: ``True``)
        dropout (float, optional): (default: ``0.0``)

    Shapes:
        - **input:** ``x: (S, N, C)``, ``mask: (S, N)`` or ``None``
        - **output:** ``(S, num_seed_points * C)``
    """

    def __init__(
        self,
        channels: int,
        *,
        encoder: str = "isab",
        num_encoder_blocks: int = 2,
        num_decoder_blocks: int = 1,
        num_seed_points: int = 1,
        num_induced_points: int = 32,
        heads: int | None = None,
        layer_norm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        heads = heads or pooling_heads(channels)
        self.channels, self.heads, self.encoder = channels, heads, encoder
        kw = dict(layer_norm=layer_norm, dropout=dropout)
        if encoder == "isab":
            enc = [InducedSetAttentionBlock(channels, num_induced_points, heads, **kw) for _ in range(num_encoder_blocks)]
        elif encoder == "sab":
            enc = [SetAttentionBlock(channels, heads, **kw) for _ in range(num_encoder_blocks)]
        elif encoder == "none":
            enc = []
        else:
            raise ConfigError(f"set transformer encoder {encoder!r} is not one of isab, sab, none")
        self.encoders = nn.ModuleList(enc)
        self.pma = PoolingByMultiheadAttention(channels, num_seed_points, heads, **kw)
        self.decoders = nn.ModuleList(SetAttentionBlock(channels, heads, **kw) for _ in range(num_decoder_blocks))

    def reset_parameters(self) -> None:
        for block in [*self.encoders, self.pma, *self.decoders]:
            block.reset_parameters()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        for enc in self.encoders:
            x = enc(x, mask)
        x = self.pma(x, mask)  # (S, k, C): every seed is valid, no mask below
        for dec in self.decoders:
            x = dec(x)
        return x.nan_to_num().flatten(1, 2)  # (S, k * C)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.channels}, encoder={self.encoder}x{len(self.encoders)}, "
            f"seeds={self.pma.seed.size(1)}, decoders={len(self.decoders)}, heads={self.heads})"
        )


class AttentionalPooling(nn.Module):
    """Gated attention pooling (`Li et al. 2016 <https://arxiv.org/abs/1511.05493>`_).

    .. math::
        \\mathbf{z} = \\sum_{i \\in \\text{kept}} \\mathrm{softmax}_i\\big(h_{\\text{gate}}(\\mathbf{x}_i)\\big)
        \\, h_{\\Theta}(\\mathbf{x}_i)

    with ``h_gate = Lin(C, C/2) -> ReLU -> Dropout -> Lin(C/2, 1)`` and
    ``h_Theta = Lin(C, C) -> ReLU -> Dropout``.

    Shapes:
        - **input:** ``x: (S, N, C)``, ``mask: (S, N)`` or ``None``
        - **output:** ``(S, C)``
    """

    def __init__(self, channels: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.channels = channels
        self.gate_nn = nn.Sequential(
            nn.Linear(channels, max(1, channels // 2)), nn.ReLU(), nn.Dropout(dropout), nn.Linear(max(1, channels // 2), 1)
        )
        self.nn = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Dropout(dropout))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for mod in [*self.gate_nn, *self.nn]:
            if hasattr(mod, "reset_parameters"):
                mod.reset_parameters()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        gate = self.gate_nn(x).squeeze(-1)  # (S, N)
        if mask is not None:
            gate = gate.masked_fill(~mask, float("-inf"))
        w = torch.softmax(gate, dim=1).nan_to_num()  # an empty set pools to 0
        return torch.einsum("sn,snc->sc", w, self.nn(x))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels})"


#: ``model.pooling`` options: name -> factory ``(channels, dropout) -> module``.
POOLINGS: dict[str, Callable[[int, float], nn.Module]] = {
    "sorted_set_transformer": lambda c, p: SetTransformerPooling(
        c, encoder="isab", num_encoder_blocks=2, num_decoder_blocks=2, num_induced_points=64, layer_norm=False, dropout=p
    ),
    "isab": lambda c, p: SetTransformerPooling(
        c, encoder="isab", num_encoder_blocks=2, num_decoder_blocks=1, num_induced_points=32, dropout=p
    ),
    "sab": lambda c, p: SetTransformerPooling(c, encoder="sab", num_encoder_blocks=2, num_decoder_blocks=1, dropout=p),
    "pma": lambda c, p: SetTransformerPooling(c, encoder="none", num_encoder_blocks=0, num_decoder_blocks=1, dropout=p),
    "attentional": lambda c, p: AttentionalPooling(c, dropout=p),
}


def build_pooling(name: str, channels: int, *, dropout: float = 0.0) -> nn.Module:
    """The pooling module ``name`` for width ``channels``.

    Raises:
        ConfigError: ``name`` is not in :data:`POOLINGS`.
    """
    if name not in POOLINGS:
        raise ConfigError(f"model.pooling: {name!r} is not one of {', '.join(sorted(POOLINGS))}")
    return POOLINGS[name](channels, dropout)
