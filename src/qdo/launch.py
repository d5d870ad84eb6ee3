"""Batch launching: ``qdo launch`` submits jobs that each run a queue's workers.

A *profile* is a plain batch-script template (``profiles/<name>.sh`` in the package, or
``$QDO_DIR/profiles/<name>.sh`` for a site's own) whose ``#qdo kind=`` line says which
batch system takes it: ``slurm`` (sbatch), ``pbs`` (qsub) or ``local`` (detached
processes on this machine, no batch system).  ``qdo launch`` fills in the template's
``${...}`` fields (``string.Template``), writes the script next to the job logs and
submits it once per job; every job runs one qdo agent per node (``qdo do``), which
exits when the queue is empty and hands its tasks back when the time limit comes.
What differs between batch systems (directives, submitting, job states) lives in
their classes in ``qdo.batch``; the profile's kind picks one.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

from . import batch, config
from .batch import BatchError, BatchSystem, JobStatus
from .errors import ConfigError, InvalidInput, QdoError
from .jobstate import ACTIVE, job_states
from .models import MAX_JOBS, MAX_WORKERS
from .queue import left_to_run

__all__ = ["ACTIVE", "KINDS", "BatchError", "LaunchOptions", "Profile", "auto", "cancel_jobs",
           "find_profile", "job_states", "job_statuses", "launch", "render",
           "walltime_seconds"]  # fmt: skip

if TYPE_CHECKING:
    from .queue import Queue
    from .store.base import Job

KINDS = tuple(batch.SYSTEMS)  # ("slurm", "pbs", "local")
_PROFILE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: Slurm's forms of a time limit (sbatch --time): M, M:S, H:M:S, D-H, D-H:M, D-H:M:S;
#: no field is bounded (sdo writes 0:120:00).
_WALLTIME = re.compile(
    r"(?P<m>\d+)|(?P<m2>\d+):(?P<s2>\d+)|(?P<h3>\d+):(?P<m3>\d+):(?P<s3>\d+)"
    r"|(?P<d>\d+)-(?P<h>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
)
#: Variables a job needs when it does not take the whole environment (--keep-env).
PASSED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH",
              "VIRTUAL_ENV", "QDORC_LOCATION")  # fmt: skip


@dataclass(frozen=True)
class LaunchOptions:
    """What ``qdo launch`` takes (see ``qdo launch --help``)."""

    workers: int
    jobs: int = 1
    cores_per_worker: int | None = None
    walltime: str | None = None
    batchqueue: str | None = None
    batchopts: str = ""
    script: str | None = None
    keep_env: bool = False
    mpiproc: int | None = None
    profile: str | None = None
    cores_per_node: int | None = None  # default: what the batch system says

    def check(self) -> LaunchOptions:
        for name in ("workers", "jobs", "cores_per_worker", "mpiproc", "cores_per_node"):
            value = getattr(self, name)
            if value is None and name != "workers" and name != "jobs":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                flag = name.replace("_", "-")
                raise InvalidInput(f"--{flag} must be a positive integer, got {value!r}")
        if self.workers > MAX_WORKERS:  # (what qdo do takes: its jobs would die at once)
            raise InvalidInput(f"at most {MAX_WORKERS} workers a job, got {self.workers}: "
                               "launch more jobs (--jobs) for more")  # fmt: skip
        if self.jobs > MAX_JOBS:
            raise InvalidInput(f"at most {MAX_JOBS:,} jobs at once, got {self.jobs:,}")
        for name in ("walltime", "batchqueue", "batchopts", "script", "profile"):
            value = getattr(self, name)
            if not isinstance(value, (str, type(None))):
                raise InvalidInput(f"{name} must be text, got {value!r}")
            # (each goes into the batch script: a newline in --batchqueue made its own
            # line of it, run in the job)
            if value is not None and _CONTROL.search(value):
                raise InvalidInput(f"{name} must be one line of text, without control "
                                   f"characters, got {value!r}")  # fmt: skip
        if not isinstance(self.keep_env, bool):
            raise InvalidInput(f"keep_env must be true or false, got {self.keep_env!r}")
        if self.walltime is not None:
            walltime_seconds(self.walltime)  # a clear error if it is not one
        try:
            shlex.split(self.batchopts)
        except ValueError as e:
            raise InvalidInput(f"--batchopts {self.batchopts!r}: {e}") from e
        return self

    @property
    def cores(self) -> int:
        """Cores per worker: as asked, else as many as an MPI task's ranks, else 1."""
        return self.cores_per_worker or self.mpiproc or 1


@dataclass(frozen=True)
class Profile:
    name: str
    kind: str  # one of KINDS
    template: str
    origin: str  # where it was read from

    @property
    def system(self) -> BatchSystem:
        """The batch system that takes this profile's jobs."""
        return batch.system(self.kind)


