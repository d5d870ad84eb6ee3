"""Batch systems: one class for each system that takes qdo's jobs, and one ``JobState``.

As Parsl's execution providers do, each class knows how to submit a job to its system
(the command, and the job id in the system's reply), how to ask the states of many jobs
at once, and how to cancel them; and it maps its system's own names of job states to
``JobState``, which is all the rest of qdo looks at.  ``system(kind)`` picks the class
of a profile's ``#qdo kind=`` line from the one table ``SYSTEMS``.

This is below the queue API (``qdo recover --dead`` asks which jobs have ended) and
below launching, which fills the batch script's system-specific fields through the
hooks here.  It runs the batch system's commands and nothing of qdo's own.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar

from .errors import ConfigError, QdoError

__all__ = ["SYSTEMS", "BatchError", "BatchSystem", "ClusterSystem", "JobState", "JobStatus",
           "LocalSystem", "PbsSystem", "SlurmSystem", "system"]  # fmt: skip


class BatchError(QdoError):
    """The batch system refused a job, or could not be asked."""


class JobState(str, Enum):
    """What qdo makes of a batch job's state, whatever its batch system calls it."""

    PENDING = "Pending"  # waiting to start: queued, held, requeued, its nodes booting
    RUNNING = "Running"  # started and not over: running, suspended, completing
    DONE = "Done"  # over, and the batch system says it succeeded
    FAILED = "Failed"  # over otherwise: failed, out of time or memory, lost its node
    CANCELLED = "Cancelled"
    #: over, but not said how: the batch system has forgotten the job, or names a state
    #: that qdo does not count as still working
    ENDED = "Ended"
    UNKNOWN = "Unknown"  # the batch system could not be asked

    def __str__(self) -> str:
        return self.value

    @property
    def active(self) -> bool:
        """Whether the job still counts as working on its queue."""
        return self in (JobState.PENDING, JobState.RUNNING)

    @property
    def over(self) -> bool:
        """Whether the job has surely ended (an UNKNOWN one has not, as far as we know)."""
        return not self.active and self is not JobState.UNKNOWN


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A job's state, and the batch system's own name of it (what ``qdo jobs`` shows)."""

    state: JobState
    native: str


#: The names qdo itself gives: a job the batch system no longer knows, or not asked.
GONE, NOT_ASKED = "ENDED", "UNKNOWN"
_OWN_NAMES = MappingProxyType({GONE: JobState.ENDED, NOT_ASKED: JobState.UNKNOWN})


class BatchSystem(ABC):
    """What qdo needs of a batch system.  Subclasses set ``kind`` (a profile's ``#qdo
    kind=``) and ``STATES`` (their native state names -> ``JobState``)."""

    kind: ClassVar[str]
    #: The command whose presence on PATH makes this the default system (None: always).
    submit_tool: ClassVar[str | None] = None
    #: The command that tells jobs' states (None: no batch system to ask).
    status_tool: ClassVar[str | None] = None
    STATES: ClassVar[Mapping[str, JobState]]

    def classify(self, native: str) -> JobStatus:
        """The status of a native state name.  A name the table lacks counts as over:
        a job qdo does not know as working must not hold its tasks forever."""
        state = self.STATES.get(native) or _OWN_NAMES.get(native, JobState.ENDED)
        return JobStatus(state, native)

    # -- the batch script ------------------------------------------------------------------
    def cores_per_node(self, partition: str | None) -> int | None:
        """The most cores a node has, if the batch system can say."""
        return None

    def agent_line(self, command: str, nodes: int) -> str:
        """The script's line that runs the agent ``command`` on each of ``nodes``."""
        return f"exec {command}"

    def time_line(self, walltime: str, seconds: int) -> str:
        """The script's directive for a time limit (``walltime`` as given, in Slurm's
        forms, or ``seconds``); empty where the system has none."""
        return ""

    def partition_line(self, batchqueue: str) -> str:
        """The script's directive for the batch queue (partition) to run in."""
        return ""

    # -- the jobs --------------------------------------------------------------------------
    @abstractmethod
    def submit_command(self, script: Path, batchopts: Sequence[str],
                       env_names: Sequence[str] | None) -> list[str]:  # fmt: skip
        """The command that submits ``script``.  ``env_names``: the variables the job
        takes from this environment (None: all), for systems that pass them there."""

    @abstractmethod
    def submit(self, script: Path, batchopts: Sequence[str], env_names: Sequence[str] | None,
               folder: Path) -> tuple[str, str]:  # fmt: skip
        """Submit one job from ``folder`` (where its logs go); return its id and the line
        printed for it.  Raises ``BatchError`` if the system refuses it."""

    @abstractmethod
    def status(self, jobids: Sequence[str]) -> dict[str, JobStatus]:
        """The status of each job, asking the batch system once for all of them."""

    @abstractmethod
    def cancel(self, jobids: Sequence[str]) -> None:
        """End the jobs (as a time limit would: SIGTERM first); a job that is already
        over is no error.  Raises ``BatchError`` if the system refuses."""


