"""The report's composite loss: MSE + lambda_dist * DistLoss + lambda_supcr * SupCR.

.. math::

    \\mathcal{L} = \\mathcal{L}_{\\text{MSE}}(y, \\hat y)
        + \\lambda_{\\text{dist}} \\mathcal{L}_{\\text{dist}}(y, \\hat y)
        + \\lambda_{\\text{supcr}} \\mathcal{L}_{\\text{SupCR}}(z_P, y)

(report 003, "Loss Function"), optionally with the report's uncertainty weighting of the
per-label MSE terms. Every term works on standardised labels with NaN for a missing
label and skips missing entries, so a batch never turns the loss into NaN.

Papers:
    DistLoss: Nie et al. 2024, "Dist Loss: Enhancing Regression in Few-Shot Region
    through Distribution Distillation", https://arxiv.org/abs/2411.15216.
    SupCR: Zha et al. 2023, "Rank-N-Contrast: Learning Continuous Representations for
    Regression" (the supervised contrastive regression loss), https://arxiv.org/abs/2210.01189.
    Uncertainty weighting: Kendall, Gal and Cipolla 2018, "Multi-Task Learning Using
    Uncertainty to Weigh Losses", https://arxiv.org/abs/1705.07115.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from torchcell_search.config import LossConfig
from torchcell_search.data.types import LABELS
from torchcell_search.errors import DataError

__all__ = ["CompositeLoss", "dist_loss", "kde_quantiles", "masked_mse", "phenotype_weights", "supcr_loss"]

# Points of the KDE's CDF grid per label; quantiles interpolate linearly between them.
_GRID = 4096
# Training values beyond this count are linearly binned onto _GRID centres before the CDF
# is evaluated (error O(bin width^2), far below the bandwidth on real data).
_EXACT_MAX = 2048
# A finite stand-in for log(0): keeps logcumsumexp and its gradient free of NaN.
_NEG = -1e9


def _present(target: Tensor) -> Tensor:
    """``(B, T)`` bool: the label is measured (finite)."""
    return torch.isfinite(target)


def _zero(x: Tensor) -> Tensor:
    """A scalar 0 connected to ``x``'s graph, so ``backward()`` works on an empty term."""
    return x.reshape(-1)[:0].sum()


def silverman_bandwidth(x: Tensor) -> float:
    """Silverman's rule of thumb :math:`h = 0.9 \\min(\\hat\\sigma, \\mathrm{IQR}/1.34) n^{-1/5}`.

    Falls back to :math:`\\hat\\sigma` when the IQR is 0, and to ``1e-3 * max(1, |mean|)``
    for a constant sample (a KDE needs a positive bandwidth).

    Args:
        x: ``(n,)`` finite values, ``n >= 1``.
    """
    x = x.double()
    n = x.numel()
    std = float(x.std(unbiased=True)) if n > 1 else 0.0
    q75, q25 = torch.quantile(x, torch.tensor([0.75, 0.25], dtype=x.dtype)).tolist()
    spread = min(std, (q75 - q25) / 1.34) if q75 > q25 else std
    if not spread > 0:
        return 1e-3 * max(1.0, abs(float(x.mean())))
    return 0.9 * spread * n ** (-0.2)


