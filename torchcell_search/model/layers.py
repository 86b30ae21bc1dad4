"""HeteroCell's layers in the batched ``(N, S, C)`` layout.

Every layer here runs ``S`` copies of one graph at once: slot ``s`` of a node tensor
``x: (N, S, C)`` is that node's features in sample ``s``. The graph (``edge_index``) is
shared; a per-sample keep mask ``edge_keep: (E, S)`` removes edges from the attention
softmax and from every scatter, so a slot behaves exactly like the subgraph its mask keeps.
Gathers ``x[src]`` move contiguous rows of ``S * C`` values and each scatter has one index
of length ``E`` instead of ``S * E`` in a PyG ``Batch``. With ``S = 1`` and no mask the
layers are ordinary message passing on a (disjoint-union) graph, which is what
:mod:`torchcell_search.model.reference` uses.

Only torch's native ``index_add_``/``index_reduce_`` are used (CUDA and autocast friendly,
no float64).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchcell_search.errors import ConfigError

__all__ = [
    "NORMS",
    "BatchedGATv2Conv",
    "ConvBlock",
    "MaskedBatchNorm",
    "PreProcessor",
    "PredictionHead",
    "StoichHypergraphConv",
    "build_norm",
    "masked_softmax",
]


def _glorot(t: Tensor) -> None:
    """Glorot-uniform on the last two dims, as PyG's ``inits.glorot``."""
    a = math.sqrt(6.0 / (t.size(-2) + t.size(-1)))
    with torch.no_grad():
        t.uniform_(-a, a)


def masked_softmax(score: Tensor, index: Tensor, keep: Tensor | None, num_groups: int) -> Tensor:
    """Softmax of ``score`` over the entries sharing ``index``, ignoring masked entries.

    .. math::
        \\alpha_e = \\frac{m_e \\exp(s_e - \\max_{e'} s_{e'})}
        {\\sum_{e': i(e') = i(e)} m_{e'} \\exp(s_{e'} - \\max s) + 10^{-16}}

    A group whose entries are all masked gets weight 0 everywhere (no NaN).

    Args:
        score: ``(E, S, H)`` scores.
        index: ``(E,)`` group (destination) of each entry.
        keep: ``(E, S)`` bool, or ``None`` (keep all).
        num_groups: number of groups.

    Returns:
        ``(E, S, H)`` weights.
    """
    if keep is not None:
        score = score.masked_fill(~keep.unsqueeze(-1), float("-inf"))
    # The max only stabilises exp; like PyG we do not differentiate through it.
    top = torch.full((num_groups,) + score.shape[1:], float("-inf"), dtype=score.dtype, device=score.device)
    idx = index.view(-1, *([1] * (score.dim() - 1))).expand_as(score)  # a view, no copy
    top = top.scatter_reduce_(0, idx, score.detach(), "amax", include_self=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    ex = (score - top[index]).exp()  # masked entries: exp(-inf) = 0
    denom = torch.zeros_like(top).index_add_(0, index, ex)
    return ex / (denom[index] + 1e-16)


class MaskedBatchNorm(nn.Module):
    """Batch norm over the kept nodes of a group of samples.

    In the ``(N, S, C)`` layout slot 0 is the wildtype graph and slots ``1..S-1`` are the
    perturbed graphs; statistics are taken over the kept rows of slot 0 alone and over the
    kept rows of the other slots together, which is what running the wildtype graph and a
    PyG ``Batch`` of perturbed graphs through ``BatchNorm1d`` separately gives. With
    ``S = 1`` it is ``BatchNorm1d`` over the kept rows. Running statistics update once per
    group, in that order.

    Args:
        channels (int): feature size ``C``.
        eps (float, optional): (default: ``1e-5``)
        momentum (float, optional): (default: ``0.1``)

    Shapes:
        - **input:** ``x: (N, S, C)`` or ``(N, C)``, ``keep: (N, S)`` bool or ``None``
        - **output:** same as ``x``
    """

    def __init__(self, channels: int, *, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.channels = channels
        self.bn = nn.BatchNorm1d(channels, eps=eps, momentum=momentum)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.bn.reset_parameters()

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        if x.dim() == 2:
            return self.bn(x)
        N, S, C = x.shape
        groups = [(0, S)] if S == 1 else [(0, 1), (1, S)]
        parts = []
        for lo, hi in groups:
            xs = x[:, lo:hi]  # (N, s, C)
            if keep is None:
                parts.append(self.bn(xs.reshape(-1, C)).view(N, hi - lo, C))
                continue
            k = keep[:, lo:hi]
            out = torch.zeros_like(xs)
            out[k] = self.bn(xs[k])  # kept rows only: (n_kept, C)
            parts.append(out)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels})"


