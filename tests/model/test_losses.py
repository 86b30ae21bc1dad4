"""CompositeLoss against direct loop evaluations of the report's formulas."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from torchcell_search.config import LossConfig
from torchcell_search.errors import DataError
from torchcell_search.model.losses import CompositeLoss, phenotype_weights, silverman_bandwidth, supcr_loss

NAN = float("nan")


# --- plain-Python references -------------------------------------------------------------


def _cos(a: list[float], b: list[float]) -> float:
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b)) / (na * nb)


def _dist(yi: list[float], yj: list[float]) -> float | None:
    """L1 over labels present in both, rescaled to the label count; None if none shared."""
    shared = [(a, b) for a, b in zip(yi, yj) if not math.isnan(a) and not math.isnan(b)]
    if not shared:
        return None
    return sum(abs(a - b) for a, b in shared) * len(yi) / len(shared)


def _supcr_ref(z: list[list[float]], y: list[list[float]], tau: float) -> float:
    """The report's SupCR formula as loops (pairs without a shared label dropped)."""
    N = len(z)
    anchor_losses = []
    for i in range(N):
        partners = [j for j in range(N) if j != i and _dist(y[i], y[j]) is not None]
        if not partners:
            continue
        total = 0.0
        for j in partners:
            dij = _dist(y[i], y[j])
            num = math.exp(_cos(z[i], z[j]) / tau)
            den = sum(math.exp(_cos(z[i], z[k]) / tau) for k in partners if _dist(y[i], y[k]) >= dij)
            total += math.log(num / den)
        anchor_losses.append(-total / len(partners))
    return sum(anchor_losses) / len(anchor_losses) if anchor_losses else 0.0


def _mse_ref(pred: list[list[float]], target: list[list[float]]) -> list[float | None]:
    out: list[float | None] = []
    for t in range(len(pred[0])):
        sq = [(p[t] - y[t]) ** 2 for p, y in zip(pred, target) if not math.isnan(y[t])]
        out.append(sum(sq) / len(sq) if sq else None)
    return out


def _normal_quantile(p: float) -> float:
    return statistics.NormalDist().inv_cdf(p)


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- SupCR ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_supcr_matches_loop_formula(n: int) -> None:
    z, y = _rand(n, 4, seed=n), _rand(n, 2, seed=100 + n)
    got = float(supcr_loss(z.float(), y.float(), 0.5))
    # The vectorised loss equals the report's double sum written out.
    assert got == pytest.approx(_supcr_ref(z.tolist(), y.tolist(), 0.5), rel=1e-4, abs=1e-5)


def test_supcr_batch_of_one_is_zero_and_differentiable() -> None:
    z = torch.randn(1, 4, requires_grad=True)
    loss = supcr_loss(z, torch.zeros(1, 2), 0.1)
    # No pairs, no loss; backward still works.
    assert float(loss) == 0.0
    loss.backward()


def test_supcr_tied_labels_share_denominators() -> None:
    # Labels with exact ties in distance: every k at the tied distance enters the denominator.
    y = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [2.0, 1.0]])
    z = _rand(5, 3, seed=7)
    got = float(supcr_loss(z.float(), y, 0.2))
    assert got == pytest.approx(_supcr_ref(z.tolist(), y.tolist(), 0.2), rel=1e-4, abs=1e-5)


def test_supcr_nan_labels_use_shared_labels_and_drop_unshared_pairs() -> None:
    y = torch.tensor([[0.5, NAN], [NAN, 1.0], [0.1, 0.2], [NAN, -0.3], [2.0, 1.5]])
    z = _rand(5, 3, seed=11)
    got = float(supcr_loss(z.float(), y, 0.3))
    # (0, 1) and (0, 3) share no label and are dropped; the rest use the rescaled L1.
    assert got == pytest.approx(_supcr_ref(z.tolist(), y.tolist(), 0.3), rel=1e-4, abs=1e-5)


