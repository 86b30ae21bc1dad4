"""Every pooling option: shape, masking, agreement with PyG's set-transformer blocks."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.nn.aggr.utils import MultiheadAttentionBlock as PygMAB

from torchcell_search.errors import ConfigError
from torchcell_search.model.pooling import POOLINGS, MultiheadAttentionBlock, build_pooling


@pytest.mark.parametrize("name", sorted(POOLINGS))
def test_pooling_ignores_masked_nodes(name: str) -> None:
    torch.manual_seed(0)
    pool = build_pooling(name, 16).eval()
    x = torch.randn(3, 7, 16)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, [2, 5]] = False
    out = pool(x, mask)
    assert out.shape == (3, 16) and torch.isfinite(out).all()
    # Masked nodes count as absent: changing them changes nothing, and the result equals
    # pooling the set without them.
    y = x.clone()
    y[1, [2, 5]] = 100.0
    assert torch.allclose(pool(y, mask), out, atol=1e-5)
    assert torch.allclose(pool(x[1:2, mask[1]], None), out[1:2], atol=1e-5)


@pytest.mark.parametrize("name", sorted(POOLINGS))
def test_pooling_gradients_are_finite(name: str) -> None:
    torch.manual_seed(0)
    pool = build_pooling(name, 8)
    x = torch.randn(2, 5, 8, requires_grad=True)
    mask = torch.tensor([[True] * 5, [True, False, True, False, False]])
    pool(x, mask).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[1, 1].abs().sum() == 0


def test_mab_matches_pyg() -> None:
    torch.manual_seed(0)
    ours, pyg = MultiheadAttentionBlock(8, 2, layer_norm=True), PygMAB(8, 2, layer_norm=True)
    with torch.no_grad():
        pyg.attn.in_proj_weight.copy_(ours.in_proj.weight)
        pyg.attn.in_proj_bias.copy_(ours.in_proj.bias)
        pyg.attn.out_proj.weight.copy_(ours.out_proj.weight)
        pyg.attn.out_proj.bias.copy_(ours.out_proj.bias)
        pyg.lin.load_state_dict(ours.lin.state_dict())
    x, y = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    y_mask = torch.tensor([[True] * 5, [True, True, False, True, False]])
    assert torch.allclose(ours(x, y, None, y_mask), pyg(x, y, None, y_mask), atol=1e-5)


def test_sorted_set_transformer_size_matches_report() -> None:
    # 2 ISAB(64 points) + PMA + 2 SAB at 64 channels, no layer norm: the report's pooling.
    pool = build_pooling("sorted_set_transformer", 64)
    assert sum(p.numel() for p in pool.parameters()) == 158_016


def test_unknown_pooling_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="model.pooling"):
        build_pooling("mean", 16)
