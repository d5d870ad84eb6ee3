"""Batch launching: ``qdo launch`` submits jobs that each run a queue's workers.

A *profile* is a plain batch-script template (``profiles/<name>.sh`` in the package, or
``$QDO_DIR/profiles/<name>.sh`` for a site's own) whose ``#qdo kind=`` line says which
batch system takes it: ``slurm`` (sbatch), ``pbs`` (qsub) or ``local`` (detached
processes on this machine, no batch system).  ``qdo launch`` fills in the template's
``${...}`` fields (``string.Template``), writes the script next to the job logs and
submits it once per job; every job runs one qdo agent per node (``qdo do``), which
exits when the queue is empty and hands its tasks back when the time limit comes.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

from . import config
from .errors import ConfigError, InvalidInput, QdoError
from .jobstate import ACTIVE, job_states

__all__ = ["ACTIVE", "KINDS", "LaunchOptions", "Profile", "auto", "find_profile", "job_states",
           "launch", "render", "walltime_seconds"]  # fmt: skip

if TYPE_CHECKING:
    from .queue import Queue

KINDS = ("slurm", "pbs", "local")
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


class BatchError(QdoError):
    """The batch system refused a job, or could not be asked."""


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
    kind: str
    template: str
    origin: str  # where it was read from


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
    if shutil.which("sbatch"):
        return "slurm"
    if shutil.which("qsub"):
        return "pbs"
    return "local"


# -- the script ----------------------------------------------------------------------------
def render(queue: Queue, opts: LaunchOptions, profile: Profile) -> str:
    """The batch script of one job."""
    opts.check()
    total = opts.workers * opts.cores
    per_node = opts.cores_per_node or (cores_per_node(opts.batchqueue) if profile.kind == "slurm"
                                       else None)  # fmt: skip
    nodes = max(1, math.ceil(total / per_node)) if per_node else 1
    workers_per_node = math.ceil(opts.workers / nodes)
    agent = [sys.executable, "-m", "qdo", "--user", queue.store.user, "do", queue.name,
             "--workers", str(workers_per_node)]  # fmt: skip
    if opts.script:
        agent += ["--script", opts.script]
    if opts.mpiproc:
        agent += ["--mpiproc", str(opts.mpiproc)]
    command = shlex.join(agent)
    if nodes > 1 and profile.kind == "slurm":
        # one agent per node; --overlap leaves the allocation to the tasks' own steps
        command = f"srun --overlap --nodes={nodes} --ntasks-per-node=1 {command}"
    else:
        command = f"exec {command}"
    slurm = profile.kind == "slurm"
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
        "time_line": (
            ""
            if opts.walltime is None
            else f"#SBATCH --time={opts.walltime}"  # as written: Slurm reads all its forms
            if slurm
            else f"#PBS -l walltime={_hms(walltime_seconds(opts.walltime))}"
        ),  # fmt: skip
        "partition_line": (
            ""
            if opts.batchqueue is None
            else f"#SBATCH --partition={opts.batchqueue}"
            if slurm
            else f"#PBS -q {opts.batchqueue}"
        ),  # fmt: skip
        "agent": command,
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


def cores_per_node(partition: str | None) -> int | None:
    """The most CPUs a node of the (default) partition has, from sinfo."""
    cmd = ["sinfo", "-h", "-o", "%c"] + (["-p", partition] if partition else [])
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
        return max(int(re.sub(r"\D", "", w)) for w in out.split() if re.search(r"\d", w))
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


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
        jobid, line = submit(profile.kind, path, opts, folder)
        queue.store.add_job(queue.name, jobid, profile.name, opts.workers)
        ids.append(jobid)
        if say is not None:
            say(line)
    return ids


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


def _hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


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


def submit(kind: str, script: Path, opts: LaunchOptions, folder: Path) -> tuple[str, str]:
    """Submit one job; return its id and the line the batch system printed for it."""
    extra = shlex.split(opts.batchopts)
    if kind == "local":
        log = open(folder / f"local-{time.time_ns()}.out", "ab")  # noqa: SIM115 (the child keeps it)
        with log:
            child = subprocess.Popen(["bash", str(script)], stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        return f"local-{child.pid}", f"Started local job local-{child.pid}"
    if kind == "slurm":
        cmd = ["sbatch", *extra, str(script)]
    else:
        if opts.keep_env or _secret_in_env():
            env_opts = ["-V"]  # a password's value must not go on a command line
        else:
            names = exported_names()
            env_opts = ["-v", ",".join(f"{n}={os.environ[n]}" for n in names)] if names else []
        cmd = ["qsub", *env_opts, *extra, str(script)]
    try:
        # qsub writes <name>.o<id> where it is called: into the job log folder
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=folder)
    except (OSError, subprocess.SubprocessError) as e:
        raise BatchError(f"cannot run {cmd[0]}: {e}") from e
    if proc.returncode != 0:
        why = " ".join(proc.stderr.split()) or f"exit code {proc.returncode}"
        raise BatchError(f"{cmd[0]} refused the job: {why}")
    line = proc.stdout.strip()
    if kind == "slurm":
        # "Submitted batch job 42" (" on cluster X" with several clusters); scripts
        # written for the original QDO read that very line
        m = re.search(r"Submitted batch job (\d+)", line)
        if m is None:
            raise BatchError(f"sbatch printed no job id: {line!r}")
        return m.group(1), line
    words = line.split()
    if not words:
        raise BatchError(f"{cmd[0]} printed no job id")
    return words[0], line


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
    kind = find_profile(opts.profile, queue.settings).kind
    launched: list[str] = []
    stop = {"now": False}
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.update(now=True)) if main else None
    try:
        while not stop["now"]:
            status = queue.status()
            n = status["ntasks"]
            left = n["Pending"] + n["Running"] + n["Waiting"] - status["blocked"]
            if left <= 0:
                say(f"queue {queue.name}: nothing left to run; launched {len(launched)} jobs")
                break
            known = [j.jobid for j in queue.store.jobs(queue.name)]
            active = [j for j, s in job_states(kind, known).items() if s in ACTIVE]
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
