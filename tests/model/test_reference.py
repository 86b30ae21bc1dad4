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
