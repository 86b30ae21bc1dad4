"""HeteroCell's layers in the batched ``(N, S, C)`` layout.

Every layer here runs ``S`` copies of one graph at once: slot ``s`` of a node tensor
``x: (N, S, C)`` is that node's features in sample ``s``. The graph (``edge_index``) is
shared; a per-sample keep mask ``edge_keep: (E, S)`` removes edges from the attention
softmax and from every scatter, so a slot behaves exactly like the subgraph its mask keeps.
Gathers ``x[src]`` move contiguous rows of ``S * C`` values and each scatter has one index
of length ``E`` instead of ``S * E`` in a PyG ``Batch``. With ``S = 1`` and no mask the
layers are ordinary message passing on a (disjoint-union) graph, which is what
:mod:`torchcell_search.model.reference` uses.

Edges are sorted by destination once (:class:`EdgePlan`, :class:`SegmentIndex`), so every
scatter is a sum over a sorted index (``index_add_`` into zeros; ``segment_reduce`` is
the alternative, see ``_SEGMENT_SUM``) and every gather an ``index_select`` whose backward
is such a sum (no ``index_put_(accumulate=True)``). The GATv2 edge computation is fused
and chunked (:class:`_GATv2Attention`): it keeps only ``alpha: (E, S, H)`` for backward,
so the real graph (322k edges) fits in a few GB; its source gradient is one ``index_add_``
in edge order. Work that is the same in every slot is done once: the first layer (inputs
shared, only the masks differ; see :func:`_gatv2`), a later layer whose inputs differ from the
wildtype's only at known rows (``changed``: only those rows' segments and out-edges are
computed, see :func:`_gatv2_sparse_slots`) and, optionally, the scores of edges whose ends
are still the wildtype's (``share_slot0``). All of it is deterministic on CPU.
"""

from __future__ import annotations

import bisect
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchcell_search.errors import ConfigError
from torchcell_search.model.activations import build_activation

__all__ = [
    "NORMS",
    "BatchedGATv2Conv",
    "ConvBlock",
    "MaskedBatchNorm",
    "PreProcessor",
    "StoichHypergraphConv",
    "build_norm",
    "EdgePlan",
    "SegmentIndex",
    "gather",
    "masked_softmax",
    "scatter_sum",
]


def _glorot(t: Tensor) -> None:
    """Glorot-uniform on the last two dims, as PyG's ``inits.glorot``."""
    a = math.sqrt(6.0 / (t.size(-2) + t.size(-1)))
    with torch.no_grad():
        t.uniform_(-a, a)


# --------------------------------------------------------------------------- segments
# Scatters are sums over a sorted index, gathers are ``index_select`` with such a sum as
# backward. Measured on 2 shared CPU cores (benchmarks/bench_model.py): ``index_add_`` on a
# sorted index is ~4x faster than ``segment_reduce`` single-threaded; ``segment_reduce`` is
# serial, so it is the more robust choice when the threads are contended.


class SegmentIndex:
    """Entries grouped by ``index``: the stable sort that makes groups contiguous, and the group sizes.

    .. note::
        Build it once per index (it sorts) and reuse it; :meth:`sum` is then one
        ``index_select`` (skipped when ``index`` is already sorted) and one sorted segment sum.

    Args:
        index (Tensor): ``(K,)`` long, the group of each entry, in ``[0, num_groups)``.
        num_groups (int): number of groups (empty groups sum to 0).
    """

    def __init__(self, index: Tensor, num_groups: int) -> None:
        self.index = index
        self.num_groups = num_groups
        self.lengths = torch.bincount(index, minlength=num_groups) if index.numel() else index.new_zeros(num_groups)
        sorted_ = bool((index[1:] >= index[:-1]).all()) if index.numel() > 1 else True
        self.perm = None if sorted_ else torch.argsort(index, stable=True)
        self.sorted_index = index if self.perm is None else index.index_select(0, self.perm)

    def sum(self, values: Tensor) -> Tensor:
        """``(num_groups, ...)``: the sum of ``values: (K, ...)`` per group (no autograd)."""
        if self.perm is not None:
            values = values.index_select(0, self.perm)
        return _segment_sum(values, self.index if self.perm is None else self.sorted_index, self.lengths)

    def max(self, values: Tensor) -> Tensor:
        """``(num_groups, ...)``: the max per group, ``-inf`` for an empty group (no autograd)."""
        if self.perm is not None:
            values = values.index_select(0, self.perm)
        return torch.segment_reduce(values, "max", lengths=self.lengths, axis=0)


#: ``"index_add"`` or ``"segment_reduce"``: the kernel of every segment sum.
_SEGMENT_SUM = "index_add"


def _segment_sum(values: Tensor, sorted_index: Tensor, lengths: Tensor) -> Tensor:
    """``(len(lengths), ...)`` sums of ``values`` rows grouped by the sorted ``sorted_index``."""
    if _SEGMENT_SUM == "segment_reduce":
        return torch.segment_reduce(values, "sum", lengths=lengths, axis=0)
    out = values.new_zeros((lengths.numel(),) + values.shape[1:])
    return out.index_add_(0, sorted_index, values)


class _ScatterSum(torch.autograd.Function):
    """``out[i] = sum_{k: index_k = i} values[k]``; backward gathers."""

    @staticmethod
    def forward(ctx, values: Tensor, seg: SegmentIndex) -> Tensor:  # noqa: ANN001
        ctx.seg = seg
        return seg.sum(values)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        return grad.index_select(0, ctx.seg.index), None


class _Gather(torch.autograd.Function):
    """``out[k] = x[index_k]``; backward is a segment sum (no ``index_put_``)."""

    @staticmethod
    def forward(ctx, x: Tensor, seg: SegmentIndex) -> Tensor:  # noqa: ANN001
        ctx.seg = seg
        return x.index_select(0, seg.index)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        return _ScatterSum.apply(grad, ctx.seg), None


def scatter_sum(values: Tensor, seg: SegmentIndex) -> Tensor:
    """Differentiable ``(num_groups, ...)`` sum of ``values: (K, ...)`` by ``seg.index``."""
    return _ScatterSum.apply(values, seg)