class ClusterSystem(BatchSystem):
    """A batch system with a submit command that replies with the new job's id."""

    @abstractmethod
    def parse_jobid(self, reply: str) -> str:
        """The job id in what the submit command printed; ``BatchError`` if none."""

    def submit(self, script: Path, batchopts: Sequence[str], env_names: Sequence[str] | None,
               folder: Path) -> tuple[str, str]:  # fmt: skip
        cmd = self.submit_command(script, batchopts, env_names)
        try:
            # qsub writes <name>.o<id> where it is called: into the job log folder
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=folder)
        except (OSError, subprocess.SubprocessError) as e:
            raise BatchError(f"cannot run {cmd[0]}: {e}") from e
        if proc.returncode != 0:
            why = " ".join(proc.stderr.split()) or f"exit code {proc.returncode}"
            raise BatchError(f"{cmd[0]} refused the job: {why}")
        line = proc.stdout.strip()
        return self.parse_jobid(line), line

    def _cancel_with(self, cmd: list[str]) -> None:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            raise BatchError(f"cannot run {cmd[0]}: {e}") from e
        # qdel exits 1, silently, for a job that is already over: no refusal
        why = " ".join(proc.stderr.split())
        if proc.returncode != 0 and why:
            raise BatchError(f"{cmd[0]} refused: {why}")


