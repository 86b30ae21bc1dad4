"""SLURM array scripts: their content, option validation, and real runs on a local cluster.

The cluster tests start a real single-node Slurm cluster (``slurm_fixtures.slurm_cluster``)
and are marked ``slurm``; the end-to-end study test also needs PostgreSQL and the study
commands of ``torchcell_search.search.study``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from torchcell_search.cli import main

try:
    from .slurm_fixtures import SlurmCluster, slurm_cluster, wait_for_job  # noqa: F401 - fixture
except ImportError:  # tests/ is not a package: pytest put this directory on sys.path
    from slurm_fixtures import SlurmCluster, slurm_cluster, wait_for_job  # noqa: F401 - fixture

_ENV = "TORCHCELL_SEARCH_STORAGE"
# Port 1 refuses connections at once: the study check is skipped, nothing else changes.
_UNREACHABLE = "postgresql+psycopg2://alice:s3cr3t-pw@127.0.0.1:1/search"


def _slurm(*args: str) -> int:
    return main(["slurm", *args])


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Scripts and task logs land in the test's own directory; no storage leaks in from outside.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(_ENV, raising=False)


# --- script content --------------------------------------------------------------------


def test_script_runs_one_worker_per_array_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _slurm("--study", "fit-int", "--array", "0-31%4", "--storage", _UNREACHABLE, "--partition", "gpu",
                  "--gpus-per-task", "1", "--cpus-per-task", "4", "--mem", "32G", "--time", "1-04:00:00") == 0
    text = (tmp_path / "fit-int.sbatch").read_text()
    directives = re.findall(r"^#SBATCH (\S+)$", text, flags=re.M)
    # The array, names, per-task log, environment export, preemption signal and one task per
    # array element (what makes --gpus-per-task valid) are always requested.
    assert directives[:6] == ["--job-name=fit-int", "--array=0-31%4", "--output=fit-int-%A_%a.out",
                              "--export=ALL", "--signal=B:TERM@120", "--ntasks=1"]
    assert set(directives[6:]) == {"--partition=gpu", "--gpus-per-task=1", "--cpus-per-task=4", "--mem=32G",
                                   "--time=1-04:00:00"}
    # The worker is exec'd (so SIGTERM reaches it) from this environment's absolute path.
    last = text.rstrip().splitlines()[-1]
    assert re.fullmatch(r"exec /\S+ worker --study=fit-int", last), last
    assert os.access(last.split()[1], os.X_OK)


def test_gres_form_is_written_per_task(tmp_path: Path) -> None:
    assert _slurm("--study", "s", "--array", "0-3", "--gres", "gpu:a100:1") == 0
    directives = re.findall(r"^#SBATCH (\S+)$", (tmp_path / "s.sbatch").read_text(), flags=re.M)
    assert "--gres=gpu:a100:1" in directives and "--ntasks=1" in directives
    assert not any(d.startswith("--gpus-per-task") for d in directives)


def test_script_never_holds_the_storage_url_or_its_password(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert _slurm("--study", "s", "--array", "0-3", "--storage", _UNREACHABLE) == 0
    text = (tmp_path / "s.sbatch").read_text()
    printed = capsys.readouterr()
    # Neither the script nor anything printed carries the password or the host part of the URL.
    for where in (text, printed.out, printed.err):
        assert "s3cr3t-pw" not in where
    assert "127.0.0.1:1" not in text
    # The unreachable storage was reported, redacted, and the check skipped.
    assert "not checked" in printed.err and "alice:***@" in printed.err


def test_script_without_storage_in_environment_fails_clearly(tmp_path: Path) -> None:
    assert _slurm("--study", "s", "--array", "0-1", "--out", "job.sh") == 0
    env = {k: v for k, v in os.environ.items() if k != _ENV}
    res = subprocess.run(["bash", str(tmp_path / "job.sh")], env=env, capture_output=True, text=True, timeout=30)
    # The task stops before starting a worker and names the variable to export.
    assert res.returncode == 2
    assert f"{_ENV} is not set" in res.stderr
    assert "torchcell-search: task" not in res.stdout


@pytest.mark.parametrize("name", ["-x", "--help", "a b", "a;b$(id)'\"", "x/y"])
def test_worker_gets_any_stored_name_as_one_argument(name: str, tmp_path: Path) -> None:
    # create refuses such names, but a study made elsewhere (plain Optuna) may carry one: each
    # task must still hand it whole to the worker, not as an option or several words.
    assert _slurm(f"--study={name}", "--array", "0-1", "--out", "job.sh") == 0
    env = {**os.environ, _ENV: f"sqlite:///{tmp_path / 'studies.db'}"}
    (tmp_path / "studies.db").touch()
    res = subprocess.run(["bash", str(tmp_path / "job.sh")], env=env, capture_output=True, text=True, timeout=120)
    # The worker looked the name up (an empty storage has no such study) and said so in one line.
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-1] == (f"torchcell-search: error: study {name!r} not found in "
                                                   f"{env[_ENV]}; studies there: (none)")


def test_out_path_is_written_atomically_over_an_old_script(tmp_path: Path) -> None:
    (tmp_path / "old.sbatch").write_text("stale\n")
    assert _slurm("--study", "s", "--array", "3", "--out", "old.sbatch") == 0
    # The old file was replaced whole and no temporary file is left beside it.
    assert (tmp_path / "old.sbatch").read_text().startswith("#!/bin/bash\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.sbatch"]


@pytest.mark.parametrize("array", ["0-7", "1,3,5", "0-31%4", "0-15:2", "7", "0-3,8,10-12%2"])
def test_valid_array_specs_are_accepted(array: str, tmp_path: Path) -> None:
    assert _slurm("--study", "s", "--array", array) == 0
    assert f"#SBATCH --array={array}\n" in (tmp_path / "s.sbatch").read_text()


@pytest.mark.parametrize("time, lead", [("90", 120), ("8", 120), ("6", 90), ("02:00", 30), ("0", 120)])
def test_signal_comes_before_short_time_limits(time: str, lead: int, tmp_path: Path) -> None:
    assert _slurm("--study", "s", "--array", "0", "--time", time) == 0
    # The warning never falls before the task starts: a quarter of a short limit at most.
    assert f"#SBATCH --signal=B:TERM@{lead}\n" in (tmp_path / "s.sbatch").read_text()


# --- validation: exit 2 with one line, nothing written -----------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--array", "x"], "--array 'x': expected Slurm task ids"),
        (["--array", "7-0"], "--array '7-0': range 7-0 ends before it starts"),
        (["--array", "0-7%0"], "--array '0-7%0': the %limit must be a positive integer"),
        (["--array", "0-7%"], "--array '0-7%': the %limit must be a positive integer"),
        (["--array", "0-7:0"], "--array '0-7:0': step in 0-7:0 must be at least 1"),
        (["--array", "1,,3"], "--array '1,,3': expected Slurm task ids"),
        (["--array", "0-3", "--time", "4h"], "--time '4h': expected minutes or [D-]HH:MM:SS"),
        (["--array", "0-3", "--time", "1:2:3:4"], "--time '1:2:3:4': expected minutes or [D-]HH:MM:SS"),
        (["--array", "0-3", "--time", "10:75:00"], "--time '10:75:00': minutes and seconds must be below 60"),
        (["--array", "0-3", "--time", "1-30:00:00"], "--time '1-30:00:00': hours must be below 24"),
        (["--array", "0-3", "--cpus-per-task", "0"], "--cpus-per-task 0: must be at least 1"),
        (["--array", "0-3", "--partition", "a b"], "--partition 'a b': expected a partition name"),
        (["--array", "0-3", "--mem", "lots"], "--mem 'lots': expected a size such as 16G"),
        (["--array", "0-3", "--mem", "0G"], "--mem '0G': expected a size"),
        (["--array", "0-3", "--gres", "gpu 1"], "--gres 'gpu 1': expected NAME[:TYPE]:COUNT"),
        (["--array", "0-3", "--submit"], "--submit: no storage URL; export TORCHCELL_SEARCH_STORAGE"),
        (["--array", "0-3", "--storage", "sqlite:///missing.db"], "study 's' not found: sqlite:///missing.db does not exist"),
        (["--array", "0-3", "--out", "no/such/dir/s.sbatch"], "directory"),
    ],
)
def test_bad_options_exit_2_with_one_line(args: list[str], message: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert _slurm("--study", "s", *args) == 2
    err = capsys.readouterr().err
    # One line on stderr that names the option, and no script (nor database file) left behind.
    assert err.count("\n") == 1 and err.startswith("torchcell-search: error: "), err
    assert message in err
    assert list(tmp_path.iterdir()) == []


def test_submit_without_sbatch_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert _slurm("--study", "s", "--array", "0-3", "--storage", _UNREACHABLE, "--submit") == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("torchcell-search: error: --submit: sbatch not found on PATH")


def test_missing_study_in_reachable_storage_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import optuna

    optuna.create_study(study_name="other", storage=f"sqlite:///{tmp_path}/t.db")
    assert _slurm("--study", "s", "--array", "0-3", "--storage", f"sqlite:///{tmp_path}/t.db") == 2
    assert "study 's' not found in sqlite:///" in capsys.readouterr().err
    assert not (tmp_path / "s.sbatch").exists()


# --- a real cluster -----------------------------------------------------------------------


@pytest.mark.slurm
def test_cluster_runs_an_array_with_the_submitters_environment(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    script = tmp_path / "touch.sbatch"
    script.write_text("#!/bin/bash\n#SBATCH --array=0-3\n#SBATCH --output=touch-%A_%a.out\n"
                      'echo "$MARK" > "done-$SLURM_ARRAY_TASK_ID"\n')
    res = subprocess.run(["sbatch", "--parsable", str(script)], env={**slurm_cluster.env, "MARK": "from-submitter"},
                         capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    states = wait_for_job(slurm_cluster, res.stdout.strip().split(";")[0], timeout=60)
    # Four tasks completed, each wrote its file with the environment sbatch propagated.
    assert sorted(states.values()) == ["COMPLETED"] * 4, states
    assert {p.name: p.read_text() for p in tmp_path.glob("done-*")} == {
        f"done-{i}": "from-submitter\n" for i in range(4)}


@pytest.mark.slurm
def test_generated_tasks_stop_when_the_storage_is_not_exported(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    assert _slurm("--study", "s", "--array", "0-1") == 0
    env = {k: v for k, v in slurm_cluster.env.items() if k != _ENV}
    res = subprocess.run(["sbatch", "--parsable", "s.sbatch"], env=env, capture_output=True, text=True,
                         timeout=30, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    job = res.stdout.strip().split(";")[0]
    states = wait_for_job(slurm_cluster, job, timeout=60)
    # Both tasks fail, and each per-task log (named by the script's --output) says why.
    assert sorted(states.values()) == ["FAILED", "FAILED"], states
    for task in (0, 1):
        assert f"{_ENV} is not set" in (tmp_path / f"s-{job}_{task}.out").read_text()


@pytest.mark.slurm
def test_rejected_submission_exits_2_without_the_password(slurm_cluster: SlurmCluster,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert _slurm("--study", "s", "--array", "0-1", "--storage", _UNREACHABLE, "--partition", "nope",
                  "--submit") == 2
    err = capsys.readouterr().err
    # sbatch's own reason, on the last line, and no password anywhere.
    assert err.splitlines()[-1].startswith("torchcell-search: error: --submit: sbatch")
    assert "partition" in err.splitlines()[-1].lower()
    assert "s3cr3t-pw" not in err


def _submit_test_only(cluster: SlurmCluster, script: Path) -> subprocess.CompletedProcess[str]:
    """``sbatch --test-only``: the controller validates the job and schedules nothing."""
    return subprocess.run(["sbatch", "--test-only", str(script)], env=cluster.env, capture_output=True, text=True,
                          timeout=30, cwd=script.parent)


@pytest.mark.slurm
@pytest.mark.parametrize("options", [
    ["--gpus-per-task", "1"], ["--gpus-per-task", "2", "--cpus-per-task", "2"], ["--gres", "gpu:1"],
    ["--mem", "1G"], ["--time", "30"], ["--gpus-per-task", "1", "--cpus-per-task", "1", "--mem", "1000M",
                                         "--time", "00:20:00"],
], ids=lambda o: " ".join(o))
def test_controller_accepts_the_generated_resource_requests(slurm_cluster: SlurmCluster, tmp_path: Path,
                                                            options: list[str]) -> None:
    assert _slurm("--study", "s", "--array", "0-3", *options) == 0
    res = _submit_test_only(slurm_cluster, tmp_path / "s.sbatch")
    # The GRES-configured controller (2 GPUs, 2 CPUs, 4000 MB, 60 min) would start it.
    assert res.returncode == 0 and "to start at" in res.stderr, res.stderr


@pytest.mark.slurm
@pytest.mark.parametrize(("options", "reason"), [
    (["--gpus-per-task", "3"], "Requested node configuration is not available"),
    (["--gres", "gpu:3"], "Requested node configuration is not available"),
    (["--mem", "10G"], "Requested node configuration is not available"),
    (["--time", "90"], "Requested time limit is invalid"),
], ids=lambda o: " ".join(o) if isinstance(o, list) else "")
def test_controller_rejects_requests_the_node_cannot_meet(slurm_cluster: SlurmCluster, tmp_path: Path,
                                                          options: list[str], reason: str) -> None:
    assert _slurm("--study", "s", "--array", "0-3", *options) == 0
    res = _submit_test_only(slurm_cluster, tmp_path / "s.sbatch")
    # The controller, not our code, refuses: the options reach it as written.
    assert res.returncode != 0 and reason in res.stderr, res.stderr


@pytest.mark.slurm
def test_gpus_per_task_without_a_task_count_is_rejected_by_slurm(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    assert _slurm("--study", "s", "--array", "0-3", "--gpus-per-task", "1") == 0
    script = tmp_path / "s.sbatch"
    accepted = _submit_test_only(slurm_cluster, script)
    # The script as generated is accepted; without its --ntasks=1 line (the old script) Slurm refuses it.
    script.write_text(script.read_text().replace("#SBATCH --ntasks=1\n", ""))
    refused = _submit_test_only(slurm_cluster, script)
    assert accepted.returncode == 0, accepted.stderr
    assert refused.returncode != 0 and "--gpus-per-task used without either --gpus or -n/--ntasks" in refused.stderr


@pytest.mark.slurm
@pytest.mark.postgres
@pytest.mark.slow
def test_gpu_array_of_4_tasks_completes_a_postgres_study_budget(
    slurm_cluster: SlurmCluster, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import optuna
    from sqlalchemy.engine import make_url

    # The URL as users write it: bare postgresql:// (psycopg 3 under SQLAlchemy 2.1).
    url = f"postgresql://postgres@127.0.0.1:5432/{make_url(pg_url).database}"
    # The user's steps: export the storage, create the study, submit the array. The submitting
    # shell's thread setting must not reach the tasks.
    monkeypatch.setenv(_ENV, url)
    monkeypatch.setenv("TORCHCELL_SEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    # A small subset of the demo keeps four one-epoch trials within a couple of minutes on 2 cores;
    # no pruner, so every trial of the budget runs to completion. --device auto: no CUDA here,
    # so the workers given a (placeholder) GPU train on the CPU.
    assert main(["create", "--study", "s", "--n-trials", "4", "--epochs", "1", "--data", "demo",
                 "--subset", "300", "--pruner", "none", "--device", "auto"]) == 0
    capsys.readouterr()
    assert _slurm("--study", "s", "--array", "0-3", "--gpus-per-task", "1", "--cpus-per-task", "1",
                  "--mem", "1000M", "--time", "20", "--submit") == 0
    submitted = re.search(r"Submitted batch job (\d+)", capsys.readouterr().out)
    assert submitted is not None
    job = submitted.group(1)
    shown = slurm_cluster.run("scontrol", "-o", "show", "job", job).stdout
    states = wait_for_job(slurm_cluster, job, timeout=600, task_logs=tmp_path)
    logs = {p.name: p.read_text() for p in sorted(tmp_path.glob("s-*.out"))}
    tails = "\n".join(text[-2000:] for text in logs.values())
    # The controller granted each task a GPU, one CPU, 1000 MB and 20 minutes.
    assert "TresPerTask=gres:gpu:1" in shown.replace("gres/gpu", "gres:gpu") and "TimeLimit=00:20:00" in shown, shown
    assert "mem=1000M" in shown, shown
    # Every task exited cleanly, with one thread (its one CPU, not the submitter's 7).
    assert sorted(states.values()) == ["COMPLETED"] * 4, f"{states}\n{tails}"
    assert len(logs) == 4 and all(", 1 thread(s), GPUs: " in text for text in logs.values()), tails
    # Together they ran exactly the study's budget, on the CPU (no CUDA behind the GPU GRES).
    trials = optuna.load_study(study_name="s", storage=pg_url).get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4, f"{[t.state.name for t in trials]}\n{tails}"
    assert {t.user_attrs["device"] for t in complete} == {"cpu"}


# --- a study's launcher settings as defaults ----------------------------------------------


def test_hydra_launcher_settings_are_the_defaults_and_flags_win(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from torchcell_search.search.study import create_study_command

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"model": {"num_layers": 2}, "hydra": {
        "sweeper": {"n_jobs": 4, "storage": "sqlite:////elsewhere/optuna.db", "params": {
            "model.num_layers": "choice(1, 2)"}},
        "launcher": {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                     "partition": "mmli", "cpus_per_task": 12, "mem_gb": 100, "timeout_min": 10080,
                     "tasks_per_node": 1, "additional_parameters": {"gres": "gpu:1", "mail-type": "END"}}}}))
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = create_study_command("hy", url, {"space": str(sweep)})
    # the other machine's storage is reported as not used; the mail settings are submitit's own
    assert "hydra.sweeper.storage" in result["notices"][0] and "mail-type" in result["notices"][0]
    for name in [p.name for p in tmp_path.iterdir()]:
        assert name in ("sweep.yaml", "s.db", "s-artifacts")
    assert _slurm("--study", "hy", "--storage", url, "--out", "a.sbatch") == 0
    directives = re.findall(r"^#SBATCH (\S+)$", (tmp_path / "a.sbatch").read_text(), flags=re.M)
    assert {"--array=0-3", "--partition=mmli", "--cpus-per-task=12", "--mem=100G", "--time=7-00:00:00",
            "--gres=gpu:1"} <= set(directives)
    assert "Slurm settings from its sweep file" in capsys.readouterr().err
    # every option given wins over the stored settings
    assert _slurm("--study", "hy", "--storage", url, "--out", "b.sbatch", "--array", "0-1", "--partition", "gpu",
                  "--time", "01:00:00", "--gpus-per-task", "0") == 0
    directives = set(re.findall(r"^#SBATCH (\S+)$", (tmp_path / "b.sbatch").read_text(), flags=re.M))
    assert {"--array=0-1", "--partition=gpu", "--time=01:00:00", "--cpus-per-task=12"} <= directives
    # a GPU request given replaces the file's gres
    assert not any(d.startswith(("--gpus-per-task", "--gres")) for d in directives)


@pytest.mark.slurm
@pytest.mark.postgres
@pytest.mark.slow
def test_cluster_task_of_a_dotted_name_joins_its_study_without_showing_the_password(
    slurm_cluster: SlurmCluster, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import optuna
    from optuna.distributions import CategoricalDistribution
    from sqlalchemy.engine import make_url

    # A name with every character create allows, and a password holding '/' and a space.
    name, secret = "exp_003.pair-v2", "Sl4Qx/Wv7Z Kp2M"
    url = f"postgresql://postgres:{secret}@127.0.0.1:5432/{make_url(pg_url).database}"
    monkeypatch.setenv(_ENV, url)
    assert main(["create", "--study", name, "--n-trials", "1", "--epochs", "1", "--data", "demo"]) == 0
    # The budget is already spent, so each task's worker joins the study and stops at once.
    optuna.load_study(study_name=name, storage=pg_url).add_trial(optuna.create_trial(
        value=0.1, params={"heads": 1}, distributions={"heads": CategoricalDistribution([1, 5])}))
    assert _slurm("--study", name, "--array", "0-1", "--time", "5", "--submit") == 0
    printed = capsys.readouterr()
    job = re.search(r"Submitted batch job (\d+)", printed.out).group(1)
    shown = slurm_cluster.run("scontrol", "-o", "show", "job", job).stdout
    states = wait_for_job(slurm_cluster, job, timeout=300, task_logs=tmp_path)
    logs = {p.name: p.read_text() for p in sorted(tmp_path.glob(f"{name}-*.out"))}
    # The job and its per-task logs carry the name as it is; both tasks ran the worker and exited 0.
    assert f"JobName={name}" in shown, shown
    assert sorted(states.values()) == ["COMPLETED"] * 2, f"{states}\n{logs}"
    assert sorted(logs) == [f"{name}-{job}_{task}.out" for task in (0, 1)]
    assert all("torchcell-search: task" in text and "error" not in text for text in logs.values()), logs
    # No piece of the password in the script, the task logs or anything printed.
    script = (tmp_path / f"{name}.sbatch").read_text()
    for text in (script, *logs.values(), printed.out, printed.err):
        assert not any(piece in text for piece in (secret, "Sl4Qx", "Wv7Z", "Kp2M"))
    assert len(optuna.load_study(study_name=name, storage=pg_url).trials) == 1
