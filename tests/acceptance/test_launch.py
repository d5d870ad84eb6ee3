"""Acceptance tests of ``qdo launch`` against a real batch system: the single-node Slurm
cluster that ``scripts/slurm start`` runs on this machine (with the PBS/Torque wrappers
of Slurm for ``--profile pbs``), and detached processes for ``--profile local``.

Nothing is mocked: real jobs run the queue's workers (``qdo do``) on this machine, in
the test's own QDO_DIR (SQLite; the jobs see the same files).  Every test checks that
the tasks really ran inside the jobs: each task's ``jobid`` is an id ``launch`` returned.
We wait by polling ``scontrol show job ID -o``, ``squeue`` and the queue itself, with
generous timeouts and no assertion on how long anything took.  Without a cluster the
tests skip (they fail instead when QDO_TEST_REQUIRE names slurm).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

import qdo
from qdo import batch, jobstate, logs
from qdo.batch import JobState, JobStatus
from qdo.errors import InvalidInput
from tests.acceptance.test_cli import fails
from tests.conftest import need_service, run_qdo

#: Slurm job states that are not over yet.
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
          "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT"}  # fmt: skip
JOB_TIMEOUT = 180.0  # seconds a short job may take to be scheduled, run and end


# -- the cluster ----------------------------------------------------------------------------
@functools.cache
def _slurm_problem() -> str | None:
    """Why Slurm can't be used here (None if it can)."""
    for tool in ("scontrol", "sbatch", "squeue", "scancel", "sinfo"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH (scripts/slurm start)"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return f"scontrol ping: {e}"
    if ping.returncode != 0 or "UP" not in ping.stdout:
        why = " ".join((ping.stdout + ping.stderr).split())
        return f"scontrol ping: {why or f'exit code {ping.returncode}'} (scripts/slurm start)"
    return None


class Cluster:
    """What a test launched, so that teardown can cancel whatever is left of it."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.local_pids: list[int] = []

    def queue(self, prefix: str, *tasks: str, **add: Any) -> str:
        """Create a queue of a name no other test uses (its jobs are named qdo-NAME) and
        add ``tasks`` to it; return its name."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        ok("create", name)
        q = qdo.connect(name)
        for task in tasks:
            q.add(task, **add)
        self.names.append(name)
        return name

    def cleanup(self) -> None:
        for name in self.names:
            subprocess.run(["scancel", "--name", f"qdo-{name}"], capture_output=True, timeout=60)
        for pid in self.local_pids:  # a local job still running: its agent, its tasks
            with contextlib.suppress(OSError):
                if b"qdo" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.killpg(pid, signal.SIGKILL)  # its own session: the agent and its tasks


@pytest.fixture
def slurm() -> Iterator[Cluster]:
    """The private Slurm cluster (scripts/slurm), or skip (fail if QDO_TEST_REQUIRE has
    slurm).  Cancels the test's jobs that are still there at the end."""
    problem = _slurm_problem()
    if problem is not None:
        need_service("slurm", problem)
    cluster = Cluster()
    try:
        yield cluster
    finally:
        cluster.cleanup()


# -- helpers --------------------------------------------------------------------------------
def ok(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run qdo, require success and no traceback; return stdout."""
    proc = run_qdo(*args, env=env, timeout=timeout)
    assert proc.returncode == 0, f"qdo {args} exited {proc.returncode}:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc.stdout


def launch(*args: str) -> list[str]:
    """``qdo launch ARGS``: the job ids of the lines it printed, one a job, as the batch
    system wrote them (``Submitted batch job 42``: what scripts for the original QDO read)."""
    out = ok("launch", *args)
    lines = out.splitlines()
    assert lines and all(line.split() for line in lines), f"qdo launch {args} printed:\n{out}"
    return [line.split()[-1] for line in lines]


def tasks(queue: str) -> list[dict[str, Any]]:
    """Every task of the queue with its history (``qdo tasks -v --json``)."""
    out = ok("tasks", queue, "--json", "-v")
    return [json.loads(line) for line in out.splitlines()]


def jobs(queue: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = json.loads(ok("jobs", queue, "--json"))
    return result


def counts(queue: str) -> dict[str, int]:
    status = json.loads(ok("status", queue, "--json"))
    return {state: n for state, n in status["ntasks"].items() if n}


def show_job(jobid: str) -> dict[str, str]:
    """``scontrol show job ID -o`` as a dict ({} once Slurm has forgotten the job)."""
    out = subprocess.run(["scontrol", "show", "job", jobid, "-o"], capture_output=True,
                         text=True, timeout=60).stdout  # fmt: skip
    return dict(re.findall(r"(\S+?)=(\S*)", out))


def job_state(jobid: str) -> str:
    return show_job(jobid).get("JobState", "ENDED")


def active_jobs(queue: str) -> list[str]:
    """The ids of the queue's jobs that squeue shows as not over yet."""
    out = subprocess.run(["squeue", "-h", "-n", f"qdo-{queue}", "-o", "%i %T"],
                         capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    return [f[0] for f in (line.split() for line in out.splitlines()) if f[1] in ACTIVE]


def job_log(qdo_dir: Path, jobid: str) -> str:
    """What the job printed (the slurm profile's --output, or qsub's/local's own file)."""
    folder = qdo_dir / "logs" / "jobs"
    for path in [folder / f"{jobid}.out", *sorted(folder.glob(f"*.o{jobid}"))]:
        if path.is_file():
            return path.read_text(errors="replace")
    return ""


def wait_for(what: str, done: Callable[[], bool], timeout: float = JOB_TIMEOUT,
             explain: Callable[[], str] = str) -> None:  # fmt: skip
    """Poll ``done`` until true; fail after ``timeout`` seconds with ``explain()``."""
    end = time.monotonic() + timeout
    while not done():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{explain()}")
        time.sleep(0.5)


def wait_jobs(qdo_dir: Path, queue: str, ids: list[str],
              timeout: float = JOB_TIMEOUT) -> dict[str, str]:  # fmt: skip
    """Wait until every job is over (polling scontrol); return their final states."""

    def explain() -> str:
        parts = [f"job {j}: {show_job(j)}\n{job_log(qdo_dir, j)}" for j in ids]
        return "\n".join(parts) + "\n" + ok("tasks", queue, "-v")

    wait_for(f"jobs {ids} to end", lambda: all(job_state(j) not in ACTIVE for j in ids),
             timeout, explain)  # fmt: skip
    return {j: job_state(j) for j in ids}


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def most_at_once(rows: list[dict[str, Any]]) -> int:
    """The most tasks that were running at the same moment (from started/finished)."""
    events = sorted([(seconds(t["started"]), 1) for t in rows]
                    + [(seconds(t["finished"]), -1) for t in rows])  # fmt: skip
    now = best = 0
    for _, step in events:  # at a tie, an end sorts before a start: no false overlap
        now += step
        best = max(best, now)
    return best


def assert_ran_in(rows: list[dict[str, Any]], ids: list[str]) -> None:
    """Every task Succeeded, in one of the jobs ``ids``, and its log shows that job."""
    for t in rows:
        assert t["state"] == "Succeeded", t
        assert t["jobid"] in ids, t
        printed = logs.read(t["log"]) if t["log"] else None
        assert printed and printed.split()[:2] == [b"job", t["jobid"].encode()], t


ECHO_JOB = "echo job $SLURM_JOB_ID"  # each task's log starts "job <id>"


# -- packing and counting jobs --------------------------------------------------------------
def test_one_job_runs_several_workers(slurm: Cluster, qdo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ran.txt"
    q = slurm.queue("packed", *[f"{ECHO_JOB}; echo $SLURM_JOB_ID $$ >> {out}; sleep 1"] * 8)
    [jobid] = launch(q, "4")
    assert jobid.isdigit()
    assert jobs(q)[0]["jobid"] == jobid and jobs(q)[0]["workers"] == 4
    assert wait_jobs(qdo_dir, q, [jobid]) == {jobid: "COMPLETED"}

    rows = tasks(q)
    assert len(rows) == 8
    assert_ran_in(rows, [jobid])
    assert len({t["worker"] for t in rows}) == 1  # one agent ran them all...
    assert most_at_once(rows) > 1  # ...several at a time
    lines = [line.split() for line in out.read_text().splitlines()]
    assert len(lines) == 8 and {job for job, _ in lines} == {jobid}
    assert len({pid for _, pid in lines}) == 8  # a shell of its own each
    assert show_job(jobid)["NumCPUs"] == "4"  # one core per worker
    assert "ran 8 tasks" in job_log(qdo_dir, jobid)


def test_durable_futures_run_in_launched_jobs(
    slurm: Cluster, qdo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14: the calls of a driver's executor run inside a job of qdo launch (on a
    cluster, the driver runs on a login node and the agents in jobs)."""
    from tests import calls_helpers

    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))  # the jobs'
    q = slurm.queue("futures")
    ex = qdo.connect(q).executor()
    futures = [ex.submit(calls_helpers.job_square, i) for i in range(40)]
    while any(f.task_id is None for f in futures):  # stored, so the job finds them
        time.sleep(0.05)
    [jobid] = launch(q, "2")
    results = [f.result(timeout=JOB_TIMEOUT) for f in futures]
    assert results == [(i * i, jobid) for i in range(40)]
    ex.shutdown()
    assert wait_jobs(qdo_dir, q, [jobid]) == {jobid: "COMPLETED"}
    assert {t["jobid"] for t in tasks(q)} == {jobid}


def test_several_jobs(slurm: Cluster, qdo_dir: Path) -> None:
    q = slurm.queue("several", *[f"{ECHO_JOB}; sleep 0.5"] * 9)
    ids = launch(q, "1", "--jobs", "3")
    assert len(ids) == 3 and len(set(ids)) == 3 and all(j.isdigit() for j in ids)

    listed = jobs(q)
    assert [j["jobid"] for j in listed] == ids
    assert all(j["profile"] == "slurm" and j["workers"] == 1 for j in listed)
    assert all(j["state"] in ACTIVE | {"COMPLETED"} for j in listed), listed
    table = ok("jobs", q)
    assert table.splitlines()[0].split() == ["JOBID", "PROFILE", "WORKERS", "SUBMITTED", "STATE"]
    assert all(j in table for j in ids)

    wait_jobs(qdo_dir, q, ids)
    assert counts(q) == {"Succeeded": 9}
    assert_ran_in(tasks(q), ids)
    assert {j["state"] for j in jobs(q)} == {"COMPLETED"}


def test_launch_from_python(slurm: Cluster, qdo_dir: Path) -> None:
    name = slurm.queue("python", *[f"{ECHO_JOB}; sleep 0.2"] * 6)
    q = qdo.connect(name)
    ids = q.launch(2, jobs=2)
    assert len(ids) == 2 and all(isinstance(j, str) and j.isdigit() for j in ids)
    assert [j.jobid for j in q.store.jobs(name)] == ids
    wait_jobs(qdo_dir, name, ids)
    assert_ran_in(tasks(name), ids)
    with pytest.raises(InvalidInput, match="--jobs"):
        q.launch(1, jobs=0)
    assert [j.jobid for j in q.store.jobs(name)] == ids


# -- the batch script and its options -------------------------------------------------------
def test_dry_run_and_options(slurm: Cluster, qdo_dir: Path) -> None:
    q = slurm.queue("opts", *[f"{ECHO_JOB}; sleep 0.5"] * 3)
    script = ok("launch", q, "3", "--cores-per-worker", "2", "--walltime", "00:10:00",
                "--batchqueue", "debug", "--dry-run")  # fmt: skip
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash" and "#qdo kind=slurm" in lines
    assert "#SBATCH --cpus-per-task=6" in lines  # 3 workers of 2 cores
    assert "#SBATCH --time=00:10:00" in lines
    assert "#SBATCH --partition=debug" in lines
    assert f"#SBATCH --job-name=qdo-{q}" in lines
    assert re.search(rf" -m qdo .*\bdo {q} --workers 3\b", script), script
    assert not [line for line in lines if "${" in line and not line.startswith("# ")]

    plain = ok("launch", q, "3", "--taskcores=1", "--dry-run").splitlines()
    assert "#SBATCH --cpus-per-task=3" in plain
    assert not any(line.startswith(("#SBATCH --time", "#SBATCH --partition")) for line in plain)

    # nothing was submitted, nor recorded
    assert jobs(q) == []
    assert "no jobs launched" in ok("jobs", q)
    assert active_jobs(q) == []
    commands = subprocess.run(["squeue", "-h", "-o", "%o"], capture_output=True, text=True,
                              timeout=60).stdout.split()  # fmt: skip
    assert not [c for c in commands if c.startswith(str(qdo_dir))]  # no script of ours
    assert not list((qdo_dir / "logs" / "jobs").glob("launch-*"))  # nor written
    assert counts(q) == {"Pending": 3}  # no agent took any

    # the same, for real: sbatch gets --batchopts as given
    [jobid] = launch(q, "3", "--cores-per-worker", "2", "--walltime", "00:10:00",
                     "--batchqueue", "debug", "--batchopts", "--comment=hello")  # fmt: skip
    job = show_job(jobid)
    assert job["Comment"] == "hello"
    assert job["NumCPUs"] == "6" and job["TimeLimit"] == "00:10:00"
    assert job["Partition"] == "debug" and job["JobName"] == f"qdo-{q}"
    wait_jobs(qdo_dir, q, [jobid])
    assert_ran_in(tasks(q), [jobid])


def test_mpiproc_runs_each_task_as_a_job_step(
    slurm: Cluster, qdo_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ranks"
    out.mkdir()
    q = slurm.queue("mpi", *[f"echo rank $SLURM_PROCID of $SLURM_NTASKS job $SLURM_JOB_ID "
                             f">> {out}/$QDO_TASK_ID.txt"] * 3)  # fmt: skip
    [jobid] = launch(q, "2", "--mpiproc", "2")
    wait_jobs(qdo_dir, q, [jobid])
    rows = tasks(q)
    assert [t["state"] for t in rows] == ["Succeeded"] * 3, ok("tasks", q, "-v")
    assert {t["jobid"] for t in rows} == {jobid}
    for t in rows:
        ranks = sorted((out / f"{t['id']}.txt").read_text().splitlines())
        assert ranks == [f"rank 0 of 2 job {jobid}", f"rank 1 of 2 job {jobid}"], t


# -- other profiles -------------------------------------------------------------------------
def test_pbs_profile(slurm: Cluster, qdo_dir: Path) -> None:
    if shutil.which("qsub") is None:
        need_service("slurm", "no qsub (the slurm-wlm-torque wrappers: scripts/slurm start)")
    q = slurm.queue("pbs", *[f"{ECHO_JOB}; sleep 0.5"] * 4)
    script = ok("launch", q, "2", "--profile", "pbs", "--walltime", "00:05:00", "--dry-run")
    assert "#qdo kind=pbs" in script and "#PBS -l walltime=00:05:00" in script
    assert "#PBS -l nodes=1:ppn=2" in script
    [jobid] = launch(q, "2", "--profile", "pbs", "--walltime", "00:05:00")
    assert jobid.isdigit()  # what qsub printed: the wrappers' bare Slurm id
    assert show_job(jobid)["TimeLimit"] == "00:05:00"  # the #PBS line reached the job
    assert [(j["jobid"], j["profile"]) for j in jobs(q)] == [(jobid, "pbs")]
    wait_jobs(qdo_dir, q, [jobid])
    assert_ran_in(tasks(q), [jobid])
    assert jobs(q)[0]["state"] == "COMPLETED"


def test_local_profile(slurm: Cluster, qdo_dir: Path, tmp_path: Path) -> None:
    q = slurm.queue("local", *["echo job $QDO_JOB_ID; sleep 1"] * 4)
    [jobid] = launch(q, "2", "--profile", "local")
    assert re.fullmatch(r"local-\d+", jobid), jobid
    slurm.local_pids.append(int(jobid.removeprefix("local-")))
    [job] = jobs(q)
    assert (job["jobid"], job["profile"], job["workers"]) == (jobid, "local", 2)
    assert job["state"] == "RUNNING"  # four 1 s tasks on two workers: it runs a while
    assert active_jobs(q) == []  # no batch system involved

    def ended() -> bool:
        return jobs(q)[0]["state"] == "ENDED"

    wait_for(f"{jobid} to end", ended, explain=lambda: ok("tasks", q, "-v"))
    assert_ran_in(tasks(q), [jobid])


def test_site_profile(slurm: Cluster, qdo_dir: Path) -> None:
    q = slurm.queue("site", *[f"{ECHO_JOB}; sleep 0.2"] * 2)
    builtin = resources.files("qdo").joinpath("profiles", "slurm.sh").read_text("utf-8")
    lines = builtin.splitlines(keepends=True)
    kind = lines.index("#qdo kind=slurm\n")
    site = "".join([*lines[: kind + 1], "#SBATCH --comment=site\n", *lines[kind + 1 :]])
    folder = qdo_dir / "profiles"
    folder.mkdir(parents=True)
    (folder / "mysite.sh").write_text(site)

    assert "#SBATCH --comment=site" in ok("launch", q, "1", "--profile", "mysite", "--dry-run")
    [jobid] = launch(q, "1", "--profile", "mysite")
    assert show_job(jobid)["Comment"] == "site"
    assert [(j["jobid"], j["profile"]) for j in jobs(q)] == [(jobid, "mysite")]
    wait_jobs(qdo_dir, q, [jobid])
    assert_ran_in(tasks(q), [jobid])
    assert jobs(q)[0]["state"] == "COMPLETED"

    # a profile that does not say which batch system takes it
    (folder / "nokind.sh").write_text(site.replace("#qdo kind=slurm\n", ""))
    line = fails("launch", q, "1", "--profile", "nokind")
    assert "nokind.sh" in line and "#qdo kind=" in line
    assert len(jobs(q)) == 1


# -- --auto ---------------------------------------------------------------------------------
def test_auto_keeps_at_most_maxjobs(slurm: Cluster, qdo_dir: Path) -> None:
    q = slurm.queue("auto", *[f"{ECHO_JOB}; sleep 0.3"] * 30)
    proc = subprocess.Popen([sys.executable, "-m", "qdo", "launch", q, "2", "--auto", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    most = 0
    try:
        end = time.monotonic() + 300
        while proc.poll() is None:  # it runs in the foreground until the queue is done
            most = max(most, len(active_jobs(q)))
            assert time.monotonic() < end, "qdo launch --auto did not end in 300 s"
            time.sleep(0.2)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, f"qdo launch --auto exited {proc.returncode}:\n{err}"
    assert "Traceback" not in err
    assert most <= 2
    assert counts(q) == {"Succeeded": 30}
    ids = [j["jobid"] for j in jobs(q)]
    assert ids and f"launched {len(ids)} jobs: {' '.join(ids)}" in out.splitlines()
    assert_ran_in(tasks(q), ids)
    wait_jobs(qdo_dir, q, ids)


# -- time limits ----------------------------------------------------------------------------
@pytest.mark.slow
def test_walltime_hands_running_tasks_back(slurm: Cluster, qdo_dir: Path) -> None:
    # SLOW (~100 s): 1 minute is Slurm's shortest limit, and slurmctld signals the job
    # 60-90 s after it starts (scripts/slurm).  Keep it: it is the whole point of qdo's
    # walltime handling.  8 tasks of 30 s on 2 workers keep the job busy past that.
    q = slurm.queue("walltime", *[f'{ECHO_JOB}; [ -n "$AFTER_THE_JOB" ] || sleep 30'] * 8)
    [jobid] = launch(q, "2", "--walltime", "00:01:00")
    assert show_job(jobid)["TimeLimit"] == "00:01:00"
    state = wait_jobs(qdo_dir, q, [jobid], timeout=300)[jobid]
    assert state in ("TIMEOUT", "COMPLETED")
    log = job_log(qdo_dir, jobid)
    assert "DUE TO TIME LIMIT" in log and "stopped by SIGTERM" in log, log

    rows = tasks(q)
    by_state = {t["state"] for t in rows}
    assert by_state <= {"Succeeded", "Pending"}, ok("tasks", q, "-v")  # none Running/Failed
    returned = [t for t in rows if any(a["state"] == "Returned" for a in t["history"])]
    assert returned, ok("tasks", q, "-v")  # the limit came while tasks ran: handed back
    for t in returned:
        assert t["state"] == "Pending"
        assert all(a["state"] == "Returned" and a["jobid"] == jobid for a in t["history"]), t
    assert_ran_in([t for t in rows if t["state"] == "Succeeded"], [jobid])

    # a worker started later (not in a job: no sleep) finishes them
    ok("do", q, "--workers", "4", env={"AFTER_THE_JOB": "1"})
    assert counts(q) == {"Succeeded": 8}


def test_walltime_aware_worker_leaves_long_tasks(
    slurm: Cluster, qdo_dir: Path, tmp_path: Path
) -> None:
    # the worker asks Slurm when its job ends (squeue), and takes only tasks that fit
    marker = tmp_path / "long-task-ran"
    q = slurm.queue("aware", f"touch {marker}", timeout=600, priority=9)  # first; 10 minutes
    short = qdo.connect(q)
    for _ in range(3):
        short.add(f"{ECHO_JOB}; sleep 0.2", timeout=10)  # these fit
    [jobid] = launch(q, "1", "--walltime", "00:02:00")
    wait_jobs(qdo_dir, q, [jobid])

    rows = tasks(q)
    long_task = rows[0]
    assert long_task["timeout"] == 600
    assert long_task["state"] == "Pending", ok("tasks", q, "-v")
    assert long_task["history"] == [], long_task  # never even claimed
    assert not marker.exists()
    assert_ran_in(rows[1:], [jobid])


def test_no_job_for_tasks_longer_than_its_walltime(slurm: Cluster, qdo_dir: Path) -> None:
    q = slurm.queue("toolong", "true", timeout=600)  # declares 10 minutes
    for extra in ([], ["--auto", "2"]):
        err = fails("launch", q, "2", "--walltime", "00:02:00", *extra)
        assert "declares more time (timeout) than a job of --walltime 00:02:00" in err, err
    assert jobs(q) == [] and active_jobs(q) == []
    qdo.connect(q).add("true")  # one that fits: now a job is worth it
    [jobid] = launch(q, "1", "--walltime", "00:02:00")
    wait_jobs(qdo_dir, q, [jobid])
    assert counts(q) == {"Succeeded": 1, "Pending": 1}


def test_job_states_come_from_one_squeue(slurm: Cluster, qdo_dir: Path) -> None:
    from qdo.launch import job_states

    q = slurm.queue("states", "sleep 5")
    [jobid] = launch(q, "1")
    # a job Slurm never had (or has forgotten) has ENDED; a PBS-style id is the same job
    states = job_states("slurm", [jobid, f"{jobid}.vm", "999999999"])
    assert states[jobid] in ACTIVE and states[f"{jobid}.vm"] == states[jobid], states
    assert states["999999999"] == "ENDED"
    assert job_states("slurm", ["999999998"]) == {"999999998": "ENDED"}  # squeue exits 1
    # what qdo makes of them: the same call, in JobState
    status = batch.SlurmSystem().status([jobid, "999999999"])
    assert status[jobid].state.active and status[jobid].native in ACTIVE, status
    assert status["999999999"] == JobStatus(JobState.ENDED, "ENDED")
    assert jobstate.ended([jobid, "999999999", "local-1"]) == ["999999999"]


# -- cancelling -----------------------------------------------------------------------------
def _running_in(queue: str, jobid: str) -> Callable[[], bool]:
    def running() -> bool:
        rows = tasks(queue)
        return bool(rows) and all(t["state"] == "Running" and t["jobid"] == jobid for t in rows)

    return running


def _handed_back(queue: str, jobid: str) -> Callable[[], bool]:
    """Whether every task is Pending again, handed back (Returned) by the job's agent."""

    def back() -> bool:
        rows = tasks(queue)
        return all(t["state"] == "Pending" and [(a["state"], a["jobid"]) for a in t["history"]]
                   == [("Returned", jobid)] for t in rows)  # fmt: skip

    return back


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_cancel_hands_the_tasks_back(slurm: Cluster, qdo_dir: Path, kind: str) -> None:
    if shutil.which("qdel" if kind == "pbs" else "scancel") is None:
        need_service("slurm", "no qdel (the slurm-wlm-torque wrappers: scripts/slurm start)")
    q = slurm.queue(f"cancel-{kind}", f"{ECHO_JOB}; sleep 600")
    [jobid] = launch(q, "1", "--profile", kind)
    wait_for(f"the task to run in {jobid}", _running_in(q, jobid),
             explain=lambda: ok("tasks", q, "-v") + job_log(qdo_dir, jobid))  # fmt: skip
    system = batch.system(kind)
    out = ok("jobs", q, "--cancel")  # through the profile's batch system: scancel, qdel
    assert out.startswith(f"cancelled 1 jobs of {q}: {jobid} "), out
    assert wait_jobs(qdo_dir, q, [jobid]) == {jobid: "CANCELLED"}
    assert system.status([jobid]) == {jobid: JobStatus(JobState.CANCELLED, "CANCELLED")}
    assert jobs(q)[0]["state"] == "CANCELLED"
    assert jobstate.ended([jobid]) == [jobid]
    wait_for("the task to be handed back", _handed_back(q, jobid),
             explain=lambda: ok("tasks", q, "-v") + job_log(qdo_dir, jobid))  # fmt: skip
    system.cancel([jobid])  # a job that is over already: no error
    assert json.loads(ok("jobs", q, "--cancel", "--json")) == {"cancelled": []}


def test_cancel_local_job(slurm: Cluster, qdo_dir: Path) -> None:
    q = slurm.queue("cancel-local", "echo job $QDO_JOB_ID; sleep 600")
    [jobid] = launch(q, "1", "--profile", "local")
    slurm.local_pids.append(int(jobid.removeprefix("local-")))
    wait_for(f"the task to run in {jobid}", _running_in(q, jobid),
             explain=lambda: ok("tasks", q, "-v"))  # fmt: skip
    local = batch.LocalSystem()
    assert local.status([jobid])[jobid].state is JobState.RUNNING
    assert json.loads(ok("jobs", q, "--cancel", "--json")) == {"cancelled": [jobid]}
    wait_for(f"{jobid} to end", lambda: jobs(q)[0]["state"] == "ENDED",
             explain=lambda: ok("tasks", q, "-v"))  # fmt: skip
    assert local.status([jobid]) == {jobid: JobStatus(JobState.ENDED, "ENDED")}
    wait_for("the task to be handed back", _handed_back(q, jobid),
             explain=lambda: ok("tasks", q, "-v"))  # fmt: skip
    local.cancel([jobid])  # over already: no error


# -- bad input ------------------------------------------------------------------------------
def test_bad_input_submits_nothing(
    slurm: Cluster, qdo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    q = slurm.queue("bad", "true")
    assert "no queue named 'nosuch" in fails("launch", "nosuch-queue", "1")
    assert "--walltime" in fails("launch", q, "1", "--walltime", "1:2:3:4")
    assert "--walltime" in fails("launch", q, "1", "--walltime", "0")
    assert "no batch profile 'nosuch'" in fails("launch", q, "1", "--profile", "nosuch")
    # a newline in --batchqueue made a line of the batch script of its own, run in the job
    injected = qdo_dir / "injected"
    for option in ("--batchqueue", "--walltime", "--script"):
        line = fails("launch", q, "1", option, f"debug\ntouch {injected}")
        assert "must be one line of text" in line, line
    assert not injected.exists()
    assert "invalid profile name" in fails("launch", q, "1", "--profile", "../slurm")
    # a count below 1 is a usage error, as everywhere in qdo (exit 2, usage first)
    for count in (["1", "--jobs", "0"], ["0"]):
        proc = run_qdo("launch", q, *count)
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert "Traceback" not in proc.stderr
        assert re.match(r"qdo launch: error: argument (--jobs|NWORKERS): expected a number "
                        r"of at least 1, got '0'$", proc.stderr.splitlines()[-1])  # fmt: skip
    # --mpiproc needs srun's job steps: not outside a Slurm job
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert "inside a Slurm job" in fails("do", q, "--mpiproc", "2")

    assert jobs(q) == []
    assert active_jobs(q) == []
    assert counts(q) == {"Pending": 1}
    assert tasks(q)[0]["history"] == []  # not even claimed
