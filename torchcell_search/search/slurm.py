"""SLURM array scripts whose tasks each run one ``torchcell-search worker``.

Every array task joins the same study and pulls trials from it until the study's
``n_trials`` budget is reached, so the array size is the number of parallel workers, not
the number of trials. Use PostgreSQL storage for this (SQLite locks under many writers
and must sit on a file system every node sees).

On a real cluster::

    # 1. the storage URL travels in the environment, never in the script
    export TORCHCELL_SEARCH_STORAGE=postgresql://user:secret@db-host:5432/search
    # 2. create the study once (its whole configuration is stored with it)
    torchcell-search create --study fit-int --n-trials 64 --epochs 30 --data /path/to/data
    # 3. write fit-int.sbatch and submit 16 workers, at most 8 running at a time
    torchcell-search slurm --study fit-int --array 0-15%8 --partition gpu \\
        --gpus-per-task 1 --cpus-per-task 4 --mem 32G --time 08:00:00 --submit
    # or without --submit: inspect fit-int.sbatch, then `sbatch fit-int.sbatch`
    # (sbatch passes the exported environment to the tasks: --export=ALL)

Each array task is one job of one task (``--ntasks=1``), so per-task GPU requests
(``--gpus-per-task``) are valid: Slurm rejects ``--gpus-per-task`` without ``--ntasks`` or
``--gpus`` at submission (22.05 already in sbatch; a rule of the controller from 23.11).
``--gres gpu:1`` is the per-node form older sites use. The worker's torch threads are the
CPUs Slurm granted (``SLURM_CPUS_PER_TASK``, else 1), whatever ``OMP_NUM_THREADS`` the
submitting shell had. Written for Slurm 20.11 and later (``--gpus-per-task`` exists since
19.05); tested against a real 22.05 controller with GPU GRES.

Each task logs to ``<study>-<jobid>_<task>.out`` in the directory ``sbatch`` ran in. The
script runs the worker with ``exec`` so the ``--signal=B:TERM@120`` warning before the
time limit (or preemption's SIGTERM) reaches the worker directly; trials cut short are
marked failed by the heartbeat and retried by the remaining workers. The script uses the
Python environment it was generated from (its absolute path is recorded), so generate it
on a file system the compute nodes share.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from torchcell_search._atomic import write_atomic
from torchcell_search.errors import ConfigError, StorageError, StudyError

__all__ = ["launcher_defaults", "slurm_command", "slurm_script"]

_STORAGE_ENV = "TORCHCELL_SEARCH_STORAGE"
_SIGNAL_LEAD_S = 120
_SBATCH_TIMEOUT_S = 60
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

# One array element: N, N-M or N-M:S; the whole spec may end in %LIMIT.
_ARRAY_ITEM = re.compile(r"(\d+)(?:-(\d+)(?::(\d+))?)?")
# Slurm's --time forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
_TIME = re.compile(r"(?:\d+-)?\d+(?::\d+){0,2}")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
# --mem: a size with an optional K/M/G/T unit (megabytes without one).
_MEM = re.compile(r"[1-9]\d*[KMGT]?", re.IGNORECASE)
# --gres: comma-separated name[:type][:count] entries.
_GRES = re.compile(r"[A-Za-z][\w.-]*(?::[\w.-]+)*(?:,[A-Za-z][\w.-]*(?::[\w.-]+)*)*")


def slurm_command(
    study: str,
    storage: str | None,
    *,
    array: str | None,
    partition: str | None,
    gpus_per_task: int | None,
    cpus_per_task: int | None,
    time: str | None,
    out: Path | None,
    submit: bool,
    mem: str | None = None,
    gres: str | None = None,
) -> Path:
    """Write an sbatch array script for ``study`` and optionally submit it.

    The storage URL is never written into the script: its tasks read
    ``TORCHCELL_SEARCH_STORAGE`` from the environment ``sbatch`` propagates, and the
    script stops with a clear message when it is unset. When ``storage`` is given and
    reachable, the study must exist in it. With ``submit``, ``sbatch`` runs with
    ``TORCHCELL_SEARCH_STORAGE`` set to ``storage`` and the job id is printed as
    ``Submitted batch job <id>``.

    A study created from a Hydra file with a submitit Slurm launcher stores its settings
    (partition, cpus_per_task, mem_gb, timeout_min, gres, and the sweeper's n_jobs as the
    array size); they are the defaults here, and every option given wins over them.

    Args:
        study: Name of an existing study.
        storage: Storage URL of the study, or ``None`` (then the study is not checked and
            ``submit`` is refused, since the tasks would have no storage).
        array: Slurm ``--array`` spec: ``0-7``, ``1,3,5``, ``0-31%4``, ``0-15:2`` (``None``: the
            study's ``0-<n_jobs - 1>``).
        partition: ``--partition``, or ``None`` for the cluster's default.
        gpus_per_task: ``--gpus-per-task`` (``None`` or 0: no GPU requested), with ``--ntasks=1``.
        cpus_per_task: ``--cpus-per-task``; the task's ``OMP_NUM_THREADS`` (torch threads).
        time: Wall time per task in a Slurm form (``MM``, ``HH:MM:SS``, ``D-HH:MM:SS``, ...).
        out: Script path (default: ``<study>.sbatch`` in the current directory).
        submit: Submit the script with ``sbatch`` after writing it.
        mem: ``--mem`` per task (per node: each task is its own one-node job), e.g. ``16G``.
        gres: ``--gres``, e.g. ``gpu:1`` or ``gpu:a100:1`` (the per-node GPU form).

    Returns:
        The path of the script written.

    Raises:
        ConfigError: An option is malformed, ``submit`` has no storage, ``sbatch`` is
            missing or rejects the job.
        StudyError: The storage is reachable and holds no study named ``study``.
    """
    if submit and not storage:
        raise ConfigError(f"--submit: no storage URL; export {_STORAGE_ENV}=postgresql://... (or pass --storage) "
                          "so the array tasks can reach the study")
    launcher = _check_study(study, storage) if storage else {}
    given = {"array": array, "partition": partition, "gpus_per_task": gpus_per_task,
             "cpus_per_task": cpus_per_task, "time": time, "mem": mem, "gres": gres}
    defaults = {k: v for k, v in launcher_defaults(launcher).items() if given[k] is None}
    if gpus_per_task is not None or gres is not None:
        # A GPU request given here replaces the file's, in either form.
        defaults.pop("gres", None)
        defaults.pop("gpus_per_task", None)
    if defaults:
        shown = ", ".join(f"{k.replace('_', '-')}={v}" for k, v in sorted(defaults.items()))
        print(f"torchcell-search: note: study {study!r}: Slurm settings from its sweep file: {shown} "
              f"(options given win)", file=sys.stderr)
    settings = {**given, **defaults}
    if settings["array"] is None:
        raise ConfigError("--array: required (e.g. 0-7): the study stores no n_jobs from a Hydra sweeper")
    script = slurm_script(study, **settings)
    path = out if out is not None else Path(f"{_safe_name(study)}.sbatch")
    _write_atomic(path, script)
    if not submit:
        print(f"wrote {path}; submit with: export {_STORAGE_ENV}=<storage URL>; sbatch {shlex.quote(str(path))}")
        return path
    job_id = _submit(path, storage or "")
    print(f"Submitted batch job {job_id}")
    return path


def launcher_defaults(launcher: dict) -> dict:
    """A stored submitit launcher (``StudyConfig.launcher``) as :func:`slurm_script` options.

    ``timeout_min`` becomes ``time`` (D-HH:MM:SS), ``mem_gb`` ``mem`` (``<N>G``), ``gres``
    passes through (each array task is its own one-node job, as each submitit job with
    ``tasks_per_node: 1``), ``gpus_per_node`` becomes ``gres: gpu:N``, ``n_jobs`` the array
    ``0-<n_jobs - 1>``.

    Example:
        >>> launcher_defaults({"partition": "mmli", "timeout_min": 10080, "gres": "gpu:1", "n_jobs": 4})
        {'array': '0-3', 'partition': 'mmli', 'time': '7-00:00:00', 'gres': 'gpu:1'}
    """
    out: dict = {}
    if launcher.get("n_jobs"):
        out["array"] = f"0-{int(launcher['n_jobs']) - 1}"
    for key in ("partition", "cpus_per_task"):
        if launcher.get(key) is not None:
            out[key] = launcher[key]
    if launcher.get("mem_gb"):
        out["mem"] = f"{int(launcher['mem_gb'])}G"
    if launcher.get("timeout_min"):
        days, minutes = divmod(int(launcher["timeout_min"]), 24 * 60)
        out["time"] = f"{days}-{minutes // 60:02d}:{minutes % 60:02d}:00"
    if launcher.get("gres"):
        out["gres"] = str(launcher["gres"])
    elif launcher.get("gpus_per_node"):
        out["gres"] = f"gpu:{int(launcher['gpus_per_node'])}"
    if launcher.get("gpus_per_task") is not None:
        out["gpus_per_task"] = int(launcher["gpus_per_task"])
    return out


def slurm_script(
    study: str,
    *,
    array: str,
    partition: str | None = None,
    gpus_per_task: int | None = None,
    cpus_per_task: int | None = None,
    time: str | None = None,
    mem: str | None = None,
    gres: str | None = None,
) -> str:
    """The text of the sbatch array script (see :func:`slurm_command`); validates every option.

    Raises:
        ConfigError: ``array``, ``time``, ``mem``, ``gres``, a count or ``partition`` is
            malformed, or ``study`` is empty.
    """
    if not study:
        raise ConfigError("--study '': a study name is required")
    _check_array(array)
    time_s = _check_time(time) if time is not None else None
    if cpus_per_task is not None and cpus_per_task < 1:
        raise ConfigError(f"--cpus-per-task {cpus_per_task}: must be at least 1")
    if gpus_per_task is not None and gpus_per_task < 0:
        raise ConfigError(f"--gpus-per-task {gpus_per_task}: must be 0 or more")
    if partition is not None and not re.fullmatch(r"[A-Za-z0-9._,-]+", partition):
        raise ConfigError(f"--partition {partition!r}: expected a partition name (letters, digits, '.', '_', '-', ',')")
    if mem is not None and not _MEM.fullmatch(mem):
        raise ConfigError(f"--mem {mem!r}: expected a size such as 16G, 4000M or 4000 (megabytes)")
    if gres is not None and not _GRES.fullmatch(gres):
        raise ConfigError(f"--gres {gres!r}: expected NAME[:TYPE]:COUNT entries such as gpu:1 or gpu:a100:2")

    name = _safe_name(study)
    # Warn the worker 120 s before the time limit, or after 3/4 of a shorter limit.
    lead = _SIGNAL_LEAD_S if time_s is None or time_s == 0 or time_s >= 4 * _SIGNAL_LEAD_S else max(time_s // 4, 1)
    directives = [
        f"--job-name={name}",
        f"--array={array}",
        f"--output={name}-%A_%a.out",
        "--export=ALL",
        f"--signal=B:TERM@{lead}",
        # One worker per array task; per-task GPU requests need the task count (see module docs).
        "--ntasks=1",
    ]
    if partition:
        directives.append(f"--partition={partition}")
    if gpus_per_task:
        directives.append(f"--gpus-per-task={gpus_per_task}")
    if gres:
        directives.append(f"--gres={gres}")
    if cpus_per_task:
        directives.append(f"--cpus-per-task={cpus_per_task}")
    if mem:
        directives.append(f"--mem={mem}")
    if time is not None:
        directives.append(f"--time={time}")

    from torchcell_search import __version__

    bin_dir = Path(sys.executable).absolute().parent
    entry = bin_dir / "torchcell-search"
    # The installed script if the environment has one, else the same interpreter on the module.
    run = [str(entry)] if entry.is_file() else [str(Path(sys.executable).absolute()), "-m", "torchcell_search.cli"]
    # --study=NAME: a name read from the storage (created elsewhere) may begin with '-'.
    command = " ".join(shlex.quote(part) for part in [*run, "worker", f"--study={study}"])
    lines = [
        "#!/bin/bash",
        f"# Written by torchcell-search {__version__}: one optuna worker per array task for study {study!r}.",
        f"# The storage URL is not kept here. Submit with:  export {_STORAGE_ENV}=<storage URL>; sbatch <this file>",
        *(f"#SBATCH {d}" for d in directives),
        "set -euo pipefail",
        f'if [ -z "${{{_STORAGE_ENV}:-}}" ]; then',
        f'  echo "torchcell-search: error: {_STORAGE_ENV} is not set in the job environment;'
        f' export the study\'s storage URL before sbatch (sbatch passes the environment to each task)" >&2',
        "  exit 2",
        "fi",
        "# Threads are the CPUs Slurm granted this task, never the submitting shell's OMP_NUM_THREADS",
        "# (--export=ALL carries that shell's environment into the job).",
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}" MKL_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
        f"export PATH={shlex.quote(str(bin_dir))}:\"$PATH\"",
        'echo "torchcell-search: task ${SLURM_ARRAY_TASK_ID:-?} of job ${SLURM_ARRAY_JOB_ID:-?} on $(hostname),'
        ' ${OMP_NUM_THREADS} thread(s), GPUs: ${CUDA_VISIBLE_DEVICES:-none}"',
        "# exec: the worker replaces the batch shell, so SIGTERM from Slurm reaches it.",
        f"exec {command}",
        "",
    ]
    return "\n".join(lines)


def _safe_name(study: str) -> str:
    """The study name with characters unfit for job and file names replaced by '_'."""
    return _UNSAFE_NAME.sub("_", study)


def _check_array(array: str) -> None:
    spec, percent, limit = array.partition("%")
    if percent and (not limit.isdigit() or int(limit) < 1):
        raise ConfigError(f"--array {array!r}: the %limit must be a positive integer, e.g. 0-31%4")
    items = spec.split(",") if spec else [""]
    for item in items:
        m = _ARRAY_ITEM.fullmatch(item)
        if m is None:
            raise ConfigError(f"--array {array!r}: expected Slurm task ids such as 0-7, 1,3,5, 0-31%4 or 0-15:2")
        first, last, step = m.groups()
        if last is not None and int(last) < int(first):
            raise ConfigError(f"--array {array!r}: range {item} ends before it starts")
        if step is not None and int(step) < 1:
            raise ConfigError(f"--array {array!r}: step in {item} must be at least 1")


def _check_time(value: str) -> int:
    """Seconds in a Slurm ``--time`` value (0 means no limit)."""
    if _TIME.fullmatch(value) is None:
        raise ConfigError(f"--time {value!r}: expected minutes or [D-]HH:MM:SS, e.g. 90, 04:00:00 or 1-12:00:00")
    days_text, _, rest = value.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days_text:
        # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = (parts + [0, 0])[:3]
        if hours >= 24:
            raise ConfigError(f"--time {value!r}: hours must be below 24 after a day count")
    else:
        # M, M:S, H:M:S
        hours, minutes, seconds = [[0, parts[0], 0], [0, *parts], parts][len(parts) - 1]
    if len(parts) > 1 and (minutes >= 60 or seconds >= 60):
        raise ConfigError(f"--time {value!r}: minutes and seconds must be below 60")
    return ((int(days_text or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


def _check_study(study: str, storage: str) -> dict:
    """Raise StudyError if ``storage`` is reachable and has no ``study``; skip the check otherwise.

    Returns:
        The study's stored launcher settings (``{}`` when unreachable or none).
    """
    import optuna

    from torchcell_search.storage.urls import open_storage, redact, resolve_storage, sqlite_path

    storage = resolve_storage(storage)
    path = sqlite_path(storage)
    if path is not None and not Path(path).is_file():
        # Opening would create an empty database file: report the missing study instead.
        raise StudyError(f"study {study!r} not found: {redact(storage)} does not exist; "
                         f"run torchcell-search create --study {study} first")
    try:
        names = optuna.get_all_study_names(storage=open_storage(storage))
    except StorageError as e:
        print(f"torchcell-search: note: study {study!r} not checked ({e})", file=sys.stderr)
        return {}
    if study not in names:
        raise StudyError(f"study {study!r} not found in {redact(storage)}; "
                         f"run torchcell-search create --study {study} first")
    from torchcell_search.search.study_config import CONFIG_ATTR

    rdb = open_storage(storage)
    stored = rdb.get_study_user_attrs(rdb.get_study_id_from_name(study)).get(CONFIG_ATTR) or {}
    return dict(stored.get("launcher") or {})


def _write_atomic(path: Path, text: str) -> None:
    path = path.absolute()
    if not path.parent.is_dir():
        raise ConfigError(f"--out {path}: directory {path.parent} does not exist")
    try:
        write_atomic(path, lambda f: f.write(text), text=True, permissions=0o755)
    except OSError as e:
        raise ConfigError(f"--out {path}: cannot write the script ({e.strerror or e})") from e


def _submit(path: Path, storage: str) -> str:
    """Run ``sbatch --parsable`` with the storage URL in its environment only; return the job id."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise ConfigError(f"--submit: sbatch not found on PATH; run on a Slurm login node, or submit {path} there")
    # The job gets this environment (--export=ALL); this process's own thread settings stay out.
    env = {k: v for k, v in os.environ.items() if k not in _THREAD_ENV}
    env[_STORAGE_ENV] = storage
    try:
        res = subprocess.run([sbatch, "--parsable", str(path)], env=env, capture_output=True, text=True,
                             timeout=_SBATCH_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(f"--submit: sbatch {path} failed: {e}") from e
    if res.returncode != 0:
        lines = [ln for ln in (res.stderr + res.stdout).splitlines() if ln.strip()]
        detail = _hide(storage, lines[-1] if lines else "no message")
        raise ConfigError(f"--submit: sbatch {path} exited with status {res.returncode}: {detail}")
    job_id = res.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise ConfigError(f"--submit: sbatch {path} printed no job id: {_hide(storage, res.stdout.strip())!r}")
    return job_id


def _hide(storage: str, text: str) -> str:
    """``text`` with the storage URL and its secrets redacted."""
    from torchcell_search.storage.secrets import scrub

    return scrub(text, storage)
