"""A real single-node Slurm cluster for the tests, started and stopped by a fixture.

``slurm_cluster`` (session scope) generates a munge key, starts ``munged``, ``slurmctld``
and ``slurmd`` in the foreground with every path (socket, key, spool, state, pid and log
files) inside one temporary directory and on free ports, points ``SLURM_CONF`` at its
``slurm.conf`` for the rest of the session and waits until ``sinfo`` shows the node idle.
It stops the daemons and removes the directory at the end.

The node is configured like a small GPU node of a real cluster, so the controller itself
accepts or rejects the GPU, memory and time options a script asks for: two count-only
GPUs (``GresTypes=gpu``, ``Gres=gpu:2``, a ``gres.conf`` whose ``File=`` entries are empty
placeholder files, since Slurm 22.05 drops count-only GPU lines; there is no CUDA here, so a
worker given a GPU falls back to the CPU), 2 CPUs, 4000 MB of schedulable
memory (``CR_Core_Memory``, 500 MB per CPU by default) and a partition limit of 60 minutes
that is enforced at submission (``EnforcePartLimits=ALL``).

- No ``slurmctld`` on the machine: the tests that use it are skipped (fail under ``CI=true``).
- Installed but the cluster does not come up: the fixture fails with the daemons' log tails.
- Leftovers of an earlier run that was killed (its pytest process is gone) are stopped
  and removed first; clusters of other live test sessions are left alone, so parallel
  sessions do not collide (each has its own ports and directory).

Run ``python tests/search/slurm_fixtures.py`` to start a cluster by hand and stop it
with Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["SlurmCluster", "slurm_cluster", "wait_for_job"]

# Short parent path: a unix socket path must stay under 108 bytes.
_PARENT = Path(tempfile.gettempdir()) / "tcs-slurm"
_OWNER = "owner.pid"
_DAEMON_PIDS = "daemons.pid"
_START_TIMEOUT_S = 60.0
#: The node's resources, as sbatch sees them.
NODE_CPUS, NODE_GPUS, NODE_MEMORY_MB, PARTITION_MAX_MINUTES = 2, 2, 4000, 60


@dataclass
class SlurmCluster:
    """A running test cluster: its directory, config and the environment clients need."""

    root: Path
    conf: Path
    node: str
    partition: str = "debug"
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """``os.environ`` plus ``SLURM_CONF`` for client commands run as subprocesses."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command (``sinfo``, ``squeue``, ...) against this cluster."""
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)

    def log_tails(self, n: int = 25) -> str:
        """The last ``n`` lines of each daemon log, for failure messages."""
        parts = []
        for name in sorted(self.root.glob("*.log")):
            lines = name.read_text(errors="replace").splitlines()[-n:]
            parts.append(f"--- {name.name} ---\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop the daemons (slurmd, slurmctld, munged: reverse start order)."""
        for name in reversed(list(self._procs)):
            proc = self._procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        self._procs.clear()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _clean_leftovers() -> None:
    """Stop daemons of earlier runs whose pytest process died, and remove their directories."""
    if not _PARENT.is_dir():
        return
    for run in sorted(_PARENT.iterdir()):
        try:
            owner = int((run / _OWNER).read_text().strip())
        except (OSError, ValueError):
            owner = -1
        if owner > 0 and _alive(owner):
            continue  # another live session's cluster
        pids = []
        try:
            pids = [int(p) for p in (run / _DAEMON_PIDS).read_text().split()]
        except (OSError, ValueError):
            pass
        for pid in pids:
            # Only a process started with this run's paths: pids are reused.
            if _alive(pid) and str(run) in _cmdline(pid):
                # Each daemon leads its own process group (slurmscriptd and friends included).
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(run, ignore_errors=True)


def _slurm_conf(root: Path, node: str, ctld_port: int, slurmd_port: int, munge_socket: Path) -> str:
    return f"""\
ClusterName=tcs-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
SlurmUser=root
SlurmdUser=root
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
GresTypes=gpu
EnforcePartLimits=ALL
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=600
MessageTimeout=20
NodeName={node} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MB} Gres=gpu:{NODE_GPUS} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime={PARTITION_MAX_MINUTES} State=UP
"""


def _gres_conf(root: Path, node: str) -> str:
    # Slurm 22.05's gres/gpu plugin drops a GPU line without File= ("Removing file-less GPU
    # gpu:(null) from final GRES list") and the node then drains, so each GPU names an empty
    # placeholder file. Nothing opens them (task/none binds no devices); the scheduler counts them.
    for i in range(NODE_GPUS):
        (root / f"fakegpu{i}").touch()
    return f"AutoDetect=off\nNodeName={node} Name=gpu Count={NODE_GPUS} File={root}/fakegpu[0-{NODE_GPUS - 1}]\n"


def start_cluster() -> SlurmCluster:
    """Start munged, slurmctld and slurmd in a fresh directory; raise RuntimeError if it fails."""
    _clean_leftovers()
    _PARENT.mkdir(mode=0o700, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="run-", dir=_PARENT))
    (root / _OWNER).write_text(f"{os.getpid()}\n")
    for sub in ("state", "spool"):
        (root / sub).mkdir(mode=0o700)
    node = socket.gethostname().split(".")[0]
    key, munge_socket = root / "munge.key", root / "munge.sock"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, node, _free_port(), _free_port(), munge_socket))
    (root / "gres.conf").write_text(_gres_conf(root, node))  # read from slurm.conf's directory
    cluster = SlurmCluster(root=root, conf=conf, node=node)
    env = cluster.env
    commands = {
        "munged": ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={munge_socket}",
                   f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log",
                   f"--seed-file={root}/munged.seed", "--num-threads=2"],
        "slurmctld": ["slurmctld", "-D", "-i", "-f", str(conf)],
        "slurmd": ["slurmd", "-D", "-f", str(conf), "-N", node],
    }
    try:
        for name, cmd in commands.items():
            out = open(root / f"{name}.stdout.log", "wb")
            cluster._procs[name] = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                    stdin=subprocess.DEVNULL, start_new_session=True)
            out.close()
            (root / _DAEMON_PIDS).write_text(" ".join(str(p.pid) for p in cluster._procs.values()))
            if name == "munged":
                _wait(lambda: munge_socket.exists(), cluster, "munged socket")
        _wait(lambda: _node_idle(cluster), cluster, "node idle in sinfo")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _node_idle(cluster: SlurmCluster) -> bool:
    res = cluster.run("sinfo", "-h", "-N", "-o", "%N %t", timeout=10)
    return res.returncode == 0 and any(line.split()[1:] == ["idle"] for line in res.stdout.splitlines())


