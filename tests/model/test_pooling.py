"""Every pooling option: shape, masking, agreement with PyG's set-transformer blocks."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.nn.aggr import SetTransformerAggregation
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
    pool = build_pooling("sorted_set_transformer", 64, layer_norm=False)
    assert sum(p.numel() for p in pool.parameters()) == 158_016
    # the default adds two LayerNorms (weight, bias) to each of its 7 attention blocks
    default = build_pooling("sorted_set_transformer", 64)
    assert sum(p.numel() for p in default.parameters()) == 158_016 + 7 * 2 * 2 * 64


def test_unknown_pooling_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="model.pooling"):
        build_pooling("mean", 16)


def _to_pyg_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our MAB keeps nn.MultiheadAttention's tensors as in_proj/out_proj Linears; PyG's sit in ``attn``."""
    out = {}
    for key, value in state.items():
        key = key.replace("mab.in_proj.weight", "mab.attn.in_proj_weight").replace("mab.in_proj.bias", "mab.attn.in_proj_bias")
        out[key.replace("mab.out_proj.", "mab.attn.out_proj.")] = value
    return out


@pytest.mark.parametrize("seeds", [1, 3])
@pytest.mark.parametrize("layer_norm", [True, False])
def test_global_aggregator_config_matches_pyg_set_transformer_aggregation(seeds: int, layer_norm: bool) -> None:
    # use_isab=false is PyG's SetTransformerAggregation (SAB encoders, PMA, SAB decoders, concat).
    torch.manual_seed(0)
    options = dict(use_isab=False, num_encoder_blocks=2, num_decoder_blocks=1, num_seed_points=seeds, heads=2,
                   layer_norm=layer_norm)
    ours = build_pooling("sorted_set_transformer", 8, **options).eval()
    pyg = SetTransformerAggregation(8, num_seed_points=seeds, num_encoder_blocks=2, num_decoder_blocks=1, heads=2,
                                    concat=True, layer_norm=layer_norm).eval()
    state = {k: v for k, v in ours.state_dict().items() if not k.startswith("proj.")}
    pyg.load_state_dict(_to_pyg_names(state))
    # PyG: a flat node list with a sorted graph index; ours: (S, N, C) with a mask of kept genes.
    sizes = [5, 3]
    x_flat = torch.randn(sum(sizes), 8)
    index = torch.repeat_interleave(torch.arange(2), torch.tensor(sizes))
    x = torch.zeros(2, 5, 8)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    x[0], mask[0] = x_flat[:5], True
    x[1, :3], mask[1, :3] = x_flat[5:], True
    expected = pyg(x_flat, index)  # (2, seeds * 8)
    if seeds > 1:
        # TorchCell's SortedSetTransformerAggregation projects k * C back to C; so do we.
        expected = ours.proj(expected)
    assert torch.allclose(ours(x, mask), expected, atol=1e-5)


def test_global_aggregator_config_sizes_follow_the_options() -> None:
    C = 16

    def size(**options: object) -> int:
        return sum(p.numel() for p in build_pooling("sorted_set_transformer", C, **options).parameters())

    base = size(layer_norm=False)
    # the preset's 2 ISAB encoders hold 64 induced points each
    assert size(num_induced_points=10, layer_norm=False) == base - 2 * (64 - 10) * C
    # num_induced_points is read only by ISAB encoders (TorchCell's isab yaml sets 100 with use_isab false)
    assert size(use_isab=False, num_induced_points=100) == size(use_isab=False)
    # an ISAB is two MABs and its points, a SAB one MAB
    mab = 3 * C * C + 3 * C + C * C + C + C * C + C  # in_proj, out_proj, lin (layer norm off)
    assert base - size(use_isab=False, layer_norm=False) == 2 * (mab + 64 * C)
    assert size(num_decoder_blocks=0, layer_norm=False) == base - 2 * mab
    assert size(num_encoder_blocks=3, layer_norm=False) == base + mab * 2 + 64 * C
    assert size() == base + (2 * 2 + 1 + 2) * 2 * 2 * C  # the preset's layer norm: 7 MABs x 2 LayerNorms x (weight, bias)
    # k seeds: k - 1 more seed vectors and a Linear(k C -> C)
    assert size(num_seed_points=3, layer_norm=False) == base + 2 * C + (3 * C * C + C)
    assert build_pooling("sorted_set_transformer", C, num_seed_points=3)(torch.randn(2, 4, C)).shape == (2, C)
    # heads change no size, but must divide C
    assert size(heads=2, layer_norm=False) == base
    assert build_pooling("sorted_set_transformer", C, heads=2).encoders[0].mab1.heads == 2


def test_null_options_keep_the_preset() -> None:
    torch.manual_seed(0)
    a = build_pooling("isab", 8)
    torch.manual_seed(0)
    b = build_pooling("isab", 8, num_induced_points=None, use_isab=None, heads=None)
    assert repr(a) == repr(b)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_pma_gets_encoders_only_with_use_isab() -> None:
    with pytest.raises(ConfigError, match="use_isab"):
        build_pooling("pma", 8, num_encoder_blocks=2)
    pool = build_pooling("pma", 8, num_encoder_blocks=2, use_isab=False)
    assert len(pool.encoders) == 2 and pool.encoder == "sab"


def test_global_aggregator_config_refused_where_it_cannot_apply() -> None:
    with pytest.raises(ConfigError, match="global_aggregator_config.num_seed_points.*attentional"):
        build_pooling("attentional", 8, num_seed_points=2)
    with pytest.raises(ConfigError, match="global_aggregator_config.heads=3 must divide"):
        build_pooling("isab", 8, heads=3)
    with pytest.raises(ConfigError, match="global_aggregator_config.concat"):
        build_pooling("isab", 8, concat=False)


def test_pma_is_one_pyg_pma_block_and_a_layer_norm_as_torchcells_simple_pma() -> None:
    # TorchCell's SimplePMA (torchcell/models/hetero_cell_pma.py): PyG's PoolingByMultiheadAttention
    # with one seed and layer norm, squeezed, then nn.LayerNorm; model.pooling=pma must compute the same.
    from torch_geometric.nn.aggr.utils import PoolingByMultiheadAttention as PygPMA

    torch.manual_seed(0)
    ours = build_pooling("pma", 8, heads=2)
    pyg, final = PygPMA(8, 1, 2, layer_norm=True), torch.nn.LayerNorm(8)
    assert len(ours.encoders) == 0 and len(ours.decoders) == 0 and ours.final_norm is not None
    with torch.no_grad():
        pyg.seed.copy_(ours.pma.seed)
        pyg.lin.load_state_dict(ours.pma.lin.state_dict())
        mab, pmab = ours.pma.mab, pyg.mab
        pmab.attn.in_proj_weight.copy_(mab.in_proj.weight)
        pmab.attn.in_proj_bias.copy_(mab.in_proj.bias)
        pmab.attn.out_proj.load_state_dict(mab.out_proj.state_dict())
        pmab.lin.load_state_dict(mab.lin.state_dict())
        pmab.layer_norm1.load_state_dict(mab.layer_norm1.state_dict())
        pmab.layer_norm2.load_state_dict(mab.layer_norm2.state_dict())
        final.load_state_dict(ours.final_norm.state_dict())
    x = torch.randn(3, 6, 8)
    mask = torch.tensor([[True] * 6, [True, False, True, True, False, True], [True, True, False, False, False, False]])
    expected = final(pyg(x, mask).squeeze(1))
    assert torch.allclose(ours(x, mask), expected, atol=1e-5)
    # a parameter the PMA block does not have would show here: PMA + final norm, nothing else
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in pyg.parameters()) + 16