def find_profile(name: str | None = None, settings: config.Settings | None = None) -> Profile:
    """The profile ``name`` (a site's under $QDO_DIR/profiles first, then qdo's own),
    or the batch profile setting, or else the batch system found on PATH."""
    settings = settings or config.load()
    name = name or settings["batch_profile"] or default_kind()
    if not _PROFILE_NAME.fullmatch(name):
        raise InvalidInput(f"invalid profile name {name!r}")
    site = settings.qdo_dir / "profiles" / f"{name}.sh"
    if site.is_file():
        text, origin = site.read_text("utf-8"), str(site)
    else:
        builtin = resources.files(__package__).joinpath("profiles").joinpath(f"{name}.sh")
        if not builtin.is_file():
            raise ConfigError(
                f"no batch profile {name!r}: qdo has {', '.join(KINDS)}; a site profile goes "
                f"in {settings.qdo_dir / 'profiles' / (name + '.sh')}"
            )
        text, origin = builtin.read_text("utf-8"), f"qdo's {name} profile"
    m = re.search(r"^#qdo kind=(\w+)\s*$", text, re.MULTILINE)
    if m is None or m.group(1) not in KINDS:
        raise ConfigError(f"{origin}: needs a line '#qdo kind=slurm' (or pbs, local)")
    return Profile(name, m.group(1), text, origin)


def default_kind() -> str:
    """The first batch system whose submit command is on PATH (else local)."""
    for kind, cls in batch.SYSTEMS.items():
        if cls.submit_tool is None or shutil.which(cls.submit_tool):
            return kind
    return "local"


# -- the script ----------------------------------------------------------------------------
def render(queue: Queue, opts: LaunchOptions, profile: Profile) -> str:
    """The batch script of one job."""
    opts.check()
    system = profile.system
    total = opts.workers * opts.cores
    per_node = opts.cores_per_node or system.cores_per_node(opts.batchqueue)
    nodes = max(1, math.ceil(total / per_node)) if per_node else 1
    workers_per_node = math.ceil(opts.workers / nodes)
    agent = [sys.executable, "-m", "qdo", "--user", queue.store.user, "do", queue.name,
             "--workers", str(workers_per_node)]  # fmt: skip
    if opts.script:
        agent += ["--script", opts.script]
    if opts.mpiproc:
        agent += ["--mpiproc", str(opts.mpiproc)]
    walltime = opts.walltime
    time_line = "" if walltime is None else system.time_line(walltime, walltime_seconds(walltime))
    fields = {
        "queue": queue.name,
        "job_name": f"qdo-{queue.name}"[:64],
        "nodes": str(nodes),
        "workers": str(opts.workers),
        "workers_per_node": str(workers_per_node),
        "cores_per_worker": str(opts.cores),
        "cores_per_node": str(workers_per_node * opts.cores),
        "job_log": str(jobs_dir(queue) / "%j.out"),
        # NIL: without it a list makes Slurm load the user's login environment too,
        # which holds up every job start by a second or more
        "export": "ALL" if opts.keep_env else ",".join(["NIL", *exported_names()]),
        "time_line": time_line,
        "partition_line": "" if opts.batchqueue is None else system.partition_line(opts.batchqueue),
        "agent": system.agent_line(shlex.join(agent), nodes),
        "python": sys.executable,
    }
    try:
        return Template(profile.template).substitute(fields)
    except (KeyError, ValueError) as e:
        raise ConfigError(f"{profile.origin}: bad template field {e}") from e


def exported_names() -> list[str]:
    """The variables a job gets (besides the batch system's own): qdo's settings and
    what running Python needs.  Names only: their values stay out of the script."""
    return sorted(n for n in os.environ if n.startswith("QDO_") or n in PASSED_ENV)


def jobs_dir(queue: Queue) -> Path:
    path = queue.settings.log_dir / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- submitting ----------------------------------------------------------------------------
def launch(queue: Queue, opts: LaunchOptions, dry_run: bool = False,
           say: Callable[[str], None] | None = None) -> list[str]:  # fmt: skip
    """Submit ``opts.jobs`` jobs for the queue; return their ids (and record them).
    ``say`` gets what the batch system printed for each (``Submitted batch job 42``).
    With ``dry_run`` nothing is submitted: the script goes to ``say`` (or stdout)."""
    opts.check()
    queue.store.get_queue(queue.name)  # a clear error for an unknown queue
    profile = find_profile(opts.profile, queue.settings)
    script = render(queue, opts, profile)
    if dry_run:
        (say or print)(script)
        return []
    if opts.walltime is not None:
        _check_fits(queue, opts.walltime)
    folder = jobs_dir(queue)
    path = folder / f"launch-{queue.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.sh"
    path.write_text(script)
    path.chmod(0o755)
    ids = []
    for _ in range(opts.jobs):
        jobid, line = _submit(profile.system, path, opts, folder)
        queue.store.add_job(queue.name, jobid, profile.name, opts.workers)
        ids.append(jobid)
        if say is not None:
            say(line)
    return ids


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def walltime_seconds(walltime: str) -> int:
    """Seconds of a time limit in any of Slurm's forms (see ``_WALLTIME``)."""
    m = _WALLTIME.fullmatch(walltime.strip())
    if m is None:
        raise InvalidInput(
            f"--walltime takes a time as sbatch --time does (M, M:S, H:M:S, D-H, D-H:M or "
            f"D-H:M:S, e.g. 30:00 or 1-12), got {walltime!r}"
        )
    g = {k: int(v) for k, v in m.groupdict().items() if v is not None}
    seconds = (g.get("m", 0) * 60 + g.get("m2", 0) * 60 + g.get("s2", 0)
               + g.get("h3", 0) * 3600 + g.get("m3", 0) * 60 + g.get("s3", 0)
               + g.get("d", 0) * 86400 + g.get("h", 0) * 3600 + g.get("dm", 0) * 60
               + g.get("ds", 0))  # fmt: skip
    if seconds <= 0:
        raise InvalidInput(f"--walltime {walltime!r} is no time at all: give a time limit")
    return seconds


