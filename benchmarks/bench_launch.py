"""``qdo launch Q 4 --jobs 2`` running 2,000 short shell tasks on the test Slurm cluster,
against a Slurm job array of 2,000 elements doing the same work (issue 6).  3 runs;
``--quick``: 200 tasks, 1 run.  A full run takes about 10 minutes (the array's).

The cluster is the single-node one of ``scripts/slurm`` (started if it is not up): one
node advertising 8 CPUs, slurmctld starting jobs on its 1 s scheduling cycle.  Before each
measurement the benchmark waits until ``squeue`` shows no job at all (it cancels nothing
but its own jobs), and it watches ``squeue`` during the measurement: a run during which a
job that is not its own showed up is measured again (up to 3 times, then kept with a note).

Both sides run the same command per task, which writes the id of the Slurm job it runs in
to a marker file of its own in the run's scratch directory: for task ``i``,
``echo $SLURM_JOB_ID > DIR/i``.

- qdo: ``qdo load`` puts the 2,000 commands into a fresh queue (SQLite, ``QDO_DIR`` in the
  run's scratch directory; untimed); the clock starts before ``qdo launch Q 4 --jobs 2``
  (a subprocess: two ``sbatch`` of one job each with 4 workers, 4 CPUs each) and stops at
  the first poll (``q.status()`` through the Python API, every 0.1 s) that sees every task
  Succeeded.  Checked: every task's ``jobid`` is one of the two ids ``qdo launch``
  printed, every marker holds one of them, and both jobs end COMPLETED.
- peer: ``sbatch --array=1-2000 --output=/dev/null --wrap 'echo $SLURM_JOB_ID >
  DIR/$SLURM_ARRAY_TASK_ID'`` (one CPU per element: 8 at a time); the clock starts before
  ``sbatch`` and stops at the first ``squeue -h -o %F`` (every 0.2 s) in which the array
  is gone.  Checked: 2,000 markers, and ``scontrol show job ID -o`` says every element
  COMPLETED.

The target: qdo at least 10x faster than the array, i.e. the median of the per-run
ratios array time / qdo time >= 10.  Diagnostic rows say where each side's time goes:
for qdo, how long ``qdo launch`` itself takes, the time to the first job's script
starting (the birth time of its output file: slurmctld's cycle, then slurmd's launch),
then to the first task started (the agent's start-up) and the task phase from the
first task started to the last task finished (from the tasks' own timestamps); for the
array, the time to the first and last marker written (file mtimes).  A third,
diagnostic, measurement runs qdo with ``--keep-env`` (its jobs get ``--export=ALL``
instead of ``--export=NAMES``; on this cluster a job with an ``--export`` list started
later).  The order of the three rotates from run to run.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    REPO,
    Config,
    Ratio,
    Report,
    Row,
    clean_env,
    in_child,
    progress,
    qdo_command,
    run_child,
    scratch_dir,
    use_qdo_dir,
)

QUEUE = "bench"
WORKERS = 4  # per job
JOBS = 2
TARGET = 10.0  # array time / qdo time, same run
QDO_POLL = 0.1  # seconds between q.status() polls
SQUEUE_POLL = 0.2  # seconds between squeue polls
FOREIGN_CHECK = 1.0  # seconds between squeue checks for foreign jobs while qdo runs
QDO_TIMEOUT = 600.0
ARRAY_TIMEOUT = 1800.0
IDLE_TIMEOUT = float(os.environ.get("QDO_BENCH_IDLE_TIMEOUT") or 3600)
ATTEMPTS = 3  # measurements of a run, when foreign jobs came by
TASK = "echo $SLURM_JOB_ID > {dir}/{i}"


# -- the cluster -----------------------------------------------------------------------------
def ensure_cluster() -> str:
    """The cluster's "slurm ready: ..." line; ``scripts/slurm start`` if it is not up."""
    script = str(REPO / "scripts" / "slurm")
    got = subprocess.run([script, "status"], capture_output=True, text=True, check=False)
    if got.returncode != 0:
        progress("launch: the Slurm cluster is not up: scripts/slurm start")
        got = subprocess.run([script, "start"], capture_output=True, text=True, check=False)
        if got.returncode != 0:
            raise RuntimeError(f"scripts/slurm start failed: {got.stderr.strip()[-2000:]}")
    return got.stdout.strip().splitlines()[-1]


