"""Commands that run tasks: do (here), launch and jobs (batch jobs), noop (for job
scripts)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, TextIO

from .. import display
from ..api import Queue, connect
from ..errors import InvalidInput
from ..models import MAX_WORKERS
from .common import Commands, positive_int, print_status, seconds, some_seconds


def register(commands: Commands) -> None:
    p = commands.queue_command("do", cmd_do)
    p.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help=f"tasks to run at once (default 1, at most {MAX_WORKERS})",
    )
    p.add_argument("--script", metavar="S", help="run 'S <task>' instead of the task itself")
    p.add_argument("--mpiproc", type=positive_int, metavar="K",
                   help="run each task as a K-rank srun job step (inside a Slurm job)")  # fmt: skip
    p.add_argument(
        "--func",
        dest="function",
        metavar="MODULE:FUNCTION",
        help="call a Python function with each parameter task's dict as keywords",
    )
    p.add_argument(
        "--timeout",
        type=some_seconds(0),
        metavar="SEC",
        help="kill a task that runs longer (it becomes Killed)",
    )
    p.add_argument(
        "--runtime",
        type=seconds,
        metavar="SEC",
        help="start no task after SEC seconds; finish the running ones",
    )
    p.add_argument(
        "--log-files",
        action="store_const",
        const=True,
        help="a log file per task, LOG_DIR/QUEUE/N/ID.log (default: the log_files setting; "
        "else each slot appends its tasks' output to a segment file)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--wait", action="store_true", help="keep waiting for new tasks when the queue is empty"
    )
    mode.add_argument(
        "--exit-when-empty",
        dest="wait",
        action="store_false",
        help="exit when nothing is left to run (the default)",
    )
    p.add_argument(
        "--grace",
        type=seconds,
        default=10.0,
        metavar="SEC",
        help="on SIGTERM/SIGINT, seconds running tasks get before they are "
        "killed and handed back (default 10)",
    )
    p.add_argument(
        "--lease",
        type=some_seconds(1.0),
        default=60.0,
        metavar="SEC",
        help="lease of a claimed task, renewed while it runs (default 60, at least 1)",
    )
    commands.command("noop", cmd_noop)
    p = commands.queue_command("launch", cmd_launch)
    p.add_argument("nworkers", type=_workers, metavar="NWORKERS", help="workers per job")
    p.add_argument("--jobs", type=positive_int, default=1, metavar="J", help="jobs (default 1)")
    p.add_argument(
        "--cores-per-worker",
        "--taskcores",
        dest="cores_per_worker",
        type=positive_int,
        metavar="C",
        help="cores of each worker (default 1)",
    )
    p.add_argument("--walltime", metavar="TIME",
                   help="each job's time limit, in any of Slurm's forms: M, M:S, H:M:S, D-H, "
                        "D-H:M, D-H:M:S")  # fmt: skip
    p.add_argument("--batchqueue", metavar="P", help="the partition (queue) to submit to")
    p.add_argument(
        "--batchopts",
        action="append",
        default=[],
        metavar='"..."',
        help="more options for sbatch/qsub, passed as given (may be given more than once)",
    )
    p.add_argument("--script", metavar="S", help="run 'S <task>' instead of the task itself")
    p.add_argument(
        "--keep-env",
        action="store_true",
        help="jobs get this whole environment (default: qdo's settings and PATH)",
    )
    p.add_argument(
        "--mpiproc",
        type=positive_int,
        metavar="K",
        help="each task runs as a K-rank job step through srun",
    )
    p.add_argument(
        "--profile", metavar="NAME", help="slurm, pbs, local or a site profile (QDO_BATCH_PROFILE)"
    )
    p.add_argument(
        "--cores-per-node",
        type=positive_int,
        metavar="N",
        help="pack workers into nodes of N cores (default: asked of Slurm)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the batch script, submit nothing")
    p.add_argument(
        "--auto",
        type=positive_int,
        metavar="MAXJOBS",
        help="keep up to MAXJOBS jobs running while tasks are pending, then stop",
    )
    p = commands.queue_command("agents", cmd_agents)
    p.add_argument("--json", action="store_true")
    p = commands.queue_command("jobs", cmd_jobs)
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--cancel",
        action="store_true",
        help="end the queue's jobs that are queued or running (their agents hand the "
        "running tasks back)",
    )


def _workers(text: str) -> int:
    n = positive_int(text)
    if n > MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_WORKERS} workers in one qdo do, got {n}: run more agents "
            "(qdo launch Q N --jobs J) for more"
        )
    return n


def cmd_do(args: argparse.Namespace) -> int:
    from ..worker import WorkerOptions, do  # imported here: the other commands start faster

    q = connect(args.queue)
    options = WorkerOptions(
        workers=args.workers, script=args.script, func=args.function, timeout=args.timeout,
        runtime=args.runtime, wait=args.wait, grace=args.grace, lease=args.lease,
        mpiproc=args.mpiproc, log_files=args.log_files,
    )  # fmt: skip
    progress = _Progress(q, sys.stderr)
    summary = do(q, options, progress)
    progress.clear()
    print(f"ran {_n(summary.ran, 'task')} in {summary.seconds:.1f} s  {_states(summary.by_state)}")
    if summary.stopped_by:
        # at once: in a batch job the time limit's SIGKILL may follow within seconds,
        # and stdout to the job's log is block-buffered
        print(f"stopped by {summary.stopped_by}: {_n(summary.returned, 'task')} handed back",
              flush=True)  # fmt: skip
    if summary.refused:
        print(f"warning: {_n(summary.refused, 'result')} refused: their leases had expired "
              "(raise --lease?)")  # fmt: skip
    status = q.status()
    pending = status["ntasks"]["Pending"]
    if summary.time_left is not None and pending and status["state"] == "Active":
        left = max(0.0, summary.time_left)
        print(f"left {_n(pending, 'pending task')} for a job with more time: this one had "
              f"{left:.0f} s left, and they declare more (timeout)")  # fmt: skip
    print_status(status, False, sys.stdout)
    return 0


def _bar_line(done: int, total: int, text: str, columns: int) -> str:
    """A bar and ``text`` in fewer than ``columns`` characters (a line that fills the
    terminal would wrap, and the bar would scroll): the bar shrinks first (down to 10),
    then the text loses its parenthesis, then its end."""
    room = columns - 1
    short = text.split("  (")[0]
    for words in (text, short):
        width = min(24, room - len(words) - 3)
        if width >= 10:
            filled = int(width * done / total) if total else width
            return f"[{'#' * filled}{'-' * (width - filled)}] {words}"
    return short[:room]


class _Progress:
    """A live bar on a terminal; a plain line every 10 s otherwise."""

    def __init__(self, queue: Queue, out: TextIO) -> None:
        self.queue = queue
        self.out = out
        self.tty = out.isatty()
        self.every = 0.5 if self.tty else 10.0
        self.started = self.last = time.monotonic()
        self.counts: dict[str, int] | None = None
        self.counted = 0.0
        self.shown = False
        self.told_stop = False

    def _columns(self) -> int:
        try:
            return os.get_terminal_size(self.out.fileno()).columns or 80
        except (OSError, ValueError):
            return 80

    def __call__(self, s: Any) -> None:
        if s.stopped_by and not self.told_stop:
            self.told_stop = True
            self.clear()
            self.out.write(f"qdo do {self.queue.name}: {s.stopped_by}: starting nothing more; "
                           "running tasks get --grace seconds, then go back to Pending "
                           "(again: stop them now)\n")  # fmt: skip
            self.out.flush()
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        if self.counts is None or now - self.counted >= 2.0:
            self.counts = self.queue.store.counts(self.queue.name).by_state_names()
            self.counted = now
        total = sum(self.counts.values())
        done = sum(self.counts[k] for k in ("Succeeded", "Failed", "Killed"))
        rate = s.ran / max(now - self.started, 1e-9)
        left = total - done
        eta = f"ETA {_clock(left / rate)}" if rate > 0 and left else "ETA -"
        failed = s.by_state.get("Failed", 0) + s.by_state.get("Killed", 0)
        text = (f"{done:,}/{total:,} done  {rate:,.1f}/s here  {eta}  "
                f"({s.held} held, {failed} failed here)")  # fmt: skip
        if self.tty:
            self.out.write(f"\r{_bar_line(done, total, text, self._columns())}\x1b[K")
            self.shown = True
        else:
            self.out.write(f"qdo do {self.queue.name}: {text}\n")
        self.out.flush()

    def clear(self) -> None:
        if self.shown:
            self.out.write("\r\x1b[K")
            self.out.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _states(by_state: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {s}" for s, n in sorted(by_state.items()))


def cmd_noop(args: argparse.Namespace) -> int:
    """What batch scripts run to see that qdo works here: the settings load, and the
    database opens."""
    from ..store.factory import open_store

    open_store()
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    from .. import launch

    q = connect(args.queue)
    opts = launch.LaunchOptions(
        workers=args.nworkers, jobs=args.jobs, cores_per_worker=args.cores_per_worker,
        walltime=args.walltime, batchqueue=args.batchqueue, batchopts=" ".join(args.batchopts),
        script=args.script, keep_env=args.keep_env, mpiproc=args.mpiproc,
        profile=args.profile, cores_per_node=args.cores_per_node,
    ).check()  # fmt: skip

    def say(line: str) -> None:  # each job's line as the batch system printed it
        print(line, flush=True)

    if args.auto is not None:
        if args.dry_run:
            raise InvalidInput("--auto and --dry-run do not go together")
        ids = launch.auto(q, opts, args.auto, say=say)
        print(f"launched {len(ids)} jobs: {' '.join(ids)}" if ids else "launched no job")
        return 0
    launch.launch(q, opts, dry_run=args.dry_run, say=say)
    return 0


def cmd_agents(args: argparse.Namespace) -> int:
    q = connect(args.queue)
    now = time.time()
    live = q.store.agents(q.name)
    rows = [{"worker": a.worker, "host": a.host, "slots": a.slots, "hand": a.hand,
             "jobid": a.jobid,
             "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a.started)),
             "seen_seconds_ago": round(max(0.0, now - a.seen), 1)}
            for a in live]  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no live agents of {q.name} (qdo do {q.name}, or qdo launch {q.name} NWORKERS)")
        return 0
    headers = ["WORKER", "HOST", "SLOTS", "HAND", "JOB", "STARTED", "SEEN"]
    table = [[r["worker"], r["host"], r["slots"], r["hand"], r["jobid"] or "-", r["started"],
              f"{r['seen_seconds_ago']:g} s ago"] for r in rows]  # fmt: skip
    for line in display.table(headers, table, right=[2, 3]):
        print(line)
    print(f"{len(live)} agents, {sum(a.slots for a in live)} slots")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from .. import launch

    q = connect(args.queue)
    if args.cancel:
        ids = launch.cancel_jobs(q)
        if args.json:
            print(json.dumps({"cancelled": ids}))
        elif ids:
            print(f"cancelled {len(ids)} jobs of {q.name}: {' '.join(ids)} (their agents "
                  "hand the running tasks back)")  # fmt: skip
        else:
            print(f"no job of {q.name} is queued or running: nothing to cancel")
        return 0
    rows = [{"jobid": j.jobid, "profile": j.profile, "workers": j.workers,
             "submitted": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.submitted)),
             "state": status.native} for j, _system, status in launch.job_statuses(q)]  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no jobs launched for {q.name} (qdo launch {q.name} NWORKERS)")
        return 0
    headers = ["JOBID", "PROFILE", "WORKERS", "SUBMITTED", "STATE"]
    table = [[r["jobid"], r["profile"], r["workers"], r["submitted"], r["state"]] for r in rows]
    for line in display.table(headers, table, right=[2]):
        print(line)
    return 0
