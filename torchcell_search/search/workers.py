"""The worker plan of ``start``: how many workers, which GPU each, how many threads each.

- CPU node (or ``--device cpu``): one worker per CPU this process may use, at most one per
  trial left; each gets ``CPUs // workers`` torch threads (1 when the workers fill the CPUs).
- k visible GPUs (``--device auto`` or ``cuda``): ``k * workers_per_gpu`` workers, at most one
  per trial left, worker ``i`` pinned to GPU ``i mod k`` through ``CUDA_VISIBLE_DEVICES`` in
  its process environment (so each sees its GPU as ``cuda:0``); threads as above.

"CPUs this process may use" is its affinity mask (taskset, cgroups, a Slurm allocation with
task affinity), capped by ``SLURM_CPUS_PER_TASK`` where Slurm set it (the CLI passes it), and
never ``os.cpu_count()``, the whole machine.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from torchcell_search.errors import ConfigError

__all__ = ["WorkerPlan", "usable_cpus", "worker_plan"]


@dataclass(frozen=True)
class WorkerPlan:
    """``workers`` processes with ``threads`` torch threads each; ``gpus[i]`` is worker ``i``'s
    ``CUDA_VISIBLE_DEVICES`` entry, or ``None`` for a CPU worker."""

    workers: int
    threads: int
    gpus: tuple[str | None, ...]
    cpus: int

    def describe(self) -> str:
        """One line: ``worker plan: 4 workers x 16 threads, GPU per worker 0, 1, 2, 3; 64 usable CPUs``."""
        workers = f"{self.workers} worker{'s' if self.workers != 1 else ''}"
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        if self.gpus and self.gpus[0] is not None:
            where = f"GPU per worker {', '.join(str(g) for g in self.gpus)}"
        else:
            where = "on the CPU"
        return f"worker plan: {workers} x {threads}, {where}; {self.cpus} usable CPU{'s' if self.cpus != 1 else ''}"


def usable_cpus(slurm_cpus: int | None = None) -> int:
    """The CPUs this process may use: its affinity mask, capped by Slurm's grant when given."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux: no affinity mask to read
        cpus = os.cpu_count() or 1
    if slurm_cpus is not None:
        cpus = min(cpus, slurm_cpus)
    return max(1, cpus)


def _visible_gpus(device: str, visible: str | None) -> list[str]:
    """The GPU identifiers workers can be pinned to; none for a CPU study."""
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        if device == "cuda":
            raise ConfigError("--device cuda: no CUDA device is available here; use --device auto or cpu")
        return []
    count = torch.cuda.device_count()
    # Pin to the ids this process was given (Slurm sets e.g. CUDA_VISIBLE_DEVICES=2,3), not to 0..k-1.
    given = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    return given[:count] if len(given) >= count else [str(i) for i in range(count)]


def worker_plan(trials_left: int, *, device: str = "auto", jobs: int | None = None, workers_per_gpu: int = 1,
                threads: int | None = None, slurm_cpus: int | None = None,
                visible_gpus: str | None = None) -> WorkerPlan:
    """The workers ``start`` runs (see the module docstring).

    Args:
        trials_left: trials the study still needs; without ``jobs``, never more workers.
        device: the study's device, ``auto``, ``cpu`` or ``cuda``.
        jobs: workers asked for (``--jobs``); spread over the GPUs in turn where there are any.
        workers_per_gpu: workers sharing one GPU (``--workers-per-gpu``), without ``jobs``.
        threads: torch threads per worker asked for (``--threads``); default the usable CPUs
            shared out among the workers.
        slurm_cpus: ``SLURM_CPUS_PER_TASK`` where Slurm set it.
        visible_gpus: this process's ``CUDA_VISIBLE_DEVICES``.

    Raises:
        ConfigError: ``workers_per_gpu`` below 1, or ``cuda`` asked for where there is none.
    """
    if isinstance(workers_per_gpu, bool) or not isinstance(workers_per_gpu, int) or workers_per_gpu < 1:
        raise ConfigError(f"--workers-per-gpu: expected an integer >= 1, got {workers_per_gpu!r}")
    cpus = usable_cpus(slurm_cpus)
    gpus = _visible_gpus(device, visible_gpus)
    if jobs is None:
        jobs = max(1, min(len(gpus) * workers_per_gpu if gpus else cpus, trials_left))
    pinned: Sequence[str | None] = [gpus[i % len(gpus)] for i in range(jobs)] if gpus else [None] * jobs
    return WorkerPlan(workers=jobs, threads=threads or max(1, cpus // jobs), gpus=tuple(pinned), cpus=cpus)
