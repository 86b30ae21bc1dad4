"""HeteroCell: the report's heterogeneous cell-graph network, batched over perturbations.

Architecture (report 003, "Code - Model")::

    gene / reaction / metabolite nn.Embedding (embedding_channels)
    -> PreProcessor on genes (2 x Linear-Norm-Act-Dropout; Act = model.activation, ReLU by default)
    -> num_layers x HeteroConv, summed per destination node type:
         (gene, physical_interaction, gene)      GATv2, `heads` heads, self loops
         (gene, regulatory_interaction, gene)    GATv2, `heads` heads, self loops
         (gene, gpr, reaction)                   GATv2 gene -> reaction, 1 head, heads averaged
         (metabolite, reaction, metabolite)      stoichiometric hypergraph conv (gated, attention)
       each followed by [Linear if widths differ] -> Norm -> Act -> Dropout
    -> pooling over a graph's genes (SortedSetTransformerAggregation by default)
    -> z_p = z_wildtype - z_perturbed
    -> head: 3 x Linear-Norm-Act-Dropout, Linear -> (fitness, gene_interaction)
       (model.prediction_head_config: depth, residual, own norm/activation/dropout; model/head.py)

As in the report, only gene-gene relations reach the gene nodes: GPR and metabolism
update reaction and metabolite features that nothing downstream reads, so their
parameters receive no gradient from the prediction. They are kept (and computed) so the
network, its parameter count and its cost are the report's.

**Batched layout.** ``forward`` never builds a graph per sample. The wildtype (slot 0) and
the ``B`` perturbed graphs (slots ``1..B``) run together as node tensors ``(N, B+1, C)``
over the one shared ``edge_index``; ``PerturbationMasks`` become per-slot keep masks
that remove edges from every softmax and scatter and deleted genes from pooling (and
from batch-norm statistics). This is exact: :func:`~torchcell_search.model.reference.
reference_forward` computes the same prediction from a PyG ``Batch`` of perturbed
subgraphs.

**Choices that differ from the research code**, each documented where it is made:
one norm instance per PreProcessor layer (the research code shared one); the conv norm
``layer`` is per-node LayerNorm (the research code's PyG ``LayerNorm`` in graph mode
normalised over all nodes of the whole batch at once, coupling samples); the hypergraph
conv attends to the current layer's reaction features (the research code passed the
initial reaction embeddings to every layer); the gene GATv2 convs add self loops (as the
research ISAB variants do), so an isolated gene keeps its own features; as in PyG's
``GATv2Conv``, a graph's own self loops (TF self-regulation) are removed first.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from torchcell_search.config import ModelConfig
from torchcell_search.data.types import GPR, METABOLISM, PHYSICAL, REGULATORY, CellGraph, Dataset, PerturbationMasks
from torchcell_search.errors import ConfigError, DataError
from torchcell_search.model.collaborative import NUM_PROFILE_FEATURES, ProfileTables, mask_profile, profile_input_mask
from torchcell_search.model.gene_profiles import LENDERS, NUM_ANNOTATIONS, GeneProfiles
from torchcell_search.model.layers import (
    BatchedGATv2Conv,
    ConvBlock,
    EdgePlan,
    PreProcessor,
    SegmentIndex,
    StoichHypergraphConv,
    build_norm,
)
from torchcell_search.model.activations import build_activation
from torchcell_search.model.head import PredictionHead
from torchcell_search.model.pooling import MultiheadAttentionBlock, build_pooling, pooling_heads

__all__ = ["KINDS", "HeteroCell", "ModelOutput", "build_model"]

#: Borrowed-entry values per pair (model.gene_inputs=profile): per role, the value and whether any lender had one.
_BORROWED = 4

#: ``model.kind`` options.
KINDS: tuple[str, ...] = ("hetero_cell", "perturbation_set")

#: Relation names of one conv layer, in the order they run, and their edge types.
RELATIONS: dict[str, tuple[str, str, str]] = {
    "physical": PHYSICAL,
    "regulatory": REGULATORY,
    "gpr": GPR,
    "metabolism": METABOLISM,
}


class ModelOutput(NamedTuple):
    """What :meth:`HeteroCell.forward` returns."""

    pred: Tensor  # (B, 2) standardised (fitness, gene_interaction)
    z_p: Tensor  # (B, C) perturbation embedding (z_wildtype - z_perturbed, or the set embedding)
    # (B,) bool, the records the loss may read (None: all). model.gene_inputs=profile in
    # training: those with a hidden gene; the others' labels are in the inputs.
    scored: Tensor | None = None


class _Edges(NamedTuple):
    """The graph structure a forward runs over (the cell graph, or a reference batch)."""

    physical: Tensor  # (2, E_phys)
    regulatory: Tensor  # (2, E_reg)
    gpr: Tensor  # (2, K_gpr): gene, reaction
    metabolism: Tensor  # (2, K_met): metabolite, reaction
    stoich: Tensor  # (K_met,)
    num_reactions: int
    plans: dict | None = None  # prebuilt EdgePlan / SegmentIndex per relation (None: convs build them)


class _Shown(NamedTuple):
    """The train profiles one forward shows (``model.gene_inputs=profile``)."""

    visible: Tensor  # (P + 1,) bool, the profile rows shown; row P (no profile) never
    y: Tensor  # (P + 1, P + 1) the profile matrix on shown rows and columns, 0 elsewhere
    seen: Tensor  # (P + 1, P + 1) bool, observed and shown


class _Keeps(NamedTuple):
    """Per-slot keep masks, ``None`` = keep everything."""

    gene: Tensor | None  # (N_gene, S)
    reaction: Tensor | None  # (N_reaction, S)
    metabolite: Tensor | None  # (N_metabolite, S)
    physical: Tensor | None  # (E_phys, S)
    regulatory: Tensor | None
    gpr: Tensor | None
    metabolism: Tensor | None


class HeteroCell(nn.Module):
    """HeteroCell over one cell graph, predicting (fitness, gene_interaction) of deletions.

    Example::

        from torchcell_search.data.demo import make_demo_dataset
        from torchcell_search.data.masks import MaskBuilder
        ds = make_demo_dataset()
        model = build_model(ds.graph, ModelConfig(num_layers=2))
        genes = ds.table.genes[:8]                       # (8, 2) query, array
        out = model(genes, MaskBuilder(ds.graph).masks(genes))
        out.pred.shape                                   # (8, 2)

    Args:
        graph (CellGraph): the wildtype cell graph; its structure is copied into buffers.
        cfg (ModelConfig, optional): architecture (default: ``ModelConfig()``, the report's).

    Shapes:
        - **input:** ``genes: (B, 2)`` long (query, array; ``-1`` = padding),
          ``masks``: :class:`PerturbationMasks` for ``B`` samples
        - **output:** :class:`ModelOutput` with ``pred: (B, 2)``, ``z_p: (B, C)``

    Raises:
        ConfigError: an unknown ``kind``, ``pooling``, ``norm`` or ``activation``, ``heads``
            larger than ``hidden_channels``, or ``global_aggregator_config`` values the pooling
            cannot take (see :func:`~torchcell_search.model.pooling.build_pooling`).
    """

    def __init__(self, graph: CellGraph, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or ModelConfig()
        if cfg.kind not in KINDS:
            raise ConfigError(f"model.kind: {cfg.kind!r} is not one of {', '.join(KINDS)}")
        if cfg.gene_inputs == "profile" and not 0.0 < cfg.gene_profile_dropout < 1.0:
            raise ConfigError(f"model.gene_profile_dropout: {cfg.gene_profile_dropout} must lie in (0, 1) with "
                              "model.gene_inputs=profile (no hidden gene, no record the loss may read)")
        if cfg.heads > cfg.hidden_channels:
            raise ConfigError(f"heads={cfg.heads} exceeds model.hidden_channels={cfg.hidden_channels}")
        build_norm(cfg.norm, 1)  # fail early on an unknown norm or activation
        build_activation(cfg.activation)
        pool_keys = [*_aggregator_options(cfg), *(["dropout"] if cfg.pool_dropout is not None else [])]
        if cfg.kind == "perturbation_set" and pool_keys:
            first = pool_keys[0]
            raise ConfigError(
                f"model.global_aggregator_config.{first}: model.kind=perturbation_set has no global pooling "
                "(it reads the perturbed genes with one attention block); use model.kind=hetero_cell"
            )
        self.cfg = cfg
        E, H, L = cfg.embedding_channels, cfg.hidden_channels, cfg.num_layers
        data = graph.data
        self.num_genes, self.num_reactions, self.num_metabolites = (
            graph.num_genes,
            graph.num_reactions,
            graph.num_metabolites,
        )
        # The graph's static tensors are buffers so `.to(device)` moves them.
        self.register_buffer("physical_index", data[PHYSICAL].edge_index.long().contiguous(), persistent=False)
        self.register_buffer("regulatory_index", data[REGULATORY].edge_index.long().contiguous(), persistent=False)
        self.register_buffer("gpr_index", data[GPR].hyperedge_index.long().contiguous(), persistent=False)
        self.register_buffer("metabolism_index", data[METABOLISM].hyperedge_index.long().contiguous(), persistent=False)
        self.register_buffer("stoichiometry", data[METABOLISM].stoichiometry.float().contiguous(), persistent=False)
        self._plan_cache: tuple[torch.device, dict] | None = None  # destination-sorted edges, see _plans

        self.gene_embedding = nn.Embedding(self.num_genes, E)
        self.reaction_embedding = nn.Embedding(self.num_reactions, E)
        self.metabolite_embedding = nn.Embedding(self.num_metabolites, E)
        self.preprocessor = PreProcessor(E, H, num_layers=2, norm=cfg.norm, dropout=cfg.dropout,
                                         activation=cfg.activation)

        self.convs = nn.ModuleList()
        for layer in range(L):
            other_in = E if layer == 0 else H  # reactions/metabolites enter as raw embeddings
            block = dict(norm=cfg.norm, dropout=cfg.dropout, activation=cfg.activation)
            gat = dict(heads=cfg.heads, concat=True, add_self_loops=True)
            self.convs.append(
                nn.ModuleDict(
                    {
                        "physical": ConvBlock(BatchedGATv2Conv(H, H // cfg.heads, **gat), H, **block),
                        "regulatory": ConvBlock(BatchedGATv2Conv(H, H // cfg.heads, **gat), H, **block),
                        "gpr": ConvBlock(
                            BatchedGATv2Conv((H, other_in), H, heads=1, concat=False, add_self_loops=False), H, **block
                        ),
                        "metabolism": ConvBlock(StoichHypergraphConv(other_in, H, heads=1, gated=True), H, **block),
                    }
                )
            )

        # Slot 0 is the wildtype and, without batch statistics or dropout, a gene row equal to
        # slot 0's is the same function of the parameters, so its edges' scores could be shared
        # (BatchedGATv2Conv.share_slot0, exact). Off: training is chaotic in float rounding
        # (Adam turns the rounding of near-zero gradients into full steps; changing only the
        # chunk size moves parameters by 1e-2 within 10 steps), and with it on the default
        # demo run's val epsilon r fell from 0.74 to 0.47, below what tests/search asserts.
        self.share_slot0 = False
        # Same premise, exact in the same way: from the second layer on, a layer whose input
        # rows differ from the wildtype's only where the layers before reached (tracked from the
        # masks, not compared) computes only those (BatchedGATv2Conv's ``changed``).
        self.sparse_slots = cfg.norm != "batch" and cfg.dropout == 0
        for layer in self.convs:
            for name in ("physical", "regulatory"):
                layer[name].conv.share_slot0 = self.share_slot0 and self.sparse_slots  # the same premise
        if cfg.kind == "hetero_cell":
            pool_dropout = cfg.dropout if cfg.pool_dropout is None else cfg.pool_dropout
            self.global_aggregator = build_pooling(cfg.pooling, H, dropout=pool_dropout, **_aggregator_options(cfg))
            self.set_block = None
        else:
            # Dango-style: masked self-attention over the perturbed genes' embeddings.
            self.global_aggregator = None
            self.set_block = MultiheadAttentionBlock(H, pooling_heads(H), layer_norm=True, dropout=cfg.dropout)
        # Null head options inherit the model's (TorchCell: pred_config.get("head_norm", norm), ...).
        self.prediction_head = PredictionHead(
            H, cfg.head_hidden_channels, 2, num_layers=cfg.head_num_layers,
            norm=cfg.norm if cfg.head_norm is None else cfg.head_norm,
            activation=cfg.activation if cfg.head_activation is None else cfg.head_activation,
            dropout=cfg.dropout if cfg.head_dropout is None else cfg.head_dropout,
            residual=cfg.head_residual,
        )
        # Roles: perturbation_set adds a learned embedding per SGA role (query, array) to
        # each perturbed gene; hetero_cell adds Lin([h_query || h_array || h_query * h_array])
        # of the deleted genes' wildtype embeddings to z_p, so the head sees which gene was
        # the query. The product is the pair's own term (a factorisation's q.a): without it
        # an interaction must be read from z_w - z_pert through the pooling, and the demo
        # training lands on 0.38-0.73 val Pearson by seed and rounding path (issue 19).
        self.role_embedding = nn.Embedding(2, H) if cfg.use_roles and cfg.kind == "perturbation_set" else None
        self.role_proj = nn.Linear(3 * H, H) if cfg.use_roles and cfg.kind == "hetero_cell" else None
        # Profile features (model/collaborative.py): projected into z_p for the head, and a
        # linear skip to the output so the blend the features already give is one step away.
        # The tables are fitted on the train split by the trainer (set_profile_tables) and
        # saved with the weights, so a checkpoint predicts any pair on its own.
        F = NUM_PROFILE_FEATURES
        self.profile_proj = nn.Linear(F, H) if cfg.profile_features else None
        self.profile_skip = nn.Linear(F, 2) if cfg.profile_features else None
        if cfg.profile_features:
            self.register_buffer("profile_lookup", torch.zeros(self.num_genes, dtype=torch.long))
            self.register_buffer("profile_tables", torch.zeros(F, 1, 1))
            self.register_buffer("profile_mask", profile_input_mask(cfg), persistent=False)
            # The train records and feature scaling, so predict can add genes in no record.
            self.register_buffer("profile_train_genes", torch.zeros(0, 2, dtype=torch.long))
            self.register_buffer("profile_train_labels", torch.zeros(0, 2))
            self.register_buffer("profile_scale", torch.zeros(2, F))
            self.register_buffer("profile_meta", torch.zeros(2, dtype=torch.long))
        # model.gene_inputs=profile (model/gene_profiles.py): a gene's input is its embedded
        # train profile (sum of learned partner embeddings over its row and its column of the
        # train epsilon matrix), a flag for having one, its projected annotations and its
        # lenders' mean profiles; the pair readout adds the product of the two genes'
        # embeddings (a factorisation-like term) and borrowed entries (_pair_terms).
        # gene_embedding is then not read. The profile buffers are sized by set_gene_profiles.
        self.profile_inputs = cfg.gene_inputs == "profile"
        if self.profile_inputs:
            self.query_partners = nn.Embedding(self.num_genes, E)  # embeds the arrays of a query's row
            self.array_partners = nn.Embedding(self.num_genes, E)  # embeds the queries of an array's column
            self.profile_flag = nn.Embedding(2, E)
            self.annotation_proj = nn.Linear(NUM_ANNOTATIONS, E)
            self.lender_proj = nn.Linear(2 * E, E)  # the GO and SMF lenders' mean profiles
            self.pair_proj = nn.Linear(H, H)
            # Borrowed entries: attention over a gene's lenders reads their train epsilon with the
            # partner (model/gene_profiles.py); two values per role, projected into z_p and the output.
            self.lender_query = nn.Linear(H, H)
            self.lender_key = nn.Linear(H, H)
            self.borrow_proj = nn.Linear(_BORROWED, H)
            self.borrow_skip = nn.Linear(_BORROWED, 2)
            self.register_buffer("gene_profile_ids", torch.zeros(0, dtype=torch.long))
            self.register_buffer("gene_profile_matrix", torch.zeros(0, 0))
            self.register_buffer("gene_profile_observed", torch.zeros(0, 0, dtype=torch.bool))
            self.register_buffer("gene_profile_annotations", torch.zeros(self.num_genes, NUM_ANNOTATIONS))
            self.register_buffer("gene_profile_lenders", torch.zeros(self.num_genes, 2, LENDERS, dtype=torch.long))
            self.register_buffer("gene_profile_lender_weights", torch.zeros(self.num_genes, 2, LENDERS))
            self.register_buffer("gene_profile_rows", torch.zeros(self.num_genes, dtype=torch.long), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise every parameter (embeddings ~ N(0, 1), as ``nn.Embedding``)."""
        for emb in (self.gene_embedding, self.reaction_embedding, self.metabolite_embedding):
            emb.reset_parameters()
        self.preprocessor.reset_parameters()
        for layer in self.convs:
            for name in RELATIONS:
                layer[name].reset_parameters()
        for mod in (self.global_aggregator, self.set_block, self.prediction_head, self.role_embedding, self.role_proj,
                    self.profile_proj, self.profile_skip):
            if mod is not None:
                mod.reset_parameters()
        if self.profile_inputs:
            for mod in (self.query_partners, self.array_partners, self.profile_flag, self.annotation_proj,
                        self.lender_proj, self.pair_proj, self.lender_query, self.lender_key, self.borrow_proj,
                        self.borrow_skip):
                mod.reset_parameters()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        """Checkpoints with fewer profile features (saved before the SMF-similarity columns
        19-20 existed) load with the missing columns' weights at zero, so they predict exactly
        as they did; the new columns are computed and read with weight 0."""
        if self.profile_proj is not None:
            _pad_profile_features(state_dict, prefix, NUM_PROFILE_FEATURES)
        if self.profile_inputs and prefix + "gene_profile_ids" in state_dict:
            self.set_gene_profiles(GeneProfiles.from_model_state(state_dict, prefix))  # sized by the train split
        super()._load_from_state_dict(state_dict, prefix, *args)

    # ------------------------------------------------------------------ forward
    @property
    def needs_masks(self) -> bool:
        """Whether :meth:`forward` reads per-sample masks (``hetero_cell``) or not (``perturbation_set``)."""
        return self.cfg.kind != "perturbation_set"

    def set_profile_tables(self, tables: ProfileTables) -> None:
        """Install the profile-feature tables fitted on the train split (``model.profile_features``)."""
        if self.profile_proj is None:
            raise ConfigError("model.profile_features is false: this model reads no profile tables")
        device = self.profile_lookup.device
        self.profile_lookup = tables.lookup.to(device=device, dtype=torch.long)
        self.profile_tables = tables.tables.to(device=device, dtype=torch.float32)
        if tables.train_genes is not None:
            self.profile_train_genes = tables.train_genes.to(device=device, dtype=torch.long)
            self.profile_train_labels = tables.train_labels.to(device=device, dtype=torch.float32)
            self.profile_scale = tables.scale.to(device=device, dtype=torch.float32)
            self.profile_meta = tables.meta.to(device=device, dtype=torch.long)

    def set_gene_profiles(self, profiles: GeneProfiles) -> None:
        """Install the train-only profiles and annotations (``model.gene_inputs=profile``)."""
        if not self.profile_inputs:
            raise ConfigError("model.gene_inputs is 'embedding': this model reads no gene profiles")
        device = self.gene_profile_annotations.device
        self.gene_profile_ids = profiles.ids.to(device=device, dtype=torch.long)
        self.gene_profile_matrix = profiles.matrix.to(device=device, dtype=torch.float32)
        self.gene_profile_observed = profiles.observed.to(device=device, dtype=torch.bool)
        self.gene_profile_annotations = profiles.annotations.to(device=device, dtype=torch.float32)
        self.gene_profile_lenders = profiles.lenders.to(device=device, dtype=torch.long)
        self.gene_profile_lender_weights = profiles.lender_weights.to(device=device, dtype=torch.float32)
        rows = torch.full((self.num_genes,), len(profiles.ids), dtype=torch.long, device=device)
        rows[self.gene_profile_ids] = torch.arange(len(profiles.ids), device=device)
        self.gene_profile_rows = rows  # graph gene -> profile row; P = none

    def cover_genes(self, dataset: Dataset, genes: Tensor) -> int:
        """Add profile-table rows for the genes of ``genes`` that have none (genes in no record).

        Returns the number of genes added (0: nothing to do, or no profile features).
        """
        if self.profile_proj is None:
            return 0
        tables = ProfileTables.from_model_state(self.state_dict())
        added = len(tables.missing(genes.cpu()))
        if added:
            self.set_profile_tables(tables.cover(dataset, genes.cpu()))
        return added

    def forward(self, genes: Tensor, masks: PerturbationMasks | None, profile: Tensor | None = None) -> ModelOutput:
        """Predict the standardised labels of ``B`` deletions.

        Args:
            genes: ``(B, 2)`` long gene indices (query, array); ``-1`` pads.
            masks: what each sample keeps, from ``MaskBuilder(graph).masks(genes)``; ``None``
                is allowed where :attr:`needs_masks` is false.
            profile: ``(B, F)`` profile features to use instead of the tables' (the trainer
                passes out-of-fold features for train records); ignored without
                ``model.profile_features``.
        """
        if self.profile_proj is not None and profile is None:
            profile = ProfileTables(self.profile_lookup, self.profile_tables)(genes[:, :2])
        if self.profile_proj is not None:
            profile = mask_profile(profile, self.profile_mask, self.cfg.profile_dropout if self.training else 0.0)
        visible = self._visible_profiles()  # (P + 1,) or None
        shown = self._shown(visible) if visible is not None else None
        if self.cfg.kind == "perturbation_set":
            # The wildtype is encoded once; the perturbed genes are read from it (no masks).
            out = self._set_readout(self.gene_embeddings(shown), genes, profile, shown)
        else:
            if masks is None:
                raise DataError("masks: model.kind=hetero_cell needs the per-sample masks of MaskBuilder(graph).masks(genes)")
            self._check(genes, masks)
            keeps = self._keeps(masks)
            x_gene, x_rxn, x_met = self._inputs(keeps.gene, shown)
            x_gene = self._encode(x_gene, x_rxn, x_met, self._edges(), keeps)  # (N, B+1, H)
            z = self.global_aggregator(x_gene.transpose(0, 1), keeps.gene.t())  # (B+1, H)
            out = self._readout(z[:1], z[1:], x_gene[:, 0], genes, profile, shown)
        if visible is not None and self.training:
            rows = self.gene_profile_rows[genes[:, :2].clamp_min(0)]  # (B, 2)
            out = out._replace(scored=~visible[rows].all(1))
        return out

    def gene_embeddings(self, shown: _Shown | None = None) -> Tensor:
        """``(N_gene, C)``: wildtype gene embeddings after the convs (oversmoothing check).

        ``shown``: the train profiles shown (``model.gene_inputs=profile``; ``None``: all of
        them, in training too).
        """
        x_gene, x_rxn, x_met = self._inputs(None, shown)
        return self._encode(x_gene, x_rxn, x_met, self._edges(), _Keeps(None, None, None, None, None, None, None))[:, 0]

    def _visible_profiles(self, sample: bool | None = None) -> Tensor | None:
        """``(P + 1,)`` bool, the profile rows shown this forward (row ``P``, no profile: never).

        Sampled (``sample``, default: in training): each train gene is hidden with probability
        ``model.gene_profile_dropout``; else every train gene is shown (held-out genes have no row)."""
        if not self.profile_inputs:
            return None
        P = len(self.gene_profile_ids)
        visible = torch.ones(P + 1, dtype=torch.bool, device=self.gene_profile_ids.device)
        if self.training if sample is None else sample:
            visible[:P] = torch.rand(P, device=visible.device) >= self.cfg.gene_profile_dropout
        visible[P] = False
        return visible

    def _shown(self, visible: Tensor) -> _Shown:
        """The profile matrix on the ``visible`` rows and columns, once per forward (inputs and readout)."""
        P = len(self.gene_profile_ids)
        cells = visible[:, None] & visible[None, :]  # (P + 1, P + 1); row/column P: no profile, never
        y = self.gene_profile_matrix.new_zeros(P + 1, P + 1)
        y[:P, :P] = self.gene_profile_matrix
        seen = cells.new_zeros(P + 1, P + 1)
        seen[:P, :P] = self.gene_profile_observed
        return _Shown(visible, y * cells, seen & cells)

    def _gene_input(self, shown: _Shown | None) -> Tensor:
        r"""``(N_gene, E)`` layer-0 gene features: the identity embedding, or (``model.gene_inputs=profile``)

        .. math::
            p_g = \frac{\sum_a Y_{ga} u_a}{\sqrt{1 + n_g}} + \frac{\sum_q Y_{qg} v_q}{\sqrt{1 + m_g}},
            \qquad x_g = p_g + f_{[g \text{ shown}]} + W a_g
                  + L \Big[\frac{\sum_{j \in \mathcal{L}^r_g} w_{gj} p_j}{\sum_{j \in \mathcal{L}^r_g} w_{gj}}\Big]_{r = \text{GO}, \text{SMF}}

        over the shown genes only (a hidden gene's row and column are gone from ``Y``, and it
        lends nothing), with ``n_g``, ``m_g`` the shown observed cells of its row and column,
        ``u``, ``v`` learned partner embeddings, ``a_g`` its annotations and
        :math:`\mathcal{L}^r_g` its shown GO and SMF lenders (:mod:`~.gene_profiles`)."""
        if not self.profile_inputs:
            return self.gene_embedding.weight
        shown = self._shown(self._visible_profiles(sample=False)) if shown is None else shown
        P, visible = len(self.gene_profile_ids), shown.visible
        y, seen = shown.y[:P, :P], shown.seen[:P, :P].to(shown.y.dtype)
        rows = y @ self.query_partners(self.gene_profile_ids) / (1.0 + seen.sum(1, keepdim=True)).sqrt()  # (P, E)
        cols = y.t() @ self.array_partners(self.gene_profile_ids) / (1.0 + seen.sum(0).unsqueeze(1)).sqrt()
        profile = torch.cat([rows + cols, rows.new_zeros(1, rows.size(1))])  # (P + 1, E), row P: no profile
        index = self.gene_profile_rows  # (N,)
        lenders = self.gene_profile_lenders  # (N, 2, K)
        w = self.gene_profile_lender_weights * visible[lenders].to(profile.dtype)  # hidden genes lend nothing
        borrowed = (w.unsqueeze(-1) * profile[lenders]).sum(2) / w.sum(2, keepdim=True).clamp_min(1e-6)  # (N, 2, E)
        return (profile[index] + self.profile_flag(visible[index].long())
                + self.annotation_proj(self.gene_profile_annotations) + self.lender_proj(borrowed.flatten(1)))

    # ------------------------------------------------------------------ pieces
    def _check(self, genes: Tensor, masks: PerturbationMasks) -> None:
        if genes.dim() != 2 or genes.dtype != torch.long:
            raise DataError(f"genes: expected a (B, k) long tensor, got {tuple(genes.shape)} {genes.dtype}")
        B = genes.size(0)
        expected = {
            "gene": (B, self.num_genes),
            "reaction": (B, self.num_reactions),
            "metabolite": (B, self.num_metabolites),
        }
        for name, shape in expected.items():
            got = tuple(getattr(masks, name).shape)
            if got != shape:
                raise DataError(f"masks.{name}: expected shape {shape}, got {got}")

    def _edges(self) -> _Edges:
        return _Edges(
            self.physical_index,
            self.regulatory_index,
            self.gpr_index,
            self.metabolism_index,
            self.stoichiometry,
            self.num_reactions,
            self._plans(),
        )

    def _plans(self) -> dict:
        """Each relation's edges sorted by destination once (per device), for every forward."""
        device = self.physical_index.device
        if self._plan_cache is None or self._plan_cache[0] != device:
            G, R, M = self.num_genes, self.num_reactions, self.num_metabolites
            plans = {
                "physical": EdgePlan(self.physical_index, G, G, self_loops=True),
                "regulatory": EdgePlan(self.regulatory_index, G, G, self_loops=True),
                "gpr": EdgePlan(self.gpr_index, G, R, self_loops=False),
                "metabolism": (SegmentIndex(self.metabolism_index[0], M), SegmentIndex(self.metabolism_index[1], R)),
            }
            self._plan_cache = (device, plans)
        return self._plan_cache[1]

    def _keeps(self, masks: PerturbationMasks) -> _Keeps:
        """Slot 0 (wildtype) keeps everything; an edge is kept only if both ends are."""
        gene, rxn, met = masks.gene.bool().t(), masks.reaction.bool().t(), masks.metabolite.bool().t()  # (N, B)

        def slots(node_keep: Tensor) -> Tensor:
            return torch.cat([node_keep.new_ones(node_keep.size(0), 1), node_keep], dim=1)  # (n, B+1)

        def edge(t: tuple[str, str, str], index: Tensor, src_keep: Tensor, dst_keep: Tensor) -> Tensor:
            keep = src_keep[index[0]] & dst_keep[index[1]]  # (E, B)
            if t in masks.edges:
                keep = keep & masks.edges[t].bool().t()
            return slots(keep)

        return _Keeps(
            gene=slots(gene),
            reaction=slots(rxn),
            metabolite=slots(met),
            physical=edge(PHYSICAL, self.physical_index, gene, gene),
            regulatory=edge(REGULATORY, self.regulatory_index, gene, gene),
            gpr=edge(GPR, self.gpr_index, gene, rxn),
            metabolism=edge(METABOLISM, self.metabolism_index, met, rxn),
        )

    def _inputs(self, gene_keep: Tensor | None, shown: _Shown | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Layer-0 features. Identical in every slot, so one shared slot is returned (broadcast)
        unless batch norm or active dropout make the slots differ."""
        emb = self._gene_input(shown)  # (N, E)
        per_slot = gene_keep is not None and (self.cfg.norm == "batch" or (self.training and self.cfg.dropout > 0))
        if per_slot:
            N, S = gene_keep.shape
            x_gene = self.preprocessor(emb.unsqueeze(1).expand(N, S, -1).contiguous(), gene_keep)  # (N, S, H)
        else:
            x_gene = self.preprocessor(emb).unsqueeze(1)  # (N, 1, H)
        return x_gene, self.reaction_embedding.weight.unsqueeze(1), self.metabolite_embedding.weight.unsqueeze(1)

    def _encode(self, x_gene: Tensor, x_rxn: Tensor, x_met: Tensor, edges: _Edges, keeps: _Keeps, *,
                all_relations: bool = False) -> Tensor:
        """Run the conv layers; returns gene features ``(N, S, H)``."""
        plans = edges.plans or {}
        # (N, S) the gene rows that differ from the wildtype's (slot 0), while few: known once the
        # input is one shared slot (then only the masks differ) and the slots are computed alike.
        track = (self.sparse_slots and keeps.gene is not None and x_gene.size(1) == 1 and not all_relations
                 and "physical" in plans and "regulatory" in plans)
        changed = None
        for depth, layer in enumerate(self.convs):
            phys = layer["physical"](
                x_gene, None, edges.physical, keeps.physical, node_keep=keeps.gene, plan=plans.get("physical"),
                changed=changed,
            )
            reg = layer["regulatory"](
                x_gene, None, edges.regulatory, keeps.regulatory, node_keep=keeps.gene, plan=plans.get("regulatory"),
                changed=changed,
            )
            if track and depth + 1 < len(self.convs):
                changed = self._reached(changed, keeps, plans)
                track = changed is not None  # once dense, dense to the end
            # HeteroConv(aggr="sum") per destination type. In the report's layout no relation
            # leads from reactions or metabolites back to genes, and only genes are pooled, so
            # the GPR and metabolism convs cannot change the prediction: skipping them is
            # exact and saves their share of every step. Their parameters stay (the report's
            # architecture and parameter count); they receive no gradient either way. The
            # reference layout (all_relations=True) still runs them, as the report's code does.
            if all_relations:
                gpr = layer["gpr"](x_gene, x_rxn, edges.gpr, keeps.gpr, node_keep=keeps.reaction, plan=plans.get("gpr"))
                x_met = layer["metabolism"](
                    x_met, x_rxn, edges.metabolism, edges.stoich, keeps.metabolism, edges.num_reactions,
                    node_keep=keeps.metabolite, plan=plans.get("metabolism"),
                )
                x_rxn = gpr
            x_gene = phys + reg
        return x_gene

    #: Past this fraction of changed (gene, slot) rows a layer runs dense.
    _SPARSE_LIMIT = 0.25

    def _reached(self, changed: Tensor | None, keeps: _Keeps, plans: dict) -> Tensor | None:
        """``(N, S)`` the gene rows a layer's output changes, given its input's ``changed`` (``None``:
        none): a masked in-edge, a changed row, or an in-edge from one. ``None`` once past
        :attr:`_SPARSE_LIMIT` (the later layers run dense)."""
        with torch.no_grad():
            out = changed.clone() if changed is not None else None
            for name in ("physical", "regulatory"):
                plan = plans[name]
                reach = ~plan.keep(getattr(keeps, name))
                if changed is not None:
                    reach = reach | changed.index_select(0, plan.src)
                hit = plan.by_dst.sum(reach.to(torch.int32)) > 0
                out = hit if out is None else out | hit
            out[:, 0] = False
            return out if out[:, 1:].float().mean() <= self._SPARSE_LIMIT else None

    def _readout(self, z_w: Tensor, z_pert: Tensor, h_w: Tensor, genes: Tensor, profile: Tensor | None,
                 shown: _Shown | None = None) -> ModelOutput:
        """``z_w: (1, H)``, ``z_pert: (B, H)``, ``h_w: (N, H)`` wildtype gene features."""
        z_p = z_w - z_pert  # (B, H)
        if self.role_proj is not None:
            g = self._gather(h_w, genes[:, :2])  # (B, 2, H)
            z_p = z_p + self.role_proj(torch.cat([g[:, 0], g[:, 1], g[:, 0] * g[:, 1]], dim=1))
        return self._head(z_p, profile, self._pair_terms(h_w, genes, shown))

    def _pair_terms(self, h_w: Tensor, genes: Tensor, shown: _Shown | None) -> tuple[Tensor, Tensor] | None:
        r"""``model.gene_inputs=profile``: what the pair adds to ``z_p`` ``(B, H)`` and to the output ``(B, 2)``.

        The projected product of the two genes' embeddings, and borrowed entries: for the
        query ``q`` (array ``a`` likewise, reading ``Y_{q j}``), attention over its shown
        lenders ``j`` (GO, SMF; :mod:`~.gene_profiles`) that were measured with ``a``,

        .. math::
            b_q = \sum_j \alpha_j Y_{ja}, \qquad \alpha = \mathrm{softmax}_j\Big(
                  \frac{(W_Q h_q)^\top W_K h_j}{\sqrt{H}} + \log w_{qj}\Big),

        with whether any such lender exists; a hidden gene's cells are gone from ``Y``.
        """
        if shown is None:
            return None
        g = self._gather(h_w, genes[:, :2])  # (B, 2, H)
        P = len(self.gene_profile_ids)
        b = h_w.new_zeros(len(genes), _BORROWED)
        rows = self.gene_profile_rows[genes[:, :2].clamp_min(0)]  # (B, 2)
        for role in range(2 if P else 0):
            gene, partner = genes[:, role].clamp_min(0), rows[:, 1 - role]
            lenders = self.gene_profile_lenders[gene].flatten(1)  # (B, 2K) profile rows, P = none
            weights = self.gene_profile_lender_weights[gene].flatten(1)
            partners = partner[:, None].expand_as(lenders)
            cell = (lenders, partners) if role == 0 else (partners, lenders)
            usable = shown.seen[cell] & (weights > 0)  # (B, 2K)
            keys = self.lender_key(h_w[self.gene_profile_ids[lenders.clamp_max(P - 1)]])  # (B, 2K, H)
            score = (self.lender_query(g[:, role]).unsqueeze(1) * keys).sum(-1) / keys.size(-1) ** 0.5
            score = (score + weights.clamp_min(1e-12).log()).masked_fill(~usable, float("-inf"))
            any_usable = usable.any(1)
            alpha = torch.softmax(score.masked_fill(~any_usable[:, None], 0.0), 1) * usable.to(h_w.dtype)
            b[:, 2 * role] = (alpha * shown.y[cell]).sum(1)
            b[:, 2 * role + 1] = any_usable.to(h_w.dtype)
        return self.pair_proj(g[:, 0] * g[:, 1]) + self.borrow_proj(b), self.borrow_skip(b)

    def _head(self, z_p: Tensor, profile: Tensor | None, pair: tuple[Tensor, Tensor] | None = None) -> ModelOutput:
        skip = 0.0
        if pair is not None:
            z_p, skip = z_p + pair[0], pair[1]
        if profile is None or self.profile_proj is None:
            return ModelOutput(self.prediction_head(z_p) + skip, z_p)
        profile = profile.to(z_p.dtype)
        z_p = z_p + self.profile_proj(profile)
        return ModelOutput(self.prediction_head(z_p) + self.profile_skip(profile) + skip, z_p)

    def _set_readout(self, h_w: Tensor, genes: Tensor, profile: Tensor | None,
                     shown: _Shown | None = None) -> ModelOutput:
        valid = genes >= 0  # (B, k)
        x = self._gather(h_w, genes)  # (B, k, H)
        if self.role_embedding is not None:
            roles = torch.arange(genes.size(1), device=genes.device).clamp_max(1)  # query 0, array (and more) 1
            x = x + self.role_embedding(roles).unsqueeze(0)
        x = self.set_block(x, x, valid, valid)  # (B, k, H)
        w = valid.unsqueeze(-1).to(x.dtype)
        z_p = (x * w).sum(1) / w.sum(1).clamp_min(1.0)  # masked mean (B, H)
        return self._head(z_p, profile, self._pair_terms(h_w, genes, shown))

    @staticmethod
    def _gather(h: Tensor, genes: Tensor) -> Tensor:
        g = h[genes.clamp_min(0)]  # (B, k, H)
        return g * (genes >= 0).unsqueeze(-1).to(g.dtype)

    # ------------------------------------------------------------------ reporting
    def parameter_breakdown(self) -> dict[str, int]:
        """Parameters per module group (sums to the total); relations summed over layers."""

        def count(mod: nn.Module | None) -> int:
            return 0 if mod is None else sum(p.numel() for p in mod.parameters())

        out = {
            "gene_embedding": count(self.gene_embedding),
            "reaction_embedding": count(self.reaction_embedding),
            "metabolite_embedding": count(self.metabolite_embedding),
            "preprocessor": count(self.preprocessor),
        }
        for name in RELATIONS:
            out[f"convs.{name}"] = sum(count(layer[name]) for layer in self.convs)
        out["global_aggregator"] = count(self.global_aggregator)
        out["set_block"] = count(self.set_block)
        out["roles"] = count(self.role_embedding) + count(self.role_proj)
        out["profile_features"] = count(self.profile_proj) + count(self.profile_skip)
        if self.profile_inputs:
            out["gene_profiles"] = sum(count(m) for m in (self.query_partners, self.array_partners, self.profile_flag,
                                                          self.annotation_proj, self.lender_proj, self.pair_proj,
                                                          self.lender_query, self.lender_key, self.borrow_proj,
                                                          self.borrow_skip))
        out["prediction_head"] = count(self.prediction_head)
        return out

    def describe(self) -> str:
        """The module tree, the parameter count and its breakdown, as the report prints them."""
        breakdown = self.parameter_breakdown()
        width = max(map(len, breakdown))
        lines = [repr(self), f"Parameter count: {sum(breakdown.values())}"]
        lines += [f"  {name:<{width}}  {n:>10,}" for name, n in breakdown.items() if n]
        return "\n".join(lines)

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"kind={c.kind}, genes={self.num_genes}, reactions={self.num_reactions}, "
            f"metabolites={self.num_metabolites}, channels={c.embedding_channels}->{c.hidden_channels}, "
            f"layers={c.num_layers}, heads={c.heads}, pooling={c.pooling}, norm={c.norm}, "
            f"params={sum(p.numel() for p in self.parameters()):,}"
        )


def _pad_profile_features(state_dict: dict, prefix: str, num_features: int) -> None:
    """Pad a state dict's profile-feature entries (weights, tables, scale) to ``num_features``
    columns in place: zero weights and tables, scaling mean 0 and sd 1 for the added columns."""
    weight = state_dict.get(prefix + "profile_proj.weight")
    if weight is None or weight.size(1) >= num_features:
        return
    extra = num_features - weight.size(1)

    def pad(key: str, dim: int, fill: Tensor | float = 0.0) -> None:
        t = state_dict.get(prefix + key)
        if t is not None and t.size(dim) < num_features:
            shape = list(t.shape)
            shape[dim] = extra
            block = t.new_zeros(shape)
            if isinstance(fill, Tensor):  # per-row fill along dim 0 (the scale's mean/sd rows)
                block += fill.view(-1, *([1] * (len(shape) - 1)))
            state_dict[prefix + key] = torch.cat([t, block], dim=dim)

    pad("profile_proj.weight", 1)
    pad("profile_skip.weight", 1)
    pad("profile_tables", 0)
    pad("profile_scale", 1, torch.tensor([0.0, 1.0]))


def _aggregator_options(cfg: ModelConfig) -> dict[str, object]:
    """The ``model.global_aggregator_config`` values that are set (not null), by short key."""
    options = {
        "num_induced_points": cfg.pool_num_induced_points, "layer_norm": cfg.pool_layer_norm,
        "num_encoder_blocks": cfg.pool_num_encoder_blocks, "heads": cfg.pool_heads,
        "num_decoder_blocks": cfg.pool_num_decoder_blocks, "num_seed_points": cfg.pool_num_seed_points,
        "use_isab": cfg.pool_use_isab,
    }
    return {k: v for k, v in options.items() if v is not None}


def build_model(graph: CellGraph, cfg: ModelConfig) -> HeteroCell:
    """The model ``cfg`` describes over ``graph`` (see :class:`HeteroCell`).

    Raises:
        ConfigError: an unknown option string or an inconsistent size.
    """
    return HeteroCell(graph, cfg)
