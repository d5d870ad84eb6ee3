"""What a batch system says of jobs: is each still working, or gone?

Below the queue API (``qdo recover --dead`` asks it) and below launching (``qdo jobs``,
``qdo launch --auto``).  One call asks about many jobs at once: Slurm's controller is
shared by everyone, and a script may ask every few seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

#: Job states that still count as working on the queue.
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "HELD"}


def ended(jobids: Sequence[str]) -> list[str]:
    """The batch jobs among ``jobids`` that this machine's batch system says have ended
    (not those it cannot tell about), asking it once: Slurm if ``squeue`` is here, else
    PBS.  Local jobs (``local-PID``) are left out: their workers' processes tell."""
    batch = [j for j in jobids if not j.startswith("local-")]
    kind = "slurm" if shutil.which("squeue") else "pbs" if shutil.which("qstat") else None
    if not batch or kind is None:
        return []
    return [j for j, state in job_states(kind, batch).items()
            if state not in ACTIVE and state != "UNKNOWN"]  # fmt: skip


def job_states(kind: str, jobids: Sequence[str]) -> dict[str, str]:
    """The batch system's state of each job: PENDING, RUNNING, COMPLETED, TIMEOUT, ...;
    ENDED when it is gone from the batch system's memory."""
    if not jobids:
        return {}
    if kind == "local":
        return {j: ("RUNNING" if _local_alive(j) else "ENDED") for j in jobids}
    if kind == "pbs" and not shutil.which("squeue"):
        return {j: _pbs_state(j) for j in jobids}
    # the PBS wrappers of Slurm run Slurm jobs: squeue knows them too
    return _slurm_states(jobids)


def _slurm_states(jobids: Sequence[str]) -> dict[str, str]:
    """One ``squeue`` for all the jobs (not one call per job: ``--auto`` asks every few
    seconds, for every job it ever launched).  Slurm forgets a job some minutes after it
    ended (MinJobAge): a job it does not list has ENDED."""
    ids = {j: j.split(".")[0] for j in jobids}
    cmd = ["squeue", "--noheader", "--states=all", "--jobs", ",".join(sorted(set(ids.values()))),
           "--format=%i %T"]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return dict.fromkeys(jobids, "UNKNOWN")
    if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
        return dict.fromkeys(jobids, "UNKNOWN")  # no answer (slurmctld down?): not ENDED
    known = dict(line.split(None, 1) for line in proc.stdout.splitlines() if " " in line)
    return {j: known.get(i, "ENDED").strip() for j, i in ids.items()}


def _pbs_state(jobid: str) -> str:
    try:
        proc = subprocess.run(["qstat", jobid], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return "UNKNOWN"
    for line in proc.stdout.splitlines():
        fields = line.split()
        if fields and fields[0].split(".")[0] == jobid.split(".")[0] and len(fields) >= 5:
            return {"Q": "PENDING", "H": "HELD", "R": "RUNNING", "E": "COMPLETING",
                    "C": "ENDED"}.get(fields[4], fields[4])  # fmt: skip
    return "ENDED"


def _local_alive(jobid: str) -> bool:
    try:
        pid = int(jobid.removeprefix("local-"))
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError, PermissionError):
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True