def test_supcr_gradients_finite_with_isolated_anchor() -> None:
    # Sample 0 shares no label with anyone: it is skipped, and no NaN leaks into gradients.
    y = torch.tensor([[1.0, NAN], [NAN, 0.0], [NAN, 1.0], [NAN, 2.0]])
    z = torch.randn(4, 3, requires_grad=True)
    loss = supcr_loss(z, y, 0.1)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(z.grad).all()
    assert float(z.grad[0].abs().sum()) == 0.0


def test_supcr_prefers_embeddings_ordered_like_labels() -> None:
    # Embeddings that follow the labels' order score lower than shuffled ones.
    angles = torch.linspace(0, 1.5, 8)
    y = torch.stack([angles, angles], 1)
    z_ordered = torch.stack([angles.cos(), angles.sin()], 1)
    z_shuffled = z_ordered[torch.tensor([3, 7, 0, 5, 1, 6, 2, 4])]
    assert float(supcr_loss(z_ordered, y, 0.1)) < float(supcr_loss(z_shuffled, y, 0.1))


# --- MSE -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5])
def test_mse_per_label_over_present_entries(n: int) -> None:
    pred, target = _rand(n, 2, seed=n).float(), _rand(n, 2, seed=50 + n).float()
    if n > 1:
        target[0, 0] = NAN
    loss = CompositeLoss(LossConfig(lambda_dist=0.0, lambda_supcr=0.0))
    total, terms = loss(pred, target, torch.randn(n, 4))
    ref = _mse_ref(pred.tolist(), target.tolist())
    # Each label's MSE uses only its present entries; the total averages the labels.
    assert float(terms["mse/fitness"]) == pytest.approx(ref[0], rel=1e-5)
    assert float(terms["mse/gene_interaction"]) == pytest.approx(ref[1], rel=1e-5)
    assert float(total) == pytest.approx((ref[0] + ref[1]) / 2, rel=1e-5)


def test_mse_label_missing_from_whole_batch_contributes_nothing() -> None:
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    target = torch.tensor([[NAN, 1.0], [NAN, 2.0]])
    total, terms = CompositeLoss(LossConfig(lambda_dist=0.0, lambda_supcr=0.0))(pred, target, torch.randn(2, 3))
    # Only gene_interaction counts: ((2-1)^2 + (4-2)^2) / 2 = 2.5, not averaged with a NaN.
    assert float(total) == pytest.approx(2.5)
    assert "mse/fitness" not in terms
    total.backward()
    assert torch.equal(pred.grad[:, 0], torch.zeros(2))
    assert torch.isfinite(pred.grad).all()


def test_all_labels_missing_gives_zero_loss_with_graph() -> None:
    pred = torch.randn(3, 2, requires_grad=True)
    target = torch.full((3, 2), NAN)
    cfg = LossConfig(lambda_dist=1.0, lambda_supcr=1.0)
    total, _ = CompositeLoss(cfg, torch.randn(20, 2))(pred, target, torch.randn(3, 4, requires_grad=True))
    assert float(total) == 0.0
    total.backward()  # must not raise
    assert torch.isfinite(pred.grad).all()


# --- DistLoss ------------------------------------------------------------------------------


def test_kde_pseudo_labels_match_normal_quantiles() -> None:
    train = _rand(20000, 2, seed=3).float()
    loss = CompositeLoss(LossConfig(), train)
    m = 9
    got = loss.pseudo_labels(1, m)
    # KDE variance is 1 + h^2 (h ~ 0.1 here): quantiles sit within a few hundredths of N(0,1)'s.
    for i in range(m):
        assert float(got[i]) == pytest.approx(_normal_quantile((i + 0.5) / m), abs=0.05)