def squeue_jobs() -> list[str]:
    """Every job slurmctld still has to run or finish, as 'ARRAYJOBID JOBID USER NAME STATE'
    lines (%F is the job's own id unless it is an array element)."""
    out = subprocess.run(["squeue", "-h", "-o", "%F %i %u %j %T"], capture_output=True,
                         text=True, timeout=60, check=True).stdout  # fmt: skip
    return [line for line in out.splitlines() if line.strip()]


def active_ids() -> set[str]:
    """The (array) job ids squeue shows."""
    return {line.split()[0] for line in squeue_jobs()}


def finished_records() -> int:
    """Finished jobs slurmctld still holds (they stay MinJobAge=300 s)."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%T"], capture_output=True,
                         text=True, timeout=60, check=True).stdout  # fmt: skip
    return sum(1 for s in out.split() if s not in {"PENDING", "RUNNING", "COMPLETING"})


def wait_idle() -> None:
    """Wait until squeue shows no job at all (ours or anybody's); cancel nothing."""
    start = time.monotonic()
    said = -1.0
    while True:
        jobs = squeue_jobs()
        if not jobs:
            return
        waited = time.monotonic() - start
        if waited > IDLE_TIMEOUT:
            raise RuntimeError(
                f"the cluster was not idle for {IDLE_TIMEOUT:.0f} s ($QDO_BENCH_IDLE_TIMEOUT): "
                f"{len(jobs)} jobs, e.g. {jobs[:3]}"
            )
        if waited - said >= 30:
            said = waited
            progress(f"launch: waiting for {len(jobs)} jobs to leave the cluster: {jobs[:3]}")
        time.sleep(1.0)


def cancel(ids: list[str]) -> None:
    """Cancel our own jobs (by id), if they are still there."""
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=60, check=False)


def job_states(jobid: str) -> list[str]:
    """JobState of a job, or of every element of an array, from ``scontrol show job -o``."""
    out = subprocess.run(["scontrol", "show", "job", jobid, "-o"], capture_output=True,
                         text=True, timeout=60, check=False).stdout  # fmt: skip
    return re.findall(r"\bJobState=(\w+)", out)


def read_markers(folder: Path, n: int) -> tuple[list[str], list[float]]:
    """The contents and mtimes of the marker files 1..n (missing ones left out)."""
    contents, mtimes = [], []
    for i in range(1, n + 1):
        path = folder / str(i)
        try:
            contents.append(path.read_text().strip())
            mtimes.append(path.stat().st_mtime)
        except FileNotFoundError:
            continue
    return contents, mtimes


# -- one measurement each ------------------------------------------------------------------
@dataclass
class Measured:
    total: float  # the clock: from the command to every task done
    submit: float  # the submitting command itself
    first: float  # from the start to the first task started (qdo) / marker written (array)
    last: float  # from the start to the last task finished / marker written
    gone: float  # from the start to the jobs gone from squeue
    foreign: set[str] = field(default_factory=set)  # other jobs seen during the measurement
    records: int = 0  # finished job records slurmctld held at the start
    job_start: float = math.nan  # from the start to the first job's script starting (qdo)
    per_job: tuple[int, ...] = ()  # tasks each job ran (qdo)


def birth_time(path: Path) -> float:
    """When a file was created (statx birth time; NaN if the filesystem does not say)."""
    got = subprocess.run(["stat", "-c", "%.9W", str(path)], capture_output=True, text=True)
    try:
        value = float(got.stdout.strip())
    except ValueError:
        return math.nan
    return value if value > 0 else math.nan