class _LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` that accepts (and ignores) a keep mask: it is per node."""

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:  # noqa: ARG002
        return super().forward(x)


class _NoNorm(nn.Identity):
    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:  # noqa: ARG002
        return x


#: The ``model.norm`` options. Each module is called as ``norm(x, keep)``.
NORMS: dict[str, type[nn.Module]] = {"layer": _LayerNorm, "batch": MaskedBatchNorm, "none": _NoNorm}


def build_norm(name: str, channels: int) -> nn.Module:
    """The norm layer ``name`` (``layer | batch | none``) of width ``channels``.

    Raises:
        ConfigError: ``name`` is not a known norm.
    """
    if name not in NORMS:
        raise ConfigError(f"model.norm: {name!r} is not one of {', '.join(sorted(NORMS))}")
    return NORMS[name](channels) if name != "none" else _NoNorm()


class _MLP(nn.Module):
    """``num_layers`` x (Linear -> norm -> ReLU -> Dropout), optionally a final Linear.

    Each block has its own norm instance (the research code shared one across blocks).
    """

    def __init__(
        self, dims: list[int], *, norm: str, dropout: float, out_channels: int | None
    ) -> None:
        super().__init__()
        self.lins = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(build_norm(norm, b) for b in dims[1:])
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dims[-1], out_channels) if out_channels is not None else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin, norm in zip(self.lins, self.norms):
            lin.reset_parameters()
            if hasattr(norm, "reset_parameters"):
                norm.reset_parameters()
        if self.out is not None:
            self.out.reset_parameters()

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        for lin, norm in zip(self.lins, self.norms):
            x = self.dropout(F.relu(norm(lin(x), keep)))
        return self.out(x) if self.out is not None else x

    def __repr__(self) -> str:
        dims = [self.lins[0].in_features] + [lin.out_features for lin in self.lins]
        out = f", out={self.out.out_features}" if self.out is not None else ""
        return f"{self.__class__.__name__}({' -> '.join(map(str, dims))}{out}, norm={type(self.norms[0]).__name__})"


class PreProcessor(_MLP):
    """The gene-embedding MLP: ``num_layers`` x (Linear -> norm -> ReLU -> Dropout).

    .. math::
        \\mathbf{h} = \\big(\\mathrm{Drop} \\circ \\mathrm{ReLU} \\circ \\mathrm{Norm}_\\ell
        \\circ \\mathrm{Lin}_\\ell\\big)_{\\ell=1..L}(\\mathbf{x})

    Args:
        in_channels (int): input width.
        hidden_channels (int): width of every block.
        num_layers (int, optional): blocks (default: ``2``, the report).
        norm (str, optional): ``layer | batch | none`` (default: ``"layer"``).
        dropout (float, optional): (default: ``0.0``)

    Shapes:
        - **input:** ``(N, S, in_channels)`` or ``(N, in_channels)``, ``keep: (N, S)``
        - **output:** ``(..., hidden_channels)``
    """

    def __init__(
        self, in_channels: int, hidden_channels: int, *, num_layers: int = 2, norm: str = "layer", dropout: float = 0.0
    ) -> None:
        super().__init__([in_channels] + [hidden_channels] * num_layers, norm=norm, dropout=dropout, out_channels=None)


class PredictionHead(_MLP):
    """The prediction head: ``num_layers - 1`` x (Linear -> norm -> ReLU -> Dropout), then Linear.

    Args:
        in_channels (int): input width (``C`` of ``z_p``).
        hidden_channels (int): width of the hidden blocks.
        out_channels (int, optional): (default: ``2``: fitness, gene_interaction)
        num_layers (int, optional): Linear layers in all (default: ``4``, the report).
        norm (str, optional): (default: ``"layer"``)
        dropout (float, optional): (default: ``0.0``)

    Shapes:
        - **input:** ``(B, in_channels)``
        - **output:** ``(B, out_channels)``
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int = 2,
        *,
        num_layers: int = 4,
        norm: str = "layer",
        dropout: float = 0.0,
    ) -> None:
        if num_layers < 1:
            raise ConfigError(f"prediction head num_layers={num_layers}: needs at least 1")
        dims = [in_channels] + [hidden_channels] * (num_layers - 1)
        super().__init__(dims, norm=norm, dropout=dropout, out_channels=out_channels)


class BatchedGATv2Conv(nn.Module):
    """GATv2 (`Brody et al. 2022 <https://arxiv.org/abs/2105.14491>`_) over ``S`` masked copies of a graph.

    Same parameters and math as PyG's ``GATv2Conv(share_weights=False, edge_dim=None)``:

    .. math::
        \\mathbf{x}'_i = \\sum_{j \\in \\mathcal{N}(i)} \\alpha_{i,j} \\mathbf{\\Theta}_s \\mathbf{x}_j
        + \\mathbf{b}, \\qquad
        \\alpha_{i,j} = \\mathrm{softmax}_j\\Big(\\mathbf{a}^{\\top} \\mathrm{LeakyReLU}
        \\big(\\mathbf{\\Theta}_s \\mathbf{x}_j + \\mathbf{\\Theta}_t \\mathbf{x}_i\\big)\\Big)

    where the softmax runs over the edges kept in that sample. Bipartite use (gene ->
    reaction GPR edges) passes ``x_dst``.

    Args:
        in_channels (int | tuple[int, int]): source (and destination) width.
        out_channels (int): width per head.
        heads (int, optional): attention heads (default: ``1``).
        concat (bool, optional): concatenate heads, else average them (default: ``True``).
        negative_slope (float, optional): LeakyReLU slope (default: ``0.2``).
        dropout (float, optional): dropout on the attention weights (default: ``0.0``).
        add_self_loops (bool, optional): add ``i -> i`` to every node (homogeneous only;
            never masked) (default: ``True``).
        bias (bool, optional): (default: ``True``)

    Shapes:
        - **input:** ``x_src: (N_src, S, F_src)``, ``x_dst: (N_dst, S, F_dst)`` or ``None``,
          ``edge_index: (2, E)``, ``edge_keep: (E, S)`` bool or ``None``
        - **output:** ``(N_dst, S, heads * out_channels)`` if ``concat`` else ``(N_dst, S, out_channels)``
    """

    def __init__(
        self,
        in_channels: int | tuple[int, int],
        out_channels: int,
        *,
        heads: int = 1,
        concat: bool = True,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        add_self_loops: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        src_in, dst_in = (in_channels, in_channels) if isinstance(in_channels, int) else in_channels
        self.in_channels = (src_in, dst_in)
        self.out_channels = out_channels
        self.heads = heads
        self.concat = concat
        self.negative_slope = negative_slope
        self.dropout = dropout
        self.add_self_loops = add_self_loops
        self.lin_l = nn.Linear(src_in, heads * out_channels)
        self.lin_r = nn.Linear(dst_in, heads * out_channels)
        self.att = nn.Parameter(torch.empty(heads, out_channels))
        self.bias = nn.Parameter(torch.empty(heads * out_channels if concat else out_channels)) if bias else None
        self.reset_parameters()

    @property
    def out_dim(self) -> int:
        return self.heads * self.out_channels if self.concat else self.out_channels

    def reset_parameters(self) -> None:
        for lin in (self.lin_l, self.lin_r):
            _glorot(lin.weight)
            nn.init.zeros_(lin.bias)
        _glorot(self.att)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(
        self, x_src: Tensor, x_dst: Tensor | None, edge_index: Tensor, edge_keep: Tensor | None = None
    ) -> Tensor:
        H, C = self.heads, self.out_channels
        x_dst = x_src if x_dst is None else x_dst
        N_src, N_dst = x_src.size(0), x_dst.size(0)
        # Inputs may carry one slot shared by all samples (broadcast); the masks set S.
        S = edge_keep.size(1) if edge_keep is not None else max(x_src.size(1), x_dst.size(1))
        src, dst = edge_index[0], edge_index[1]
        if self.add_self_loops:
            loops = torch.arange(min(N_src, N_dst), device=src.device)
            src, dst = torch.cat([src, loops]), torch.cat([dst, loops])
            if edge_keep is not None:
                edge_keep = torch.cat([edge_keep, edge_keep.new_ones(loops.numel(), edge_keep.size(1))])
        xl = self.lin_l(x_src).view(N_src, -1, H, C)  # (N_src, S or 1, H, C)
        xr = self.lin_r(x_dst).view(N_dst, -1, H, C)
        xj = xl[src]  # (E, S or 1, H, C): contiguous rows per edge
        e = F.leaky_relu(xj + xr[dst], self.negative_slope)
        score = (e * self.att).sum(-1)  # (E, S, H)
        alpha = masked_softmax(score, dst, edge_keep, N_dst)
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)
        out = xl.new_zeros(N_dst, S, H, C).index_add_(0, dst, xj * alpha.unsqueeze(-1))  # (N_dst, S, H, C)
        out = out.reshape(N_dst, S, H * C) if self.concat else out.mean(dim=2)
        return out + self.bias if self.bias is not None else out

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels[0]}, {self.out_channels}, heads={self.heads}, "
            f"concat={self.concat}, add_self_loops={self.add_self_loops})"
        )


class StoichHypergraphConv(nn.Module):
    """Stoichiometric hypergraph convolution: metabolites -> reactions -> metabolites.

    Incidence ``k`` joins metabolite ``m_k`` to reaction ``r_k`` with signed coefficient
    ``s_k``. With ``\\mathbf{x}'= \\mathbf{\\Theta}\\mathbf{x}`` (no bias), reaction features
    ``\\mathbf{h}'= \\mathbf{\\Theta}\\mathbf{h}``, gate ``g_k = \\sigma(\\mathbf{w}^\\top
    \\mathbf{x}_{m_k} + c)`` and attention ``\\alpha_k = \\mathrm{softmax}_{k: r_k = r}
    \\mathrm{LeakyReLU}(\\mathbf{a}^\\top[\\mathbf{x}'_{m_k} \\| \\mathbf{h}'_{r_k}])``:

    .. math::
        \\mathbf{e}_r = B_r \\sum_{k: r_k = r} s_k g_k \\alpha_k \\mathbf{x}'_{m_k}, \\qquad
        \\mathbf{x}''_m = D_m \\sum_{k: m_k = m} s_k g_k \\alpha_k \\mathbf{e}_{r_k} + \\mathbf{b}

    with ``B_r = 1 / \\sum_{k: r_k = r} |s_k|`` and ``D_m = 1 / \\sum_{k: m_k = m} |s_k|``
    (0 where the sum is 0), all sums over the incidences kept in that sample. This is the
    research code's ``StoichHypergraphConv(is_stoich_gated=True, use_attention=True)``.

    Args:
        in_channels (int): metabolite (and reaction) feature width.
        out_channels (int): width per head.
        heads (int, optional): (default: ``1``)
        gated (bool, optional): use the gate ``g`` (default: ``True``).
        negative_slope (float, optional): (default: ``0.2``)
        dropout (float, optional): dropout on ``alpha`` (default: ``0.0``)
        bias (bool, optional): (default: ``True``)

    Shapes:
        - **input:** ``x: (N_met, S, F)``, ``hyperedge_attr: (N_rxn, S or 1, F)``,
          ``hyperedge_index: (2, K)`` (metabolite, reaction), ``stoich: (K,)``,
          ``keep: (K, S)`` bool or ``None``
        - **output:** ``(N_met, S, heads * out_channels)``
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        heads: int = 1,
        gated: bool = True,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.gated = gated
        self.negative_slope = negative_slope
        self.dropout = dropout
        self.lin = nn.Linear(in_channels, heads * out_channels, bias=False)
        self.att = nn.Parameter(torch.empty(heads, 2 * out_channels))
        self.gate_lin = nn.Linear(in_channels, 1) if gated else None
        self.bias = nn.Parameter(torch.empty(heads * out_channels)) if bias else None
        self.reset_parameters()

    @property
    def out_dim(self) -> int:
        return self.heads * self.out_channels

    def reset_parameters(self) -> None:
        _glorot(self.lin.weight)
        _glorot(self.att)
        if self.gate_lin is not None:
            _glorot(self.gate_lin.weight)
            nn.init.zeros_(self.gate_lin.bias)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(
        self,
        x: Tensor,
        hyperedge_attr: Tensor,
        hyperedge_index: Tensor,
        stoich: Tensor,
        keep: Tensor | None = None,
        num_reactions: int | None = None,
    ) -> Tensor:
        H, C = self.heads, self.out_channels
        M = x.size(0)
        S = keep.size(1) if keep is not None else max(x.size(1), hyperedge_attr.size(1))
        R = hyperedge_attr.size(0) if num_reactions is None else num_reactions
        m, r = hyperedge_index[0], hyperedge_index[1]
        xt = self.lin(x).view(M, -1, H, C)  # (M, S or 1, H, C)
        ht = self.lin(hyperedge_attr).view(hyperedge_attr.size(0), -1, H, C)
        xi = xt[m]  # (K, S, H, C)
        score = (xi * self.att[:, :C]).sum(-1) + (ht[r] * self.att[:, C:]).sum(-1)  # (K, S, H)
        alpha = masked_softmax(F.leaky_relu(score, self.negative_slope), r, keep, R)
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)
        coef = stoich.to(x.dtype).view(-1, 1, 1) * alpha  # (K, S, H): s_k alpha_k, 0 where masked
        if self.gate_lin is not None:
            coef = coef * torch.sigmoid(self.gate_lin(x))[m]  # gate (K, S, 1)
        w = stoich.abs().to(x.dtype).view(-1, 1).expand(-1, S)  # (K, S)
        if keep is not None:
            w = w * keep
        deg_r = x.new_zeros(R, S).index_add_(0, r, w)
        deg_m = x.new_zeros(M, S).index_add_(0, m, w)
        inv_r = torch.where(deg_r > 0, 1.0 / deg_r.clamp_min(1e-30), torch.zeros_like(deg_r))  # (R, S)
        inv_m = torch.where(deg_m > 0, 1.0 / deg_m.clamp_min(1e-30), torch.zeros_like(deg_m))  # (M, S)
        # Metabolites -> reactions.
        e = xt.new_zeros(R, S, H, C).index_add_(0, r, (coef * inv_r[r].unsqueeze(-1)).unsqueeze(-1) * xi)
        # Reactions -> metabolites.
        out = xt.new_zeros(M, S, H, C).index_add_(0, m, (coef * inv_m[m].unsqueeze(-1)).unsqueeze(-1) * e[r])
        out = out.reshape(M, S, H * C)
        return out + self.bias if self.bias is not None else out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads}, gated={self.gated})"


