"""Global pooling of a graph's gene nodes into one vector, with a mask of kept genes.

Every option takes ``x: (S, N, C)`` (``S`` graphs of up to ``N`` genes in node-index
order) and ``mask: (S, N)`` (True = the gene is present) and returns ``(S, C)``; masked
genes neither attend nor are attended to, so a deleted gene counts exactly as an absent one.

Options (``model.pooling``), one registry, :func:`build_pooling`:

- ``sorted_set_transformer`` (default, the report's ``SortedSetTransformerAggregation``):
  2 ISAB encoders (64 induced points), PMA with one seed, 2 SAB decoders, layer norm in
  every block. The report's has no layer norm (PyG's default, ``layer_norm=False``), and
  ``model.global_aggregator_config.layer_norm=false`` gives it back with the report's
  parameter count. Without the norms the seven residual blocks grow the pooled vectors
  step by step (``|z_w - z_p|`` from ~11 at initialisation to ~50 after 40 steps on the
  demo, then gradient spikes of 1e5 and NaN at ``lr=3e-3``); the attention logits grow
  with them, so the default demo training was chaotic: val epsilon Pearson 0.33-0.80
  over seeds and CPU rounding paths (issue 19, README "Same answer on every CPU").
- ``isab``: 2 ISAB encoders (32 induced points), PMA, 1 SAB decoder, layer norm.
- ``sab``: 2 SAB encoders, PMA, 1 SAB decoder, layer norm. Full self-attention over the
  genes costs ``N^2`` per graph and head (~44M entries for 6,600 genes). Attention runs
  through ``F.scaled_dot_product_attention``, which uses a memory-efficient kernel on
  CUDA; on CPU with a mask PyTorch materialises the ``(S, heads, N, N)`` matrix, so SAB on
  the real graph is only practical on a GPU.
- ``pma``: one PMA block (one seed, layer norm), then a LayerNorm: no encoder, no decoder.
  This is TorchCell's ``SimplePMA`` (torchcell/models/hetero_cell_pma.py): PyG's
  ``PoolingByMultiheadAttention(channels, 1, heads, layer_norm=True)`` followed by
  ``nn.LayerNorm(channels)``.
- ``attentional``: gated attention pooling (``AttentionalAggregation`` with the research
  code's gate/transform MLPs).

Attention heads: the largest of 8, 4, 2, 1 dividing ``C``.

**``model.global_aggregator_config``** (TorchCell's keys, :data:`GLOBAL_AGGREGATOR_KEYS`)
overrides a set-transformer preset field by field; a null key keeps the preset's value.
The meaning is PyG's ``SetTransformerAggregation(channels, num_seed_points,
num_encoder_blocks, num_decoder_blocks, heads, concat=True, layer_norm, dropout)`` plus
the ``use_isab``/``num_induced_points`` pair of TorchCell's fork of it:

- ``num_encoder_blocks`` encoders before the PMA: ISAB with ``num_induced_points`` learned
  points when ``use_isab`` is true, else SAB (PyG's encoders are always SAB).
  ``num_induced_points`` is read only by ISAB encoders (TorchCell's ``hetero_cell_isab.yaml``
  sets 100 with ``use_isab: false``; it is ignored there, as in TorchCell).
- PMA with ``num_seed_points`` seeds, then ``num_decoder_blocks`` SABs over the seeds.
- ``concat=True`` as TorchCell passes it: the seeds are flattened to ``k * C``; for ``k > 1``
  a Linear projects back to ``C`` (TorchCell's ``SortedSetTransformerAggregation.proj``), so
  the head's input width does not change.
- ``layer_norm`` in every MAB; ``dropout`` is attention dropout (PyG's, passed to
  ``nn.MultiheadAttention``); ``heads`` must divide ``C``.

PyG's ``SetTransformerAggregation`` needs a sorted ``index`` over a flat node list; here the
genes of every graph sit in one ``(S, N, C)`` tensor with a mask, which gives the same
attention over each graph's kept genes. ``attentional`` pooling has none of these options:
setting one with it is refused.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchcell_search.errors import ConfigError

__all__ = [
    "GLOBAL_AGGREGATOR_KEYS",
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
    """Set Transformer readout: encoders -> PMA -> decoders -> flatten (-> Linear when ``k > 1``).

    .. math::
        \\mathbf{z} = \\mathrm{SAB}^{D}\\big(\\mathrm{PMA}_k(\\mathrm{Enc}^{E}(\\mathbf{X}))\\big)

    Args:
        channels (int): ``C``.
        encoder (str, optional): ``"isab"``, ``"sab"`` or ``"none"`` (default: ``"isab"``).
        num_encoder_blocks (int, optional): (default: ``2``)
        num_decoder_blocks (int, optional): (default: ``1``)
        num_seed_points (int, optional): PMA seeds ``k``; their ``k * C`` outputs are
            projected back to ``C`` by a Linear when ``k > 1`` (default: ``1``).
        num_induced_points (int, optional): ISAB points (default: ``32``).
        heads (int, optional): (default: :func:`pooling_heads` of ``C``)
        layer_norm (bool, optional): (default: ``True``)
        dropout (float, optional): (default: ``0.0``)
        final_layer_norm (bool, optional): a LayerNorm on the output, as TorchCell's
            ``SimplePMA`` ends (default: ``False``)

    Shapes:
        - **input:** ``x: (S, N, C)``, ``mask: (S, N)`` or ``None``
        - **output:** ``(S, C)``
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
        final_layer_norm: bool = False,
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
        # Allocated last and initialised by its constructor: the presets (k = 1) draw the same
        # initial weights for a seed as before this option existed.
        self.proj = nn.Linear(num_seed_points * channels, channels) if num_seed_points > 1 else None
        self.final_norm = nn.LayerNorm(channels) if final_layer_norm else None

    def reset_parameters(self) -> None:
        for block in [*self.encoders, self.pma, *self.decoders]:
            block.reset_parameters()
        for mod in (self.proj, self.final_norm):
            if mod is not None:
                mod.reset_parameters()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        for enc in self.encoders:
            x = enc(x, mask)
        x = self.pma(x, mask)  # (S, k, C): every seed is valid, no mask below
        for dec in self.decoders:
            x = dec(x)
        x = x.nan_to_num().flatten(1, 2)  # (S, k * C)
        x = self.proj(x) if self.proj is not None else x  # (S, C)
        return self.final_norm(x) if self.final_norm is not None else x

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.channels}, encoder={self.encoder}x{len(self.encoders)}, "
            f"seeds={self.pma.seed.size(1)}, decoders={len(self.decoders)}, heads={self.heads}"
            f"{', final_norm' if self.final_norm is not None else ''})"
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