def measure_qdo(qdo_dir: str, n: int, extra: tuple[str, ...] = ()) -> Measured:
    """In a fresh process: load, launch, poll until all Succeeded, check, wait for the jobs."""
    use_qdo_dir(qdo_dir)
    import qdo

    d = Path(qdo_dir)
    env = clean_env(d)
    markers = d / "markers"
    markers.mkdir()
    task_file = d / "tasks.txt"
    task_file.write_text("".join(TASK.format(dir=markers, i=i) + "\n" for i in range(1, n + 1)))
    got = run_child([*qdo_command(), "load", QUEUE, str(task_file)], env)
    assert f"loaded {n:,} tasks" in got.stdout, got.stdout
    q = qdo.connect(QUEUE)
    records = finished_records()
    ids: list[str] = []
    foreign: set[str] = set()
    try:
        wall0 = time.time()
        t0 = time.perf_counter()
        argv = [*qdo_command(), "launch", QUEUE, str(WORKERS), "--jobs", str(JOBS), *extra]
        got = run_child(argv, env)
        ids = [line.split()[-1] for line in got.stdout.splitlines()]  # Submitted batch job N
        assert len(ids) == JOBS and all(i.isdigit() for i in ids), got.stdout
        next_check = 0.0
        while True:
            counts = q.status()["ntasks"]
            now = time.perf_counter()
            if counts["Succeeded"] == n:
                total = now - t0
                break
            if counts["Failed"] or counts["Killed"]:
                raise RuntimeError(f"qdo tasks failed: {counts}")
            if now - t0 > QDO_TIMEOUT:
                raise RuntimeError(f"qdo: not done after {QDO_TIMEOUT:.0f} s: {counts}")
            if now >= next_check:
                foreign |= active_ids() - set(ids)
                next_check = now + FOREIGN_CHECK
            time.sleep(QDO_POLL)
        while True:  # the agents exit once the queue is empty: wait for the jobs to end
            seen = active_ids()
            now = time.perf_counter()
            foreign |= seen - set(ids)
            if not seen & set(ids):
                gone = now - t0
                break
            if now - t0 > QDO_TIMEOUT:
                raise RuntimeError(f"qdo: jobs {ids} still there after {QDO_TIMEOUT:.0f} s")
            time.sleep(SQUEUE_POLL)
        ids_done = ids
        ids = []
    finally:
        cancel(ids)  # only after a failure: the jobs we launched
    tasks = q.tasks()
    assert len(tasks) == n, len(tasks)
    wrong = [t.id for t in tasks if t.state is not qdo.Task.SUCCEEDED or t.jobid not in ids_done]
    if wrong:
        raise RuntimeError(f"{len(wrong)} tasks not Succeeded in jobs {ids_done}: ids {wrong[:5]}")
    contents, _ = read_markers(markers, n)
    if len(contents) != n or not set(contents) <= set(ids_done):
        raise RuntimeError(f"qdo: {len(contents)} markers of {n}, job ids {set(contents)}")
    for jobid in ids_done:
        states = job_states(jobid)
        if states != ["COMPLETED"]:
            raise RuntimeError(f"qdo job {jobid} ended {states}")
    started = min(t.started.timestamp() for t in tasks if t.started)
    finished = max(t.finished.timestamp() for t in tasks if t.finished)
    # slurmstepd creates the job's output file just before it starts the batch script
    job_logs = q.settings.log_dir / "jobs"
    job_start = min(birth_time(job_logs / f"{jobid}.out") for jobid in ids_done)
    per_job = tuple(sum(t.jobid == jobid for t in tasks) for jobid in ids_done)
    return Measured(
        total=total, submit=got.seconds, first=started - wall0, last=finished - wall0,
        gone=gone, foreign=foreign, records=records, job_start=job_start - wall0,
        per_job=per_job,
    )  # fmt: skip