class SlurmSystem(ClusterSystem):
    """Slurm: ``sbatch`` submits, one ``squeue`` tells the states, ``scancel`` cancels."""

    kind = "slurm"
    submit_tool = "sbatch"
    status_tool = "squeue"
    STATES = MappingProxyType({
        "PENDING": JobState.PENDING, "CONFIGURING": JobState.PENDING,
        "REQUEUED": JobState.PENDING, "REQUEUE_HOLD": JobState.PENDING,
        "REQUEUE_FED": JobState.PENDING, "RESV_DEL_HOLD": JobState.PENDING,
        "RUNNING": JobState.RUNNING, "COMPLETING": JobState.RUNNING,
        "SUSPENDED": JobState.RUNNING, "STOPPED": JobState.RUNNING,
        "RESIZING": JobState.RUNNING, "SIGNALING": JobState.RUNNING,
        "STAGE_OUT": JobState.RUNNING, "SPECIAL_EXIT": JobState.FAILED,
        "REVOKED": JobState.CANCELLED,
        "COMPLETED": JobState.DONE,
        "CANCELLED": JobState.CANCELLED,
        "FAILED": JobState.FAILED, "TIMEOUT": JobState.FAILED, "NODE_FAIL": JobState.FAILED,
        "BOOT_FAIL": JobState.FAILED, "OUT_OF_MEMORY": JobState.FAILED,
        "DEADLINE": JobState.FAILED, "PREEMPTED": JobState.FAILED,
    })  # fmt: skip

    def cores_per_node(self, partition: str | None) -> int | None:
        """The most CPUs a node of the (default) partition has, from sinfo."""
        cmd = ["sinfo", "-h", "-o", "%c"] + (["-p", partition] if partition else [])
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
            return max(int(re.sub(r"\D", "", w)) for w in out.split() if re.search(r"\d", w))
        except (OSError, subprocess.SubprocessError, ValueError):
            return None

    def agent_line(self, command: str, nodes: int) -> str:
        if nodes > 1:
            # one agent per node; --overlap leaves the allocation to the tasks' own steps
            return f"srun --overlap --nodes={nodes} --ntasks-per-node=1 {command}"
        return super().agent_line(command, nodes)

    def time_line(self, walltime: str, seconds: int) -> str:
        return f"#SBATCH --time={walltime}"  # as written: Slurm reads all its forms

    def partition_line(self, batchqueue: str) -> str:
        return f"#SBATCH --partition={batchqueue}"

    def submit_command(self, script: Path, batchopts: Sequence[str],
                       env_names: Sequence[str] | None) -> list[str]:  # fmt: skip
        # the environment is the script's #SBATCH --export line
        return ["sbatch", *batchopts, str(script)]

    def parse_jobid(self, reply: str) -> str:
        # "Submitted batch job 42" (" on cluster X" with several clusters); scripts
        # written for the original QDO read that very line
        m = re.search(r"Submitted batch job (\d+)", reply)
        if m is None:
            raise BatchError(f"sbatch printed no job id: {reply!r}")
        return m.group(1)

    def status(self, jobids: Sequence[str]) -> dict[str, JobStatus]:
        """One ``squeue`` for all the jobs (not one call per job: ``--auto`` asks every few
        seconds, for every job it ever launched).  Slurm forgets a job some minutes after
        it ended (MinJobAge): a job it does not list has ENDED."""
        if not jobids:
            return {}
        ids = {j: _bare(j) for j in jobids}
        cmd = ["squeue", "--noheader", "--states=all", "--jobs",
               ",".join(sorted(set(ids.values()))), "--format=%i %T"]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return dict.fromkeys(jobids, self.classify(NOT_ASKED))
        if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
            # no answer (slurmctld down?): not ENDED
            return dict.fromkeys(jobids, self.classify(NOT_ASKED))
        return {j: self.classify(n) for j, n in self.parse_squeue(jobids, proc.stdout).items()}

    @staticmethod
    def parse_squeue(jobids: Sequence[str], output: str) -> dict[str, str]:
        """The native state of each job in ``squeue --format='%i %T'`` output (ENDED for
        one it does not list); a PBS-style ``42.host`` is job 42."""
        known = dict(line.split(None, 1) for line in output.splitlines() if " " in line)
        return {j: known.get(_bare(j), GONE).strip() for j in jobids}

    def cancel(self, jobids: Sequence[str]) -> None:
        if jobids:
            self._cancel_with(["scancel", *sorted({_bare(j) for j in jobids})])