def gather(x: Tensor, seg: SegmentIndex) -> Tensor:
    """Differentiable ``x[seg.index]``: ``(K, ...)`` rows of ``x: (num_groups, ...)``."""
    return _Gather.apply(x, seg)


def masked_softmax(
    score: Tensor, index: Tensor, keep: Tensor | None, num_groups: int, *, seg: SegmentIndex | None = None
) -> Tensor:
    """Softmax of ``score`` over the entries sharing ``index``, ignoring masked entries.

    .. math::
        \\alpha_e = \\frac{m_e \\exp(s_e - \\max_{e'} s_{e'})}
        {\\max\\big(\\sum_{e': i(e') = i(e)} m_{e'} \\exp(s_{e'} - \\max s),\\ \\epsilon\\big)}

    with ``epsilon`` the dtype's smallest normal number (PyG adds ``1e-16``, which is 0 in
    half precision). A group whose entries are all masked gets weight 0 everywhere (no NaN).

    Args:
        score: ``(E, S, H)`` scores.
        index: ``(E,)`` group (destination) of each entry.
        keep: ``(E, S)`` bool, or ``None`` (keep all).
        num_groups: number of groups.
        seg: a prebuilt ``SegmentIndex(index, num_groups)`` (default: built here).

    Returns:
        ``(E, S, H)`` weights.
    """
    seg = seg if seg is not None else SegmentIndex(index, num_groups)
    if keep is not None:
        score = score.masked_fill(~keep.unsqueeze(-1), float("-inf"))
    # The max only stabilises exp; like PyG we do not differentiate through it.
    top = seg.max(score.detach())
    top = torch.where(top == float("-inf"), 0.0, top)
    ex = (score - top.index_select(0, index)).exp()  # masked entries: exp(-inf) = 0
    denom = scatter_sum(ex, seg)
    return ex / gather(denom, seg).clamp_min(torch.finfo(ex.dtype).tiny)  # all masked: 0 / tiny


#: Largest ``edges x slots x channels`` block one chunk of the fused GATv2 materialises
#: (floats). Bounds the memory of the real graph (322k edges) and keeps blocks cache-sized.
_CHUNK_ELEMENTS = 1 << 21


