"""The batched forward equals the report's layout (PyG Batch of perturbed subgraphs)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from torchcell_search.config import ModelConfig
from torchcell_search.errors import ConfigError
from torchcell_search.model import build_model
from torchcell_search.model.pooling import POOLINGS
from torchcell_search.model.reference import reference_forward, reference_masks

SMALL = ModelConfig(embedding_channels=8, hidden_channels=16, num_layers=2, heads=2, head_hidden_channels=8)


@pytest.fixture(scope="module")
def demo():
    from torchcell_search.data.demo import make_demo_dataset

    # imported, not importorskip'd: a broken demo module must fail here, never skip
    return make_demo_dataset(seed=0, num_genes=60, num_records=40)


def _masks(graph, genes):
    try:
        from torchcell_search.data.masks import MaskBuilder
    except ImportError:
        return reference_masks(graph, genes)
    return MaskBuilder(graph).masks(genes)


@pytest.mark.parametrize("pooling", sorted(POOLINGS))
@pytest.mark.parametrize("norm", ["layer", "none"])
def test_batched_forward_equals_reference(demo, pooling: str, norm: str) -> None:
    torch.manual_seed(0)
    genes = demo.table.genes[:5]
    model = build_model(demo.graph, dataclasses.replace(SMALL, pooling=pooling, norm=norm, use_roles=True)).eval()
    masks = _masks(demo.graph, genes)
    assert torch.allclose(model(genes, masks).pred, reference_forward(model, demo.graph, genes, masks), atol=1e-4)


def test_batched_forward_equals_reference_with_batch_norm_in_training(demo) -> None:
    torch.manual_seed(0)
    genes = demo.table.genes[:6]
    model = build_model(demo.graph, dataclasses.replace(SMALL, norm="batch", heads=3)).train()
    masks = _masks(demo.graph, genes)
    # Batch statistics over kept nodes: wildtype alone, perturbed graphs together.
    assert torch.allclose(model(genes, masks).pred, reference_forward(model, demo.graph, genes, masks), atol=1e-4)


def test_reference_masks_keep_isoenzyme_reactions() -> None:
    from tests.model.test_hetero_cell import tiny_graph

    masks = reference_masks(tiny_graph(), torch.tensor([[1, 5], [1, 2], [0, -1]]))
    # R1 = gene 1 OR gene 2: lost only when both go; R0 needs gene 0.
    assert masks.reaction.tolist() == [[True, True, True], [True, False, True], [False, True, True]]
    assert masks.gene[2].sum() == 7  # -1 pads


def test_reference_refuses_perturbation_set(demo) -> None:
    model = build_model(demo.graph, dataclasses.replace(SMALL, kind="perturbation_set"))
    genes = demo.table.genes[:2]
    with pytest.raises(ConfigError, match="perturbation_set"):
        reference_forward(model, demo.graph, genes, reference_masks(demo.graph, genes))


@pytest.fixture
def sparse_calls(monkeypatch) -> list[int]:
    """Records each call of the changed-rows GATv2 path (one per gene relation and layer)."""
    from torchcell_search.model import layers

    calls: list[int] = []
    sparse = layers._gatv2_sparse_slots
    monkeypatch.setattr(layers, "_gatv2_sparse_slots", lambda *a: calls.append(1) or sparse(*a))
    return calls


@pytest.mark.parametrize("sparse_limit", [1.0, 0.0])
def test_layers_computing_only_the_changed_rows_equal_reference(demo, sparse_limit: float, sparse_calls) -> None:
    calls = sparse_calls
    torch.manual_seed(0)
    genes = demo.table.genes[:5]
    model = build_model(demo.graph, dataclasses.replace(SMALL, num_layers=3, use_roles=False)).eval()
    model._SPARSE_LIMIT = sparse_limit  # 1.0: every layer after the first only patches; 0.0: dense
    masks = _masks(demo.graph, genes)
    assert torch.allclose(model(genes, masks).pred, reference_forward(model, demo.graph, genes, masks), atol=1e-4)
    assert bool(calls) == (sparse_limit == 1.0)


def test_layers_past_the_sparse_limit_stay_dense_and_equal_reference(demo, sparse_calls) -> None:
    calls = sparse_calls
    torch.manual_seed(0)
    genes = demo.table.genes[:5]
    model = build_model(demo.graph, dataclasses.replace(SMALL, num_layers=4, use_roles=False)).eval()
    masks = _masks(demo.graph, genes)
    # The limit at the first layer's reach: the second layer is sparse, the third and fourth
    # (reached further) must run dense, not from a reach recomputed from the masks alone.
    model._SPARSE_LIMIT = 1.0
    first = model._reached(None, model._keeps(masks), model._plans())
    model._SPARSE_LIMIT = float(first[:, 1:].float().mean())
    assert torch.allclose(model(genes, masks).pred, reference_forward(model, demo.graph, genes, masks), atol=1e-4)
    assert len(calls) == 2  # the second layer's two gene relations


def _sparse_and_dense_model(model, genes, masks, *, loss_on: str = "pred") -> dict[str, float]:
    """Relative errors (to the largest entry) of the sparse layers against the dense ones: the
    predictions, the encoder's gene rows of every sample, and all parameter gradients together
    of an MSE on the predictions (``loss_on="pred"``) or of a fixed random function of the gene
    rows (``"gene rows"``)."""
    encoded: list[torch.Tensor] = []
    encode = model._encode
    model._encode = lambda *a, **k: encoded.append(encode(*a, **k)) or encoded[-1]
    target = torch.randn(genes.size(0), 2, generator=torch.Generator().manual_seed(0))
    runs = []
    for sparse in (True, False):
        model.sparse_slots = sparse
        model.zero_grad()
        pred = model(genes, masks).pred
        if loss_on == "pred":
            torch.nn.functional.mse_loss(pred, target).backward()
        else:
            w = torch.randn(encoded[-1].shape, generator=torch.Generator().manual_seed(0))
            (encoded[-1] * w).sum().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        runs.append((pred.detach(), encoded[-1].detach(), grads))
    del model._encode

    def rel(got: torch.Tensor, want: torch.Tensor) -> float:
        assert torch.isfinite(got).all(), "a NaN or inf"
        return float((got - want).abs().max() / want.abs().max())

    return {name: rel(runs[0][i], runs[1][i]) for i, name in enumerate(("pred", "gene rows", "grad"))}


@pytest.mark.parametrize("scale", [1.0, 12.0, 16.0, 100.0])
def test_sparse_layers_equal_dense_with_sharp_attention(demo, scale: float, sparse_calls) -> None:
    """The default HeteroCell (64 wide, 3 layers) with its GATv2 attention vectors scaled: the
    second layer's patched softmax cancelled (x12: gene rows off by 0.23, x16: NaN rows)."""
    torch.manual_seed(0)
    genes = demo.table.genes[:8]
    model = build_model(demo.graph, ModelConfig())
    model._SPARSE_LIMIT = 1.0  # the 60-gene demo is reached everywhere: force the sparse layers
    with torch.no_grad():
        for layer in model.convs:
            for name in ("physical", "regulatory"):
                layer[name].conv.att.mul_(scale)
    err = _sparse_and_dense_model(model, genes, _masks(demo.graph, genes))
    assert sparse_calls
    assert err["pred"] <= 1e-5 and err["gene rows"] <= 1e-5 and err["grad"] <= 1e-4, err


