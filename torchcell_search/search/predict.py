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

import optuna
import torch

from torchcell_search._atomic import write_atomic
from torchcell_search.errors import ConfigError, DataError, StorageError, StudyError
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


def predict_command(study: str, storage: str | None, *, trial: int | None = None, pairs: Path, out: Path,
                    cache_dir: Path | None = None, batch_size: int = 256, device: str = "auto") -> dict[str, Any]:
    """Predict ``fitness`` and ``gene_interaction`` for the gene pairs in ``pairs``.

    Args:
        trial: trial number; default the study's best trial.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``; the model runs there in
            full precision, whatever device it was trained on.

    Returns:
        ``{"study", "trial", "rows", "out"}``.

    Raises:
        StudyError: no such study or trial, or the trial has no checkpoint.
        DataError: the pairs file is malformed or names genes absent from the cell graph
            (up to five are listed with their count); nothing is written.
        ConfigError: ``out`` cannot be written (e.g. its parent is a file), or ``device`` is
            ``cuda`` where there is none.
    """
    from torchcell_search.search.objective import load_study_data
    from torchcell_search.search.study import _load
    from torchcell_search.search.trainer import load_model, predict_genes, resolve_device

    target = resolve_device(device)  # before any work: a bad device fails at once
    rdb, cfg = _load(study, storage)
    opt_study = optuna.load_study(study_name=study, storage=rdb)
    if trial is None:
        complete = opt_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not complete:
            raise StudyError(f"study {study!r} has no complete trial yet; give --trial N or run more trials")
        # A multi-objective study has no single best trial: take its Pareto set's first trial.
        frozen = opt_study.best_trial if len(opt_study.directions) == 1 else min(
            opt_study.best_trials, key=lambda t: t.number)
    else:
        found = [t for t in opt_study.get_trials(deepcopy=False) if t.number == trial]
        if not found:
            raise StudyError(f"--trial {trial}: study {study!r} has trials 0..{len(opt_study.trials) - 1}")
        frozen = found[0]

    rows = read_pairs(Path(pairs))
    dataset, _ = load_study_data(cfg, cache_dir=cache_dir)
    index = {g: i for i, g in enumerate(dataset.graph.gene_ids)}
    unknown = sorted({g for pair in rows for g in pair if g not in index})
    if unknown:
        shown = ", ".join(unknown[:_SHOWN]) + (", ..." if len(unknown) > _SHOWN else "")
        raise DataError(f"--pairs {pairs}: {len(unknown)} gene(s) not in the cell graph: {shown}")

    store = open_artifact_store(artifacts_dir(storage, cfg.artifacts))
    with tempfile.TemporaryDirectory(prefix="torchcell-search-") as tmp:
        try:
            path = download_trial_artifact(store, rdb, frozen, CHECKPOINT_FILE, Path(tmp) / CHECKPOINT_FILE)
        except StorageError as e:
            raise StudyError(f"trial {frozen.number} of study {study!r} has no usable checkpoint "
                             f"({frozen.state.name.lower()}): {e}") from e
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    model, standardiser = load_model(checkpoint, dataset.graph, device=str(target))
    genes = torch.tensor([[index[q], index[a]] for q, a in rows], dtype=torch.long).reshape(-1, 2)  # (R, 2)
    pred = predict_genes(model, standardiser, dataset, genes, batch_size=batch_size)  # (R, 2)
    _write_tsv(Path(out), rows, pred)
    return {"study": study, "trial": frozen.number, "rows": len(rows), "out": str(out), "device": str(target)}
