"""The ``qdo`` command: a thin shell over the Python API, one command per call.

Errors print one line (``qdo: error: ...``) and exit 1; ``qdo -v ...`` shows the
cause chain as well.  Usage errors exit 2.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from . import config, display
from .api import Queue, connect, create, load, qlist, restore
from .errors import ConfigError, InvalidInput, QdoError
from .models import State, check_priority
from .version import __version__

STATE_NAMES = [s.value for s in State]


# -- commands -------------------------------------------------------------------------------
def cmd_create(args: argparse.Namespace) -> int:
    create(args.queue, max_retries=args.max_retries, max_lost=args.max_lost)
    print(f"created queue {args.queue}")
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    q = connect(args.queue)
    q.set(max_retries=args.max_retries, max_lost=args.max_lost)
    status = q.status()
    print(f"{args.queue}: max_retries {status['max_retries']}, max_lost {status['max_lost']}")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    source = _TaskFile(args.file, as_json=args.json)
    try:
        ids = load(args.queue, source.tasks(), priority=args.priority)
    except _EmptyFile:
        raise
    except InvalidInput as e:
        if not source.lineno:
            raise
        raise InvalidInput(f"{source.where()}: {e}; nothing was loaded") from e
    finally:
        source.done()
    print(f"loaded {len(ids):,} tasks into {args.queue} (ids {ids[0]}-{ids[-1]})")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    task: Any = args.task
    if args.json:
        task = _json_task(args.task)
    task_id = connect(args.queue).add(
        task, priority=args.priority, requires=args.requires, timeout=args.timeout,
        max_retries=args.max_retries,
    )  # fmt: skip
    print(task_id)
    return 0


def cmd_require(args: argparse.Namespace) -> int:
    connect(args.queue).add_requires(args.id, args.on)
    print(f"task {args.id} now also requires {', '.join(map(str, args.on))}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    queues = [q.listed or q.summary() for q in qlist(all_users=getattr(args, "all_users", False))]
    if args.json:
        print(json.dumps(queues, indent=2))
        return 0
    if not queues:
        print("no queues (create one with `qdo create NAME` or `qdo load NAME FILE`)")
        return 0
    rows = [[q["name"], q["state"], *(q["ntasks"][s] for s in STATE_NAMES)] for q in queues]
    headers = ["QUEUE", "STATE", *(s.upper() for s in STATE_NAMES)]
    right = range(2, 8)
    if getattr(args, "all_users", False):
        rows = [[q["user"], *row] for q, row in zip(queues, rows, strict=True)]
        headers, right = ["USER", *headers], range(3, 9)
    for line in display.table(headers, rows, right=right):
        print(line)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if args.queue is None:
        return cmd_list(args)
    q = connect(args.queue)
    if not args.watch:
        _print_status(q.status(), args.json, sys.stdout)
        return 0
    tty = sys.stdout.isatty()
    try:
        while True:
            if tty:
                sys.stdout.write("\x1b[H\x1b[2J")
            _print_status(q.status(), args.json, sys.stdout)
            if not tty:
                print()
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def _print_status(status: dict[str, Any], as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps(status, indent=2), file=out)
        return
    counts = status["ntasks"]
    total = sum(counts.values())
    done = counts["Succeeded"] + counts["Failed"] + counts["Killed"]
    percent = f"{100 * done / total:.1f}% done" if total else "empty"
    print(f"{status['name']}  {status['state']}  {total:,} tasks, {percent}", file=out)
    width = max(len(f"{total:,}"), 1)
    for state in STATE_NAMES:
        note = ""
        if state == "Waiting" and status["blocked"]:
            note = f"   ({status['blocked']:,} blocked by a failed or missing requirement)"
        print(f"  {state:<10} {counts[state]:>{width},}{note}", file=out)


def cmd_tasks(args: argparse.Namespace) -> int:
    q = connect(args.queue)
    tasks: Iterator[Any] = q.iter_tasks(state=args.state, id=args.id, history=args.verbose,
                                        exitcode=args.exitcode)  # fmt: skip
    if args.limit is not None:
        tasks = itertools.islice(tasks, args.limit)
    if args.json:
        for t in tasks:
            print(json.dumps(t.to_dict()))
        return 0
    if args.verbose:
        headers = ["ID", "STATE", "PRI", "EXIT", "TRIES", "CREATED", "STARTED", "FINISHED",
                   "SECONDS",
                   "WORKER", "JOB", "REQUIRES", "MESSAGE", "EARLIER ATTEMPTS", "TASK"]  # fmt: skip
        rows: Iterator[list[object]] = (
            [t.id, t.state.value, t.priority, t.exitcode, t.attempts, display.when(t.created),
             display.when(t.started), display.when(t.finished), _secs(t.duration), t.worker,
             t.jobid,
             ",".join(map(str, t.requires)), display.cell(t.message, 40), _history(t),
             _payload(t.task)]
            for t in tasks
        )  # fmt: skip
        right = [0, 2, 3, 4]
    else:
        headers = ["ID", "STATE", "PRI", "TASK"]
        rows = ([t.id, t.state.value, t.priority, _payload(t.task)] for t in tasks)
        right = [0, 2]
    empty = True
    for i, line in enumerate(display.table(headers, rows, right=right)):
        empty = i == 0
        print(line)
    if empty:
        which = f" in state {args.state}" if args.state else ""
        print(f"(no tasks{which})")
    return 0


def _secs(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def _history(task: Any) -> str:
    """Earlier attempts in a few words: '1:Failed(2) 2:Lost' (the last one is the row)."""
    shown = []
    for a in task.history:
        if a.attempt == task.attempts and a.state == task.state.value:
            continue  # the row itself shows that one
        code = f"({a.exitcode})" if a.exitcode not in (None, 0) else ""
        shown.append(f"{a.attempt}:{a.state}{code}")
    return " ".join(shown)


def _json_task(text: str) -> Any:
    """A parameter task from JSON text; a JSON string is refused (a str is a shell task)."""
    try:
        task = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"not a JSON value ({e.msg})") from e
    if isinstance(task, str):
        raise InvalidInput(
            "a JSON string is not a parameter task (strings are shell commands): "
            "drop --json, or wrap it in an object or list"
        )
    return task


def _payload(task: Any) -> str:
    return task if isinstance(task, str) else json.dumps(task)


def cmd_do(args: argparse.Namespace) -> int:
    from .worker import WorkerOptions, do  # imported here: the other commands start faster

    q = connect(args.queue)
    options = WorkerOptions(
        workers=args.workers, script=args.script, func=args.function, timeout=args.timeout,
        runtime=args.runtime, wait=args.wait, grace=args.grace, lease=args.lease,
        mpiproc=args.mpiproc,
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
    _print_status(status, False, sys.stdout)
    return 0


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
            width = 24
            filled = int(width * done / total) if total else width
            self.out.write(f"\r[{'#' * filled}{'-' * (width - filled)}] {text}\x1b[K")
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


def cmd_pause(args: argparse.Namespace) -> int:
    connect(args.queue).pause()
    print(f"paused {args.queue}: running tasks finish, nothing new starts")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    connect(args.queue).resume()
    print(f"resumed {args.queue}")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    n = connect(args.queue).retry()
    print(f"{n:,} Failed or Killed tasks of {args.queue} will run again")
    return 0


def cmd_rerun(args: argparse.Namespace) -> int:
    q = connect(args.queue)
    if not args.force:
        total = sum(q.status()["ntasks"].values())
        raise InvalidInput(
            f"rerun resets all {total:,} tasks of {args.queue} and their results: "
            "add --force to do it"
        )
    print(f"{q.rerun():,} tasks of {args.queue} will run again")
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    n = connect(args.queue).recover(dead=args.dead, all=args.all)
    which = "" if args.all else " whose worker is gone"
    print(f"{n:,} Running tasks of {args.queue}{which} are Pending again")
    return 0


def cmd_noop(args: argparse.Namespace) -> int:
    """What batch scripts run to see that qdo works here: the settings load, and the
    database opens."""
    from .store.factory import open_store

    open_store()
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    q = connect(args.queue)
    if not args.force:
        total = sum(q.status()["ntasks"].values())
        raise InvalidInput(
            f"delete removes {args.queue} and its {total:,} tasks for good: add --force to do it"
        )
    n = q.delete()
    print(f"deleted queue {args.queue} and its {n:,} tasks")
    return 0


def cmd_share(args: argparse.Namespace) -> int:
    q = connect(args.queue)
    if args.role is None:
        if args.mode != "list":
            raise InvalidInput("say whom to share with: --with ROLE")
        shares = q.shares()
        for role, how in shares:
            print(f"{role}\t{how}")
        if not shares:
            print(f"{args.queue} is shared with nobody", file=sys.stderr)
        return 0
    if args.mode == "list":
        raise InvalidInput("say how: --read, --write or --revoke")
    mode: str | None = None if args.mode == "revoke" else args.mode
    q.share(args.role, mode)
    said = {"read": "may read", "write": "may read and change (add, run, reset)",
            None: "may no longer reach"}[mode]  # fmt: skip
    print(f"{args.role} {said} {args.queue}")
    return 0


def cmd_admin_init_db(args: argparse.Namespace) -> int:
    from .store.factory import open_store
    from .store.postgres import PostgresStore

    settings = config.load()
    if settings["backend"] != "postgres":
        raise ConfigError(
            "init-db sets up a shared PostgreSQL database (QDO_BACKEND=postgres); a SQLite "
            "file needs no set-up and is yours alone"
        )
    store = open_store(settings)
    assert isinstance(store, PostgresStore)
    if store.row_security:
        raise ConfigError(
            f"connect as the role that owns {store.location} to set it up (this connection "
            "is subject to its row-level security)"
        )
    created = store.open_to(args.group, args.users)
    print(f"{store.location}: shared database ready; members of role {args.group}"
          f"{' (created)' if created else ''} may use it, each seeing only their own queues "
          "and those shared with them (qdo share)")  # fmt: skip
    for member in args.users:
        print(f"  {member}: member of {args.group}")
    print("each user connects as their own role (db_user/db_pass, or db_url, in their qdorc)")
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    from . import launch

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


def cmd_jobs(args: argparse.Namespace) -> int:
    from . import launch

    q = connect(args.queue)
    jobs = q.store.jobs(q.name)
    by_profile: dict[str, list[str]] = {}
    for j in jobs:
        by_profile.setdefault(j.profile, []).append(j.jobid)
    states: dict[str, str] = {}
    for profile, ids in by_profile.items():
        try:
            kind = launch.find_profile(profile, q.settings).kind
        except QdoError:
            kind = profile if profile in launch.KINDS else "slurm"
        states.update(launch.job_states(kind, ids))
    rows = [{"jobid": j.jobid, "profile": j.profile, "workers": j.workers,
             "submitted": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.submitted)),
             "state": states.get(j.jobid, "UNKNOWN")} for j in jobs]  # fmt: skip
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


def cmd_dump(args: argparse.Namespace) -> int:
    q = connect(args.queue)
    counts = q.dump(args.file)
    print(f"wrote {args.queue} to {args.file}: {counts['tasks']:,} tasks, "
          f"{counts['requires']:,} requirements, {counts['attempts']:,} attempts")  # fmt: skip
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    q, n, offset = restore(args.file, as_name=args.as_name)
    moved = f" (ids moved up by {offset:,}: the archive's were taken)" if offset else ""
    print(f"restored queue {q.name} with {n:,} tasks from {args.file} into "
          f"{q.store.location}{moved}")  # fmt: skip
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    from .worker import log_path

    q = connect(args.queue)
    task = q.tasks(id=args.id)
    path = Path(task.log or log_path(q.settings.log_dir, args.queue, args.id))
    folder = q.settings.log_dir.resolve()
    if not path.resolve().is_relative_to(folder):
        # a log path comes from the database, which an archive may have filled: never
        # read a file that is not a task log of this qdo
        raise InvalidInput(
            f"task {args.id}'s log is recorded as {path}, outside the log folder {folder}: "
            "qdo reads no file there"
        )
    if not path.exists():
        if task.state in (State.SUCCEEDED, State.FAILED, State.KILLED):
            print(f"(task {args.id} printed nothing; it {task.state.value.lower()})",
                  file=sys.stderr)  # fmt: skip
            return 0
        raise InvalidInput(f"task {args.id} has no log yet ({path}); it is {task.state}")
    data = path.read_bytes()
    if args.tail is not None:
        lines = data.splitlines(keepends=True)
        data = b"".join(lines[len(lines) - args.tail :]) if args.tail else b""
    sys.stdout.buffer.write(data)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    settings = config.load(write_sample=True)
    for note in settings.notes:
        print(f"note: {note}")
    print(f"configuration file: {settings.rc_path}")
    rows = [[name, settings.shown(name), settings.sources[name]] for name in config.SETTINGS]
    for line in display.table(["SETTING", "VALUE", "FROM"], rows):
        print(line)
    if settings["backend"] == "sqlite":
        print(f"database: {settings.db_path}")
    print(f"logs: {settings.log_dir}")
    return 0


# -- input files ----------------------------------------------------------------------------
class _EmptyFile(InvalidInput):
    pass


class _TaskFile:
    """Tasks from a file (one per line, '-' for stdin), streamed, with line numbers."""

    def __init__(self, name: str, as_json: bool) -> None:
        self.name = name
        self.as_json = as_json
        self.lineno = 0
        self.count = 0
        self.started = time.monotonic()
        self.shown = 0.0
        if name != "-" and not os.path.isfile(name):
            why = "is a directory" if os.path.isdir(name) else "does not exist"
            raise InvalidInput(f"task file {name} {why}")

    @property
    def label(self) -> str:
        return "stdin" if self.name == "-" else self.name

    def where(self) -> str:
        return f"{self.label}, line {self.lineno}"

    def tasks(self) -> Iterator[Any]:
        stream = sys.stdin.buffer if self.name == "-" else open(self.name, "rb")  # noqa: SIM115
        try:
            for self.lineno, raw in enumerate(stream, 1):
                if b"\0" in raw:
                    raise InvalidInput("binary data (NUL byte): a task file is text")
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    raise InvalidInput(f"not UTF-8 text ({e.reason}): a task file is text") from e
                stripped = line.strip()
                if not stripped or stripped.startswith("#"):
                    continue
                if self.as_json:
                    yield _json_task(stripped)
                else:
                    yield line
                self.count += 1
                if self.count % 50_000 == 0:
                    self._progress()
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
        if not self.count:  # raised inside the transaction: not even the queue is created
            raise _EmptyFile(f"{self.label} holds no tasks (blank and # lines are skipped)")

    def _progress(self) -> None:
        now = time.monotonic()
        if sys.stderr.isatty() and now - self.shown > 0.5:
            self.shown = now
            rate = self.count / max(now - self.started, 1e-9)
            sys.stderr.write(f"\rread {self.count:,} tasks ({rate:,.0f}/s)\x1b[K")
            sys.stderr.flush()

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")


# -- parser ---------------------------------------------------------------------------------
def _ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected task ids separated by commas, like 12,13, got {text!r}"
        ) from None
    if not ids or any(i <= 0 for i in ids):
        raise argparse.ArgumentTypeError(f"expected positive task ids, got {text!r}")
    return ids


def _priority(text: str) -> int:
    try:
        return check_priority(int(text))
    except (ValueError, QdoError):
        raise argparse.ArgumentTypeError(
            f"a priority is a 64-bit integer (higher runs first), got {text!r}"
        ) from None


def _positive_int(text: str) -> int:
    n = _count(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {text!r}")
    return n


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds (a number, 0 or more), got {text!r}")
    return value


def _some_seconds(least: float) -> Any:
    """An argparse type: seconds, more than 0 and at least ``least``."""

    def parse(text: str) -> float:
        value = _seconds(text)
        if not value > 0 or value < least:
            raise argparse.ArgumentTypeError(
                f"expected seconds, more than 0{f' and at least {least:g}' if least else ''}, "
                f"got {text!r}"
            )
        return value

    return parse


#: The most slots one agent runs: beyond that, run more agents (qdo launch --jobs).
MAX_WORKERS = 1024


def _workers(text: str) -> int:
    n = _positive_int(text)
    if n > MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_WORKERS} workers in one qdo do, got {n}: run more agents "
            "(qdo launch Q N --jobs J) for more"
        )
    return n


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a number, 0 or more, got {text!r}")
    return n


def _state(text: str) -> str:
    try:
        return State.parse(text).value
    except QdoError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _retry_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-retries", type=_count, metavar="N",
                   help="run a Failed task again up to N times (default 0)")  # fmt: skip
    p.add_argument("--max-lost", type=_positive_int, metavar="N",
                   help="Kill a task after its worker was lost N times (default 3)")  # fmt: skip


class _Parser(argparse.ArgumentParser):
    """Takes every ``--multi-word`` option spelled ``--multi_word`` too, as the original
    QDO spelled them (``--cores_per_worker``, ``--keep_env``); help shows one spelling."""

    def add_argument(self, *names: Any, **kw: Any) -> argparse.Action:
        action = super().add_argument(*names, **kw)
        for name in names:
            if isinstance(name, str) and name.startswith("--") and "-" in name[2:]:
                alias = "--" + name[2:].replace("-", "_")
                if alias not in self._option_string_actions:
                    # registered for parsing only: argparse's help lists option_strings
                    self._option_string_actions[alias] = action
        return action


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qdo", description="Durable queues for very many small tasks.")
    parser.add_argument("--version", action="version", version=f"qdo {__version__}")
    parser.add_argument("-v", "--debug", action="store_true", dest="debug",
                        help="on errors, show the whole cause chain")  # fmt: skip
    parser.add_argument("--user", metavar="NAME",
                        help="act on NAME's queues (default: yours; QDO_USER)")  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        # after the command too, as the original QDO took it (qdo launch -v Q 1 ...)
        p.add_argument("-v", "--verbose", action="store_true",
                       help="more detail; on errors, the whole cause chain")  # fmt: skip
        return p

    def queue_command(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        p = command(name, func, help)
        p.add_argument("queue", metavar="QUEUE")
        return p

    p = queue_command("create", cmd_create, "create an empty queue")
    _retry_options(p)
    p = queue_command("set", cmd_set, "change a queue's retry policy")
    _retry_options(p)
    p = queue_command("load", cmd_load, "add the tasks of a file, one per line ('-': stdin)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--priority", type=_priority, default=0, help="priority of every task")
    p.add_argument("--json", action="store_true", help="each line is a JSON parameter task")
    p = queue_command("add", cmd_add, "add one task")
    p.add_argument("task", metavar="TASK", help="a shell command (quote it)")
    p.add_argument("--priority", type=_priority, default=0, help="higher runs first (default 0)")
    p.add_argument("--requires", type=_ids, default=None, metavar="ID,...",
                   help="ids of tasks that must succeed first")  # fmt: skip
    p.add_argument("--json", action="store_true", help="TASK is a JSON parameter task")
    p.add_argument("--timeout", type=_some_seconds(0), metavar="SEC",
                   help="kill the task if it runs longer (it becomes Killed)")  # fmt: skip
    p.add_argument("--max-retries", type=_count, metavar="N",
                   help="run it again up to N times if it fails (default: queue's)")  # fmt: skip
    p = queue_command("require", cmd_require, "make a task also require other tasks")
    p.add_argument("id", type=int, metavar="ID")
    p.add_argument("--on", type=_ids, required=True, metavar="ID,...")
    p = command("list", cmd_list, "your queues and their task counts")
    p.add_argument("--json", action="store_true")
    p.add_argument("--all-users", action="store_true", help="everybody's queues")
    p = command("status", cmd_status, "a queue's state and task counts (all queues if none)")
    p.add_argument("queue", metavar="QUEUE", nargs="?")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--interval", type=_some_seconds(0.1), default=2.0,
                   help="seconds between refreshes (default 2)")  # fmt: skip
    p = queue_command("tasks", cmd_tasks, "list a queue's tasks (-v: also exit code, "
                      "attempts, times, worker and message)")  # fmt: skip
    p.add_argument("--state", type=_state, metavar="STATE", help=", ".join(STATE_NAMES))
    p.add_argument("--exitcode", type=int, metavar="N", help="only tasks that exited with N")
    p.add_argument("--limit", type=_count, metavar="N", help="show at most N tasks")
    p.add_argument("--id", type=_positive_int, metavar="ID", help="only this task")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = queue_command("do", cmd_do, "run the queue's tasks here until none is left")
    p.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help=f"tasks to run at once (default 1, at most {MAX_WORKERS})",
    )
    p.add_argument("--script", metavar="S", help="run 'S <task>' instead of the task itself")
    p.add_argument("--mpiproc", type=_positive_int, metavar="K",
                   help="run each task as a K-rank srun job step (inside a Slurm job)")  # fmt: skip
    p.add_argument(
        "--func",
        dest="function",
        metavar="MODULE:FUNCTION",
        help="call a Python function with each parameter task's dict as keywords",
    )
    p.add_argument(
        "--timeout",
        type=_some_seconds(0),
        metavar="SEC",
        help="kill a task that runs longer (it becomes Killed)",
    )
    p.add_argument(
        "--runtime",
        type=_seconds,
        metavar="SEC",
        help="start no task after SEC seconds; finish the running ones",
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
        type=_seconds,
        default=10.0,
        metavar="SEC",
        help="on SIGTERM/SIGINT, seconds running tasks get before they are "
        "killed and handed back (default 10)",
    )
    p.add_argument(
        "--lease",
        type=_some_seconds(1.0),
        default=60.0,
        metavar="SEC",
        help="lease of a claimed task, renewed while it runs (default 60, at least 1)",
    )
    queue_command("pause", cmd_pause, "stop handing out tasks (running ones finish)")
    queue_command("resume", cmd_resume, "hand out tasks again")
    queue_command("retry", cmd_retry, "Failed and Killed tasks go back to Pending")
    p = queue_command("rerun", cmd_rerun, "every task starts over (needs --force)")
    p.add_argument("--force", action="store_true")
    p = queue_command("recover", cmd_recover,
                      "Running tasks whose worker is gone go back to Pending")  # fmt: skip
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--dead",
        action="store_true",
        help="also those whose batch job has ended (asks the batch system)",
    )
    which.add_argument(
        "--all", action="store_true", help="every Running task (only when you know nothing runs)"
    )
    command("noop", cmd_noop, "do nothing, successfully, if qdo works here (for job scripts)")
    p = queue_command("delete", cmd_delete, "delete a queue and its tasks (needs --force)")
    p.add_argument("--force", action="store_true")
    p = queue_command("log", cmd_log, "print a task's output")
    p.add_argument("id", type=int, metavar="ID")
    p.add_argument("--tail", type=_count, metavar="N", help="only the last N lines")
    p = queue_command("launch", cmd_launch, "submit batch jobs that run the queue's workers")
    p.add_argument("nworkers", type=_positive_int, metavar="NWORKERS", help="workers per job")
    p.add_argument("--jobs", type=_positive_int, default=1, metavar="J", help="jobs (default 1)")
    p.add_argument(
        "--cores-per-worker",
        "--taskcores",
        dest="cores_per_worker",
        type=_positive_int,
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
        type=_positive_int,
        metavar="K",
        help="each task runs as a K-rank job step through srun",
    )
    p.add_argument(
        "--profile", metavar="NAME", help="slurm, pbs, local or a site profile (QDO_BATCH_PROFILE)"
    )
    p.add_argument(
        "--cores-per-node",
        type=_positive_int,
        metavar="N",
        help="pack workers into nodes of N cores (default: asked of Slurm)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the batch script, submit nothing")
    p.add_argument(
        "--auto",
        type=_positive_int,
        metavar="MAXJOBS",
        help="keep up to MAXJOBS jobs running while tasks are pending, then stop",
    )
    p = queue_command("jobs", cmd_jobs, "the batch jobs launched for a queue, and their state")
    p.add_argument("--json", action="store_true")
    p = queue_command("dump", cmd_dump, "write a queue (every task and field) to an archive")
    p.add_argument("file", metavar="FILE")
    p = command("restore", cmd_restore, "rebuild a queue from an archive (any backend)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--as", dest="as_name", metavar="NAME", help="under another name")
    command("config", cmd_config, "the settings in effect and where each came from")
    p = queue_command("share", cmd_share, "let another PostgreSQL role read or change a "
                      "queue of yours (without --with: whom it is shared with)")  # fmt: skip
    p.add_argument("--with", dest="role", metavar="ROLE", help="the role to share with")
    how = p.add_mutually_exclusive_group()
    for flag, help in (("read", "it may read the queue (the default with --with)"),
                       ("write", "it may also add, run, retry and rerun its tasks"),
                       ("revoke", "it may no longer reach the queue")):  # fmt: skip
        how.add_argument(f"--{flag}", dest="mode", action="store_const", const=flag, help=help)
    p.set_defaults(mode="list")
    admin = sub.add_parser(
        "admin",
        help="for the owner of a shared PostgreSQL database",
        description="for the owner of a shared PostgreSQL database",
    )
    verbs = admin.add_subparsers(dest="admin_command", metavar="COMMAND", required=True)
    p = verbs.add_parser(
        "init-db",
        help="set up a shared database: every user connects as "
        "their own role, and its row-level security keeps them apart",
    )
    p.set_defaults(func=cmd_admin_init_db)
    p.add_argument("-v", "--verbose", action="store_true", help="on errors, the whole cause chain")
    p.add_argument("--group", default="qdo_users", metavar="ROLE",
                   help="the role whose members may use the database (created if missing; "
                        "default qdo_users)")  # fmt: skip
    p.add_argument("--users", type=_roles, default=[], metavar="ROLE,...",
                   help="existing roles to make members of --group")  # fmt: skip
    return parser


def _roles(text: str) -> list[str]:
    roles = [r.strip() for r in text.split(",") if r.strip()]
    if not roles:
        raise argparse.ArgumentTypeError("give role names separated by commas")
    return roles


def _glue_batchopts(argv: Sequence[str]) -> list[str]:
    """``--batchopts "--comment=x"`` as ``--batchopts=--comment=x``: argparse takes a
    value that starts with '-' for an option, and every sbatch/qsub option does."""
    out = list(argv)
    i = 0
    while i < len(out) - 1 and out[i] != "--":
        if out[i] == "--batchopts":
            out[i : i + 2] = [f"--batchopts={out[i + 1]}"]
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_glue_batchopts(sys.argv[1:] if argv is None else argv))
    if args.user:
        os.environ["QDO_USER"] = args.user  # read with the other settings
    try:
        result: int = args.func(args)
        return result
    except QdoError as e:
        if args.debug or args.verbose:
            traceback.print_exc()
        print(f"qdo: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("qdo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `qdo tasks Q | head`: the reader left; say nothing
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as e:
        if args.debug or args.verbose:
            traceback.print_exc()
        print(f"qdo: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