def _check_fits(queue: Queue, walltime: str) -> None:
    """Submit no job that could claim none of the queue's tasks: its workers take only
    tasks that declare no run time or one that fits in what the job has left."""
    from .worker import CLAIM_MARGIN

    n = queue.status()["ntasks"]
    if (
        n["Pending"]
        and not n["Waiting"]
        and not queue.store.pending_fits(queue.name, walltime_seconds(walltime) - CLAIM_MARGIN)
    ):
        raise InvalidInput(
            f"every pending task of {queue.name} ({n['Pending']:,}) declares more time "
            f"(timeout) than a job of --walltime {walltime} has: its workers would take "
            "none of them; give a longer --walltime"
        )


def _submit(system: BatchSystem, script: Path, opts: LaunchOptions,
            folder: Path) -> tuple[str, str]:  # fmt: skip
    """Submit one job; return its id and the line the batch system printed for it."""
    # a password's value must not go on a command line: then the job takes everything
    env_names = None if opts.keep_env or _secret_in_env() else exported_names()
    return system.submit(script, shlex.split(opts.batchopts), env_names, folder)


def _secret_in_env() -> bool:
    """Whether qdo's settings in the environment hold a password (then no value of
    theirs may go on a command line, which every user of the machine can read)."""
    url = os.environ.get("QDO_DB_URL", "")
    return bool(os.environ.get("QDO_DB_PASS")) or config.mask_url(url) != url


# -- watching ------------------------------------------------------------------------------
def auto(queue: Queue, opts: LaunchOptions, maxjobs: int, poll: float = 5.0,
         say: Callable[[str], None] = print) -> list[str]:  # fmt: skip
    """Keep up to ``maxjobs`` jobs working while the queue has Pending tasks (one job
    per ``opts.workers`` of them); return when no task is left to run."""
    if isinstance(maxjobs, bool) or not isinstance(maxjobs, int) or maxjobs < 1:
        raise InvalidInput(f"--auto takes a positive number of jobs, got {maxjobs!r}")
    system = find_profile(opts.profile, queue.settings).system
    launched: list[str] = []
    stop = {"now": False}
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.update(now=True)) if main else None
    try:
        while not stop["now"]:
            status = queue.status()
            n = status["ntasks"]
            left = left_to_run(status)
            if left <= 0:
                say(f"queue {queue.name}: nothing left to run; launched {len(launched)} jobs")
                break
            known = [j.jobid for j in queue.store.jobs(queue.name)]
            active = [j for j, s in system.status(known).items() if s.state.active]
            wanted = min(maxjobs, math.ceil(n["Pending"] / opts.workers)) if n["Pending"] else 0
            if status["state"] == "Active" and len(active) < wanted:
                new = launch(queue, replace(opts, jobs=wanted - len(active)), say=say)
                launched += new
                say(f"queue {queue.name}: {n['Pending']:,} pending, {len(active)} jobs "
                    f"working: submitted {', '.join(new)}")  # fmt: skip
            time.sleep(poll)
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    return launched


def job_statuses(queue: Queue) -> list[tuple[Job, BatchSystem, JobStatus]]:
    """The jobs launched for the queue, oldest first, each with the batch system that
    took it (its profile's kind) and what that system says of it, asked once a system."""
    jobs = queue.store.jobs(queue.name)
    systems: dict[str, BatchSystem] = {}
    for j in jobs:
        if j.profile not in systems:
            try:
                kind = find_profile(j.profile, queue.settings).kind
            except QdoError:  # a site profile since removed: its name, else slurm's
                kind = j.profile if j.profile in KINDS else "slurm"
            systems[j.profile] = batch.system(kind)
    statuses: dict[str, JobStatus] = {}
    for profile, system in systems.items():
        statuses.update(system.status([j.jobid for j in jobs if j.profile == profile]))
    return [(j, systems[j.profile], statuses[j.jobid]) for j in jobs]


def cancel_jobs(queue: Queue) -> list[str]:
    """End the queue's jobs that are still queued or running, as a time limit would
    (their agents hand the running tasks back); return their ids.  Raises
    ``BatchError`` if a batch system refuses."""
    active: dict[BatchSystem, list[str]] = {}
    for job, system, status in job_statuses(queue):
        if status.state.active:
            active.setdefault(system, []).append(job.jobid)
    for system, ids in active.items():
        system.cancel(ids)
    return [j for ids in active.values() for j in ids]