def measure_array(d: Path, n: int) -> Measured:
    """sbatch the array, poll squeue until it is gone, check every element."""
    markers = d / "markers"
    markers.mkdir()
    command = TASK.format(dir=markers, i="$SLURM_ARRAY_TASK_ID")
    argv = ["sbatch", "--parsable", f"--array=1-{n}", "--output=/dev/null",
            "--job-name=bench-launch-array", "--wrap", command]  # fmt: skip
    records = finished_records()
    jobid = ""
    foreign: set[str] = set()
    try:
        wall0 = time.time()
        t0 = time.perf_counter()
        got = run_child(argv, clean_env(d))
        jobid = got.stdout.strip().split(";")[0]
        assert jobid.isdigit(), got.stdout
        while True:
            seen = active_ids()
            now = time.perf_counter()
            foreign |= seen - {jobid}
            if jobid not in seen:
                total = now - t0
                break
            if now - t0 > ARRAY_TIMEOUT:
                raise RuntimeError(f"array {jobid}: not done after {ARRAY_TIMEOUT:.0f} s")
            time.sleep(SQUEUE_POLL)
        jobid_done, jobid = jobid, ""
    finally:
        cancel([jobid] if jobid else [])  # only after a failure: our own array
    contents, mtimes = read_markers(markers, n)
    if len(contents) != n or not all(c.isdigit() for c in contents):
        raise RuntimeError(f"array {jobid_done}: {len(contents)} markers of {n}")
    states = job_states(jobid_done)
    if len(states) != n or set(states) != {"COMPLETED"}:
        counts = {s: states.count(s) for s in set(states)}
        raise RuntimeError(f"array {jobid_done}: {len(states)} elements of {n}: {counts}")
    return Measured(
        total=total, submit=got.seconds, first=min(mtimes) - wall0, last=max(mtimes) - wall0,
        gone=total, foreign=foreign, records=records,
    )  # fmt: skip


# -- the benchmark ----------------------------------------------------------------------------
def seconds(label: str) -> Row:
    return Row(label, "s", higher_is_better=False)


class Side:
    """One way of running the tasks: its rows, filled one measurement at a time."""

    def __init__(self, name: str, measure: Callable[[], Measured], rows: dict[str, Row]) -> None:
        self.name, self.measure, self.rows = name, measure, rows
        self.records: list[int] = []  # finished job records slurmctld held at the start
        self.per_job: list[tuple[int, ...]] = []
        self.foreign: list[str] = []  # notes on foreign jobs kept

    def add(self, m: Measured, n: int) -> None:
        figures = {
            "total": m.total, "submit": m.submit, "job": m.job_start,
            "agent": m.first - m.job_start, "first": m.first, "phase": m.last - m.first,
            "rate": n / (m.last - m.first), "gone": m.gone,
        }  # fmt: skip
        for key, row in self.rows.items():
            row.values.append(figures[key])
        self.records.append(m.records)
        if m.per_job:
            self.per_job.append(m.per_job)

    def undo(self) -> None:
        for row in self.rows.values():
            row.values.pop()
        self.records.pop()
        if self.per_job:
            self.per_job.pop()

    def run_once(self, n: int, label: str) -> None:
        """Measure on an idle cluster; again if a foreign job came by."""
        for attempt in range(1, ATTEMPTS + 1):
            wait_idle()
            progress(f"launch: {label}, {self.name}" + f" (attempt {attempt})" * (attempt > 1))
            m = self.measure()
            self.add(m, n)
            if not m.foreign:
                return
            if attempt == ATTEMPTS:
                seen = f"foreign jobs {sorted(m.foreign)} ran during all {ATTEMPTS} attempts"
                self.foreign.append(f"{label}, {self.name}: {seen}; the last one kept")
                return
            progress(f"launch: foreign jobs {sorted(m.foreign)} during {self.name}: again")
            self.undo()