#: ``model.global_aggregator_config`` keys a set-transformer preset takes (``dropout`` is separate).
GLOBAL_AGGREGATOR_KEYS: tuple[str, ...] = (
    "num_induced_points", "layer_norm", "num_encoder_blocks", "heads", "num_decoder_blocks", "num_seed_points", "use_isab",
)

#: The set-transformer presets of ``model.pooling`` as ``global_aggregator_config`` values.
#: ``pma`` has no encoder (``use_isab`` None): give ``use_isab`` to add encoders to it.
SET_TRANSFORMER_PRESETS: dict[str, dict[str, object]] = {
    # The report's SortedSetTransformerAggregation, with layer norm (see the module docstring;
    # layer_norm=False is the report's, whose size reproduces the report's parameter count).
    "sorted_set_transformer": dict(use_isab=True, num_encoder_blocks=2, num_decoder_blocks=2, num_induced_points=64,
                                   layer_norm=True, num_seed_points=1),
    "isab": dict(use_isab=True, num_encoder_blocks=2, num_decoder_blocks=1, num_induced_points=32, layer_norm=True,
                 num_seed_points=1),
    "sab": dict(use_isab=False, num_encoder_blocks=2, num_decoder_blocks=1, num_induced_points=32, layer_norm=True,
                num_seed_points=1),
    # TorchCell's SimplePMA: one PMA block, then a LayerNorm (final_layer_norm is not a user key).
    "pma": dict(use_isab=None, num_encoder_blocks=0, num_decoder_blocks=0, num_induced_points=32, layer_norm=True,
                num_seed_points=1, final_layer_norm=True),
}