class ConvBlock(nn.Module):
    """One relation's convolution followed by projection, norm, ReLU and dropout.

    .. math::
        \\mathbf{x}' = \\mathrm{Drop}(\\mathrm{ReLU}(\\mathrm{Norm}(\\mathbf{P}\\,\\mathrm{conv}(\\dots))))

    ``P`` is a Linear when the conv's output width differs from ``out_channels`` (e.g.
    GATv2 with 5 heads on 64 channels gives 60), else the identity.

    Args:
        conv (nn.Module): a :class:`BatchedGATv2Conv` or :class:`StoichHypergraphConv`.
        out_channels (int): width after the projection.
        norm (str, optional): (default: ``"layer"``)
        dropout (float, optional): (default: ``0.0``)

    Shapes:
        - **input:** the conv's arguments, then ``node_keep: (N_dst, S)`` as keyword
        - **output:** ``(N_dst, S, out_channels)``
    """

    def __init__(self, conv: nn.Module, out_channels: int, *, norm: str = "layer", dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = conv
        self.proj = nn.Linear(conv.out_dim, out_channels) if conv.out_dim != out_channels else nn.Identity()
        self.norm = build_norm(norm, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()
        for mod in (self.proj, self.norm):
            if hasattr(mod, "reset_parameters"):
                mod.reset_parameters()

    def forward(self, *args: object, node_keep: Tensor | None = None) -> Tensor:
        return self.dropout(F.relu(self.norm(self.proj(self.conv(*args)), node_keep)))
