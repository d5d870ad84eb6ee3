"""The original QDO's command line, as the production scripts write it, on qdo.

Each test names the script whose line it runs.  The Slurm ones use the real
single-node cluster of ``scripts/slurm`` (see test_launch.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import qdo
from tests.acceptance.test_launch import Cluster, ok, show_job, wait_for
from tests.conftest import run_qdo

RUNBRICK = "/src/legacypipe/bin/runbrick-shifter.sh"


def test_runbrick_launch_line(qdo_dir: Path) -> None:
    """legacypipe bin/runbrick-shifter.sh (and doc/shifter.md): ``qdo launch -v tst 1
    --cores_per_worker 8 --walltime=30:00 --batchqueue=debug --keep_env --batchopts
    "--image=..." --script "..."``; forced-south.sh puts ``-v`` at the very end."""
    ok("create", "tst")
    for verbose_at in ("front", "end"):
        args = ["1", "--cores_per_worker", "8", "--walltime=30:00", "--batchqueue=debug",
                "--keep_env", "--batchopts", "--image=docker:legacysurvey/legacypipe:x",
                "--script", RUNBRICK, "--profile", "slurm", "--cores_per_node", "32",
                "--dry-run"]  # fmt: skip
        argv = (
            ["launch", "-v", "tst", *args]
            if verbose_at == "front"
            else ["launch", "tst", *args, "-v"]
        )
        script = ok(*argv)
        assert "#SBATCH --time=30:00" in script
        assert "#SBATCH --partition=debug" in script
        assert "--export=ALL" in script  # --keep_env
        assert f"--script {RUNBRICK}" in script
    dashes = ok("launch", "tst", "1", "--cores-per-worker", "8", "--keep-env", "--profile",
                "slurm", "--cores-per-node", "32", "--dry-run")  # fmt: skip
    assert dashes == ok("launch", "tst", "1", "--cores_per_worker", "8", "--keep_env",
                        "--profile", "slurm", "--cores_per_node", "32", "--dry_run")  # fmt: skip


@pytest.mark.parametrize("walltime", ["30", "30:00", "0:30:00", "0:120:00", "48:00:00",
                                      "1-12", "1-12:30", "1-00:00:05"])  # fmt: skip
def test_every_slurm_time_format_passes_through(walltime: str, qdo_dir: Path) -> None:
    """sdo stages.py writes ``--walltime=0:{int(hrs*60)}:00`` (minutes over 59); the
    cookbook and the runbrick scripts write 30:00, 4:00:00, 48:00:00: every form of
    sbatch --time goes to the batch system as written."""
    ok("create", "wt")
    script = ok("launch", "wt", "1", f"--walltime={walltime}", "--profile", "slurm",
                "--cores_per_node", "4", "--dry-run")  # fmt: skip
    assert f"#SBATCH --time={walltime}\n" in script
    pbs = ok("launch", "wt", "1", "--walltime", walltime, "--profile", "pbs", "--dry-run")
    assert re.search(r"#PBS -l walltime=\d\d+:\d\d:\d\d\n", pbs)  # PBS wants H:M:S


def test_load_with_options_first_and_list(qdo_dir: Path, tmp_path: Path) -> None:
    """legacypipe doc/cookbook.md: ``qdo load --priority -10 jobs jobs`` (the option
    before the queue), ``qdo tasks Q --state=Failed``, ``qdo retry``, ``qdo list``."""
    jobs = tmp_path / "jobs"
    jobs.write_text("echo a\necho b\n")
    ok("load", "--priority", "-10", "jobs", str(jobs))
    q = qdo.connect("jobs")
    assert [t.priority for t in q.tasks()] == [-10, -10]
    t = q.get()
    assert t is not None
    t.set_state(qdo.Task.FAILED, err=2)
    assert "echo a" in ok("tasks", "jobs", "--state=Failed")
    assert "Pending" not in ok("tasks", "jobs", "--state=Failed")
    assert "echo a" in ok("tasks", "jobs", "--exitcode", "2")
    assert "1 Failed or Killed tasks of jobs will run again" in ok("retry", "jobs")
    assert "jobs" in ok("list")


def test_noop_checks_the_environment(qdo_dir: Path) -> None:
    """legacypipe's job scripts run ``qdo noop`` to see that qdo works in the job."""
    assert run_qdo("noop").returncode == 0
    bad = run_qdo("noop", env={"QDO_BACKEND": "nonsense"})
    assert bad.returncode == 1 and bad.stderr.startswith("qdo: error:")


def _holder_in_job(queue: str, jobid: str) -> subprocess.Popen[str]:
    """A live get() client whose environment says it runs in batch job ``jobid``."""
    code = ("import sys, time, qdo\n"
            f"t = qdo.connect({queue!r}).get()\n"
            "print(t.id, flush=True)\n"
            "time.sleep(600)\n")  # fmt: skip
    env = {**os.environ, "SLURM_JOB_ID": jobid}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip


def test_recover_dead_and_all(slurm: Cluster, qdo_dir: Path) -> None:
    """sdo (its old attempt_recover) and the cookbook: ``qdo recover Q --dead`` brings
    back at once the Running tasks whose batch job has ended, asking Slurm; a task of a
    job still running stays; ``--all`` is the original "every Running task"."""
    q = slurm.queue("recover", "task in a dead job", "task in a live job")
    live = subprocess.run(["sbatch", "--parsable", f"--job-name=qdo-{q}", "--wrap", "sleep 300",
                           "--output=/dev/null"], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip().split(";")[0]  # fmt: skip
    wait_for("the live job to run", lambda: show_job(live).get("JobState") == "RUNNING")
    holders = [_holder_in_job(q, "999999901"), _holder_in_job(q, live)]  # 999999901: no job
    try:
        ids = [int(h.stdout.readline()) for h in holders if h.stdout is not None]
        queue = qdo.connect(q)
        assert queue.status()["ntasks"]["Running"] == 2
        assert "0 Running tasks" in ok("recover", q)  # both holders live: nothing
        out = ok("recover", q, "--dead")
        assert out.startswith("1 Running tasks"), out
        dead = queue.tasks(id=ids[0])
        assert dead.state is qdo.Task.PENDING and "batch job ended" in (dead.message or "")
        assert queue.tasks(id=ids[1]).state is qdo.Task.RUNNING
        assert ok("recover", q, "--all").startswith("1 Running tasks")
        assert queue.status()["ntasks"]["Running"] == 0
    finally:
        for h in holders:
            h.kill()
            h.communicate()
        subprocess.run(["scancel", live], capture_output=True, timeout=60)


def test_launch_prints_sbatch_line_and_takes_batchopts_twice(slurm: Cluster, qdo_dir: Path) -> None:
    """sdo stages.py parses ``Submitted batch job (\\d+)`` out of what ``qdo launch -v``
    prints; the cookbook gives ``--batchopts`` twice; sdo names its jobs with ``-J``
    in --batchopts and writes walltimes like 0:120:00."""
    q = slurm.queue("sdo", "true")
    proc = run_qdo("launch", "-v", q, "1", "--walltime=0:120:00", "--batchopts",
                   "--comment=first", "--batchopts", f"-J qdo-{q}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"Submitted batch job (\d+)", proc.stdout + proc.stderr)
    assert m is not None, proc.stdout
    job = show_job(m.group(1))
    assert job.get("TimeLimit") == "02:00:00" and job.get("Comment") == "first", job
    assert job.get("JobName") == f"qdo-{q}"
    wait_for("the job to run the task",
             lambda: qdo.connect(q).status()["ntasks"]["Succeeded"] == 1)  # fmt: skip