def _wait(ready: object, cluster: SlurmCluster, what: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        for name, proc in cluster._procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with status {proc.returncode} while waiting for {what}\n"
                                   + cluster.log_tails())
        if ready():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise RuntimeError(f"timed out after {_START_TIMEOUT_S:.0f} s waiting for {what}\n" + cluster.log_tails())


def wait_for_job(cluster: SlurmCluster, job_id: str, *, timeout: float = 120.0,
                 task_logs: Path | None = None) -> dict[str, str]:
    """Wait until no task of ``job_id`` is pending or running; return ``{job id: JobState}``.

    Task ids look like ``123_0``. ``scontrol`` keeps finished jobs for ``MinJobAge`` seconds.
    On timeout the job is cancelled and ``pytest.fail`` reports the states, the daemon log
    tails and the tails of the ``*.out`` task logs in ``task_logs``.
    """
    deadline = time.monotonic() + timeout
    while True:
        queued = cluster.run("squeue", "-h", "-j", job_id, "-o", "%i %T")
        if queued.returncode == 0 and not queued.stdout.strip():
            break
        if time.monotonic() > deadline:
            cluster.run("scancel", job_id)
            tasks = "".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-1500:]}\n"
                            for p in sorted(task_logs.glob("*.out"))) if task_logs else ""
            pytest.fail(f"job {job_id} not finished after {timeout:.0f} s:\n{queued.stdout}{queued.stderr}\n"
                        + tasks + cluster.log_tails(), pytrace=False)
        time.sleep(1.0)
    shown = cluster.run("scontrol", "-o", "show", "job", job_id)
    states: dict[str, str] = {}
    for line in shown.stdout.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        task = fields.get("ArrayTaskId")
        key = f"{fields.get('ArrayJobId', job_id)}_{task}" if task else fields.get("JobId", job_id)
        states[key] = fields.get("JobState", "?")
    return states


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A running single-node cluster; ``SLURM_CONF`` is set in ``os.environ`` while it runs."""
    from services import missing_service  # tests/ is on sys.path under pytest, not for `python slurm_fixtures.py`

    if shutil.which("slurmctld") is None or shutil.which("munged") is None:
        missing_service("Slurm", "slurmctld or munged not on PATH (apt-get install slurm-wlm munge; "
                        "see scripts/setup-system.sh)")
    try:
        cluster = start_cluster()
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        pytest.fail(f"the local Slurm cluster did not start: {e}", pytrace=False)
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


if __name__ == "__main__":
    c = start_cluster()
    print(f"export SLURM_CONF={c.conf}   # Ctrl-C stops the cluster")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        c.stop()
        shutil.rmtree(c.root, ignore_errors=True)