class EdgePlan:
    """A relation's edges sorted by destination (CSR), self loops included, built once per graph.

    Sorting once makes every per-destination reduction (softmax max and sum, aggregation)
    a ``segment_reduce`` over contiguous rows, and lets :class:`BatchedGATv2Conv` process
    the edges in chunks of whole destination segments.

    Args:
        edge_index (Tensor): ``(2, E)`` long (source, destination).
        num_src (int): source nodes.
        num_dst (int): destination nodes.
        self_loops (bool): as PyG's ``GATv2Conv``: drop the graph's own ``i -> i`` edges
            (``remove_self_loops``), then append one ``i -> i`` for every ``i < min(num_src,
            num_dst)`` (``add_self_loops``), never masked. The real regulatory graph has
            TF self-regulation edges; without the removal those genes would count their
            own features twice.
    """

    def __init__(self, edge_index: Tensor, num_src: int, num_dst: int, *, self_loops: bool) -> None:
        src, dst = edge_index[0].long(), edge_index[1].long()
        self.num_src, self.num_dst = num_src, num_dst
        self.num_loops = min(num_src, num_dst) if self_loops else 0
        self.input_edges: Tensor | None = None  # (E',) the input edges kept (None: all)
        if self.num_loops:
            not_loop = src != dst
            if not bool(not_loop.all()):
                self.input_edges = not_loop.nonzero().view(-1)
                src, dst = src[self.input_edges], dst[self.input_edges]
            loops = torch.arange(self.num_loops, device=src.device)
            src, dst = torch.cat([src, loops]), torch.cat([dst, loops])
        order = torch.argsort(dst, stable=True)
        identity = bool((order == torch.arange(order.numel(), device=order.device)).all())
        self.order = None if identity else order  # (E,): input edge (then loop) of each sorted edge
        self.src, self.dst = src[order].contiguous(), dst[order].contiguous()  # (E,) destination-sorted
        self.by_dst = SegmentIndex(self.dst, num_dst)
        self.ptr_t = torch.cat([self.dst.new_zeros(1), torch.cumsum(self.by_dst.lengths, 0)])  # (N_dst + 1,)
        self.ptr = self.ptr_t.tolist()
        self._by_src: SegmentIndex | None = None
        self._chunks: dict[int, list[tuple[int, int, int, int]]] = {}

    @property
    def num_edges(self) -> int:
        return self.src.numel()

    @property
    def by_src(self) -> SegmentIndex:
        """Groups by source (for the gradient of the gather ``x_src[src]``), built on first use."""
        if self._by_src is None:
            self._by_src = SegmentIndex(self.src, self.num_src)
        return self._by_src

    def keep(self, edge_keep: Tensor | None) -> Tensor | None:
        """``(E, S)`` input-order keep mask -> plan order, self loops kept."""
        if edge_keep is None:
            return None
        if self.input_edges is not None:
            edge_keep = edge_keep.index_select(0, self.input_edges)
        if self.num_loops:
            edge_keep = torch.cat([edge_keep, edge_keep.new_ones(self.num_loops, edge_keep.size(1))])
        return edge_keep if self.order is None else edge_keep.index_select(0, self.order)

    def segments(self, nodes: Tensor) -> tuple[EdgePlan, Tensor]:
        """The in-edges of ``nodes`` (``(P,)``, repeats allowed) as a plan whose destination ``p``
        is ``nodes[p]``, and ``(E',)`` the plan-order edge of each of its edges (same order)."""
        lengths = self.by_dst.lengths.index_select(0, nodes)  # (P,)
        pair = torch.repeat_interleave(torch.arange(nodes.numel(), device=nodes.device), lengths)  # (E',)
        first = self.ptr_t.index_select(0, nodes) - (torch.cumsum(lengths, 0) - lengths)  # edge id - position
        edge_ids = torch.arange(pair.numel(), device=nodes.device) + first.index_select(0, pair)
        sub = EdgePlan(torch.stack([self.src.index_select(0, edge_ids), pair]), self.num_src, nodes.numel(),
                       self_loops=False)
        return sub, edge_ids

    def chunks(self, width: int) -> list[tuple[int, int, int, int]]:
        """``(edge_start, edge_end, node_start, node_end)`` blocks of whole destination segments,
        each of at most ``_CHUNK_ELEMENTS // width`` edges (a larger segment is a block alone)."""
        if width not in self._chunks:
            limit, ptr, out, n0 = max(1, _CHUNK_ELEMENTS // max(1, width)), self.ptr, [], 0
            while n0 < self.num_dst:
                n1 = bisect.bisect_right(ptr, ptr[n0] + limit, lo=n0 + 1) - 1
                n1 = min(max(n1, n0 + 1), self.num_dst)
                out.append((ptr[n0], ptr[n1], n0, n1))
                n0 = n1
            self._chunks[width] = out or [(0, 0, 0, 0)]
        return self._chunks[width]


def _sum_to(t: Tensor, slots: int) -> Tensor:
    """Sum a ``(E, S, ...)`` gradient over the slot dim when the input had one (broadcast) slot."""
    return t.sum(1, keepdim=True) if slots == 1 and t.size(1) != 1 else t


def _heads_matrix(att: Tensor) -> Tensor:
    """``(H * C, H)`` block-diagonal: column ``h`` holds ``att[h]`` in rows ``h*C .. h*C+C-1``."""
    H, C = att.shape
    out = att.new_zeros(H, C, H)
    out[torch.arange(H), :, torch.arange(H)] = att
    return out.view(H * C, H)


def _att_score(e: Tensor, att: Tensor | None) -> Tensor:
    """``(E, S, H, C) . (H, C) -> (E, S, H)`` (``att=None``: sum over ``C``).

    Several heads go through one matmul with a block-diagonal ``(H*C, H)`` matrix: at 5 or
    10 heads of 12 or 6 channels a reduction over the last dim does not vectorise."""
    E, S, H, C = e.shape
    if H == 1:
        return e.sum(-1) if att is None else torch.mv(e.reshape(-1, C), att.view(C)).view(E, S, 1)
    w = _heads_matrix(att if att is not None else e.new_ones(H, C))
    return torch.mm(e.reshape(-1, H * C), w).view(E, S, H)


def _edge_outer(ds: Tensor, lz: Tensor) -> Tensor:
    """``sum_{e, s} ds[e, s, h] * lz[e, s, h, c] -> (H, C)``."""
    H, C = lz.shape[-2:]
    if H == 1:
        return torch.mv(lz.reshape(-1, C).t(), ds.reshape(-1)).view(1, C)
    full = torch.mm(lz.reshape(-1, H * C).t(), ds.reshape(-1, H)).view(H, C, H)  # (h', c, h)
    return torch.diagonal(full, dim1=0, dim2=2).t()  # h' = h


class _GATv2Attention(torch.autograd.Function):
    """Fused GATv2 attention and aggregation over a destination-sorted :class:`EdgePlan`.

    ``agg_i = sum_e alpha_e xl_{src_e}`` with ``alpha = softmax_{dst}(a . LeakyReLU(xl_src + xr_dst))``
    over kept edges. Edge blocks are processed chunk by chunk and only ``alpha: (E, S, H)``
    is kept for backward, which recomputes the edge features: memory is
    ``O(E * S * H + N * S * H * C)`` instead of several ``(E, S, H, C)`` tensors.
    Backward uses ``sum_e' alpha_e' dalpha_e' = <g_i, agg_i>`` (node level), so each chunk
    needs no segment context.

    ``share_slot0``: slot 0 is the wildtype and a slot's input rows that equal slot 0's
    (bit for bit: the genes a deletion has not reached yet) are the same function of the
    parameters, so an edge whose two ends are such rows has slot 0's score. Those scores
    are computed once (slot 0) and only the other ``(edge, slot)`` pairs per slot; in
    backward their score gradients are summed into slot 0's. The softmax and the
    aggregation stay per slot. On the real graph this skips ~85% of the score work of the
    second layer. The caller asserts the premise (no batch statistics, no dropout).

    For :func:`_gatv2_sparse_slots`: ``prior_logden, prior_top: (N_dst, S, H)`` and ``prior_val:
    (N_dst, S, H, C)`` add one entry per destination to the softmax (its mass ``exp(prior_top +
    prior_logden)`` and its value), ``sign: (E,)`` weights each edge's ``exp`` by ``+-1``, and
    ``want_mass`` also returns each destination's softmax mass as ``logden, top: (N_dst, S, H)``
    (``log sum_e exp(s_e - top)`` and the shift ``top``, the segment's max score) and ``alpha``.
    The mass is kept in two parts because ``top + logden`` in one float32 loses
    ``|top| * 2^-24`` of it (3e-5 at scores near 500, as sharp attention gives), which the
    dense path does not; ``top`` is a constant of the softmax (as the max in
    :func:`masked_softmax`), so ``logden`` carries the gradient ``d logden / d s_e = alpha_e``.
    ``top`` and ``alpha`` are not differentiable. The backward is the same for signed weights:
    ``d s_e = alpha_e (g_i . x_j - g_i . out_i)``.
    """

    @staticmethod
    def forward(  # noqa: ANN001
        ctx, xl: Tensor, xr: Tensor, att: Tensor, keep: Tensor | None, plan: EdgePlan, slope: float,
        share_slot0: bool = False, prior_logden: Tensor | None = None, prior_val: Tensor | None = None,
        sign: Tensor | None = None, want_mass: bool = False, prior_top: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor, Tensor, Tensor]:
        H, C = att.shape
        Sz = max(xl.size(1), xr.size(1))
        S = max(Sz, keep.size(1) if keep is not None else 1)
        share = share_slot0 and S > 1 and xl.size(1) == S and xr.size(1) == S
        same_l = same_r = None
        if share:  # (N, S): the rows equal to slot 0's
            same_l = (xl == xl[:, :1]).flatten(2).all(-1)
            same_r = (xr == xr[:, :1]).flatten(2).all(-1)
        aggs, alphas, logdens, tops, priors = [], [], [], [], []
        for e0, e1, n0, n1 in plan.chunks(S * H * C):
            src, dst = plan.src[e0:e1], plan.dst[e0:e1]
            local, lengths = dst - n0, plan.by_dst.lengths[n0:n1]
            xj = xl.index_select(0, src)  # (Ec, S1, H, C)
            if share:
                s = _shared_scores(xj, xr, att, src, dst, same_l, same_r, slope)  # (Ec, S, H)
                z = xj  # the message goes into xj's buffer
            else:
                z = torch.add(xj, xr.index_select(0, dst))  # (Ec, Sz, H, C)
                s = _att_score(F.leaky_relu_(z, slope), att)  # (Ec, Sz, H)
            if keep is not None:
                s = s.expand(-1, keep.size(1), -1).masked_fill(~keep[e0:e1].unsqueeze(-1), float("-inf"))  # (Ec, S, H)
            top = torch.segment_reduce(s, "max", lengths=lengths, axis=0)  # (nc, S, H)
            if prior_logden is not None:  # the prior's mass is one more entry of the softmax
                top = torch.maximum(top, prior_top[n0:n1])
            top = torch.where(top == float("-inf"), 0.0, top)  # all-masked / empty segment
            ex = (s - top.index_select(0, local)).exp_()  # masked: 0
            if sign is not None:
                ex.mul_(sign[e0:e1].view(-1, 1, 1))
            # An all-masked segment has den 0 (and ex 0): alpha 0. ``tiny`` instead of PyG's
            # +1e-16, which is 0 in half precision; a kept segment has den >= 1 (its max).
            den = _segment_sum(ex, local, lengths)
            if prior_logden is not None:
                w0 = (prior_top[n0:n1] - top).add_(prior_logden[n0:n1]).exp_()  # (nc, S, H)
                den.add_(w0)
            den.clamp_min_(torch.finfo(ex.dtype).tiny)
            alpha = ex.div_(den.index_select(0, local))  # (Ec, S, H)
            # alpha * x_j, into z's buffer when the shapes allow (no new (Ec, S, H, C) tensor).
            msg = torch.mul(xj, alpha.unsqueeze(-1), out=z) if z.size(1) == alpha.size(1) else xj * alpha.unsqueeze(-1)
            agg_c = _segment_sum(msg, local, lengths)
            if prior_logden is not None:
                a0 = w0.div_(den)  # (nc, S, H): the prior's weight
                agg_c.add_(prior_val[n0:n1] * a0.unsqueeze(-1))
                priors.append(a0)
            if want_mass:
                logdens.append(den.log())
                tops.append(top)
            aggs.append(agg_c)
            alphas.append(alpha)
        agg = aggs[0] if len(aggs) == 1 else torch.cat(aggs)  # (N_dst, S, H, C)
        alpha = alphas[0] if len(alphas) == 1 else torch.cat(alphas)  # (E, S, H)
        ctx.plan, ctx.slope, ctx.same = plan, slope, (same_l, same_r) if share else None
        ctx.has_prior = prior_logden is not None
        extra = (torch.cat(priors), prior_val) if ctx.has_prior else ()
        ctx.save_for_backward(xl, xr, att, alpha, agg, *extra)
        if want_mass:
            top = torch.cat(tops)  # (N_dst, S, H)
            ctx.mark_non_differentiable(top, alpha)
            return agg, torch.cat(logdens), top, alpha
        return agg

    @staticmethod
    def backward(  # noqa: ANN001
        ctx, grad: Tensor, grad_logden: Tensor | None = None, *_: Tensor
    ) -> tuple[Tensor | None, ...]:
        with torch.autocast(grad.device.type, enabled=False):  # float32 throughout, see _gatv2
            grads = _GATv2Attention._backward(ctx, grad.float(), grad_logden)
            return grads + (None,) * (12 - len(grads))

    @staticmethod
    def _backward(ctx, grad: Tensor, grad_logden: Tensor | None = None) -> tuple[Tensor | None, ...]:  # noqa: ANN001
        xl, xr, att, alpha, agg, *extra = ctx.saved_tensors
        plan, slope = ctx.plan, ctx.slope
        S1, S2 = xl.size(1), xr.size(1)
        H, C = att.shape
        S = agg.size(1)
        grad = grad.contiguous()
        c = (grad * agg).sum(-1)  # (N_dst, S, H): sum_e alpha_e dalpha_e per destination
        prior_grads: tuple[Tensor | None, ...] = ()
        if ctx.has_prior:  # out = a0 v0 + sum_e alpha_e x_e: d logden0 = a0 (g . v0 - c), d v0 = a0 g
            a0, v0 = extra
            d_logden0 = a0 * ((grad * v0).sum(-1) - c) if ctx.needs_input_grad[7] else None
            d_v0 = a0.unsqueeze(-1) * grad if ctx.needs_input_grad[8] else None
            prior_grads = (None, d_logden0, d_v0)
        if grad_logden is not None:  # d logden / d s_e = alpha_e: one more term per destination
            c = c - grad_logden
        dxl = torch.zeros_like(xl) if ctx.needs_input_grad[0] else None
        dxrs, datt = [], torch.zeros_like(att)
        chunks = plan.chunks(S * H * C)
        for e0, e1, n0, n1 in chunks:
            src, dst = plan.src[e0:e1], plan.dst[e0:e1]
            lengths = plan.by_dst.lengths[n0:n1]
            xj = xl.index_select(0, src)  # (Ec, S1, H, C)
            g = grad.index_select(0, dst)  # (Ec, S, H, C)
            a = alpha[e0:e1]  # (Ec, S, H)
            ds = _att_score(g * xj, None)  # dalpha (Ec, S, H)
            ds = ds.sub_(c.index_select(0, dst)).mul_(a)  # d score; 0 where masked
            if ctx.same is not None:
                dxr_c = _shared_scores_backward(ds, xj, xr, att, src, dst, n0, n1, *ctx.same, slope, dxl, datt)
                if ctx.needs_input_grad[1]:
                    dxrs.append(dxr_c)
                if dxl is not None:
                    dxl.index_add_(0, src, g.mul_(a.unsqueeze(-1)))  # the aggregation's part
                continue
            z = torch.add(xj, xr.index_select(0, dst))  # (Ec, Sz, H, C)
            ds = _sum_to(ds, z.size(1))  # (Ec, Sz, H)
            dz = ds.unsqueeze(-1) * att  # (Ec, Sz, H, C): d LeakyReLU(z)
            dz = torch.ops.aten.leaky_relu_backward.grad_input(dz, z, slope, False, grad_input=dz)  # dz, in place
            if ctx.needs_input_grad[2]:
                datt += _edge_outer(ds, F.leaky_relu_(z, slope))  # LeakyReLU(z), into z's buffer
            if ctx.needs_input_grad[1]:
                dxrs.append(_segment_sum(_sum_to(dz, S2), dst - n0, lengths))
            if dxl is not None:
                if S1 == S and dz.size(1) == S:
                    contrib = dz.addcmul_(a.unsqueeze(-1), g)
                else:
                    contrib = _sum_to(dz, S1) + _sum_to(g.mul_(a.unsqueeze(-1)), S1)
                # One chunk: a sorted segment sum. Several: into dxl row by row in edge order
                # (a (N_src, S, H, C) zero tensor and sort per chunk made a step quadratic in S).
                if len(chunks) == 1:
                    dxl += plan.by_src.sum(contrib)
                else:
                    dxl.index_add_(0, src, contrib)
        dxr = None
        if ctx.needs_input_grad[1]:
            dxr = dxrs[0] if len(dxrs) == 1 else torch.cat(dxrs)
            if dxr.size(1) != S2:
                dxr = dxr.sum(1, keepdim=True)
        return (dxl, dxr, datt if ctx.needs_input_grad[2] else None, None, None, None) + prior_grads


def _pairs(same: Tensor) -> tuple[Tensor, Tensor]:
    """``(P,)`` flat ``edge * S + slot`` of the pairs not sharing slot 0's score, and their edges."""
    e, slot = (~same).nonzero(as_tuple=True)
    return e * same.size(1) + slot, e


def _pair_z(xj: Tensor, xr: Tensor, flat: Tensor, dst_flat: Tensor) -> Tensor:
    """``(P, H, C)``: ``xl[src, s] + xr[dst, s]`` of the pairs ``flat = e * S + s`` (``dst_flat = dst * S + s``)."""
    H, C = xj.shape[-2:]
    return xj.view(-1, H, C).index_select(0, flat) + xr.view(-1, H, C).index_select(0, dst_flat)


def _shared_scores(
    xj: Tensor, xr: Tensor, att: Tensor, src: Tensor, dst: Tensor, same_l: Tensor, same_r: Tensor, slope: float
) -> Tensor:
    """``(Ec, S, H)`` scores: slot 0's for pairs whose two ends equal slot 0, the others computed."""
    Ec, S, H, C = xj.shape
    z0 = F.leaky_relu_(xj[:, :1] + xr[:, :1].index_select(0, dst), slope)  # (Ec, 1, H, C)
    s = _att_score(z0, att).expand(Ec, S, H).contiguous()
    flat, e = _pairs(same_l.index_select(0, src) & same_r.index_select(0, dst))
    if flat.numel():
        slot = flat - e * S
        zp = _pair_z(xj, xr, flat, dst.index_select(0, e) * S + slot)  # (P, H, C)
        s.view(Ec * S, H).index_copy_(0, flat, _att_score(F.leaky_relu_(zp, slope).unsqueeze(1), att)[:, 0])
    return s


def _shared_scores_backward(
    ds: Tensor, xj: Tensor, xr: Tensor, att: Tensor, src: Tensor, dst: Tensor, n0: int, n1: int,
    same_l: Tensor, same_r: Tensor, slope: float, dxl: Tensor | None, datt: Tensor,
) -> Tensor:
    """Backward of :func:`_shared_scores` for one chunk given ``ds: (Ec, S, H)``: adds into ``dxl``
    and ``datt``, returns the chunk's ``(n1 - n0, S, H, C)`` gradient of ``xr``."""
    Ec, S, H, C = xj.shape
    same = same_l.index_select(0, src) & same_r.index_select(0, dst)  # (Ec, S)
    local = dst - n0
    dxr = xj.new_zeros(n1 - n0, S, H, C)
    # Shared pairs: their score gradients summed into slot 0's score.
    ds0 = (ds * same.unsqueeze(-1)).sum(1, keepdim=True)  # (Ec, 1, H)
    z0 = xj[:, :1] + xr[:, :1].index_select(0, dst)  # (Ec, 1, H, C)
    dz0 = ds0.unsqueeze(-1) * att
    dz0 = torch.ops.aten.leaky_relu_backward.grad_input(dz0, z0, slope, False, grad_input=dz0)
    datt += _edge_outer(ds0, F.leaky_relu_(z0, slope))
    dxr[:, :1].index_add_(0, local, dz0)
    if dxl is not None:
        dxl[:, :1].index_add_(0, src, dz0)
    flat, e = _pairs(same)
    if flat.numel():
        slot = flat - e * S
        zp = _pair_z(xj, xr, flat, dst.index_select(0, e) * S + slot)  # (P, H, C)
        dsp = ds.view(Ec * S, H).index_select(0, flat)  # (P, H)
        dzp = dsp.unsqueeze(-1) * att
        dzp = torch.ops.aten.leaky_relu_backward.grad_input(dzp, zp, slope, False, grad_input=dzp)  # (P, H, C)
        datt += _edge_outer(dsp.unsqueeze(1), F.leaky_relu_(zp, slope).unsqueeze(1))
        dxr.view(-1, H, C).index_add_(0, local.index_select(0, e) * S + slot, dzp)
        if dxl is not None:
            dxl.view(-1, H, C).index_add_(0, src.index_select(0, e) * S + slot, dzp)
    return dxr


def _gatv2(
    xl: Tensor, xr: Tensor, att: Tensor, keep: Tensor | None, plan: EdgePlan, slope: float, share_slot0: bool = False
) -> Tensor:
    """``(N_dst, S, H, C)``: :class:`_GATv2Attention`, autocast-safe, computing shared inputs once.

    Under autocast the attention runs in float32 (inputs cast, autocast off inside, as
    ``torch.amp.custom_fwd(cast_inputs=torch.float32)`` does): the softmax's exp and sums
    and its all-masked guard are not safe in fp16/bf16. The float32 output is what the
    following Linear/LayerNorm take under autocast anyway.

    When every slot has the same inputs (``xl``, ``xr`` with one slot, as in the first
    layer, where only the masks differ), the unmasked result is computed once and only the
    ``(destination, slot)`` pairs with a masked in-edge are recomputed, each over its whole
    segment: the same edges and the same math as the general path, so exact. On the real
    graph a deletion reaches ~1% of the genes (~9% of the edges) at the first layer.
    """
    if torch.is_autocast_enabled(xl.device.type):
        with torch.autocast(xl.device.type, enabled=False):
            return _gatv2(xl.float(), xr.float(), att.float(), keep, plan, slope, share_slot0)
    if keep is None or keep.size(1) == 1 or xl.size(1) != 1 or xr.size(1) != 1:
        return _GATv2Attention.apply(xl, xr, att, keep, plan, slope, share_slot0)
    N, S = plan.num_dst, keep.size(1)
    full = _GATv2Attention.apply(xl, xr, att, None, plan, slope)  # (N, 1, H, C): the unmasked graph
    out = full.expand(N, S, *full.shape[2:])
    with torch.no_grad():
        hit = plan.by_dst.sum((~keep).to(torch.int32)) > 0  # (N, S): a masked in-edge
        nodes, slots = hit.nonzero(as_tuple=True)  # sorted by node
    if nodes.numel() == 0:
        return out
    sub, edge_ids = plan.segments(nodes)
    sub_keep = keep[edge_ids, slots.index_select(0, sub.dst)].unsqueeze(1)  # (E', 1)
    xr_pairs = gather(xr, SegmentIndex(nodes, N))  # (P, 1, H, C)
    part = _GATv2Attention.apply(xl, xr_pairs, att, sub_keep, sub, slope)  # (P, 1, H, C)
    return out.index_put((nodes, slots), part[:, 0])


#: A ``(destination, slot)`` pair of :func:`_gatv2_sparse_slots` is patched only while its changed
#: in-edges held at most this share of the wildtype's softmax mass (in every head); past it the
#: pair is recomputed over its whole segment. The patch subtracts that share from the wildtype's
#: mass, so the rounding of the total grows by ``1 / (1 - share)`` in the remainder: at 1/2 the
#: patched result is within 3x one softmax's rounding, however sharp the attention (a share
#: near 1 cancels: at a score gap of 17 the remainder is below float32's resolution, NaN).
_PATCH_MAX_SHARE = 0.5


def _gatv2_sparse_slots(
    xl: Tensor, xr: Tensor, att: Tensor, keep: Tensor, plan: EdgePlan, slope: float, changed: Tensor
) -> Tensor:
    """``(N, S, H, C)``: :class:`_GATv2Attention` of a homogeneous layer whose inputs differ from
    the wildtype (slot 0) only at the rows ``changed: (N, S)`` (bool, slot 0 all false).

    ``xl, xr: (N + Q, 1, H, C)`` hold only the rows that exist: the wildtype's ``N``, then the
    ``Q`` changed rows in ``changed.nonzero()`` order (:meth:`BatchedGATv2Conv.forward`
    projects just these, not ``N x S`` rows that are mostly copies of slot 0).

    The wildtype is computed once (with each destination's softmax mass ``e^{top_i} d_i``). A
    ``(destination, slot)`` pair that is itself changed or has a masked in-edge is recomputed over
    its whole segment (as the first layer, :func:`_gatv2`). Any other pair whose in-edges come
    from changed rows ``J`` is the wildtype's softmax patched: with ``s^w_e, x^w_j`` the
    wildtype's scores and source rows and ``s_e, x_j`` the slot's,

    .. math::
        \\mathbf{x}'_i = \\frac{e^{top_i} d_i \\mathbf{x}'^{w}_i + \\sum_{e \\in J}
        (e^{s_e} \\mathbf{x}_j - e^{s^w_e} \\mathbf{x}^w_j)}
        {e^{top_i} d_i + \\sum_{e \\in J} (e^{s_e} - e^{s^w_e})}

    (shifted by the pair's max), i.e. one softmax over the wildtype's mass as a prior entry
    and each changed edge twice, once with sign -1. Both parts run through the fused kernel
    on sub-plans of one slot, whose sources index a table of the wildtype rows and the
    changed rows. All other pairs are the wildtype's. The patch is only taken where it is
    both exact and cheaper: where ``J`` held at most :data:`_PATCH_MAX_SHARE` of the
    wildtype's mass (no cancellation) and the segment is longer than ``2 |J|`` edges; other
    pairs are recomputed over their whole segment. On the real graph at the second layer this
    touches ~15% of the dense ``(edge, slot)`` pairs.
    """
    (N, S), (H, C) = changed.shape, att.shape
    dev = xl.device
    agg_w, logden_w, top_w, alpha_w = _GATv2Attention.apply(
        xl[:N], xr[:N], att, None, plan, slope, False, None, None, None, True
    )  # (N, 1, H, C), (N, 1, H) x 2, (E, 1, H)
    with torch.no_grad():
        hit = (plan.by_dst.sum((~keep).to(torch.int32)) > 0) | changed  # (N, S): recompute the segment
        cnodes, cslots = changed.nonzero(as_tuple=True)
        row_of = torch.arange(N, device=dev).unsqueeze(1).repeat(1, S)  # (N, S): source-table row
        row_of[cnodes, cslots] = N + torch.arange(cnodes.numel(), device=dev)
        e_p, s_p, pair_keys, pair_of = _patch_edges(plan, changed, hit, alpha_w[:, 0])
        nodes, slots = hit.nonzero(as_tuple=True)  # sorted by node
        pnodes, pslots = pair_keys // S, pair_keys % S
    out = agg_w.expand(N, S, H, C)
    if nodes.numel():
        with torch.no_grad():
            sub, edge_ids = plan.segments(nodes)
            slot_e = slots.index_select(0, sub.dst)
            sub = EdgePlan(torch.stack([row_of[plan.src.index_select(0, edge_ids), slot_e], sub.dst]),
                           N + cnodes.numel(), nodes.numel(), self_loops=False)
            sub_keep = keep[edge_ids, slot_e].unsqueeze(1)  # (E', 1)
        xr_hit = xr.index_select(0, row_of[nodes, slots])  # (P, 1, H, C): the slot's destination row
        part = _GATv2Attention.apply(xl, xr_hit, att, sub_keep, sub, slope)  # (P, 1, H, C)
        out = out.index_put((nodes, slots), part[:, 0])
    if pair_keys.numel():
        with torch.no_grad():
            src_p = plan.src.index_select(0, e_p)
            pair2 = torch.cat([pair_of, pair_of])
            order = torch.argsort(pair2, stable=True)
            src2 = torch.cat([row_of[src_p, s_p], src_p]).index_select(0, order)  # the slot's row, the wildtype's
            sign = torch.cat([xl.new_ones(e_p.numel()), xl.new_full((e_p.numel(),), -1.0)]).index_select(0, order)
            sub = EdgePlan(torch.stack([src2, pair2.index_select(0, order)]), N + cnodes.numel(), pair_keys.numel(),
                           self_loops=False)
        xr_p = xr.index_select(0, pnodes)  # the destination is the wildtype's row
        patched = _GATv2Attention.apply(
            xl, xr_p, att, None, sub, slope, False, logden_w.index_select(0, pnodes), agg_w.index_select(0, pnodes),
            sign, False, top_w.index_select(0, pnodes),
        )
        out = out.index_put((pnodes, pslots), patched[:, 0])
    return out


def _patch_edges(
    plan: EdgePlan, changed: Tensor, hit: Tensor, alpha_w: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The edges :func:`_gatv2_sparse_slots` patches: ``(K,)`` edge and slot of each, the ``(P,)``
    sorted keys ``node * S + slot`` of their pairs and ``(K,)`` each edge's pair. A pair whose
    changed in-edges held more than :data:`_PATCH_MAX_SHARE` of the wildtype's mass (``alpha_w:
    (E, H)``), or whose segment is at most twice as long as them, is set in ``hit`` (in place)
    instead."""
    S = changed.size(1)
    patch = changed.index_select(0, plan.src) & ~hit.index_select(0, plan.dst)  # (E, S)
    e_p, s_p = patch.nonzero(as_tuple=True)
    key = plan.dst.index_select(0, e_p) * S + s_p  # (destination, slot) of each patch edge
    pair_keys, pair_of = torch.unique(key, sorted=True, return_inverse=True)
    share = alpha_w.new_zeros(pair_keys.numel(), alpha_w.size(1)).index_add_(0, pair_of, alpha_w.index_select(0, e_p))
    count = torch.bincount(pair_of, minlength=pair_keys.numel())
    whole = (share.amax(1) > _PATCH_MAX_SHARE) | (plan.by_dst.lengths.index_select(0, pair_keys // S) <= 2 * count)
    if not bool(whole.any()):
        return e_p, s_p, pair_keys, pair_of
    hit.view(-1)[pair_keys[whole]] = True
    kept = ~whole.index_select(0, pair_of)
    e_p, s_p, key = e_p[kept], s_p[kept], key[kept]
    pair_keys, pair_of = torch.unique(key, sorted=True, return_inverse=True)
    return e_p, s_p, pair_keys, pair_of


def _gatv2_unfused(
    xl: Tensor, xr: Tensor, att: Tensor, keep: Tensor | None, plan: EdgePlan, slope: float, dropout: float, training: bool
) -> Tensor:
    """What :class:`_GATv2Attention` computes, in differentiable steps (attention dropout, tests)."""
    xj = gather(xl, plan.by_src)  # (E, S1, H, C)
    z = xj + gather(xr, plan.by_dst)
    score = (F.leaky_relu(z, slope) * att).sum(-1)  # (E, Sz, H)
    if keep is not None:
        score = score.expand(-1, keep.size(1), -1)
    alpha = masked_softmax(score, plan.dst, keep, plan.num_dst, seg=plan.by_dst)
    alpha = F.dropout(alpha, p=dropout, training=training)
    return scatter_sum(xj * alpha.unsqueeze(-1), plan.by_dst)  # (N_dst, S, H, C)


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
    """``num_layers`` x (Linear -> norm -> activation -> Dropout), optionally a final Linear.

    Each block has its own norm instance (the research code shared one across blocks).
    """

    def __init__(
        self, dims: list[int], *, norm: str, dropout: float, out_channels: int | None, activation: str = "relu",
        norm_builder: Callable[[str, int], nn.Module] | None = None, activation_key: str = "model.activation",
    ) -> None:
        super().__init__()
        norm_builder = norm_builder or build_norm  # the prediction head passes its own (model/head.py)
        self.lins = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(norm_builder(norm, b) for b in dims[1:])
        self.act = build_activation(activation, key=activation_key)
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
            x = self.dropout(self.act(norm(lin(x), keep)))
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
        activation (str, optional): a ``model/activations.py`` name (default: ``"relu"``).

    Shapes:
        - **input:** ``(N, S, in_channels)`` or ``(N, in_channels)``, ``keep: (N, S)``
        - **output:** ``(..., hidden_channels)``
    """

    def __init__(
        self, in_channels: int, hidden_channels: int, *, num_layers: int = 2, norm: str = "layer", dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__([in_channels] + [hidden_channels] * num_layers, norm=norm, dropout=dropout, out_channels=None,
                         activation=activation)


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
          ``edge_index: (2, E)``, ``edge_keep: (E, S)`` bool or ``None``; ``changed: (N, S)``
          bool or ``None`` (homogeneous only): the rows of ``x_src`` that may differ from slot
          0's, slot 0 being the wildtype; all others must equal slot 0's row (the caller's
          premise: no batch statistics, no dropout). Then only those rows' work is done
          (:func:`_gatv2_sparse_slots`).
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
        # Set by a model whose slot 0 is the wildtype and whose slots are computed alike (no
        # batch statistics, no dropout): see _GATv2Attention's share_slot0.
        self.share_slot0 = False
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
        self,
        x_src: Tensor,
        x_dst: Tensor | None,
        edge_index: Tensor | None,
        edge_keep: Tensor | None = None,
        *,
        plan: EdgePlan | None = None,
        changed: Tensor | None = None,
    ) -> Tensor:
        H, C = self.heads, self.out_channels
        x_dst = x_src if x_dst is None else x_dst
        N_src, N_dst = x_src.size(0), x_dst.size(0)
        if plan is None:
            plan = EdgePlan(edge_index, N_src, N_dst, self_loops=self.add_self_loops)
        elif plan.num_loops != (min(N_src, N_dst) if self.add_self_loops else 0):
            raise ValueError(f"{self!r}: the EdgePlan's self loops do not match add_self_loops={self.add_self_loops}")
        keep = plan.keep(edge_keep)  # (E, S) in plan order, or None
        dropout = self.dropout > 0 and self.training
        if (changed is not None and keep is not None and x_src is x_dst and x_src.size(1) == keep.size(1) > 1
                and not dropout and not torch.is_autocast_enabled(x_src.device.type)):
            # Only the wildtype's rows and the changed ones are projected (and differentiated).
            rows = torch.cat([x_src[:, 0], x_src[changed]])  # (N + Q, F), changed in nonzero() order
            xl, xr = self.lin_l(rows).view(-1, 1, H, C), self.lin_r(rows).view(-1, 1, H, C)
            out = _gatv2_sparse_slots(xl, xr, self.att, keep, plan, self.negative_slope, changed)
            return self._finish(out)
        # Inputs may carry one slot shared by all samples (broadcast); the masks set S.
        xl = self.lin_l(x_src).view(N_src, -1, H, C)  # (N_src, S or 1, H, C)
        xr = self.lin_r(x_dst).view(N_dst, -1, H, C)
        if dropout:
            out = _gatv2_unfused(xl, xr, self.att, keep, plan, self.negative_slope, self.dropout, True)
        else:
            out = _gatv2(xl, xr, self.att, keep, plan, self.negative_slope, self.share_slot0)  # (N_dst, S, H, C)
        return self._finish(out)

    def _finish(self, out: Tensor) -> Tensor:
        """``(N_dst, S, H, C)`` -> heads concatenated or averaged, plus the bias."""
        N_dst, S, H, C = out.shape
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
        *,
        plan: tuple[SegmentIndex, SegmentIndex] | None = None,
    ) -> Tensor:
        H, C = self.heads, self.out_channels
        M = x.size(0)
        S = keep.size(1) if keep is not None else max(x.size(1), hyperedge_attr.size(1))
        R = hyperedge_attr.size(0) if num_reactions is None else num_reactions
        # Incidences grouped by metabolite and by reaction (prebuilt by the model, else here).
        by_m, by_r = plan if plan is not None else (SegmentIndex(hyperedge_index[0], M), SegmentIndex(hyperedge_index[1], R))
        m, r = by_m.index, by_r.index
        xt = self.lin(x).view(M, -1, H, C)  # (M, S or 1, H, C)
        ht = self.lin(hyperedge_attr).view(hyperedge_attr.size(0), -1, H, C)
        xi = gather(xt, by_m)  # (K, S, H, C)
        # a . [x'_m || h'_r] = a_m . x'_m + a_r . h'_r: dot products at node level, then gathered.
        score = gather((xt * self.att[:, :C]).sum(-1), by_m) + gather((ht * self.att[:, C:]).sum(-1), by_r)  # (K, S, H)
        if keep is not None:
            score = score.expand(-1, S, -1)
        alpha = masked_softmax(F.leaky_relu(score, self.negative_slope), r, keep, R, seg=by_r)
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)
        coef = stoich.to(x.dtype).view(-1, 1, 1) * alpha  # (K, S, H): s_k alpha_k, 0 where masked
        if self.gate_lin is not None:
            coef = coef * gather(torch.sigmoid(self.gate_lin(x)), by_m)  # gate (K, S, 1)
        with torch.no_grad():  # degrees depend on the masks only
            w = stoich.abs().to(x.dtype).view(-1, 1).expand(-1, S)  # (K, S)
            if keep is not None:
                w = w * keep
            deg_r, deg_m = by_r.sum(w), by_m.sum(w)  # (R, S), (M, S)
            inv_r = torch.where(deg_r > 0, 1.0 / deg_r.clamp_min(1e-30), torch.zeros_like(deg_r))
            inv_m = torch.where(deg_m > 0, 1.0 / deg_m.clamp_min(1e-30), torch.zeros_like(deg_m))
        # Metabolites -> reactions.
        e = scatter_sum((coef * inv_r.index_select(0, r).unsqueeze(-1)).unsqueeze(-1) * xi, by_r)  # (R, S, H, C)
        # Reactions -> metabolites.
        out = scatter_sum((coef * inv_m.index_select(0, m).unsqueeze(-1)).unsqueeze(-1) * gather(e, by_r), by_m)
        out = out.reshape(M, S, H * C)
        return out + self.bias if self.bias is not None else out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads}, gated={self.gated})"


