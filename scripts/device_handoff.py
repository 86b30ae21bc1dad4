"""CPU -> GPU hand-off of one trial, and CPU/GPU prediction parity, through the command line.

Part of scripts/gpu-check.sh. As on a cluster: a study with ``--device auto`` (SQLite here);
a worker on a CPU node (``CUDA_VISIBLE_DEVICES=""``) is stopped by SIGTERM after its first
epoch checkpoint, a worker on the GPU node picks the trial up and finishes it from that
checkpoint; then ``predict --device cpu`` and ``--device cuda`` run the finished trial's
checkpoint on the trial's val pairs. Prints each step's figure and exits 1 on the first that
fails. ``--smoke`` runs the second worker and both predictions on the CPU, to try this script
on a machine without a GPU (it then checks everything but the devices).

Usage: python scripts/device_handoff.py WORKDIR [--smoke]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import torch

#: One layer, 8 channels: a CPU epoch on 1,500 demo records takes seconds.
SPACE = """parameters:
  model.num_layers: 1
  model.hidden_channels: 8
  heads: 1
  cell_dataset.learnable_embedding_input_channels: 8
  model.prediction_head_config.hidden_channels: 8
  model.pooling: attentional
  model.dropout: 0.1
"""
#: The README's stated tolerance of prediction parity across devices, on the label scale.
PARITY_ATOL = 1e-4
STUDY = "handoff"


def _cli(*args: str, env: dict[str, str], wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torchcell_search.cli", *args]
    if wait:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _fail(message: str) -> None:
    print(f"device-handoff: FAILED: {message}")
    raise SystemExit(1)


def _check(ok: bool, message: str) -> None:
    print(f"device-handoff: {'ok' if ok else 'FAILED'}: {message}")
    if not ok:
        raise SystemExit(1)


def _cpu_worker_until_first_checkpoint(env: dict[str, str], checkpoint: Path) -> None:
    cpu_node = {**env, "CUDA_VISIBLE_DEVICES": ""}  # the CPU node: no GPU visible, auto is the CPU
    worker = _cli("worker", "--study", STUDY, env=cpu_node, wait=False)
    deadline = time.monotonic() + 900
    while not checkpoint.exists():
        if worker.poll() is not None:
            _fail(f"the CPU worker exited before its first checkpoint: {worker.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            worker.kill()
            _fail(f"{checkpoint} never appeared")
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=900)
    _check(worker.returncode == 0 and "handed back for retry" in err,
           f"the CPU worker stopped on SIGTERM and handed trial 0 back (status {worker.returncode})")


def _pairs_of_val_records(url: str, workdir: Path) -> Path:
    from torchcell_search.search.objective import load_study_data
    from torchcell_search.search.study import _load
    from torchcell_search.storage.artifacts import artifacts_dir, download_trial_artifact, open_artifact_store

    study = optuna.load_study(study_name=STUDY, storage=url)
    stored = download_trial_artifact(open_artifact_store(artifacts_dir(url)), study._storage, study.best_trial,
                                     "predictions.npz", workdir / "pred.npz")
    ids = load_study_data(_load(STUDY, url)[1])[0].graph.gene_ids
    pairs = workdir / "pairs.tsv"
    pairs.write_text("query_orf\tarray_orf\n" + "".join(
        f"{ids[q]}\t{ids[a]}\n" for q, a in np.load(stored)["val_genes"]))
    return pairs


def _predictions(path: Path) -> np.ndarray:
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
    return np.array([[float(r[2]), float(r[3])] for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--smoke", action="store_true", help="no GPU: run the GPU steps on the CPU")
    args = parser.parse_args()
    workdir = args.workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    gpu = "cpu" if args.smoke else "cuda"
    if not args.smoke and not torch.cuda.is_available():
        _fail("no CUDA device is visible to torch (use --smoke to try the script on a CPU)")
    url = f"sqlite:///{workdir / 'h.db'}"
    env = {**os.environ, "TORCHCELL_SEARCH_STORAGE": url, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    (workdir / "space.yaml").write_text(SPACE)
    created = _cli("create", "--study", STUDY, "--data", "demo", "--subset", "1500", "--epochs", "4",
                   "--n-trials", "1", "--pruner", "none", "--sampler", "random", "--device", "auto",
                   "--space", str(workdir / "space.yaml"), env=env)
    _check(created.returncode == 0, f"study created: {created.stdout.strip() or created.stderr.strip()}")
    checkpoint = workdir / "h-artifacts" / "epoch-checkpoints" / STUDY / "trial-0.pt"
    _cpu_worker_until_first_checkpoint(env, checkpoint)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    _check(saved["scaler"] == {} and saved["cuda_rng"] is None,
           f"the CPU checkpoint (epoch {saved['state']['epoch']}) holds no loss scale and no CUDA random state")

    resumed = _cli("worker", "--study", STUDY, env=env)  # the GPU node
    _check(resumed.returncode == 0, f"the {gpu} worker finished the trial (status {resumed.returncode}) "
           f"{resumed.stderr[-1500:] if resumed.returncode else ''}")
    done = [t for t in optuna.load_study(study_name=STUDY, storage=url).trials if t.state.is_finished()
            and t.state != optuna.trial.TrialState.FAIL]
    _check(len(done) == 1 and done[0].user_attrs.get("resumed_from", {}).get("epoch") == saved["state"]["epoch"],
           f"the retry resumed from the CPU checkpoint: {done[0].user_attrs.get('resumed_from') if done else None}")
    device = done[0].user_attrs.get("device", "")
    _check(device.startswith(gpu), f"the retry trained on {device}, epochs "
           f"{[h['epoch'] for h in done[0].user_attrs['history']]}")

    pairs = _pairs_of_val_records(url, workdir)
    preds = {}
    for where in ("cpu", gpu):
        out = workdir / f"pred-{where}.tsv"
        r = _cli("predict", "--study", STUDY, "--pairs", str(pairs), "--out", str(out), "--device", where, env=env)
        _check(r.returncode == 0, f"predict --device {where} (status {r.returncode}) {r.stderr[-800:] if r.returncode else ''}")
        preds[where] = _predictions(out)
    worst = float(np.abs(preds["cpu"] - preds[gpu]).max())
    _check(worst <= PARITY_ATOL, f"predict --device cpu vs {gpu} on {len(preds['cpu'])} pairs: "
           f"largest difference {worst:.2e} (tolerance {PARITY_ATOL:.0e})")


if __name__ == "__main__":
    main()
