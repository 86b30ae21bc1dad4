"""Null models every study is compared with: additive gene effects and matrix factorisation.

Three baselines, each fitted per label on the train split and scored with
:func:`~torchcell_search.metrics.regression_metrics` on the original label scale, so their
numbers sit beside a trial's (``test/gene_interaction/Pearson``, ...):

- ``additive``: :math:`\\hat y_{qa} = b + a_q + a_a`, one effect per gene whatever its SGA
  role, ridge-regularised least squares solved exactly by the normal equations; the ridge
  strength is chosen per label on the validation split from ``BaselineConfig.ridge_alphas``.
- ``matrix_factorisation`` (role-aware): :math:`\\hat y_{qa} = b + a^{Q}_q + a^{A}_a +
  \\langle u_q, v_a \\rangle` with separate query and array biases and factors.
- ``matrix_factorisation_role_blind``: the symmetric :math:`\\hat y_{qa} = b + a_q + a_a +
  \\langle u_q, u_a \\rangle`, for comparison with the role-aware one.

The factorisations are fitted by alternating ridge least squares on the dense gene x gene
matrix of train cells (the per-record squared error, duplicate measurements of a cell
weighted by their count), with L2 penalties weighted by how often a gene occurs, and early
stopping over iterations on the validation MSE. Labels are z-scored with train statistics inside the fit and mapped back
in :meth:`Baseline.predict`.

Genes without a train record (in a role, for the role-aware model) get zero effects and
zero factors, so a gene split predicts from the seen partner only (or the train mean).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from torchcell_search.data.types import LABELS, Dataset, PerturbationTable, Split
from torchcell_search.errors import ConfigError, DataError
from torchcell_search.metrics import combined_metrics, regression_metrics

__all__ = [
    "BASELINES",
    "Baseline",
    "BaselineConfig",
    "evaluate_baselines",
    "fit_baseline",
]

#: Baseline names, in the order :func:`evaluate_baselines` reports them.
BASELINES: tuple[str, str, str] = ("additive", "matrix_factorisation", "matrix_factorisation_role_blind")


@dataclass(frozen=True)
class BaselineConfig:
    """Hyperparameters of the baselines (defaults tuned on the Costanzo mirror, pair split, seed 0)."""

    # Ridge strengths tried for the additive model (penalty alpha * sum_g a_g^2 on z-scored labels).
    ridge_alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0)
    # Rank of the factorisations.
    rank: int = 32
    # Weighted-lambda L2 on factors: factor_reg * n_g * |u_g|^2, n_g = records of gene g.
    # Below ~0.05 the factors fit noise; above ~0.12 they collapse to zero on epsilon.
    factor_reg: float = 0.08
    # Weighted-lambda L2 on the per-gene biases.
    bias_reg: float = 1.0
    # Standard deviation of the initial factors.
    init_scale: float = 0.1
    # Alternating least squares iterations at most; stop after `patience` without val gain.
    max_iterations: int = 60
    patience: int = 10
    # Role-blind model: fraction of the old factors kept at each symmetric update.
    symmetric_damping: float = 0.5
    # Fixed iteration count per label (fitness, gene_interaction), overriding max_iterations:
    # a fit whose count was chosen elsewhere (an inner split of train, see
    # model/collaborative.py) runs without validation records and keeps its last iteration.
    iterations: tuple[int, ...] | None = None


@dataclass
class Baseline:
    """A fitted baseline, :math:`\\hat y = \\mu + s (b + a^Q_q + a^A_a + \\langle u_q, v_a \\rangle)`.

    Per label ``t``: train mean :math:`\\mu_t` and standard deviation :math:`s_t`, offset
    :math:`b_t`, per-gene query/array biases and factors over ``genes`` (a compact index;
    row ``G`` is all zeros and stands for every gene not seen in training). The additive
    model has rank-0 factors; the role-blind model has identical query and array tensors.

    Shapes:
        ``query_bias``, ``array_bias``: ``(T, G + 1)``; ``query_factors``,
        ``array_factors``: ``(T, G + 1, r)``; ``lookup``: ``(max gene index + 1,)`` long,
        compact row of each gene index (``G`` = unseen).
    """

    name: str
    mean: Tensor  # (T,)
    scale: Tensor  # (T,)
    offset: Tensor  # (T,)
    query_bias: Tensor  # (T, G + 1)
    array_bias: Tensor  # (T, G + 1)
    query_factors: Tensor  # (T, G + 1, r)
    array_factors: Tensor  # (T, G + 1, r)
    lookup: Tensor  # (max_gene + 1,) long
    info: dict[str, object] = field(default_factory=dict)

    @torch.no_grad()
    def predict(self, genes: Tensor) -> Tensor:
        """Predictions on the original label scale.

        Args:
            genes: ``(R, 2)`` long gene indices (query, array).

        Returns:
            ``(R, 2)`` float32 in :data:`~torchcell_search.data.types.LABELS` order.
        """
        if genes.dim() != 2 or genes.shape[1] != 2:
            raise DataError(f"genes: expected shape (R, 2), got {tuple(genes.shape)}")
        q, a = _rows(self.lookup, genes.long().cpu(), self.query_bias.shape[1] - 1)  # (R,), (R,)
        z = _score(self.offset, self.query_bias, self.array_bias, self.query_factors, self.array_factors, q, a)
        return (self.mean[:, None] + self.scale[:, None] * z).T.contiguous().float()  # (R, T)


def _rows(lookup: Tensor, genes: Tensor, unseen: int) -> tuple[Tensor, Tensor]:
    """Compact rows of the query and array genes; out-of-range or unseen genes -> ``unseen``."""
    inside = (genes >= 0) & (genes < lookup.numel())
    rows = lookup[genes.clamp(0, lookup.numel() - 1)] if lookup.numel() else torch.zeros_like(genes)
    rows = torch.where(inside, rows, unseen)  # (R, 2)
    return rows[:, 0], rows[:, 1]


def _score(offset: Tensor, qb: Tensor, ab: Tensor, qf: Tensor, af: Tensor, q: Tensor, a: Tensor) -> Tensor:
    """``(T, R)`` standardised predictions for compact rows ``q``, ``a``."""
    z = offset[:, None] + qb[:, q] + ab[:, a]  # (T, R)
    if qf.shape[-1]:
        z = z + (qf[:, q] * af[:, a]).sum(-1)
    return z


# --- data preparation ----------------------------------------------------------------------


@dataclass
class _Cells:
    """Records aggregated into dense (G, G) cells per label, on the z-scored scale."""

    count: Tensor  # (T, G, G) float64: records per cell with the label present
    mean: Tensor  # (T, G, G) float64: mean z-scored label of the cell (0 where empty)
    total: Tensor  # (T,) float64: records with the label present


def _cells(genes: Tensor, z: Tensor, G: int) -> _Cells:
    """Aggregate ``(R, 2)`` compact gene rows and ``(R, T)`` labels (NaN = missing)."""
    T = z.shape[1]
    count = torch.zeros(T, G * G, dtype=torch.float64)
    sums = torch.zeros(T, G * G, dtype=torch.float64)
    flat = genes[:, 0] * G + genes[:, 1]  # (R,)
    for t in range(T):
        ok = torch.isfinite(z[:, t])
        count[t].index_add_(0, flat[ok], torch.ones(int(ok.sum()), dtype=torch.float64))
        sums[t].index_add_(0, flat[ok], z[ok, t].double())
    mean = torch.where(count > 0, sums / count.clamp_min(1), 0.0)
    return _Cells(count.view(T, G, G), mean.view(T, G, G), count.sum(1))


def _prepare(table: PerturbationTable, split: Split) -> tuple[Tensor, Tensor, Tensor, Tensor, _Cells, Tensor, Tensor]:
    """Compact gene index over the train genes, label statistics and train cells.

    Returns:
        ``lookup``, ``mean (T,)``, ``scale (T,)``, ``train rows (R_tr, 2)``, train cells,
        ``val rows (R_va, 2)``, ``val z (R_va, T)``.
    """
    if split.train.numel() == 0:
        raise DataError("split: the train split is empty; a baseline needs training records")
    genes = table.genes.long()
    labels = table.labels().double()  # (R, T)
    n_max = int(genes.max()) + 1 if genes.numel() else 0
    train_genes = torch.unique(genes[split.train].reshape(-1))  # sorted
    G = int(train_genes.numel())
    lookup = torch.full((n_max,), G, dtype=torch.long)
    lookup[train_genes] = torch.arange(G)
    y_tr = labels[split.train]
    T = labels.shape[1]
    mean = torch.empty(T, dtype=torch.float64)
    scale = torch.empty(T, dtype=torch.float64)
    for t in range(T):
        x = y_tr[:, t][torch.isfinite(y_tr[:, t])]
        mean[t] = x.mean() if x.numel() else math.nan
        sd = float(x.std()) if x.numel() > 1 else 0.0
        scale[t] = sd if sd > 0 else 1.0
    z = (labels - mean) / scale  # (R, T)
    q_tr, a_tr = _rows(lookup, genes[split.train], G)
    rows_tr = torch.stack([q_tr, a_tr], 1)
    cells = _cells(rows_tr, z[split.train], G)
    q_va, a_va = _rows(lookup, genes[split.val], G)
    return lookup, mean, scale, rows_tr, cells, torch.stack([q_va, a_va], 1), z[split.val]


def _val_mse(zhat: Tensor, z: Tensor) -> Tensor:
    """``(T,)`` MSE over present entries; inf where a label has no validation value."""
    ok = torch.isfinite(z)
    err = torch.where(ok, zhat - torch.where(ok, z, 0.0), 0.0) ** 2  # (T, R)
    n = ok.sum(1)
    return torch.where(n > 0, err.sum(1) / n.clamp_min(1), math.inf)


# --- additive ------------------------------------------------------------------------------


def _fit_additive(cells: _Cells, val_rows: Tensor, val_z: Tensor, cfg: BaselineConfig) -> tuple[Tensor, Tensor, dict]:
    """Ridge least squares of :math:`z = b + a_q + a_a` by the normal equations.

    With :math:`x_r = e_q + e_a` (so :math:`2 e_g` when ``q == a``) and the intercept
    unpenalised, solves

    .. math::

        \\begin{pmatrix} n & s^\\top \\\\ s & X^\\top X + \\alpha I \\end{pmatrix}
        \\begin{pmatrix} b \\\\ a \\end{pmatrix} =
        \\begin{pmatrix} \\sum_r z_r \\\\ X^\\top z \\end{pmatrix},\\quad s = X^\\top 1,

    where :math:`X^\\top X = \\mathrm{diag}(W 1 + W^\\top 1) + W + W^\\top` for the cell
    count matrix :math:`W`.

    Returns:
        ``offset (T,)``, ``effects (T, G)``, info with the chosen alpha per label.
    """
    T, G, _ = cells.count.shape
    offset = torch.zeros(T, dtype=torch.float64)
    effects = torch.zeros(T, G, dtype=torch.float64)
    chosen = {}
    for t in range(T):
        W = cells.count[t]
        S = cells.count[t] * cells.mean[t]  # sum of z per cell
        s = W.sum(1) + W.sum(0)  # (G,) occurrences of each gene
        A = torch.zeros(G + 1, G + 1, dtype=torch.float64)
        A[0, 0] = cells.total[t].clamp_min(1)
        A[0, 1:], A[1:, 0] = s, s
        xtx = torch.diag(s) + W + W.T
        rhs = torch.cat([S.sum().reshape(1), S.sum(1) + S.sum(0)])  # (G + 1,)
        fits = []
        for alpha in cfg.ridge_alphas:
            A[1:, 1:] = xtx + alpha * torch.eye(G, dtype=torch.float64)
            sol = torch.linalg.solve(A, rhs)  # (G + 1,): b, a
            padded = torch.cat([sol[1:], sol.new_zeros(1)])
            zhat = sol[0] + padded[val_rows[:, 0]] + padded[val_rows[:, 1]]
            fits.append((float(_val_mse(zhat[None], val_z[:, t][None])[0]), alpha, sol))
        if any(math.isfinite(f[0]) for f in fits):
            _, alpha, sol = min(fits, key=lambda f: f[0])  # first of equal MSEs: smaller alpha
        else:
            # No validation label to select with: take the middle of the grid.
            _, alpha, sol = fits[len(fits) // 2]
        offset[t], effects[t], chosen[LABELS[t]] = sol[0], sol[1:], alpha
    return offset, effects, {"ridge_alpha": chosen}


# --- matrix factorisation ------------------------------------------------------------------


def _ridge_rows(Wm: Tensor, Zm: Tensor, X: Tensor, other_bias: Tensor, b: float, cfg: BaselineConfig) -> tuple[Tensor, Tensor]:
    r"""One ALS half-step: every row gene's bias and factor by weighted ridge regression.

    For row gene :math:`g`, with features :math:`x_h = (1, w_h)` of the column genes,

    .. math::

        (\beta_g, u_g) = \arg\min \sum_h W_{gh} (\bar z_{gh} - b - c_h - \beta_g
            - \langle u_g, w_h \rangle)^2 + n_g (\lambda_b \beta_g^2 + \lambda_f \lVert u_g \rVert^2),

    :math:`n_g = \sum_h W_{gh}` (weighted-lambda regularisation). A gene without records
    gets :math:`(0, 0)`.

    Args:
        Wm: ``(G, G)`` record counts; Zm: ``(G, G)`` cell means; X: ``(G, r)`` column
        factors; other_bias: ``(G,)`` column biases :math:`c`.

    Returns:
        ``(G,)`` biases and ``(G, r)`` factors.
    """
    G, r = X.shape
    Xa = torch.cat([torch.ones(G, 1, dtype=X.dtype), X], 1)  # (G, r + 1)
    outer = (Xa[:, :, None] * Xa[:, None, :]).reshape(G, -1)  # (G, (r + 1)^2)
    gram = (Wm @ outer).reshape(G, r + 1, r + 1)  # sum_h W_gh x_h x_h^T
    reg = torch.cat([X.new_full((1,), cfg.bias_reg), X.new_full((r,), cfg.factor_reg)])
    n = Wm.sum(1)  # (G,)
    gram = gram + torch.diag_embed(n[:, None] * reg) + 1e-9 * torch.eye(r + 1, dtype=X.dtype)
    rhs = (Wm * (Zm - b - other_bias[None, :])) @ Xa  # (G, r + 1)
    theta = torch.linalg.solve(gram, rhs)
    return theta[:, 0], theta[:, 1:]


def _fit_mf(
    cells: _Cells, val_rows: Tensor, val_z: Tensor, cfg: BaselineConfig, *, role_aware: bool, seed: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, dict]:
    r"""Alternating ridge least squares per label, early-stopped on validation MSE.

    Minimises, per label on z-scored labels,

    .. math::

        \sum_r (z_r - \hat z_{q_r a_r})^2 + \sum_g n^Q_g (\lambda_b (a^Q_g)^2
            + \lambda_f \lVert u_g \rVert^2) + \sum_g n^A_g (\lambda_b (a^A_g)^2
            + \lambda_f \lVert v_g \rVert^2)

    with :math:`n^Q_g, n^A_g` the records of gene :math:`g` as query / array and
    :math:`b` fixed at the train mean. Role-aware: alternate exact solves for all query
    genes :math:`(a^Q, u)` given :math:`(a^A, v)` and back (:func:`_ridge_rows`).
    Role-blind (:math:`v = u`, :math:`a^A = a^Q`): the two orientations are pooled into one
    symmetric cell matrix, and each iteration solves every gene given the current factors
    of its partners, damped by ``cfg.symmetric_damping`` (undamped Jacobi updates
    oscillate). After each iteration the validation MSE is measured; the best iteration's
    parameters are kept and training stops after ``cfg.patience`` iterations without gain.

    Returns:
        ``offset (T,)``, ``query_bias (T, G)``, ``array_bias (T, G)``,
        ``query_factors (T, G, r)``, ``array_factors (T, G, r)``, info.
    """
    T, G, _ = cells.count.shape
    r = cfg.rank
    gen = torch.Generator().manual_seed(seed)
    out = [torch.zeros(T, dtype=torch.float64), torch.zeros(T, G, dtype=torch.float64), torch.zeros(T, G, dtype=torch.float64)]
    out += [torch.zeros(T, G, r, dtype=torch.float64), torch.zeros(T, G, r, dtype=torch.float64)]
    info: dict[str, dict] = {"best_iteration": {}, "iterations": {}, "val_mse_standardised": {}}
    for t in range(T):
        W, Z = cells.count[t], cells.mean[t]
        b = float((W * Z).sum() / W.sum().clamp_min(1))
        U = cfg.init_scale * torch.randn(G, r, generator=gen, dtype=torch.float64)
        V = cfg.init_scale * torch.randn(G, r, generator=gen, dtype=torch.float64)
        p = torch.zeros(G, dtype=torch.float64)
        q = torch.zeros(G, dtype=torch.float64)
        if not role_aware:
            # Pool both orientations: cell (g, h) holds every record of the unordered pair.
            Ws = W + W.T
            Zs = torch.where(Ws > 0, (W * Z + (W * Z).T) / Ws.clamp_min(1e-12), 0.0)
            V = U
        best_mse, best_it, it, stale = math.inf, 0, 0, 0
        best = (p, q, U, V)
        max_iterations = cfg.iterations[t] if cfg.iterations is not None else cfg.max_iterations
        for it in range(1, max_iterations + 1):
            if role_aware:
                p, U = _ridge_rows(W, Z, V, q, b, cfg)
                q, V = _ridge_rows(W.T, Z.T, U, p, b, cfg)
            else:
                p_new, U_new = _ridge_rows(Ws, Zs, U, p, b, cfg)
                d = cfg.symmetric_damping
                p, U = d * p + (1 - d) * p_new, d * U + (1 - d) * U_new
                q, V = p, U
            pads = [torch.cat([x, x.new_zeros(1, *x.shape[1:])])[None] for x in (p, q, U, V)]
            zhat = _score(torch.tensor([b], dtype=torch.float64), *pads, val_rows[:, 0], val_rows[:, 1])  # (1, R_va)
            mse = float(_val_mse(zhat, val_z[:, t][None].double())[0])
            if mse < best_mse - 1e-9 or not math.isfinite(mse):
                # Without validation labels (mse = inf) the last iteration is kept.
                best_mse, best_it, stale, best = mse, it, 0, (p, q, U, V)
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        out[0][t] = b
        for k, x in enumerate(best):
            out[k + 1][t] = x
        info["best_iteration"][LABELS[t]] = best_it
        info["iterations"][LABELS[t]] = it
        info["val_mse_standardised"][LABELS[t]] = best_mse
    return out[0], out[1], out[2], out[3], out[4], info


# --- public API ----------------------------------------------------------------------------


def fit_baseline(
    name: str, table: PerturbationTable, split: Split, *, seed: int = 0, cfg: BaselineConfig | None = None
) -> Baseline:
    """Fit one baseline on ``split.train`` (model selection on ``split.val``).

    Example:
        >>> from torchcell_search.data.demo import make_demo_dataset
        >>> from torchcell_search.data.splits import make_split
        >>> ds = make_demo_dataset(seed=0)
        >>> model = fit_baseline("additive", ds.table, make_split(ds.table, "pair", seed=0))
        >>> model.predict(ds.table.genes[:3]).shape
        torch.Size([3, 2])

    Args:
        name: one of :data:`BASELINES`.
        table: all records; ``split`` indexes into it.
        split: train / val / test record indices.
        seed: seed of the factor initialisation (the additive fit is exact).
        cfg: hyperparameters (default: ``BaselineConfig()``).

    Returns:
        A :class:`Baseline` whose :meth:`~Baseline.predict` maps ``(R, 2)`` gene indices to
        ``(R, 2)`` predictions on the original scale.

    Raises:
        ConfigError: unknown ``name`` or invalid ``cfg``.
        DataError: empty train split.
    """
    cfg = cfg or BaselineConfig()
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    if cfg.rank < 1 or cfg.max_iterations < 1 or cfg.patience < 1 or not cfg.ridge_alphas:
        raise ConfigError(f"BaselineConfig: rank, max_iterations, patience must be >= 1 and ridge_alphas non-empty, got {cfg}")
    if cfg.iterations is not None and (len(cfg.iterations) != len(LABELS) or min(cfg.iterations) < 1):
        raise ConfigError(f"BaselineConfig.iterations: one count >= 1 per label {LABELS}, got {cfg.iterations}")
    if not 0.0 <= cfg.symmetric_damping < 1.0:
        raise ConfigError(f"BaselineConfig.symmetric_damping must be in [0, 1), got {cfg.symmetric_damping}")
    lookup, mean, scale, _, cells, val_rows, val_z = _prepare(table, split)
    T, G = len(LABELS), cells.count.shape[1]

    def pad(x: Tensor) -> Tensor:
        return torch.cat([x, x.new_zeros(x.shape[0], 1, *x.shape[2:])], 1)

    if name == "additive":
        offset, effects, info = _fit_additive(cells, val_rows, val_z, cfg)
        qb = ab = pad(effects)
        qf = af = torch.zeros(T, G + 1, 0, dtype=torch.float64)
    else:
        role_aware = name == "matrix_factorisation"
        offset, qb, ab, qf, af, info = _fit_mf(cells, val_rows, val_z, cfg, role_aware=role_aware, seed=seed)
        qb, ab, qf, af = pad(qb), pad(ab), pad(qf), pad(af)
    info["num_train_genes"] = G
    return Baseline(name, mean, scale, offset, qb, ab, qf, af, lookup, info)


def evaluate_baselines(
    dataset: Dataset, split: Split, *, seed: int = 0, cfg: BaselineConfig | None = None
) -> dict[str, dict[str, float]]:
    """Fit every baseline and score it like a trial.

    Args:
        dataset: the records (``dataset.table``) the split indexes.
        split: train / val / test indices.
        seed: seed of the factorisations' initialisation.
        cfg: hyperparameters (default: ``BaselineConfig()``).

    Returns:
        ``{name: {"train/fitness/MSE": ..., ..., "test/gene_interaction/Spearman": ...,
        "test/combined/Pearson": ..., "seconds": fit seconds}}`` for each name in :data:`BASELINES`
        (combined metrics as the trials record them: both labels z-scored with train statistics).
    """
    from torchcell_search.data.splits import Standardiser

    labels = dataset.table.labels()
    genes = dataset.table.genes
    # the trials' combined metrics z-score both labels with these train statistics
    train_statistics = Standardiser.fit(labels[split.train])
    out: dict[str, dict[str, float]] = {}
    for name in BASELINES:
        start = time.perf_counter()
        model = fit_baseline(name, dataset.table, split, seed=seed, cfg=cfg)
        seconds = time.perf_counter() - start
        metrics: dict[str, float] = {}
        for part in ("train", "val", "test"):
            index = getattr(split, part)
            pred = model.predict(genes[index])
            metrics.update(regression_metrics(pred, labels[index], part))
            metrics.update(combined_metrics(pred, labels[index], train_statistics.mean, train_statistics.std, part))
        metrics["seconds"] = seconds
        out[name] = metrics
    return out