def test_sparse_layers_equal_dense_after_training_then_sharpening(demo, sparse_calls) -> None:
    """The default HeteroCell trained densely on the demo (Adam at lr 0.01, 40 steps), then its
    attention sharpened x16: the encoder's gene rows and gradients, sparse against dense layers.
    Predictions are not compared: after training at lr 0.03 they moved by 0.13 dense against
    dense between chunk sizes 2^21 and 2^12 (the head normalises the small difference of two
    pooled vectors), and lr 0.03 sometimes diverged to NaN (in the pooling's attention)."""
    torch.manual_seed(0)
    model = build_model(demo.graph, ModelConfig())
    model._SPARSE_LIMIT = 1.0
    model.sparse_slots = False  # trained densely: the trajectory is the same with the sparse layers only to rounding
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    labels = torch.nan_to_num(demo.table.labels())
    for step in range(40):
        rows = torch.arange(step * 8, step * 8 + 8) % labels.size(0)
        genes = demo.table.genes[rows]
        loss = torch.nn.functional.mse_loss(model(genes, _masks(demo.graph, genes)).pred, labels[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    genes = demo.table.genes[:8]
    masks = _masks(demo.graph, genes)
    for scale in (1.0, 16.0):
        with torch.no_grad():
            for layer in model.convs:
                for name in ("physical", "regulatory"):
                    layer[name].conv.att.mul_(scale)
        err = _sparse_and_dense_model(model, genes, masks, loss_on="gene rows")
        assert err["gene rows"] <= 1e-5 and err["grad"] <= 1e-5, (scale, err)
    assert sparse_calls
