"""The prediction head's TorchCell options: depth, residual, norm (batch over samples), activation, dropout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchcell_search.config import ACTIVATION_NAMES
from torchcell_search.errors import ConfigError
from torchcell_search.model.activations import ACTIVATIONS, build_activation
from torchcell_search.model.head import PredictionHead


def test_shape_repr_and_the_report_default() -> None:
    head = PredictionHead(16, 8, 2, num_layers=4)
    assert head(torch.randn(5, 16)).shape == (5, 2)
    assert repr(head) == "PredictionHead(16 -> 8 -> 8 -> 8, out=2, norm=layer, act=relu, residual=False)"


@pytest.mark.parametrize("num_layers", [1, 2, 4, 8])
def test_num_layers_counts_linear_layers_in_all(num_layers: int) -> None:
    # TorchCell's head_num_layers: dims = [in] + [hidden] * (n - 1) + [out], a norm after each hidden Linear.
    C, H = 12, 6
    head = PredictionHead(C, H, 2, num_layers=num_layers, norm="layer")
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == num_layers
    hidden = num_layers - 1
    expected = 0 if hidden == 0 else (C * H + H) + (hidden - 1) * (H * H + H) + hidden * 2 * H
    expected += (H if hidden else C) * 2 + 2
    assert sum(p.numel() for p in head.parameters()) == expected
    assert head(torch.randn(3, C)).shape == (3, 2)


def test_residual_adds_the_input_of_each_block() -> None:
    torch.manual_seed(0)
    plain = PredictionHead(4, 4, 2, num_layers=3, norm="none", residual=False)
    skip = PredictionHead(4, 4, 2, num_layers=3, norm="none", residual=True)
    skip.load_state_dict(plain.state_dict())  # identical weights, only the skip differs
    z = torch.randn(5, 4)
    # by hand: h1 = z + relu(W1 z + b1), h2 = h1 + relu(W2 h1 + b2), y = Wout h2 + bout
    l1, l2 = skip.lins
    h1 = z + torch.relu(l1(z))
    h2 = h1 + torch.relu(l2(h1))
    assert torch.allclose(skip(z), skip.out(h2), atol=1e-6)
    p1 = torch.relu(l1(z))
    assert torch.allclose(plain(z), plain.out(torch.relu(l2(p1))), atol=1e-6)
    assert not torch.allclose(skip(z), plain(z))


def test_residual_with_zeroed_blocks_passes_the_input_through() -> None:
    head = PredictionHead(4, 4, 2, num_layers=3, norm="layer", residual=True)
    with torch.no_grad():
        for lin in head.lins:
            lin.weight.zero_()
            lin.bias.zero_()
    z = torch.randn(3, 4)
    # Each block outputs relu(LayerNorm(0)) = 0, so only the skip carries z to the output Linear.
    assert torch.allclose(head(z), head.out(z), atol=1e-6)


def test_residual_skips_only_blocks_of_equal_width() -> None:
    head = PredictionHead(16, 8, 2, num_layers=3, residual=True)
    # 16 -> 8 has no identity skip (no learned projection either); 8 -> 8 has one.
    assert head.skips == [False, True]
    assert head(torch.randn(2, 16)).shape == (2, 2)


def test_batch_norm_normalises_over_the_samples_of_the_batch() -> None:
    torch.manual_seed(0)
    head = PredictionHead(6, 5, 2, num_layers=2, norm="batch", activation="relu").train()
    z = torch.randn(7, 6) * 3 + 2
    seen = {}
    head.norms[0].register_forward_hook(lambda mod, inp, out: seen.update(out=out.detach()))
    head(z)
    # training: statistics over the 7 samples (weight 1, bias 0 at init) -> per-channel mean 0, var 1
    assert torch.allclose(seen["out"].mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(seen["out"].var(0, unbiased=False), torch.ones(5), atol=1e-3)
    # eval: running statistics, so one sample's prediction does not depend on its batch-mates
    head.eval()
    alone = head(z[:1])
    with_others = head(torch.cat([z[:1], torch.randn(4, 6) * 10]))[:1]
    assert torch.allclose(alone, with_others, atol=1e-6)


def test_batch_norm_training_batch_of_one_uses_running_statistics() -> None:
    torch.manual_seed(0)
    head = PredictionHead(6, 5, 2, num_layers=2, norm="batch").train()
    head(torch.randn(8, 6))
    bn = head.norms[0].bn
    mean, var, seen = bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked)
    z = torch.randn(1, 6)
    out = head(z)  # nn.BatchNorm1d alone raises "Expected more than 1 value per channel when training"
    assert out.shape == (1, 2) and torch.isfinite(out).all()
    # the running statistics are read, not updated; the result equals eval mode
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    assert int(bn.num_batches_tracked) == seen
    assert torch.allclose(out, head.eval()(z), atol=1e-6)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_is_used_in_every_block(name: str) -> None:
    head = PredictionHead(4, 4, 2, num_layers=3, norm="none", activation=name)
    assert type(head.act) is type(build_activation(name))
    l1, l2 = head.lins
    z = torch.randn(3, 4)
    assert torch.allclose(head(z), head.out(head.act(l2(head.act(l1(z))))), atol=1e-6)


def test_registry_matches_config_names() -> None:
    # config.py validates against ACTIVATION_NAMES without importing torch; the registry must agree.
    assert tuple(ACTIVATIONS) == ACTIVATION_NAMES


def test_dropout_is_active_only_in_training() -> None:
    torch.manual_seed(0)
    head = PredictionHead(8, 8, 2, num_layers=3, norm="none", dropout=0.5)
    z = torch.randn(4, 8)
    assert not torch.allclose(head.train()(z), head(z))  # two dropout draws differ
    assert torch.equal(head.eval()(z), head(z))


def test_bad_options_raise_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="prediction_head_config.head_norm"):
        PredictionHead(4, 4, norm="group")
    with pytest.raises(ConfigError, match="prediction_head_config.activation"):
        PredictionHead(4, 4, activation="swish")
    with pytest.raises(ConfigError, match="head_num_layers"):
        PredictionHead(4, 4, num_layers=0)
