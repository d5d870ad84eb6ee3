"""The batch system classes: their native job states as ``JobState``, their submit
commands, script directives and the parsing of what the batch system prints (from
real-looking output).  Real submitting, asking and cancelling against the Slurm of
``scripts/slurm`` is in tests/acceptance/test_launch.py; local jobs are real processes."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from qdo import jobstate
from qdo.batch import (
    SYSTEMS,
    BatchError,
    JobState,
    JobStatus,
    LocalSystem,
    PbsSystem,
    SlurmSystem,
    system,
)
from qdo.errors import ConfigError

SCRIPT = Path("/jobs/launch-q.sh")


# -- JobState and the tables -----------------------------------------------------------------
def test_active_over_and_unknown_split_the_states() -> None:
    assert {s for s in JobState if s.active} == {JobState.PENDING, JobState.RUNNING}
    assert {s for s in JobState if not s.active and not s.over} == {JobState.UNKNOWN}
    assert str(JobState.CANCELLED) == "Cancelled"


@pytest.mark.parametrize(
    ("native", "state"),
    [("PENDING", JobState.PENDING), ("CONFIGURING", JobState.PENDING),
     ("REQUEUED", JobState.PENDING), ("RUNNING", JobState.RUNNING),
     ("COMPLETING", JobState.RUNNING), ("SUSPENDED", JobState.RUNNING),
     ("COMPLETED", JobState.DONE), ("CANCELLED", JobState.CANCELLED),
     ("FAILED", JobState.FAILED), ("TIMEOUT", JobState.FAILED),
     ("NODE_FAIL", JobState.FAILED), ("OUT_OF_MEMORY", JobState.FAILED),
     ("ENDED", JobState.ENDED), ("UNKNOWN", JobState.UNKNOWN),
     # these were missing, so counted as over: `recover --dead` gave back the tasks
     # of jobs that were only held, stopped or resizing
     ("REQUEUE_HOLD", JobState.PENDING), ("STOPPED", JobState.RUNNING),
     ("RESIZING", JobState.RUNNING), ("SIGNALING", JobState.RUNNING),
     ("STAGE_OUT", JobState.RUNNING), ("SPECIAL_EXIT", JobState.FAILED),
     ("NO_SUCH_STATE", JobState.ENDED)],  # a name not in the table: over
)  # fmt: skip
def test_slurm_states(native: str, state: JobState) -> None:
    assert SlurmSystem().classify(native) == JobStatus(state, native)


@pytest.mark.parametrize(
    ("letter", "native", "state"),
    [("Q", "PENDING", JobState.PENDING), ("H", "HELD", JobState.PENDING),
     ("R", "RUNNING", JobState.RUNNING), ("E", "COMPLETING", JobState.RUNNING),
     ("W", "WAITING", JobState.PENDING), ("T", "TRANSIT", JobState.PENDING),
     ("S", "SUSPENDED", JobState.RUNNING), ("B", "BEGUN", JobState.RUNNING),
     ("C", "ENDED", JobState.ENDED), ("F", "ENDED", JobState.ENDED),
     ("X", "X", JobState.ENDED)],
)  # fmt: skip
def test_pbs_states(letter: str, native: str, state: JobState) -> None:
    out = (
        "Job id              Name             Username        Time Use S Queue\n"
        "------------------- ---------------- --------------- -------- - -----\n"
        f"41.pbs-server       qdo-q            alice           00:00:07 {letter} batch\n"
    )
    assert PbsSystem.parse_qstat("41", out) == native
    assert PbsSystem.parse_qstat("41.pbs-server", out) == native
    assert PbsSystem.parse_qstat("4", out) == "ENDED"  # not job 4: qstat did not list it
    assert PbsSystem().classify(native).state is state


def test_active_names_are_those_of_active_states() -> None:
    # what qdo has always counted as a job still working, by the batch systems' names
    always = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "HELD"}
    assert always <= jobstate.ACTIVE
    for cls in SYSTEMS.values():
        for native in jobstate.ACTIVE:
            assert cls().classify(native).state.active == (native in cls.STATES), (cls, native)


def test_one_class_per_profile_kind() -> None:
    assert tuple(SYSTEMS) == ("slurm", "pbs", "local")  # the default: the first on PATH
    profiles = resources.files("qdo").joinpath("profiles")
    for kind, cls in SYSTEMS.items():
        assert cls.kind == kind and isinstance(system(kind), cls)
        assert f"#qdo kind={kind}\n" in profiles.joinpath(f"{kind}.sh").read_text("utf-8")
    with pytest.raises(ConfigError, match="no batch system 'sge': qdo has slurm, pbs, local"):
        system("sge")


# -- what the batch systems print -----------------------------------------------------------
def test_squeue_output() -> None:
    out = "41 RUNNING\n42 COMPLETED\n44 PENDING\n"
    ids = ["41", "42.vm", "43", "44"]
    assert SlurmSystem.parse_squeue(ids, out) == {"41": "RUNNING", "42.vm": "COMPLETED",
                                                  "43": "ENDED", "44": "PENDING"}  # fmt: skip
    assert SlurmSystem.parse_squeue(["41"], "") == {"41": "ENDED"}  # Slurm forgot it


def test_job_ids_in_replies() -> None:
    assert SlurmSystem().parse_jobid("Submitted batch job 42") == "42"
    assert SlurmSystem().parse_jobid("Submitted batch job 42 on cluster north") == "42"
    with pytest.raises(BatchError, match="sbatch printed no job id: 'sbatch: queued'"):
        SlurmSystem().parse_jobid("sbatch: queued")
    assert PbsSystem().parse_jobid("1234.pbs-server") == "1234.pbs-server"
    with pytest.raises(BatchError, match="^qsub printed no job id$"):
        PbsSystem().parse_jobid("")


# -- the submit command and the script's directives -----------------------------------------
def test_submit_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QDO_DIR", "/q dir")
    monkeypatch.setenv("PATH", "/usr/bin")
    opts = ["--comment=x y", "-A", "acct"]
    slurm = SlurmSystem().submit_command(SCRIPT, opts, ["PATH"])
    assert slurm == ["sbatch", "--comment=x y", "-A", "acct", str(SCRIPT)]  # env: in the script
    pbs = PbsSystem()
    assert pbs.submit_command(SCRIPT, opts, ["PATH", "QDO_DIR"]) == [
        "qsub", "-v", "PATH=/usr/bin,QDO_DIR=/q dir", *opts, str(SCRIPT)]  # fmt: skip
    assert pbs.submit_command(SCRIPT, [], None) == ["qsub", "-V", str(SCRIPT)]  # everything
    assert pbs.submit_command(SCRIPT, [], []) == ["qsub", str(SCRIPT)]
    assert LocalSystem().submit_command(SCRIPT, opts, []) == ["bash", str(SCRIPT)]


def test_directives() -> None:
    slurm, pbs, local = SlurmSystem(), PbsSystem(), LocalSystem()
    assert slurm.time_line("1-12", 129600) == "#SBATCH --time=1-12"  # as written
    assert pbs.time_line("1-12", 129600) == "#PBS -l walltime=36:00:00"
    assert pbs.time_line("90", 5400) == "#PBS -l walltime=01:30:00"
    assert local.time_line("90", 5400) == ""
    assert slurm.partition_line("debug") == "#SBATCH --partition=debug"
    assert pbs.partition_line("debug") == "#PBS -q debug"
    assert local.partition_line("debug") == ""
    assert slurm.agent_line("qdo do q", 1) == "exec qdo do q"
    srun = "srun --overlap --nodes=3 --ntasks-per-node=1"
    assert slurm.agent_line("qdo do q", 3) == f"{srun} qdo do q"  # an agent on each node
    assert pbs.agent_line("qdo do q", 3) == local.agent_line("qdo do q", 3) == "exec qdo do q"
    assert pbs.cores_per_node(None) is None and local.cores_per_node("debug") is None


# -- asking, with nothing to ask ------------------------------------------------------------
def test_no_batch_system_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no squeue, qstat, scancel, sinfo here
    unknown = JobStatus(JobState.UNKNOWN, "UNKNOWN")
    assert SlurmSystem().status(["41", "42"]) == {"41": unknown, "42": unknown}  # not ENDED
    assert PbsSystem().status(["41"]) == {"41": unknown}
    assert jobstate.job_states("slurm", ["41"]) == {"41": "UNKNOWN"}
    assert jobstate.job_states("pbs", []) == {}
    assert jobstate.ended(["41"]) == []  # no one to say it ended
    assert SlurmSystem().cores_per_node(None) is None
    with pytest.raises(BatchError, match="^cannot run scancel: "):
        SlurmSystem().cancel(["41"])
    SlurmSystem().cancel([])  # nothing to cancel: nothing run


# -- local jobs: real processes --------------------------------------------------------------
def _sleeper(new_session: bool) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                            start_new_session=new_session)  # fmt: skip


def test_local_states() -> None:
    local = LocalSystem()
    child = _sleeper(new_session=True)
    try:
        jobid = f"local-{child.pid}"
        assert local.status([jobid]) == {jobid: JobStatus(JobState.RUNNING, "RUNNING")}
        child.kill()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # a zombie: not reaped yet
        assert local.status([jobid])[jobid].state is JobState.ENDED
    finally:
        child.kill()
        child.wait()
    assert local.status([jobid, "local-x"]) == dict.fromkeys(
        [jobid, "local-x"], JobStatus(JobState.ENDED, "ENDED")
    )
    assert jobstate.job_states("local", [jobid]) == {jobid: "ENDED"}


def test_local_cancel_signals_the_whole_job() -> None:
    # a shell and what it started, in a session of their own, as qdo launch starts a job
    job = subprocess.Popen(["bash", "-c", "sleep 600 & echo started; wait"],
                           stdout=subprocess.PIPE, start_new_session=True)  # fmt: skip
    stranger = _sleeper(new_session=False)  # in pytest's process group: leads none
    try:
        assert job.stdout is not None and job.stdout.readline() == b"started\n"
        LocalSystem().cancel([f"local-{job.pid}", "local-x"])
        assert job.wait(timeout=60) == -signal.SIGTERM
        # EOF once the sleep, which holds the pipe too, is gone (60 s: only not to hang)
        assert select.select([job.stdout], [], [], 60)[0] and job.stdout.read() == b""
        assert LocalSystem().status([f"local-{job.pid}"])[f"local-{job.pid}"].state.over

        # a pid that leads no group is no local job's (a job's pid, reused): left alone
        LocalSystem().cancel([f"local-{stranger.pid}"])
        stranger.kill()
        assert stranger.wait(timeout=60) == -signal.SIGKILL  # not SIGTERM first
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)  # the sleep too, if cancel missed it
        for child in (job, stranger):
            child.kill()
            child.wait()
        if job.stdout is not None:
            job.stdout.close()
