"""The ``predict`` command: a trial's model applied to gene pairs from a TSV file.

Input: a TSV with a header holding the columns ``query_orf`` and ``array_orf``
(systematic ORF names; the order is the SGA role and is kept). Output: a TSV with
``query_orf, array_orf, fitness, gene_interaction`` on the original label scale, written
atomically (a temporary file renamed into place), so a failed run leaves nothing behind.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from torchcell_search._atomic import write_atomic
from torchcell_search.errors import ConfigError, DataError, StorageError, StudyError
from torchcell_search.search.duplicates import DUPLICATE_ATTR
from torchcell_search.storage.artifacts import (
    CHECKPOINT_FILE,
    artifacts_dir,
    download_trial_artifact,
    open_artifact_store,
)

__all__ = ["predict_command", "read_pairs"]

_COLUMNS = ("query_orf", "array_orf")
_SHOWN = 5


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """``(query_orf, array_orf)`` rows of a TSV with those header columns.

    Raises:
        DataError: the file is missing, lacks the columns, or has a short row.
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter="\t")
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in _COLUMNS if c not in header]
            if missing:
                raise DataError(f"--pairs {path}: header lacks column(s) {', '.join(missing)}; "
                                f"expected a TSV with query_orf and array_orf")
            qi, ai = header.index(_COLUMNS[0]), header.index(_COLUMNS[1])
            rows = []
            for line, row in enumerate(reader, start=2):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) <= max(qi, ai):
                    raise DataError(f"--pairs {path}: line {line} has {len(row)} column(s), expected {len(header)}")
                rows.append((row[qi].strip(), row[ai].strip()))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"--pairs {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from e
    return rows


def _write_tsv(out: Path, pairs: list[tuple[str, str]], pred: Any) -> None:
    def write(f: Any) -> None:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow([*_COLUMNS, "fitness", "gene_interaction"])
        for (q, a), (fit, gi) in zip(pairs, pred.tolist()):
            writer.writerow([q, a, repr(float(fit)), repr(float(gi))])

    try:
        write_atomic(out, write, text=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write there ({e.strerror or e})") from e


def _chosen_trials(opt_study: optuna.Study, study: str, trial: int | None, k: int,
                   diversity: str) -> list[optuna.trial.FrozenTrial]:
    """The trial asked for, else the ensemble's members (one member: the best trial)."""
    from torchcell_search.search.ensemble import select_members

    if trial is None:
        return select_members(opt_study, k, diversity)
    found = [t for t in opt_study.get_trials(deepcopy=False) if t.number == trial]
    if not found:
        raise StudyError(f"--trial {trial}: study {study!r} has trials 0..{len(opt_study.trials) - 1}")
    original = found[0].user_attrs.get(DUPLICATE_ATTR)  # answered from an earlier trial, which holds the model
    return [opt_study.trials[int(original)] if original is not None else found[0]]


def _member_predictions(frozen: optuna.trial.FrozenTrial, study: str, rdb: Any, store: Any, dataset: Any,
                        genes: torch.Tensor, target: torch.device, batch_size: int) -> Any:
    """One trial's predictions ``(R, 2)`` (original label scale) for ``genes`` ``(R, 2)``."""
    from torchcell_search.search.trainer import load_model, predict_genes

    with tempfile.TemporaryDirectory(prefix="torchcell-search-") as tmp:
        try:
            path = download_trial_artifact(store, rdb, frozen, CHECKPOINT_FILE, Path(tmp) / CHECKPOINT_FILE)
        except StorageError as e:
            raise StudyError(f"trial {frozen.number} of study {study!r} has no usable checkpoint "
                             f"({frozen.state.name.lower()}): {e}") from e
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    model, standardiser = load_model(checkpoint, dataset.graph, device=str(target))
    return predict_genes(model, standardiser, dataset, genes, batch_size=batch_size)


def predict_command(study: str, storage: str | None, *, trial: int | None = None, pairs: Path, out: Path,
                    cache_dir: Path | None = None, batch_size: int = 256, device: str = "auto",
                    ensemble: int | None = None, ensemble_diversity: str | None = None) -> dict[str, Any]:
    """Predict ``fitness`` and ``gene_interaction`` for the gene pairs in ``pairs``.

    Args:
        trial: trial number; default the study's best trial, or its ensemble.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``; the model runs there in
            full precision, whatever device it was trained on.
        ensemble: average this many trials' predictions (``search/ensemble.py`` chooses
            them); default the study's ``ensemble`` (1 unless its recipe says otherwise).
        ensemble_diversity: ``configs`` or ``seeds``; default the study's.

    Returns:
        ``{"study", "trial", "trials", "rows", "out", "device"}``; ``trial`` is the best
        member, ``trials`` every member averaged.

    Raises:
        ConfigError: ``trial`` given with ``ensemble`` > 1, or an invalid ensemble option.
        StudyError: no such study or trial, a member has no checkpoint, or the study has too
            few members for the ensemble.
        DataError: the pairs file is malformed or names genes absent from the cell graph
            (up to five are listed with their count); nothing is written.
        ConfigError: ``out`` cannot be written (e.g. its parent is a file), or ``device`` is
            ``cuda`` where there is none.
    """
    from torchcell_search.search.ensemble import check_ensemble
    from torchcell_search.search.objective import load_study_data
    from torchcell_search.search.study import _load
    from torchcell_search.search.trainer import resolve_device

    target = resolve_device(device)  # before any work: a bad device fails at once
    if trial is not None and ensemble is not None and ensemble > 1:
        raise ConfigError(f"--trial {trial} with --ensemble {ensemble}: give one of them")
    rdb, cfg = _load(study, storage)
    k, diversity = check_ensemble(cfg.ensemble if ensemble is None else ensemble,
                                  ensemble_diversity or cfg.ensemble_diversity)
    opt_study = optuna.load_study(study_name=study, storage=rdb)
    members = _chosen_trials(opt_study, study, trial, k, diversity)

    rows = read_pairs(Path(pairs))
    dataset, _ = load_study_data(cfg, cache_dir=cache_dir)
    index = {g: i for i, g in enumerate(dataset.graph.gene_ids)}
    unknown = sorted({g for pair in rows for g in pair if g not in index})
    if unknown:
        shown = ", ".join(unknown[:_SHOWN]) + (", ..." if len(unknown) > _SHOWN else "")
        raise DataError(f"--pairs {pairs}: {len(unknown)} gene(s) not in the cell graph: {shown}")

    store = open_artifact_store(artifacts_dir(storage, cfg.artifacts))
    genes = torch.tensor([[index[q], index[a]] for q, a in rows], dtype=torch.long).reshape(-1, 2)  # (R, 2)
    preds = [_member_predictions(t, study, rdb, store, dataset, genes, target, batch_size) for t in members]
    pred = preds[0] if len(preds) == 1 else np.mean(preds, axis=0)  # (R, 2): the members' mean
    _write_tsv(Path(out), rows, pred)
    return {"study": study, "trial": members[0].number, "trials": [t.number for t in members], "rows": len(rows),
            "out": str(out), "device": str(target)}
