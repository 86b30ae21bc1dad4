"""predict: a trial's model on gene pairs from a TSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from services import require_cuda
from torchcell_search.cli import main
from torchcell_search.errors import DataError
from torchcell_search.search.predict import predict_command
from torchcell_search.search.study import start_command
from torchcell_search.storage.artifacts import artifacts_dir, download_trial_artifact, open_artifact_store

TINY = {"space": {"parameters": {"model.num_layers": 1, "model.hidden_channels": 8, "heads": 1,
                                 "cell_dataset.learnable_embedding_input_channels": 8,
                                 "model.prediction_head_config.hidden_channels": 8, "model.pooling": "attentional"}},
        "subset": 200, "epochs": 1, "device": "cpu", "n_trials": 1, "pruner": "none",
        "overrides": {"data_module.batch_size": 64}}


def _finished_study(tmp_path: Path, device: str = "cpu") -> tuple[str, Path, np.lib.npyio.NpzFile]:
    """A one-trial study trained on ``device``, a pairs file of its val records, and the trial's
    stored predictions."""
    from torchcell_search.search.objective import load_study_data
    from torchcell_search.search.study import build_study_config

    url = f"sqlite:///{tmp_path / 's.db'}"
    start_command("p", url, {**TINY, "device": device}, jobs=1)
    study = optuna.load_study(study_name="p", storage=url)
    stored = download_trial_artifact(open_artifact_store(artifacts_dir(url)), study._storage, study.best_trial,
                                     "predictions.npz", tmp_path / "pred.npz")
    npz = np.load(stored)
    ids = load_study_data(build_study_config(TINY))[0].graph.gene_ids
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("query_orf\tarray_orf\n" + "".join(f"{ids[q]}\t{ids[a]}\n" for q, a in npz["val_genes"]))
    return url, pairs, npz


def _read_predictions(out: Path) -> np.ndarray:
    rows = [line.split("\t") for line in out.read_text().splitlines()]
    assert rows[0] == ["query_orf", "array_orf", "fitness", "gene_interaction"]
    return np.array([[float(r[2]), float(r[3])] for r in rows[1:]])


@pytest.mark.slow
def test_predict_runs_on_the_device_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    url, pairs, npz = _finished_study(tmp_path)
    capsys.readouterr()
    assert main(["predict", "--study", "p", "--storage", url, "--pairs", str(pairs), "--out",
                 str(tmp_path / "cpu.tsv"), "--device", "cpu"]) == 0
    # --device cpu: the trial's model on the CPU gives its stored val predictions
    assert np.allclose(_read_predictions(tmp_path / "cpu.tsv"), npz["val_pred"], atol=1e-5)
    # --device cuda on a machine without CUDA (the one thing faked here): exit 2, one line, nothing written
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    capsys.readouterr()
    assert main(["predict", "--study", "p", "--storage", url, "--pairs", str(pairs), "--out",
                 str(tmp_path / "cuda.tsv"), "--device", "cuda"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "torchcell-search: error: --device cuda: no CUDA device is available here; use --device auto or cpu"]
    assert not (tmp_path / "cuda.tsv").exists()


@pytest.mark.cuda
@pytest.mark.slow
def test_predict_on_cuda_matches_the_cpu_predictions(tmp_path: Path) -> None:
    require_cuda()
    url, pairs, npz = _finished_study(tmp_path)
    result = predict_command("p", url, pairs=pairs, out=tmp_path / "cuda.tsv", device="cuda")
    # the model ran on the GPU, in full precision, and agrees with the CPU-trained trial's predictions
    assert result["device"].startswith("cuda")
    assert np.allclose(_read_predictions(tmp_path / "cuda.tsv"), npz["val_pred"], atol=1e-4)


@pytest.mark.cuda
@pytest.mark.slow
def test_a_gpu_trained_checkpoint_predicts_the_same_on_the_cpu_and_the_gpu(tmp_path: Path) -> None:
    require_cuda()
    url, pairs, npz = _finished_study(tmp_path, device="cuda")
    on_cpu = predict_command("p", url, pairs=pairs, out=tmp_path / "cpu.tsv", device="cpu")
    on_gpu = predict_command("p", url, pairs=pairs, out=tmp_path / "cuda.tsv", device="cuda")
    assert on_cpu["device"] == "cpu" and on_gpu["device"].startswith("cuda")
    # a checkpoint saved from CUDA tensors loads on the CPU; both run in float32 and agree to
    # the tolerance the README states (1e-4 on the label scale)
    assert np.allclose(_read_predictions(tmp_path / "cpu.tsv"), _read_predictions(tmp_path / "cuda.tsv"), atol=1e-4)


@pytest.mark.slow
def test_predict_reproduces_the_trials_val_predictions(tmp_path: Path) -> None:
    url, pairs, npz = _finished_study(tmp_path)
    known_gene = pairs.read_text().splitlines()[1].split("\t")[1]
    out = tmp_path / "out.tsv"
    result = predict_command("p", url, pairs=pairs, out=out)
    assert result["rows"] == len(npz["val_genes"])
    rows = [line.split("\t") for line in out.read_text().splitlines()]
    assert rows[0] == ["query_orf", "array_orf", "fitness", "gene_interaction"]
    pred = np.array([[float(r[2]), float(r[3])] for r in rows[1:]])
    # the same model on the same pairs gives the stored predictions
    assert np.allclose(pred, npz["val_pred"], atol=1e-5)

    # unknown genes: listed (up to five) with their count, nothing written
    bad = tmp_path / "bad.tsv"
    bad.write_text("query_orf\tarray_orf\n" + "".join(f"YNOPE{i}\t{known_gene}\n" for i in range(7)))
    with pytest.raises(DataError, match=r"7 gene\(s\) not in the cell graph: YNOPE0, YNOPE1, YNOPE2, YNOPE3, YNOPE4, \.\.\."):
        predict_command("p", url, pairs=bad, out=tmp_path / "bad-out.tsv")
    assert not (tmp_path / "bad-out.tsv").exists()


def test_pairs_without_the_header_columns_are_a_data_error(tmp_path: Path) -> None:
    from torchcell_search.search.predict import read_pairs

    path = tmp_path / "p.tsv"
    path.write_text("a\tb\nX\tY\n")
    with pytest.raises(DataError, match="header lacks column"):
        read_pairs(path)