def test_kde_pseudo_labels_follow_skewed_training_distribution() -> None:
    # An exponential sample: pseudo-labels track -log(1 - p), not a symmetric shape.
    u = torch.rand(20000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x = -torch.log1p(-u)
    loss = CompositeLoss(LossConfig(), torch.stack([x, -x], 1))
    got = loss.pseudo_labels(0, 4)
    for i, p in enumerate([0.125, 0.375, 0.625, 0.875]):
        assert float(got[i]) == pytest.approx(-math.log(1 - p), abs=0.06)
    # Second label is the mirror image.
    assert torch.allclose(loss.pseudo_labels(1, 4), -got.flip(0), atol=0.02)


def test_silverman_bandwidth_formula() -> None:
    x = _rand(1000, seed=9)
    std = float(x.std())
    q = torch.quantile(x, torch.tensor([0.25, 0.75], dtype=torch.float64))
    iqr = float(q[1] - q[0])
    assert silverman_bandwidth(x) == pytest.approx(0.9 * min(std, iqr / 1.34) * 1000 ** -0.2)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_dist_term_matches_sorted_pseudo_label_formula(n: int) -> None:
    train = _rand(500, 2, seed=21).float()
    pred, target = _rand(n, 2, seed=n).float(), _rand(n, 2, seed=9 + n).float()
    if n > 2:
        target[1, 1] = NAN
    loss = CompositeLoss(LossConfig(lambda_dist=1.0, lambda_supcr=0.0), train)
    _, terms = loss(pred, target, torch.randn(n, 3))
    per_label = []
    for t in range(2):
        p = sorted(pred[i, t].item() for i in range(n) if not math.isnan(target[i, t].item()))
        s = loss.pseudo_labels(t, len(p)).tolist()
        per_label.append(sum((a - b) ** 2 for a, b in zip(p, s)) / len(p))
    # dist = mean over labels of (1/M) sum (S_pred[i] - S_label[i])^2.
    assert float(terms["dist"]) == pytest.approx(sum(per_label) / 2, rel=1e-5)


def test_dist_loss_independent_of_batch_order_and_zero_on_pseudo_labels() -> None:
    train = _rand(500, 2, seed=2).float()
    loss = CompositeLoss(LossConfig(lambda_dist=1.0, lambda_supcr=0.0), train)
    pred = torch.stack([loss.pseudo_labels(0, 6), loss.pseudo_labels(1, 6)], 1).float()
    perm = torch.tensor([4, 1, 5, 0, 3, 2])
    _, terms = loss(pred[perm], torch.zeros(6, 2), torch.randn(6, 3))
    # Predictions that are exactly the pseudo-labels, in any order, have zero DistLoss.
    assert float(terms["dist"]) == pytest.approx(0.0, abs=1e-10)


def test_dist_needs_train_labels() -> None:
    with pytest.raises(DataError, match="train_labels"):
        CompositeLoss(LossConfig(lambda_dist=0.1))
    with pytest.raises(DataError, match="train_labels"):
        CompositeLoss(LossConfig(), torch.randn(10, 3))


# --- composition, weights, uncertainty -----------------------------------------------------


def test_total_is_weighted_sum_of_terms() -> None:
    cfg = LossConfig(lambda_dist=0.7, lambda_supcr=0.3, supcr_temperature=0.2)
    pred, target, z = torch.randn(6, 2), torch.randn(6, 2), torch.randn(6, 5)
    total, terms = CompositeLoss(cfg, torch.randn(100, 2))(pred, target, z)
    ref_supcr = _supcr_ref(z.tolist(), target.tolist(), 0.2)
    assert float(terms["supcr"]) == pytest.approx(ref_supcr, rel=1e-4)
    expected = float(terms["mse"]) + 0.7 * float(terms["dist"]) + 0.3 * ref_supcr
    assert float(total) == pytest.approx(expected, rel=1e-5)


def test_zero_weights_switch_terms_off() -> None:
    pred, target, z = torch.randn(6, 2), torch.randn(6, 2), torch.randn(6, 5)
    total, terms = CompositeLoss(LossConfig(lambda_dist=0.0, lambda_supcr=0.0))(pred, target, z)
    assert float(terms["dist"]) == 0.0 and float(terms["supcr"]) == 0.0
    assert float(total) == pytest.approx(float(((pred - target) ** 2).mean()), rel=1e-6)


def test_uncertainty_weighting_formula_and_gradients() -> None:
    cfg = LossConfig(lambda_dist=0.0, lambda_supcr=0.0, uncertainty_weighting=True)
    loss = CompositeLoss(cfg, task_weights=(1.0, 2.0), sigma_penalty=0.1)
    # sigma_t = exp(log_sigma_t)
    with torch.no_grad():
        loss.log_sigma.copy_(torch.tensor([0.3, -0.2]))
    pred = torch.randn(5, 2, requires_grad=True)
    target = torch.randn(5, 2)
    total, terms = loss(pred, target, torch.randn(5, 3))
    ref = _mse_ref(pred.tolist(), target.tolist())
    s = [math.exp(0.3), math.exp(-0.2)]
    w = [1.0, 2.0]
    expected = sum(w[t] / (2 * s[t] ** 2) * ref[t] + math.log(s[t]) for t in range(2)) + 0.1 * sum(
        s[t] ** -2 for t in range(2)
    )
    assert float(total) == pytest.approx(expected, rel=1e-5)
    assert float(terms["sigma/fitness"]) == pytest.approx(s[0], rel=1e-6)
    total.backward()
    # log sigma is learnable: it receives a gradient.
    assert loss.log_sigma.grad is not None and torch.isfinite(loss.log_sigma.grad).all()
    assert [n for n, _ in loss.named_parameters()] == ["log_sigma"]


def test_no_parameters_without_uncertainty_weighting() -> None:
    assert list(CompositeLoss(LossConfig(lambda_dist=0.0)).parameters()) == []


def test_gradients_finite_with_nan_labels_all_terms() -> None:
    cfg = LossConfig(lambda_dist=1.0, lambda_supcr=1.0, uncertainty_weighting=True)
    loss = CompositeLoss(cfg, torch.randn(200, 2))
    pred = torch.randn(7, 2, requires_grad=True)
    z = torch.randn(7, 4, requires_grad=True)
    target = torch.randn(7, 2)
    target[torch.tensor([0, 2, 5]), torch.tensor([0, 1, 0])] = NAN
    total, terms = loss(pred, target, z)
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(v) for v in terms.values())
    assert torch.isfinite(pred.grad).all() and torch.isfinite(z.grad).all()