def _kde_cdf(x: Tensor, *, grid_size: int = _GRID) -> tuple[Tensor, Tensor]:
    """Gaussian-KDE CDF of ``x`` (Silverman bandwidth) on a uniform grid.

    .. math::

        F(g) = \\frac{1}{n} \\sum_{i=1}^n \\Phi\\left(\\frac{g - x_i}{h}\\right)

    Args:
        x: ``(n,)`` finite training values.

    Returns:
        ``(grid, cdf)``, both ``(grid_size,)`` float64; the grid spans
        ``[min(x) - 6h, max(x) + 6h]``.
    """
    x = x.double()
    h = silverman_bandwidth(x)
    lo, hi = float(x.min()) - 6 * h, float(x.max()) + 6 * h
    grid = torch.linspace(lo, hi, grid_size, dtype=torch.float64)
    if x.numel() <= _EXACT_MAX:
        centres, weights = x, torch.full_like(x, 1.0 / x.numel())
    else:
        # Linear binning: each value splits its unit mass between the two nearest centres.
        centres = torch.linspace(float(x.min()), float(x.max()), _EXACT_MAX, dtype=torch.float64)
        step = float(centres[1] - centres[0])
        pos = (x - centres[0]) / step if step > 0 else torch.zeros_like(x)
        left = pos.floor().clamp(0, _EXACT_MAX - 2)
        frac = (pos - left).clamp(0, 1)
        weights = torch.zeros(_EXACT_MAX, dtype=torch.float64)
        weights.index_add_(0, left.long(), 1 - frac)
        weights.index_add_(0, left.long() + 1, frac)
        weights /= x.numel()
    cdf = torch.empty(grid_size, dtype=torch.float64)
    for s in range(0, grid_size, 512):
        g = grid[s : s + 512, None]  # (g, 1)
        cdf[s : s + 512] = (torch.special.ndtr((g - centres[None, :]) / h) * weights).sum(1)
    # Monotone by construction; cummax guards against round-off wiggles.
    return grid, torch.cummax(cdf, 0).values


def kde_quantiles(grid: Tensor, cdf: Tensor, probs: Tensor) -> Tensor:
    """Invert a tabulated CDF by linear interpolation: :math:`Q(p) = F^{-1}(p)`.

    Args:
        grid: ``(G,)`` increasing points.
        cdf: ``(G,)`` non-decreasing CDF values at ``grid``.
        probs: ``(M,)`` probabilities in (0, 1).

    Returns:
        ``(M,)`` quantiles in ``grid``'s dtype, clamped to the grid's range.
    """
    probs = probs.to(cdf.dtype)
    hi = torch.searchsorted(cdf, probs).clamp(1, cdf.numel() - 1)
    lo = hi - 1
    c0, c1 = cdf[lo], cdf[hi]
    t = ((probs - c0) / (c1 - c0).clamp_min(1e-300)).clamp(0, 1)
    return grid[lo] + t * (grid[hi] - grid[lo])