def _set_transformer(name: str, channels: int, dropout: float, options: dict[str, object]) -> SetTransformerPooling:
    cfg = {**SET_TRANSFORMER_PRESETS[name], **options}
    if cfg["use_isab"] is None and int(cfg["num_encoder_blocks"]) > 0:
        raise ConfigError(
            f"model.global_aggregator_config.num_encoder_blocks={cfg['num_encoder_blocks']}: model.pooling={name} "
            "has no encoder; set model.global_aggregator_config.use_isab to choose ISAB or SAB encoders"
        )
    heads = cfg.get("heads")
    if heads is not None and channels % int(heads):
        raise ConfigError(f"model.global_aggregator_config.heads={heads} must divide model.hidden_channels={channels}")
    encoder = "none" if cfg["use_isab"] is None else ("isab" if cfg["use_isab"] else "sab")
    return SetTransformerPooling(
        channels, encoder=encoder, num_encoder_blocks=int(cfg["num_encoder_blocks"]),
        num_decoder_blocks=int(cfg["num_decoder_blocks"]), num_seed_points=int(cfg["num_seed_points"]),
        num_induced_points=int(cfg["num_induced_points"]), heads=None if heads is None else int(heads),
        layer_norm=bool(cfg["layer_norm"]), dropout=dropout, final_layer_norm=bool(cfg.get("final_layer_norm")),
    )


#: ``model.pooling`` options: name -> factory ``(channels, dropout, options) -> module``.
POOLINGS: dict[str, Callable[[int, float, dict[str, object]], nn.Module]] = {
    **{name: (lambda c, p, o, name=name: _set_transformer(name, c, p, o)) for name in SET_TRANSFORMER_PRESETS},
    "attentional": lambda c, p, o: AttentionalPooling(c, dropout=p),
}


def build_pooling(name: str, channels: int, *, dropout: float = 0.0, **options: object) -> nn.Module:
    """The pooling module ``name`` for width ``channels``.

    Args:
        name: a :data:`POOLINGS` key (``model.pooling``).
        channels: ``C``.
        dropout: attention dropout of the set transformers, dropout of ``attentional``.
        **options: ``model.global_aggregator_config`` values (:data:`GLOBAL_AGGREGATOR_KEYS`)
            replacing the preset's; ``None`` keeps the preset's value.

    Raises:
        ConfigError: ``name`` is not in :data:`POOLINGS`, an option is unknown, given to
            ``attentional``, or inconsistent (heads not dividing ``C``, encoders for ``pma``
            without ``use_isab``).
    """
    if name not in POOLINGS:
        raise ConfigError(f"model.pooling: {name!r} is not one of {', '.join(sorted(POOLINGS))}")
    given = {k: v for k, v in sorted(options.items()) if v is not None}
    for key in given:
        if key not in GLOBAL_AGGREGATOR_KEYS:
            raise ConfigError(f"model.global_aggregator_config.{key}: unknown; known: {', '.join(GLOBAL_AGGREGATOR_KEYS)}")
    if given and name not in SET_TRANSFORMER_PRESETS:
        first = next(iter(given))
        raise ConfigError(
            f"model.global_aggregator_config.{first}: applies to the set-transformer poolings "
            f"({', '.join(SET_TRANSFORMER_PRESETS)}), not model.pooling={name}"
        )
    return POOLINGS[name](channels, dropout, given)