class ConvBlock(nn.Module):
    """One relation's convolution followed by projection, norm, activation and dropout.

    .. math::
        \\mathbf{x}' = \\mathrm{Drop}(\\sigma(\\mathrm{Norm}(\\mathbf{P}\\,\\mathrm{conv}(\\dots))))

    ``P`` is a Linear when the conv's output width differs from ``out_channels`` (e.g.
    GATv2 with 5 heads on 64 channels gives 60), else the identity.

    Args:
        conv (nn.Module): a :class:`BatchedGATv2Conv` or :class:`StoichHypergraphConv`.
        out_channels (int): width after the projection.
        norm (str, optional): (default: ``"layer"``)
        dropout (float, optional): (default: ``0.0``)
        activation (str, optional): :math:`\\sigma`, a ``model/activations.py`` name (default: ``"relu"``).

    Shapes:
        - **input:** the conv's arguments, then ``node_keep: (N_dst, S)`` as keyword
        - **output:** ``(N_dst, S, out_channels)``
    """

    def __init__(
        self, conv: nn.Module, out_channels: int, *, norm: str = "layer", dropout: float = 0.0, activation: str = "relu"
    ) -> None:
        super().__init__()
        self.conv = conv
        self.proj = nn.Linear(conv.out_dim, out_channels) if conv.out_dim != out_channels else nn.Identity()
        self.norm = build_norm(norm, out_channels)
        self.act = build_activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()
        for mod in (self.proj, self.norm):
            if hasattr(mod, "reset_parameters"):
                mod.reset_parameters()

    def forward(self, *args: object, node_keep: Tensor | None = None, **kwargs: object) -> Tensor:
        return self.dropout(self.act(self.norm(self.proj(self.conv(*args, **kwargs)), node_keep)))