def test_half_precision_inputs_give_float32_loss() -> None:
    # AMP: pred/z_p may come out of autocast in bfloat16; the loss is computed in float32.
    loss = CompositeLoss(LossConfig(lambda_dist=0.5, lambda_supcr=0.5), torch.randn(50, 2))
    total, _ = loss(torch.randn(4, 2).bfloat16(), torch.randn(4, 2), torch.randn(4, 3).bfloat16())
    assert total.dtype == torch.float32 and torch.isfinite(total)


def test_bad_shapes_raise_data_error() -> None:
    loss = CompositeLoss(LossConfig(lambda_dist=0.0))
    with pytest.raises(DataError, match="pred"):
        loss(torch.randn(4, 3), torch.randn(4, 2), torch.randn(4, 3))


NAN = float("nan")


def test_phenotype_weights_by_hand() -> None:
    # 4 train records: fitness present in 1, gene_interaction in all 4 -> N = 5
    train = torch.tensor([[0.1, 1.0], [NAN, 2.0], [NAN, 3.0], [NAN, 4.0]])
    # TorchCell: w_t = 1 - n_t / N -> fitness 1 - 1/5 = 0.8, gene_interaction 1 - 4/5 = 0.2 (sum 1)
    assert phenotype_weights(train).tolist() == pytest.approx([0.8, 0.2])
    # every label on every record: equal weights
    assert phenotype_weights(torch.randn(7, 2)).tolist() == pytest.approx([0.5, 0.5])


