"""The worker plan of ``start``: workers, the GPU of each, threads, from what this process may use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torchcell_search.cli import main
from torchcell_search.errors import ConfigError
from torchcell_search.search import study as study_module
from torchcell_search.search.workers import WorkerPlan, usable_cpus, worker_plan


@pytest.fixture
def node(monkeypatch):
    """``node(cpus, gpus, machine_cpus=64)``: this process may use ``cpus`` of a ``machine_cpus``-core
    node with ``gpus`` GPUs (the affinity mask and CUDA's device count are the fakes)."""

    def make(cpus: int, gpus: int = 0, machine_cpus: int = 64) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
        monkeypatch.setattr(os, "cpu_count", lambda: machine_cpus)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)

    return make


def test_a_cpu_node_runs_a_worker_per_usable_cpu_and_shares_the_rest_out_as_threads(node) -> None:
    node(64)
    assert worker_plan(100) == WorkerPlan(workers=64, threads=1, gpus=(None,) * 64, cpus=64)
    # fewer trials than CPUs: fewer workers, each with more threads
    assert worker_plan(4) == WorkerPlan(workers=4, threads=16, gpus=(None,) * 4, cpus=64)


def test_a_four_core_allocation_on_a_64_core_node_runs_four_single_thread_workers(node) -> None:
    node(4, machine_cpus=64)  # as taskset, cgroups or Slurm's task affinity leave it
    plan = worker_plan(8)
    assert (plan.workers, plan.threads, plan.cpus) == (4, 1, 4)  # never 4 x 16 from os.cpu_count()
    # Slurm's grant caps the mask where Slurm binds no CPUs
    node(64, machine_cpus=64)
    plan = worker_plan(8, slurm_cpus=4)
    assert (plan.workers, plan.threads, plan.cpus) == (4, 1, 4)


def test_a_four_gpu_node_pins_one_worker_to_each_gpu(node) -> None:
    node(64, gpus=4)
    assert worker_plan(100) == WorkerPlan(workers=4, threads=16, gpus=("0", "1", "2", "3"), cpus=64)
    # --workers-per-gpu shares a large GPU, in turn
    plan = worker_plan(100, workers_per_gpu=2)
    assert plan.gpus == ("0", "1", "2", "3", "0", "1", "2", "3") and plan.threads == 8
    # never more workers than trials left
    assert worker_plan(2).gpus == ("0", "1")
    # the ids this process was given (Slurm: CUDA_VISIBLE_DEVICES=5,7), not 0..k-1
    node(8, gpus=2)
    assert worker_plan(10, visible_gpus="5,7").gpus == ("5", "7")


def test_a_one_gpu_node_runs_one_worker_with_the_cpus_as_threads(node) -> None:
    node(8, gpus=1)
    assert worker_plan(8) == WorkerPlan(workers=1, threads=8, gpus=("0",), cpus=8)


def test_a_cpu_study_on_a_gpu_node_plans_cpu_workers_and_cuda_needs_a_gpu(node) -> None:
    node(4, gpus=2)
    assert worker_plan(8, device="cpu").gpus == (None,) * 4
    node(4, gpus=0)
    with pytest.raises(ConfigError, match="--device cuda: no CUDA device"):
        worker_plan(8, device="cuda")


def test_jobs_and_threads_given_win_and_bad_values_are_refused(node) -> None:
    node(8, gpus=2)
    plan = worker_plan(100, jobs=3, threads=2)
    assert (plan.workers, plan.threads, plan.gpus) == (3, 2, ("0", "1", "0"))
    with pytest.raises(ConfigError, match="--workers-per-gpu: expected an integer >= 1, got 0"):
        worker_plan(8, workers_per_gpu=0)


def test_the_plan_reads_as_one_line(node) -> None:
    node(64, gpus=4)
    assert worker_plan(100).describe() == (
        "worker plan: 4 workers x 16 threads, GPU per worker 0, 1, 2, 3; 64 usable CPUs")
    node(2)
    assert worker_plan(1).describe() == "worker plan: 1 worker x 2 threads, on the CPU; 2 usable CPUs"


def test_usable_cpus_follow_a_real_affinity_mask() -> None:
    # A child restricted to one core (as `taskset -c 0` or a one-CPU Slurm task) on this machine.
    code = ("import os; os.sched_setaffinity(0, {0}); from torchcell_search.search.workers import worker_plan; "
            "p = worker_plan(8, device='cpu'); print(p.workers, p.threads, p.cpus)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["1", "1", "1"]
    assert usable_cpus() == len(os.sched_getaffinity(0)) and usable_cpus(slurm_cpus=1) == 1


class _Recorded:
    """Stands in for a worker process on a GPU node (no GPU here): records its environment."""

    envs: list[dict[str, str]] = []

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.envs.append(env)

    def wait(self) -> int:
        return 0


def test_each_spawned_worker_gets_its_gpu_and_threads_in_its_environment(monkeypatch) -> None:
    _Recorded.envs = []
    monkeypatch.setattr(study_module.subprocess, "Popen", _Recorded)
    plan = WorkerPlan(workers=3, threads=5, gpus=("0", "1", "0"), cpus=16)
    study_module._spawn_workers("s", "sqlite:///x.db", plan, None)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in _Recorded.envs] == ["0", "1", "0"]
    assert {e["OMP_NUM_THREADS"] for e in _Recorded.envs} == {"5"}
    assert {e["TORCHCELL_SEARCH_STORAGE"] for e in _Recorded.envs} == {"sqlite:///x.db"}


SPACE = """parameters:
  model.num_layers: 1
  model.hidden_channels: 8
  heads: 1
  cell_dataset.learnable_embedding_input_channels: 8
  model.prediction_head_config.hidden_channels: 8
  model.pooling: attentional
"""


def test_start_prints_its_worker_plan_first(tmp_path: Path, capsys) -> None:
    (tmp_path / "space.yaml").write_text(SPACE)
    args = ["start", "--study", "plan", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--space",
            str(tmp_path / "space.yaml"), "--subset", "200", "--epochs", "1", "--n-trials", "1", "--device", "cpu",
            "--pruner", "none"]
    assert main(args) == 0
    err = capsys.readouterr().err.splitlines()
    # one trial left: one worker, in this process, with the usable CPUs as its threads
    cpus = len(os.sched_getaffinity(0))
    assert f"torchcell-search: note: worker plan: 1 worker x {cpus} thread{'s' if cpus > 1 else ''}, " \
           f"on the CPU; {cpus} usable CPU{'s' if cpus > 1 else ''}" in err
    assert torch.get_num_threads() == 1  # the process's own setting is back afterwards
    assert main([*args[:2], "plan2", *args[3:], "--workers-per-gpu", "0"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "torchcell-search: error: --workers-per-gpu: expected an integer >= 1, got 0"]
    import optuna

    assert optuna.study.get_all_study_names(f"sqlite:///{tmp_path / 's.db'}") == ["plan"]  # nothing written
