"""Batched layers against PyG and against running each sample's subgraph on its own."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.nn import GATv2Conv

from torchcell_search.errors import ConfigError
from torchcell_search.model.layers import (
    BatchedGATv2Conv,
    MaskedBatchNorm,
    PreProcessor,
    StoichHypergraphConv,
    build_norm,
    masked_softmax,
)

EDGES = torch.tensor([[0, 1, 1, 2, 3, 0, 2], [1, 0, 2, 1, 0, 3, 3]])


def _copy_gat(ours: BatchedGATv2Conv, pyg: GATv2Conv) -> None:
    with torch.no_grad():
        pyg.lin_l.weight.copy_(ours.lin_l.weight)
        pyg.lin_l.bias.copy_(ours.lin_l.bias)
        pyg.lin_r.weight.copy_(ours.lin_r.weight)
        pyg.lin_r.bias.copy_(ours.lin_r.bias)
        pyg.att.copy_(ours.att.view_as(pyg.att))
        pyg.bias.copy_(ours.bias)


@pytest.mark.parametrize("heads,loops", [(1, True), (2, False)])
def test_gatv2_matches_pyg(heads: int, loops: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 8)
    ours = BatchedGATv2Conv(8, 4, heads=heads, add_self_loops=loops)
    pyg = GATv2Conv(8, 4, heads=heads, add_self_loops=loops)
    _copy_gat(ours, pyg)
    # Same parameters, same math: one slot equals PyG's GATv2Conv.
    assert torch.allclose(ours(x.unsqueeze(1), None, EDGES)[:, 0], pyg(x, EDGES), atol=1e-6)


def test_gatv2_bipartite_mean_matches_pyg() -> None:
    torch.manual_seed(0)
    xs, xd = torch.randn(4, 8), torch.randn(2, 6)
    ei = torch.tensor([[0, 1, 2, 3], [0, 0, 1, 1]])
    ours = BatchedGATv2Conv((8, 6), 5, heads=2, concat=False, add_self_loops=False)
    pyg = GATv2Conv((8, 6), 5, heads=2, concat=False, add_self_loops=False)
    _copy_gat(ours, pyg)
    assert torch.allclose(ours(xs.unsqueeze(1), xd.unsqueeze(1), ei)[:, 0], pyg((xs, xd), ei), atol=1e-6)


def test_gatv2_masked_slot_equals_subgraph() -> None:
    torch.manual_seed(0)
    conv = BatchedGATv2Conv(8, 4, heads=2)
    x = torch.randn(4, 2, 8)
    keep = torch.ones(EDGES.size(1), 2, dtype=torch.bool)
    keep[[1, 4], 1] = False
    out = conv(x, None, EDGES, keep)
    # Slot 1 with edges 1 and 4 masked is the graph without those edges.
    sub = EDGES[:, keep[:, 1]]
    assert torch.allclose(out[:, 1], conv(x[:, 1:], None, sub)[:, 0], atol=1e-6)
    assert torch.allclose(out[:, 0], conv(x[:, :1], None, EDGES)[:, 0], atol=1e-6)


def test_masked_softmax_all_masked_group_is_zero() -> None:
    score = torch.randn(3, 1, 1)
    keep = torch.tensor([[True], [False], [False]])
    alpha = masked_softmax(score, torch.tensor([0, 1, 1]), keep, 2)
    # Group 1 has no kept entry: weights 0, not NaN; group 0 sums to 1.
    assert torch.equal(alpha[1:], torch.zeros(2, 1, 1))
    assert torch.allclose(alpha[0], torch.ones(1, 1))


def test_stoich_conv_masked_slot_equals_filtered_incidences() -> None:
    torch.manual_seed(0)
    conv = StoichHypergraphConv(6, 4, heads=1)
    hidx = torch.tensor([[0, 1, 2, 1, 2, 3], [0, 0, 0, 1, 1, 1]])
    stoich = torch.tensor([-1.0, -2.0, 1.0, -1.0, 2.0, 1.0])
    x, h = torch.randn(4, 2, 6), torch.randn(2, 1, 6)
    keep = torch.ones(6, 2, dtype=torch.bool)
    keep[3:, 1] = False  # reaction 1 lost in sample 1
    out = conv(x, h, hidx, stoich, keep)
    ref = conv(x[:, 1:], h, hidx[:, :3], stoich[:3])
    assert torch.allclose(out[:, 1], ref[:, 0], atol=1e-6)
    # Metabolite 3 only takes part in the lost reaction: it gets the bias alone.
    assert torch.allclose(out[3, 1], conv.bias)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in conv.parameters())


def test_masked_batch_norm_uses_kept_rows_per_group() -> None:
    torch.manual_seed(0)
    bn = MaskedBatchNorm(3)
    x = torch.randn(5, 3, 3)
    keep = torch.ones(5, 3, dtype=torch.bool)
    keep[0, 1:] = False
    out = bn(x, keep)
    ref = torch.nn.functional.batch_norm(x[:, 1:][keep[:, 1:]], None, None, training=True)
    # Perturbed slots share statistics over their kept rows; masked rows are 0.
    assert torch.allclose(out[:, 1:][keep[:, 1:]], ref, atol=1e-5)
    assert torch.equal(out[0, 1:], torch.zeros(2, 3))


def test_preprocessor_has_one_norm_per_layer() -> None:
    pre = PreProcessor(8, 8, num_layers=2)
    # The research code shared one norm instance; ours are distinct.
    assert pre.norms[0] is not pre.norms[1]
    assert sum(p.numel() for p in pre.parameters()) == 2 * (8 * 8 + 8) + 2 * 16


def test_gatv2_repr() -> None:
    assert repr(BatchedGATv2Conv(8, 4, heads=2)) == "BatchedGATv2Conv(8, 4, heads=2, concat=True, add_self_loops=True)"


def test_unknown_norm_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="model.norm"):
        build_norm("group", 4)


@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("slots", ["shared", "per_slot"])
@pytest.mark.parametrize("chunk", [None, 40])
def test_fused_gatv2_gradients_match_autograd(heads: int, slots: str, chunk: int | None, monkeypatch) -> None:
    from torchcell_search.model import layers

    if chunk is not None:  # force several edge chunks (and their backward's per-chunk source sums)
        monkeypatch.setattr(layers, "_CHUNK_ELEMENTS", chunk)
    torch.manual_seed(0)
    N, S, C = 6, 4, 2
    ei = torch.randint(0, N, (2, 30))
    plan = layers.EdgePlan(ei, N, N, self_loops=True)
    keep = plan.keep(torch.rand(30, S) > 0.3)
    keep[plan.dst == 2] = False  # a destination with nothing kept in any slot
    width = 1 if slots == "shared" else S
    xl = torch.randn(N, width, heads, C, requires_grad=True)
    xr = torch.randn(N, width, heads, C, requires_grad=True)
    att = torch.randn(heads, C, requires_grad=True)
    w = torch.randn(N, S, heads, C)  # a generic upstream gradient
    fused = layers._GATv2Attention.apply(xl, xr, att, keep, plan, 0.2)
    grads = torch.autograd.grad((fused * w).sum(), (xl, xr, att))
    plain = layers._gatv2_unfused(xl, xr, att, keep, plan, 0.2, 0.0, False)
    expected = torch.autograd.grad((plain * w).sum(), (xl, xr, att))
    # Same output, and the hand-written backward equals autograd's through the plain steps.
    assert torch.allclose(fused, plain, atol=1e-6)
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, atol=1e-5)


def test_gatv2_bipartite_with_shared_destination_slot_gradients() -> None:
    from torchcell_search.model import layers

    torch.manual_seed(0)
    ei = torch.tensor([[0, 1, 2, 3, 3], [0, 0, 1, 1, 2]])
    plan = layers.EdgePlan(ei, 4, 4, self_loops=False)  # destination 3 has no edge
    keep = plan.keep(torch.rand(5, 3) > 0.3)
    xl = torch.randn(4, 3, 1, 5, requires_grad=True)
    xr = torch.randn(4, 1, 1, 5, requires_grad=True)  # one slot shared (reaction embeddings)
    att = torch.randn(1, 5, requires_grad=True)
    fused = layers._GATv2Attention.apply(xl, xr, att, keep, plan, 0.2)
    plain = layers._gatv2_unfused(xl, xr, att, keep, plan, 0.2, 0.0, False)
    assert torch.allclose(fused, plain, atol=1e-6) and torch.equal(fused[3], torch.zeros(3, 1, 5))
    w = torch.randn_like(fused)
    for got, want in zip(
        torch.autograd.grad((fused * w).sum(), (xl, xr, att)), torch.autograd.grad((plain * w).sum(), (xl, xr, att))
    ):
        assert torch.allclose(got, want, atol=1e-5)