def test_weighted_phenotype_loss_values_by_hand() -> None:
    train = torch.tensor([[0.1, 1.0], [NAN, 2.0], [NAN, 3.0], [NAN, 4.0]])  # weights 0.8, 0.2
    cfg = LossConfig(lambda_dist=0.0, lambda_supcr=0.0, weighted_phenotype_loss=True)
    loss = CompositeLoss(cfg, train)
    pred = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    target = torch.tensor([[0.0, 1.0], [NAN, 0.0], [1.0, 1.0]])
    # fitness MSE over rows 0 and 2: (1 + 4) / 2 = 2.5; gene_interaction over all three: (1 + 4 + 0) / 3 = 5/3
    total, terms = loss(pred, target, torch.randn(3, 4))
    assert float(total) == pytest.approx(0.8 * 2.5 + 0.2 * 5 / 3, rel=1e-6)
    # unweighted: the plain mean of the two
    plain, _ = CompositeLoss(LossConfig(lambda_dist=0.0, lambda_supcr=0.0), train)(pred, target, torch.randn(3, 4))
    assert float(plain) == pytest.approx((2.5 + 5 / 3) / 2, rel=1e-6)
    # a batch where only gene_interaction is present: the weighted mean over present labels is its MSE
    only_gi = torch.tensor([[NAN, 1.0], [NAN, 0.0]])
    total, _ = loss(pred[:2], only_gi, torch.randn(2, 4))
    assert float(total) == pytest.approx((1 + 4) / 2, rel=1e-6)


def test_weighted_phenotype_loss_weights_the_dist_term_too() -> None:
    train = torch.tensor([[0.1, 1.0], [NAN, 2.0], [0.3, 3.0], [NAN, 4.0], [0.2, 0.5]])  # n = 3, 5 -> w = 5/8, 3/8
    cfg = LossConfig(lambda_dist=1.0, lambda_supcr=0.0, weighted_phenotype_loss=True)
    weighted = CompositeLoss(cfg, train)
    pred, target = torch.randn(6, 2), torch.randn(6, 2)
    per_label = []
    for t in range(2):
        s_label = weighted.pseudo_labels(t, 6).float()
        per_label.append(float(((torch.sort(pred[:, t]).values - s_label) ** 2).mean()))
    _, terms = weighted(pred, target, torch.randn(6, 3))
    assert float(terms["dist"]) == pytest.approx(5 / 8 * per_label[0] + 3 / 8 * per_label[1], rel=1e-5)


def test_weighted_phenotype_loss_scales_uncertainty_task_weights() -> None:
    train = torch.tensor([[0.1, 1.0], [NAN, 2.0], [NAN, 3.0], [NAN, 4.0]])  # weights 0.8, 0.2
    cfg = LossConfig(lambda_dist=0.0, lambda_supcr=0.0, uncertainty_weighting=True, weighted_phenotype_loss=True)
    loss = CompositeLoss(cfg, train)
    pred, target = torch.randn(5, 2), torch.randn(5, 2)
    total, _ = loss(pred, target, torch.randn(5, 3))
    ref = _mse_ref(pred.tolist(), target.tolist())
    # sigma = 1: sum_t (T w_t / 2) L_t
    assert float(total) == pytest.approx(2 * 0.8 / 2 * ref[0] + 2 * 0.2 / 2 * ref[1], rel=1e-5)


def test_weighted_phenotype_loss_refuses_a_label_without_training_records() -> None:
    # TorchCell would weight gene_interaction 1 - 3/3 = 0 and train on NaN; we say so instead.
    train = torch.tensor([[NAN, 1.0], [NAN, 2.0], [NAN, 3.0]])
    with pytest.raises(DataError, match="is_weighted_phenotype_loss.*fitness 0"):
        CompositeLoss(LossConfig(lambda_dist=0.0, weighted_phenotype_loss=True), train)
    with pytest.raises(DataError, match="needs train_labels"):
        CompositeLoss(LossConfig(lambda_dist=0.0, weighted_phenotype_loss=True))
