"""HeteroCell on a tiny hand-built cell graph: shapes, gradients, options, sizes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch_geometric.data import HeteroData

from torchcell_search.config import ModelConfig
from torchcell_search.data.types import GPR, METABOLISM, PHYSICAL, REGULATORY, CellGraph
from torchcell_search.errors import ConfigError, DataError
from torchcell_search.model import HeteroCell, build_model
from torchcell_search.model.pooling import POOLINGS
from torchcell_search.model.reference import reference_masks

SMALL = ModelConfig(embedding_channels=8, hidden_channels=8, num_layers=2, heads=2, head_hidden_channels=8, use_roles=False)
# The report's printed model: our defaults without the SGA roles and the pooling's layer norm.
REPORT = ModelConfig(use_roles=False, pool_layer_norm=False)


def tiny_graph(num_genes: int = 8) -> CellGraph:
    """8 genes in a ring (+ chords), 2 TF edges, 3 reactions (one with isoenzymes), 4 metabolites."""
    data = HeteroData()
    data["gene"].num_nodes = num_genes
    data["gene"].node_ids = [f"G{i}" for i in range(num_genes)]
    data["reaction"].num_nodes, data["reaction"].node_ids = 3, ["R0", "R1", "R2"]
    data["metabolite"].num_nodes, data["metabolite"].node_ids = 4, ["M0", "M1", "M2", "M3"]
    a = torch.arange(num_genes)
    und = torch.stack([a, (a + 1) % num_genes])
    und = torch.cat([und, torch.tensor([[0], [4]])], dim=1)
    data[PHYSICAL].edge_index = torch.cat([und, und.flip(0)], dim=1)
    data[REGULATORY].edge_index = torch.tensor([[2, 2], [5, 6]])
    data[GPR].hyperedge_index = torch.tensor([[0, 1, 2, 3], [0, 1, 1, 2]])
    data[METABOLISM].hyperedge_index = torch.tensor([[0, 1, 1, 2, 2, 3], [0, 0, 1, 1, 2, 2]])
    data[METABOLISM].stoichiometry = torch.tensor([-1.0, 1.0, -2.0, 1.0, -1.0, 1.0])
    # R0 needs gene 0; R1 = gene 1 OR gene 2 (isoenzymes); R2 needs gene 3.
    return CellGraph(
        data=data,
        gpr_clause_reaction=torch.tensor([0, 1, 1, 2]),
        gpr_clause_genes=torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]]),
        essential=torch.zeros(num_genes, dtype=torch.bool),
    )


GENES = torch.tensor([[0, 3], [1, 2], [5, 6]])


@pytest.mark.parametrize("kind", ["hetero_cell", "perturbation_set"])
@pytest.mark.parametrize("pooling", sorted(POOLINGS))
def test_forward_shapes_grads_no_nan(kind: str, pooling: str) -> None:
    torch.manual_seed(0)
    graph = tiny_graph()
    model = build_model(graph, dataclasses.replace(SMALL, kind=kind, pooling=pooling, use_roles=True, dropout=0.1))
    out = model(GENES, reference_masks(graph, GENES))
    assert out.pred.shape == (3, 2) and out.z_p.shape == (3, 8)
    assert torch.isfinite(out.pred).all()
    out.pred.sum().backward()
    # Gradients reach the gene embeddings, and are finite everywhere.
    assert model.gene_embedding.weight.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("norm", ["layer", "batch", "none"])
def test_norm_options_run(norm: str) -> None:
    graph = tiny_graph()
    model = build_model(graph, dataclasses.replace(SMALL, norm=norm))
    assert torch.isfinite(model(GENES, reference_masks(graph, GENES)).pred).all()


def test_same_seed_same_model_same_output() -> None:
    graph = tiny_graph()
    masks = reference_masks(graph, GENES)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        outs.append(build_model(graph, SMALL)(GENES, masks).pred)
    assert torch.equal(outs[0], outs[1])


def test_deleting_different_genes_changes_prediction() -> None:
    torch.manual_seed(0)
    graph = tiny_graph()
    pred = build_model(graph, SMALL).eval()(GENES, reference_masks(graph, GENES)).pred
    assert not torch.allclose(pred[0], pred[1])


def test_roles_make_the_prediction_order_aware() -> None:
    torch.manual_seed(0)
    graph = tiny_graph()
    genes = torch.tensor([[0, 5], [5, 0]])
    masks = reference_masks(graph, genes)
    for kind in ("hetero_cell", "perturbation_set"):
        blind = build_model(graph, dataclasses.replace(SMALL, kind=kind)).eval()(genes, masks).pred
        aware = build_model(graph, dataclasses.replace(SMALL, kind=kind, use_roles=True)).eval()(genes, masks).pred
        # Without roles (query, array) and (array, query) are the same deletion.
        assert torch.allclose(blind[0], blind[1], atol=1e-6)
        assert not torch.allclose(aware[0], aware[1], atol=1e-6)


def test_gene_embeddings_shape() -> None:
    model = build_model(tiny_graph(), SMALL)
    assert model.gene_embeddings().shape == (8, 8)


def test_repr_shows_sizes() -> None:
    text = repr(build_model(tiny_graph(), SMALL))
    assert "genes=8, reactions=3, metabolites=4, channels=8->8, layers=2, heads=2" in text
    assert "Parameter count" in build_model(tiny_graph(), SMALL).describe()


def test_unknown_options_raise_config_error() -> None:
    graph = tiny_graph()
    with pytest.raises(ConfigError, match="model.pooling"):
        build_model(graph, dataclasses.replace(SMALL, pooling="mean"))
    with pytest.raises(ConfigError, match="model.norm"):
        build_model(graph, dataclasses.replace(SMALL, norm="group"))
    with pytest.raises(ConfigError, match="model.kind"):
        build_model(graph, dataclasses.replace(SMALL, kind="dcell"))


def test_mask_shape_mismatch_raises_data_error() -> None:
    graph = tiny_graph()
    with pytest.raises(DataError, match="masks.gene"):
        build_model(graph, SMALL)(GENES[:2], reference_masks(graph, GENES))


def test_parameter_count_changes_by_embedding_width_per_gene() -> None:
    a = sum(p.numel() for p in HeteroCell(tiny_graph(8), REPORT).parameters())
    b = sum(p.numel() for p in HeteroCell(tiny_graph(11), REPORT).parameters())
    assert b - a == 64 * 3


def test_report_sized_model_has_report_parameter_count_minus_shared_norm_bug() -> None:
    model = HeteroCell(tiny_graph(), REPORT)  # 64 wide, 3 layers, heads=1, no roles
    parts = model.parameter_breakdown()
    embeddings = parts["gene_embedding"] + parts["reaction_embedding"] + parts["metabolite_embedding"]
    assert sum(parts.values()) == sum(p.numel() for p in model.parameters())
    # Report: 1,167,493 - (6607 + 4881 + 2534) * 64 = 270,085 non-embedding parameters; we
    # give each PreProcessor layer its own LayerNorm (+128).
    assert sum(parts.values()) - embeddings == 270_085 + 128


def test_buffers_follow_the_module() -> None:
    model = build_model(tiny_graph(), SMALL).to(torch.float32)
    names = {n for n, _ in model.named_buffers()}
    assert {"physical_index", "regulatory_index", "gpr_index", "metabolism_index", "stoichiometry"} <= names


def test_activation_reaches_preprocessor_convs_and_head() -> None:
    model = build_model(tiny_graph(), dataclasses.replace(SMALL, activation="gelu"))
    acts = [type(m.act) for m in model.modules() if hasattr(m, "act") and isinstance(m.act, torch.nn.Module)]
    # PreProcessor, 4 relations x 2 layers, and the head (it inherits model.activation when null)
    assert acts == [torch.nn.GELU] * (1 + 4 * 2 + 1)
    torch.manual_seed(0)
    relu = build_model(tiny_graph(), SMALL)
    torch.manual_seed(0)
    gelu = build_model(tiny_graph(), dataclasses.replace(SMALL, activation="gelu"))
    masks = reference_masks(tiny_graph(), GENES)
    # same weights (activations have none), different function
    assert not torch.allclose(relu(GENES, masks).pred, gelu(GENES, masks).pred)


def test_head_options_inherit_the_model_when_null_and_override_when_set() -> None:
    inherit = build_model(tiny_graph(), dataclasses.replace(SMALL, norm="batch", activation="tanh", dropout=0.2))
    head = inherit.prediction_head
    assert (head.norm_name, head.activation_name, head.dropout.p) == ("batch", "tanh", 0.2)
    own = build_model(tiny_graph(), dataclasses.replace(
        SMALL, norm="batch", activation="tanh", dropout=0.2,
        head_norm="none", head_activation="silu", head_dropout=0.0, head_num_layers=2, head_residual=True))
    head = own.prediction_head
    assert (head.norm_name, head.activation_name, head.dropout.p, head.residual) == ("none", "silu", 0.0, True)
    assert len(head.lins) == 1 and head.skips == [True]
    # the rest of the model keeps model.norm / model.activation
    assert type(own.preprocessor.act) is torch.nn.Tanh


def test_head_num_layers_sets_the_head_size() -> None:
    def head_params(n: int) -> int:
        return build_model(tiny_graph(), dataclasses.replace(SMALL, head_num_layers=n)).parameter_breakdown()["prediction_head"]

    # each extra hidden block: Linear(8, 8) + LayerNorm(8) = 72 + 16
    assert head_params(4) - head_params(2) == 2 * (72 + 16)
    assert head_params(1) == 8 * 2 + 2


def test_batch_head_norm_trains_on_a_batch_of_one() -> None:
    graph = tiny_graph()
    model = build_model(graph, dataclasses.replace(SMALL, head_norm="batch")).train()
    genes = GENES[:1]
    out = model(genes, reference_masks(graph, genes))
    out.pred.sum().backward()
    assert torch.isfinite(out.pred).all()


def test_global_aggregator_config_drives_the_pooling() -> None:
    cfg = dataclasses.replace(SMALL, pooling="sorted_set_transformer", pool_use_isab=False, pool_num_encoder_blocks=1,
                              pool_num_decoder_blocks=1, pool_num_seed_points=2, pool_heads=2, pool_layer_norm=True,
                              pool_dropout=0.25)
    model = build_model(tiny_graph(), cfg)
    pool = model.global_aggregator
    assert (pool.encoder, len(pool.encoders), len(pool.decoders), pool.pma.seed.size(1), pool.heads) == ("sab", 1, 1, 2, 2)
    assert pool.pma.mab.layer_norm1 is not None and pool.pma.mab.dropout == 0.25
    out = model(GENES, reference_masks(tiny_graph(), GENES))
    assert out.pred.shape == (3, 2) and out.z_p.shape == (3, 8)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(pooling="attentional", pool_num_seed_points=2), "global_aggregator_config.num_seed_points"),
        (dict(kind="perturbation_set", pool_use_isab=True), "global_aggregator_config.use_isab"),
        (dict(kind="perturbation_set", pool_dropout=0.1), "global_aggregator_config.dropout"),
        (dict(activation="swish"), "model.activation"),
    ],
)
def test_options_the_model_cannot_take_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_model(tiny_graph(), dataclasses.replace(SMALL, **changes))


@pytest.mark.parametrize("pooling", ["attentional", "sorted_set_transformer"])
def test_shared_wildtype_work_gives_the_per_slot_gradients(pooling: str) -> None:
    torch.manual_seed(0)
    graph = tiny_graph()
    cfg = dataclasses.replace(SMALL, num_layers=3, pooling=pooling, heads=1)
    model = build_model(graph, cfg)
    genes = torch.tensor([[0, 3], [1, 2], [5, 6], [4, -1]])
    masks = reference_masks(graph, genes)
    target = torch.randn(4, 2)
    convs = [layer[r].conv for layer in model.convs for r in ("physical", "regulatory")]
    grads = []
    for share in (True, False):
        for c in convs:
            c.share_slot0 = share
        model.zero_grad()
        torch.nn.functional.mse_loss(model(genes, masks).pred, target).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    # Scores shared with the wildtype slot (and its first layer computed once) change no gradient.
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5), name


@pytest.mark.parametrize("pooling", ["attentional", "sorted_set_transformer"])
def test_layers_computing_only_the_changed_rows_give_the_dense_gradients(pooling: str, monkeypatch) -> None:
    from torchcell_search.model import layers

    calls = []
    sparse = layers._gatv2_sparse_slots
    monkeypatch.setattr(layers, "_gatv2_sparse_slots", lambda *a: calls.append(1) or sparse(*a))
    torch.manual_seed(0)
    graph = tiny_graph()
    model = build_model(graph, dataclasses.replace(SMALL, num_layers=3, pooling=pooling, heads=1))
    model._SPARSE_LIMIT = 1.0  # the tiny graph is reached everywhere: force the sparse layers
    genes = torch.tensor([[0, 3], [1, 2], [5, 6], [4, -1]])
    masks = reference_masks(graph, genes)
    target = torch.randn(4, 2)
    grads = []
    for sparse_slots in (True, False, True):
        model.sparse_slots = sparse_slots
        model.zero_grad()
        torch.nn.functional.mse_loss(model(genes, masks).pred, target).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    # Layers 2-3 computed from the changed rows only (patched softmax) change no gradient,
    # and the sparse path repeats bit for bit.
    assert calls and grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5), name
        assert torch.equal(grads[0][name], grads[2][name]), name


@pytest.mark.parametrize("kind", ["hetero_cell", "perturbation_set"])
def test_checkpoints_with_fewer_profile_features_load_and_predict_as_before(kind: str) -> None:
    from torchcell_search.model.collaborative import NUM_PROFILE_FEATURES

    F, old_f = NUM_PROFILE_FEATURES, NUM_PROFILE_FEATURES - 2  # before the SMF-similarity columns
    cfg = dataclasses.replace(SMALL, kind=kind, profile_features=True)
    graph = tiny_graph()
    torch.manual_seed(0)
    model = build_model(graph, cfg).eval()
    model.profile_tables = torch.randn(F, 1, 1)
    with torch.no_grad():  # the model a 19-feature checkpoint describes
        model.profile_proj.weight[:, old_f:] = 0.0
        model.profile_skip.weight[:, old_f:] = 0.0
    want = model(GENES, reference_masks(graph, GENES)).pred
    state = model.state_dict()
    state["profile_proj.weight"] = state["profile_proj.weight"][:, :old_f]
    state["profile_skip.weight"] = state["profile_skip.weight"][:, :old_f]
    state["profile_tables"] = state["profile_tables"][:old_f]
    state["profile_scale"] = state["profile_scale"][:, :old_f]
    torch.manual_seed(1)
    loaded = build_model(graph, cfg).eval()
    loaded.load_state_dict(state)
    assert loaded.profile_tables.shape[0] == F and loaded.profile_scale[1, old_f:].eq(1).all()
    assert torch.allclose(loaded(GENES, reference_masks(graph, GENES)).pred, want, atol=1e-6)
    state["profile_proj.weight"] = torch.zeros(cfg.hidden_channels, F + 1)  # more columns than the code knows
    with pytest.raises(RuntimeError, match="size mismatch"):
        build_model(graph, cfg).load_state_dict(state)
