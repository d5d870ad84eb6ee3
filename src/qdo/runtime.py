"""Facts about this process and this machine that every layer may ask: how a worker
names itself, which batch job it runs in, whether a process still exists."""

from __future__ import annotations

import os


def hostname() -> str:
    """This machine's name, as ``socket.gethostname()`` gives it (the kernel's node name),
    without importing ``socket``: short commands do not pay for it."""
    return os.uname().nodename


def worker_id() -> str:
    """How this process names itself as a worker: ``host:pid``."""
    return f"{hostname()}:{os.getpid()}"


def batch_job_id() -> str | None:
    """The id of the batch job this process runs in, if any."""
    env = os.environ
    return env.get("QDO_JOB_ID") or env.get("SLURM_JOB_ID") or env.get("PBS_JOBID") or None


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_here(worker: str, host: str) -> bool:
    """True if ``worker`` (host:pid) ran on ``host``, this one, and its process is gone."""
    where, _, pid = worker.rpartition(":")
    return where == host and pid.isdigit() and not pid_alive(int(pid))