class PbsSystem(ClusterSystem):
    """PBS/Torque: ``qsub`` submits, ``qstat`` tells a job's state, ``qdel`` cancels.
    Under the PBS wrappers of Slurm (``squeue`` on PATH) the jobs are Slurm's."""

    kind = "pbs"
    submit_tool = "qsub"
    status_tool = "qstat"
    #: qstat's state letters, by the names qdo has always shown for them; any other
    #: letter is shown as it is
    LETTERS = MappingProxyType(
        {"Q": "PENDING", "H": "HELD", "W": "WAITING", "T": "TRANSIT", "R": "RUNNING",
         "B": "BEGUN", "S": "SUSPENDED", "E": "COMPLETING", "C": GONE, "F": GONE}
    )  # fmt: skip
    STATES = MappingProxyType({
        "PENDING": JobState.PENDING, "HELD": JobState.PENDING,
        "WAITING": JobState.PENDING, "TRANSIT": JobState.PENDING,
        "RUNNING": JobState.RUNNING, "BEGUN": JobState.RUNNING,
        "SUSPENDED": JobState.RUNNING, "COMPLETING": JobState.RUNNING,
    })  # fmt: skip

    def time_line(self, walltime: str, seconds: int) -> str:
        return f"#PBS -l walltime={_hms(seconds)}"

    def partition_line(self, batchqueue: str) -> str:
        return f"#PBS -q {batchqueue}"

    def submit_command(self, script: Path, batchopts: Sequence[str],
                       env_names: Sequence[str] | None) -> list[str]:  # fmt: skip
        if env_names is None:
            env_opts = ["-V"]
        elif env_names:
            env_opts = ["-v", ",".join(f"{n}={os.environ[n]}" for n in env_names)]
        else:
            env_opts = []
        return ["qsub", *env_opts, *batchopts, str(script)]

    def parse_jobid(self, reply: str) -> str:
        words = reply.split()
        if not words:
            raise BatchError("qsub printed no job id")
        return words[0]

    def status(self, jobids: Sequence[str]) -> dict[str, JobStatus]:
        if not jobids:
            return {}
        if shutil.which("squeue"):  # the PBS wrappers of Slurm run Slurm jobs
            return SlurmSystem().status(jobids)
        return {j: self.classify(self._native_state(j)) for j in jobids}

    def _native_state(self, jobid: str) -> str:
        try:
            proc = subprocess.run(["qstat", jobid], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return NOT_ASKED
        return self.parse_qstat(jobid, proc.stdout)

    @classmethod
    def parse_qstat(cls, jobid: str, output: str) -> str:
        """The native state of ``jobid`` in ``qstat JOBID`` output (ENDED if not listed)."""
        for line in output.splitlines():
            fields = line.split()
            if fields and _bare(fields[0]) == _bare(jobid) and len(fields) >= 5:
                return cls.LETTERS.get(fields[4], fields[4])
        return GONE

    def cancel(self, jobids: Sequence[str]) -> None:
        if jobids:
            self._cancel_with(["qdel", *jobids])


class LocalSystem(BatchSystem):
    """No batch system: a job is a detached process on this machine, ``local-PID``."""

    kind = "local"
    STATES = MappingProxyType({"RUNNING": JobState.RUNNING})

    def submit_command(self, script: Path, batchopts: Sequence[str],
                       env_names: Sequence[str] | None) -> list[str]:  # fmt: skip
        return ["bash", str(script)]  # it inherits this environment

    def submit(self, script: Path, batchopts: Sequence[str], env_names: Sequence[str] | None,
               folder: Path) -> tuple[str, str]:  # fmt: skip
        cmd = self.submit_command(script, batchopts, env_names)
        log = open(folder / f"local-{time.time_ns()}.out", "ab")  # noqa: SIM115 (the child keeps it)
        with log:
            # a session of its own: the job outlives qdo launch, and cancel signals it all
            child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        return f"local-{child.pid}", f"Started local job local-{child.pid}"

    def status(self, jobids: Sequence[str]) -> dict[str, JobStatus]:
        return {j: self.classify("RUNNING" if _local_pid(j) else GONE) for j in jobids}

    def cancel(self, jobids: Sequence[str]) -> None:
        for jobid in jobids:
            pid = _local_pid(jobid)
            try:
                # the group the job's shell leads: its agent and workers (each task has a
                # session of its own, that the agent ends); a process that now has the
                # pid but leads no group gets nothing (ESRCH)
                if pid is not None:
                    os.killpg(pid, signal.SIGTERM)  # the agent hands its tasks back
            except (ProcessLookupError, PermissionError):
                pass  # it ended meanwhile, or is not ours


#: The batch systems by kind; the first whose ``submit_tool`` is on PATH is the default.
SYSTEMS: Mapping[str, type[BatchSystem]] = MappingProxyType(
    {cls.kind: cls for cls in (SlurmSystem, PbsSystem, LocalSystem)}
)


def system(kind: str) -> BatchSystem:
    """The batch system of a profile's kind."""
    try:
        return SYSTEMS[kind]()
    except KeyError:
        raise ConfigError(f"no batch system {kind!r}: qdo has {', '.join(SYSTEMS)}") from None


def _bare(jobid: str) -> str:
    """The job number of a PBS-style id (``42.host`` -> ``42``)."""
    return jobid.split(".")[0]


def _hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _local_pid(jobid: str) -> int | None:
    """The pid of a local job if that process is alive (and no zombie), else None."""
    try:
        pid = int(jobid.removeprefix("local-"))
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError, PermissionError):
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return pid
    return pid if stat[0] != "Z" else None