def masked_mse(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Per-label mean squared error over the present entries.

    .. math::

        L_t = \\frac{1}{|P_t|} \\sum_{b \\in P_t} (\\hat y_{bt} - y_{bt})^2,
        \\quad P_t = \\{b : y_{bt} \\text{ present}\\}

    Args:
        pred: ``(B, T)`` predictions.
        target: ``(B, T)`` labels, NaN where missing.

    Returns:
        ``(per_label, has)``: ``(T,)`` losses (0 where a label is absent from the batch, with
        a zero gradient) and ``(T,)`` bool, the label has at least one present entry.
    """
    present = _present(target)
    count = present.sum(0)  # (T,)
    diff = torch.where(present, pred - torch.where(present, target, 0.0), 0.0)
    per_label = (diff * diff).sum(0) / count.clamp_min(1)
    return per_label, count > 0


def phenotype_weights(train_labels: Tensor) -> Tensor:
    """TorchCell's ``is_weighted_phenotype_loss`` label weights: the rarer label weighs more.

    .. math::

        w_t = \\frac{1 - n_t / N}{\\sum_s (1 - n_s / N)}, \\qquad N = \\sum_s n_s

    with :math:`n_t` the number of records whose label ``t`` is present. TorchCell
    (``experiments/003-fit-int/scripts/hetero_cell.py``) computes ``1 - n_t / N`` from the
    phenotype-label counts of its train, val and test splits together, and its
    ``WeightedMSELoss``/``WeightedDistLoss`` divide by the sum; here the counts are the train
    split's (the loss never sees the others). With two labels the weights already sum to 1:
    :math:`w_{\\text{fitness}} = n_{\\text{gi}} / N`. On the real data (328,149 fitness and
    350,296 gene_interaction records) that is 0.516 / 0.484; with every label present on
    every record it is 1/2 each, the unweighted loss.

    Args:
        train_labels: ``(R, T)`` training labels, NaN where missing.

    Returns:
        ``(T,)`` float32 weights summing to 1.

    Raises:
        DataError: a label would get weight 0, i.e. another label has no training record
            (TorchCell then trains on NaN; its own notes record it).
    """
    counts = torch.isfinite(train_labels).sum(0).double()  # (T,)
    total = counts.sum()
    raw = 1.0 - counts / total.clamp_min(1)
    if not bool((raw > 0).all()) or not bool(total > 0):
        shown = ", ".join(f"{name} {int(c)}" for name, c in zip(LABELS, counts.tolist()))
        raise DataError(
            "regression_task.is_weighted_phenotype_loss: needs training records of every label "
            f"(train records per label: {shown}); a label would get weight 0"
        )
    return (raw / raw.sum()).float()


def dist_loss(pred: Tensor, target: Tensor, grids: Tensor, cdfs: Tensor, fitted: Tensor) -> tuple[Tensor, Tensor]:
    """DistLoss per label: sorted predictions against KDE pseudo-labels.

    .. math::

        L_t = \\frac{1}{M} \\sum_{i=1}^{M} (S_{\\text{pred}}[i] - S_{\\text{label}}[i])^2,
        \\quad S_{\\text{label}}[i] = F_t^{-1}\\left(\\frac{i - 1/2}{M}\\right)

    with :math:`S_{\\text{pred}}` the sorted predictions of the :math:`M` entries whose
    label ``t`` is present and :math:`F_t` the training KDE's CDF.

    Args:
        pred: ``(B, T)``.
        target: ``(B, T)``, NaN where missing (only used to select entries).
        grids, cdfs: ``(T, G)`` tabulated KDE CDFs.
        fitted: ``(T,)`` bool, label ``t`` has a KDE.

    Returns:
        ``(per_label, has)``, both ``(T,)``; ``has`` is False where the label is absent from
        the batch or has no KDE.
    """
    present = _present(target)
    losses, has = [], []
    for t in range(pred.shape[1]):
        p = pred[present[:, t], t]  # (M,)
        M = p.numel()
        if M == 0 or not bool(fitted[t]):
            losses.append(_zero(pred))
            has.append(False)
            continue
        probs = (torch.arange(1, M + 1, device=pred.device, dtype=torch.float64) - 0.5) / M
        s_label = kde_quantiles(grids[t], cdfs[t], probs).to(p.dtype)
        s_pred = torch.sort(p).values
        losses.append(((s_pred - s_label) ** 2).mean())
        has.append(True)
    return torch.stack(losses), torch.tensor(has, device=pred.device)


def supcr_loss(z: Tensor, target: Tensor, temperature: float) -> Tensor:
    """SupCR (Rank-N-Contrast) loss of the report.

    .. math::

        \\mathcal{L}_{\\text{SupCR}} = -\\frac{1}{N} \\sum_{i=1}^{N} \\frac{1}{N-1}
        \\sum_{j \\ne i} \\log \\frac{\\exp(s_{ij}/\\tau)}
        {\\sum_{k \\ne i} 1[d_{ik} \\ge d_{ij}] \\exp(s_{ik}/\\tau)}

    with :math:`s_{ij}` the cosine similarity of :math:`z_i, z_j` and :math:`d_{ij}` the L1
    distance of the label vectors.

    Missing labels: :math:`d_{ij}` is computed over the labels present in both samples and
    rescaled to the full label count, :math:`d_{ij} = \\frac{T}{n_{ij}} \\sum_{t\\,\\text{shared}}
    |y_{it} - y_{jt}|` (the plain L1 norm when nothing is missing). A pair sharing no label
    is dropped both as a positive and from the denominators; each anchor averages over its
    :math:`N_i` valid partners instead of :math:`N-1`, and the outer mean runs over the
    anchors with at least one. Without NaN this is exactly the formula above. Fewer than
    two samples give 0.

    The denominators are computed for all ``(i, j)`` at once by sorting each anchor's
    partners by decreasing distance and taking a cumulative log-sum-exp (ties included:
    each ``j`` reads the value at the end of its tie group), ``O(N^2 log N)``.

    Args:
        z: ``(N, C)`` embeddings.
        target: ``(N, T)`` labels, NaN where missing.
        temperature: :math:`\\tau > 0`.

    Returns:
        Scalar loss.
    """
    N, T = target.shape
    if N < 2:
        return _zero(z)
    present = _present(target)
    y = torch.where(present, target, 0.0).float()
    both = (present[:, None, :] & present[None, :, :]).float()  # (N, N, T)
    n_shared = both.sum(-1)  # (N, N)
    eye = torch.eye(N, dtype=torch.bool, device=z.device)
    valid = (n_shared > 0) & ~eye  # (N, N)
    d = ((y[:, None, :] - y[None, :, :]).abs() * both).sum(-1) * (T / n_shared.clamp_min(1))
    d = torch.where(valid, d, -math.inf)  # invalid partners sort last and never count
    zn = F.normalize(z.float(), dim=1)
    sim = torch.where(valid, zn @ zn.T / temperature, _NEG)  # (N, N)
    # Sort each anchor's partners by decreasing distance.
    d_sorted, order = torch.sort(d, dim=1, descending=True)  # (N, N)
    cum = torch.logcumsumexp(torch.gather(sim, 1, order), dim=1)  # (N, N)
    # Position of the last partner k with d_ik >= d_ij (end of j's tie group): count - 1.
    asc = -d_sorted  # ascending per row
    last = torch.searchsorted(asc.contiguous(), (-d).contiguous(), right=True) - 1  # (N, N)
    denom = torch.gather(cum, 1, last.clamp(0, N - 1))  # (N, N) log-denominator for (i, j)
    log_ratio = torch.where(valid, sim - denom, 0.0)
    n_valid = valid.sum(1)  # (N,)
    anchors = n_valid > 0
    if not bool(anchors.any()):
        return _zero(z)
    per_anchor = log_ratio.sum(1) / n_valid.clamp_min(1)
    return -(per_anchor[anchors]).mean()


class CompositeLoss(nn.Module):
    """The report's training objective on standardised labels.

    .. math::

        \\mathcal{L} = \\mathcal{L}_{\\text{MSE}}
            + \\lambda_{\\text{dist}} \\mathcal{L}_{\\text{dist}}
            + \\lambda_{\\text{supcr}} \\mathcal{L}_{\\text{SupCR}}

    - :math:`\\mathcal{L}_{\\text{MSE}}`: mean over labels present in the batch of each
      label's MSE over its present entries (:func:`masked_mse`).
    - :math:`\\mathcal{L}_{\\text{dist}}`: mean over labels of :func:`dist_loss`, with
      pseudo-labels from a Gaussian KDE (Silverman bandwidth) of ``train_labels`` fitted
      once here; the CDF is tabulated on a fine grid, so a batch costs a sort and a
      ``searchsorted``.
    - :math:`\\mathcal{L}_{\\text{SupCR}}`: :func:`supcr_loss` on ``z_p``.

    With ``cfg.uncertainty_weighting`` the MSE part is replaced by the report's noise model
    over the labels present in the batch,

    .. math::

        \\sum_t \\left(\\frac{w_t}{2\\sigma_t^2} L_t + \\log \\sigma_t\\right)
            + \\lambda \\sum_t \\sigma_t^{-2},

    with a learnable ``log_sigma`` per label (initialised to 0, i.e. :math:`\\sigma_t = 1`),
    :math:`w_t = 1` and :math:`\\lambda = 0` by default (``task_weights``, ``sigma_penalty``).
    The trainer must hand this module's parameters to the optimizer.

    With ``cfg.weighted_phenotype_loss`` (TorchCell's ``is_weighted_phenotype_loss``) the
    per-label means of the MSE and DistLoss terms become weighted means over the labels
    present in the batch, :math:`\\sum_t w_t L_t / \\sum_t w_t`, with
    :func:`phenotype_weights` of ``train_labels``; under uncertainty weighting the task
    weights become :math:`T w_t` (equal weights give the unweighted 1 each). SupCR is one
    term over the joint label distance (no per-label split), so it is not weighted; TorchCell
    weights its per-label SupCR terms instead.

    A term whose weight is 0 is not computed and is reported as 0.

    Args:
        cfg: loss configuration (default: ``LossConfig()``).
        train_labels: ``(R, 2)`` standardised training labels, NaN where missing; needed
            when ``cfg.lambda_dist > 0`` or ``cfg.weighted_phenotype_loss`` (default: ``None``).
        task_weights: :math:`w_t` per label (default: ``(1.0, 1.0)``).
        sigma_penalty: :math:`\\lambda` (default: ``0.0``).

    Shapes:
        - **input:** ``pred`` ``(B, 2)``, ``target`` ``(B, 2)`` (NaN = missing),
          ``z_p`` ``(B, C)``
        - **output:** scalar loss and a dict of detached scalar terms: ``mse``, ``dist``,
          ``supcr``, ``mse/<label>`` for each label present in the batch, and
          ``sigma/<label>`` for every label when uncertainty weighting is on.

    Raises:
        DataError: ``train_labels`` is missing while ``lambda_dist > 0`` or has the wrong
            shape; ``forward`` inputs have inconsistent shapes.
    """

    def __init__(
        self,
        cfg: LossConfig | None = None,
        train_labels: Tensor | None = None,
        *,
        task_weights: tuple[float, ...] = (1.0, 1.0),
        sigma_penalty: float = 0.0,
    ) -> None:
        super().__init__()
        cfg = cfg or LossConfig()
        self.cfg = cfg
        T = len(LABELS)
        self.register_buffer("grids", torch.zeros(T, _GRID, dtype=torch.float64))
        self.register_buffer("cdfs", torch.zeros(T, _GRID, dtype=torch.float64))
        self.register_buffer("kde_fitted", torch.zeros(T, dtype=torch.bool))
        self.register_buffer("task_weights", torch.tensor(task_weights, dtype=torch.float32))
        self.sigma_penalty = float(sigma_penalty)
        if len(task_weights) != T:
            raise DataError(f"task_weights: expected {T} values, got {len(task_weights)}")
        if cfg.uncertainty_weighting:
            self.log_sigma = nn.Parameter(torch.empty(T))
        else:
            self.register_parameter("log_sigma", None)
        if train_labels is not None:
            self._fit_kde(train_labels)
        elif cfg.lambda_dist > 0:
            raise DataError("CompositeLoss: lambda_dist > 0 needs train_labels (R, 2) to fit the DistLoss KDE")
        if cfg.weighted_phenotype_loss:
            if train_labels is None:
                raise DataError("CompositeLoss: is_weighted_phenotype_loss needs train_labels (R, 2) to count labels")
            self.register_buffer("label_weights", phenotype_weights(train_labels))
        else:
            self.label_weights = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Start every label at :math:`\\sigma_t = 1`."""
        if self.log_sigma is not None:
            nn.init.zeros_(self.log_sigma)

    @torch.no_grad()
    def _fit_kde(self, train_labels: Tensor) -> None:
        if train_labels.dim() != 2 or train_labels.shape[1] != len(LABELS):
            raise DataError(f"train_labels: expected shape (R, {len(LABELS)}), got {tuple(train_labels.shape)}")
        labels = train_labels.detach().cpu().double()
        for t in range(len(LABELS)):
            x = labels[:, t][torch.isfinite(labels[:, t])]
            if x.numel() == 0:
                continue  # no training value: DistLoss skips this label
            grid, cdf = _kde_cdf(x)
            self.grids[t] = grid.to(self.grids.device)
            self.cdfs[t] = cdf.to(self.cdfs.device)
            self.kde_fitted[t] = True

    def pseudo_labels(self, label: int, m: int) -> Tensor:
        """The ``m`` DistLoss pseudo-labels of label index ``label``: ``(m,)`` float64."""
        probs = (torch.arange(1, m + 1, dtype=torch.float64, device=self.cdfs.device) - 0.5) / m
        return kde_quantiles(self.grids[label], self.cdfs[label], probs)

    def forward(self, pred: Tensor, target: Tensor, z_p: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss and its terms; see the class docstring."""
        B, T = pred.shape[0], len(LABELS)
        if pred.shape != (B, T) or target.shape != (B, T) or z_p.dim() != 2 or z_p.shape[0] != B:
            raise DataError(
                f"CompositeLoss: expected pred (B, {T}), target (B, {T}), z_p (B, C); "
                f"got {tuple(pred.shape)}, {tuple(target.shape)}, {tuple(z_p.shape)}"
            )
        # Loss arithmetic in float32 whatever autocast produced.
        pred, target = pred.float(), target.float()
        per_label, has = masked_mse(pred, target)
        mse = self._label_mean(per_label, has)
        terms: dict[str, Tensor] = {"mse": mse.detach()}
        for t, name in enumerate(LABELS):
            if bool(has[t]):
                terms[f"mse/{name}"] = per_label[t].detach()

        if self.log_sigma is not None:
            log_sigma = self.log_sigma.float()
            inv_var = torch.exp(-2 * log_sigma)  # sigma^-2
            task_weights = self.task_weights if self.label_weights is None else self.task_weights * T * self.label_weights
            weighted = task_weights * inv_var / 2 * per_label + log_sigma + self.sigma_penalty * inv_var
            total = torch.where(has, weighted, 0.0).sum()
            for t, name in enumerate(LABELS):
                terms[f"sigma/{name}"] = log_sigma[t].detach().exp()
        else:
            total = mse

        if self.cfg.lambda_dist > 0:
            d_per, d_has = dist_loss(pred, target, self.grids, self.cdfs, self.kde_fitted)
            dist = self._label_mean(d_per, d_has)
            total = total + self.cfg.lambda_dist * dist
        else:
            dist = torch.zeros((), device=pred.device)
        terms["dist"] = dist.detach()

        if self.cfg.lambda_supcr > 0:
            supcr = supcr_loss(z_p, target, self.cfg.supcr_temperature)
            total = total + self.cfg.lambda_supcr * supcr
        else:
            supcr = torch.zeros((), device=pred.device)
        terms["supcr"] = supcr.detach()
        return total, terms

    def _label_mean(self, per_label: Tensor, has: Tensor) -> Tensor:
        """Mean of ``per_label`` over the labels in ``has``: plain, or weighted by :func:`phenotype_weights`."""
        if self.label_weights is None:
            return torch.where(has, per_label, 0.0).sum() / has.sum().clamp_min(1)
        w = torch.where(has, self.label_weights, 0.0)  # (T,)
        return (w * torch.where(has, per_label, 0.0)).sum() / w.sum().clamp_min(1e-12)

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"lambda_dist={c.lambda_dist}, lambda_supcr={c.lambda_supcr}, "
            f"tau={c.supcr_temperature}, uncertainty_weighting={c.uncertainty_weighting}, "
            f"weighted_phenotype_loss={c.weighted_phenotype_loss}"
        )