def run(cfg: Config) -> Report:
    n = cfg.size(2_000, 200)
    ready = ensure_cluster()
    launch = f"qdo launch {QUEUE} {WORKERS} --jobs {JOBS}"
    qdo_rows = {
        "total": seconds(f"qdo  `{launch}`: all Succeeded"),
        "submit": seconds("diag qdo  `qdo launch` command itself"),
        "job": seconds("diag qdo  launch -> first job's script started"),
        "agent": seconds("diag qdo  that job's start -> first task started"),
        "first": seconds("diag qdo  launch -> first task started"),
        "phase": seconds("diag qdo  first task started -> last finished"),
        "rate": Row("diag qdo  tasks/s in that phase", "/s"),
        "gone": seconds("diag qdo  launch -> both jobs gone from squeue"),
    }
    keep_rows = {
        "total": seconds("diag qdo  `... --keep-env` (--export=ALL): all Succeeded"),
        "job": seconds("diag qdo  --keep-env: launch -> first job's script started"),
        "first": seconds("diag qdo  --keep-env: launch -> first task started"),
    }
    array_rows = {
        "total": seconds(f"peer `sbatch --array=1-{n}`: all elements done"),
        "submit": seconds("diag peer `sbatch --array` command itself"),
        "first": seconds("diag peer sbatch -> first marker written"),
        "phase": seconds("diag peer first marker -> last marker"),
        "rate": Row("diag peer elements/s in that phase", "/s"),
    }

    def qdo_measure(extra: tuple[str, ...]) -> Callable[[], Measured]:
        def measure() -> Measured:
            with scratch_dir(cfg, "launch-qdo") as d:
                m: Measured = in_child(measure_qdo, str(d), n, extra)
                return m

        return measure

    def array_measure() -> Measured:
        with scratch_dir(cfg, "launch-array") as d:
            return measure_array(d, n)

    qdo = Side("qdo", qdo_measure(()), qdo_rows)
    keep = Side("qdo --keep-env", qdo_measure(("--keep-env",)), keep_rows)
    array = Side("array", array_measure, array_rows)
    sides = [qdo, array, keep]
    for i in range(cfg.runs):
        k = i % len(sides)
        for side in sides[k:] + sides[:k]:
            side.run_once(n, f"run {i + 1}/{cfg.runs}, {n:,} tasks")
    wait_idle()

    version = subprocess.run(["sbatch", "--version"], capture_output=True, text=True).stdout
    notes = [
        f"{ready}; {version.strip()}; this machine: {os.cpu_count()} cores; "
        f"qdo jobs: {JOBS} x {WORKERS} workers (4 CPUs each), array elements: 1 CPU each",
        f"task i, both sides: {TASK.format(dir='DIR', i='i')} (qdo runs it with "
        f"{shutil.which('bash') or '/bin/sh'} -c, the array's --wrap with /bin/sh); "
        f"{n:,} markers checked on both sides",
        f"tasks run by each of the {JOBS} qdo jobs, per run: {qdo.per_job}; --keep-env: "
        f"{keep.per_job} (an agent claims a backlog of tasks once it knows they are short)",
        "a job's script start: the birth time of its output file (slurmstepd creates it "
        "just before it starts the script)",
        f"finished job records slurmctld held at the start of each measurement (MinJobAge): "
        f"qdo {qdo.records}, array {array.records}, qdo --keep-env {keep.records}",
        "clocks: qdo from before `qdo launch` to the first q.status() poll (every "
        f"{QDO_POLL} s) with all Succeeded; array from before sbatch to the first squeue "
        f"(every {SQUEUE_POLL} s) without it; the cluster idle (squeue empty) before each; "
        "the order rotates from run to run",
        "per run, in run order: " + "; ".join(
            f"{side.name} " + ", ".join(f"{v:.2f}" for v in side.rows["total"].values) + " s"
            for side in sides
        ),
        *qdo.foreign, *array.foreign, *keep.foreign,
    ]  # fmt: skip
    ratios = [
        Ratio("ratio array / qdo", array_rows["total"], qdo_rows["total"], target=TARGET),
        Ratio("diag ratio array / qdo jobs gone from squeue", array_rows["total"],
              qdo_rows["gone"]),
        Ratio("diag ratio array / qdo --keep-env", array_rows["total"], keep_rows["total"]),
    ]  # fmt: skip
    rows = [qdo_rows["total"], array_rows["total"], *list(qdo_rows.values())[1:],
            *keep_rows.values(), *list(array_rows.values())[1:]]  # fmt: skip
    title = f"qdo launch: {n:,} short shell tasks on the test Slurm cluster, vs a job array"
    return Report(title, rows, ratios, notes)
