"""Commands on tasks: load, add, require, tasks, log; and the task file that load reads."""

from __future__ import annotations

import argparse
import codecs
import itertools
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from .. import display
from ..api import connect, load
from ..errors import InvalidInput, InvalidPayload, QdoError
from ..models import State, check_priority
from .common import STATE_NAMES, Commands, count, exit_code, positive_int, some_seconds


def register(commands: Commands) -> None:
    p = commands.queue_command("load", cmd_load)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--priority", type=_priority, default=0, help="priority of every task")
    p.add_argument("--json", action="store_true", help="each line is a JSON parameter task")
    p = commands.queue_command("add", cmd_add)
    p.add_argument("task", metavar="TASK", help="a shell command (quote it)")
    p.add_argument("--priority", type=_priority, default=0, help="higher runs first (default 0)")
    p.add_argument("--requires", type=_ids, default=None, metavar="ID,...",
                   help="ids of tasks that must succeed first")  # fmt: skip
    p.add_argument("--json", action="store_true", help="TASK is a JSON parameter task")
    p.add_argument("--timeout", type=some_seconds(0), metavar="SEC",
                   help="kill the task if it runs longer (it becomes Killed)")  # fmt: skip
    p.add_argument("--max-retries", type=count, metavar="N",
                   help="run it again up to N times if it fails (default: queue's)")  # fmt: skip
    p = commands.queue_command("require", cmd_require)
    p.add_argument("id", type=positive_int, metavar="ID")
    p.add_argument("--on", type=_ids, required=True, metavar="ID,...")
    p = commands.queue_command("tasks", cmd_tasks)
    p.add_argument("--state", type=_state, metavar="STATE", help=", ".join(STATE_NAMES))
    p.add_argument("--exitcode", type=exit_code, metavar="N",
                   help="only tasks that exited with N")  # fmt: skip
    p.add_argument(
        "--limit",
        type=count,
        metavar="N",
        help=f"show at most N tasks (default {TASKS_SHOWN:,} in a table; --json: all)",
    )
    p.add_argument("--all", action="store_true", help="show every task")
    p.add_argument("--id", type=positive_int, metavar="ID", help="only this task")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = commands.queue_command("trace", cmd_trace)
    p.add_argument("file", metavar="FILE", help="the trace to write (JSON)")
    p = commands.queue_command("log", cmd_log)
    p.add_argument("id", type=positive_int, metavar="ID")
    p.add_argument("--tail", type=count, metavar="N", help="only the last N lines")


def cmd_load(args: argparse.Namespace) -> int:
    source = _TaskFile(args.file, as_json=args.json)
    try:
        ids = load(args.queue, source.tasks(), priority=args.priority)
    except _EmptyFile:
        raise
    except InvalidInput as e:
        if not source.lineno:
            raise
        # (the line says which task: not also its index among them, "task #58", which
        # counts from 0 and skips blank lines)
        why = e.__cause__ if isinstance(e.__cause__, InvalidPayload) else e
        raise InvalidInput(f"{source.where()}: {why}; nothing was loaded") from e
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


def cmd_trace(args: argparse.Namespace) -> int:
    from ..trace import write_trace

    q = connect(args.queue)
    n = write_trace(q, args.file)
    print(f"wrote {n:,} attempts of {q.name} to {args.file} (open it in https://ui.perfetto.dev)")
    return 0


#: The tasks ``qdo tasks`` shows in a table unless told (``--limit``, ``--all``).
TASKS_SHOWN = 1000


def cmd_tasks(args: argparse.Namespace) -> int:
    q = connect(args.queue)
    tasks: Iterator[Any] = q.iter_tasks(state=args.state, id=args.id, history=args.verbose,
                                        exitcode=args.exitcode)  # fmt: skip
    limit = args.limit
    if limit is None and not args.all and not args.json:
        limit = TASKS_SHOWN
    if limit is not None:
        tasks = itertools.islice(tasks, limit + 1)  # (one more: to say there are more)
    shown = [0]
    more = [False]

    def counted(it: Iterator[Any]) -> Iterator[Any]:
        for t in it:
            if limit is not None and shown[0] == limit:
                more[0] = True
                return
            shown[0] += 1
            yield t

    tasks = counted(tasks)
    if args.json:
        for t in tasks:
            print(json.dumps(t.to_dict()))
        return 0
    if args.verbose:
        headers = ["ID", "STATE", "PRI", "EXIT", "TRIES", "CREATED", "STARTED", "FINISHED",
                   "SECONDS", "CPU", "RSS",
                   "WORKER", "JOB", "REQUIRES", "MESSAGE", "EARLIER ATTEMPTS", "TASK"]  # fmt: skip
        rows: Iterator[list[object]] = (
            [t.id, t.state.value, t.priority, t.exitcode, t.attempts, display.when(t.created),
             display.when(t.started), display.when(t.finished), _secs(t.duration),
             *_used(t), t.worker, t.jobid,
             ",".join(map(str, t.requires)), display.cell(t.message, 40), _history(t),
             _payload(t.task)]
            for t in tasks
        )  # fmt: skip
        right = [0, 2, 3, 4, 8, 9, 10]
    else:
        headers = ["ID", "STATE", "PRI", "TASK"]
        rows = ([t.id, t.state.value, t.priority, _payload(t.task)] for t in tasks)
        right = [0, 2]
    empty = True
    # ids grow down the table: the widest is the last one's, past the rows sampled
    least = {0: len(str(q.store.last_id(q.name)))} if limit is None or limit > TASKS_SHOWN else {}
    lines = display.table(headers, rows, right=right, sample=TASKS_SHOWN, least=least)
    for i, line in enumerate(lines):
        empty = i == 0
        print(line)
    if empty:
        which = f" in state {args.state}" if args.state else ""
        print(f"(no tasks{which})")
    elif more[0]:
        print(f"(the first {shown[0]:,}; --limit N for more, --all for every task)")
    return 0


def _secs(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def _used(task: Any) -> list[str]:
    """CPU seconds and peak memory of the task's last attempt, as measured."""
    last = next((a for a in reversed(task.history) if a.attempt == task.attempts), None)
    if last is None:
        return ["-", "-"]
    return [_secs(last.cpu), display.size(last.rss)]


def _history(task: Any) -> str:
    """Earlier attempts in a few words: '1:Failed(2) 2:Lost' (the last one is the row)."""
    shown = []
    for a in task.history:
        if a.attempt == task.attempts and a.state == task.state.value:
            continue  # the row itself shows that one
        code = f"({a.exitcode})" if a.exitcode not in (None, 0) else ""
        shown.append(f"{a.attempt}:{a.state}{code}")
    return " ".join(shown)


def _payload(task: Any) -> str:
    return task if isinstance(task, str) else json.dumps(task)


def cmd_log(args: argparse.Namespace) -> int:
    q = connect(args.queue)
    data = q.output(args.id)
    if data is None:
        task = q.tasks(id=args.id)
        if task.state in (State.SUCCEEDED, State.FAILED, State.KILLED):
            print(f"(task {args.id} printed nothing; it {task.state.value.lower()})",
                  file=sys.stderr)  # fmt: skip
            return 0
        raise InvalidInput(f"task {args.id} has no log yet; it is {task.state}")
    if args.tail is not None:
        lines = data.splitlines(keepends=True)
        data = b"".join(lines[len(lines) - args.tail :]) if args.tail else b""
    sys.stdout.buffer.write(data)
    return 0


# -- argument types -------------------------------------------------------------------------
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


def _state(text: str) -> str:
    try:
        return State.parse(text).value
    except QdoError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# -- input files ----------------------------------------------------------------------------
def _json_task(text: str) -> Any:
    """A parameter task from JSON text; a JSON string is refused (a str is a shell task)."""
    try:
        task = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"not a JSON value ({e.msg})") from e
    except ValueError as e:  # (a number of more digits than Python reads)
        raise InvalidInput(f"not a JSON value qdo reads ({e})") from e
    except RecursionError:
        raise InvalidInput("JSON that nests lists or objects too deep to read") from None
    if isinstance(task, str):
        raise InvalidInput(
            "a JSON string is not a parameter task (strings are shell commands): "
            "drop --json, or wrap it in an object or list"
        )
    return task


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
        # (any file that reads: a named pipe, /dev/stdin, <(a command) too)
        if name != "-" and (os.path.isdir(name) or not os.path.exists(name)):
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
                if self.lineno == 1:  # (a byte order mark, as Windows editors write)
                    raw = raw.removeprefix(codecs.BOM_UTF8)
                if b"\0" in raw:
                    raise InvalidInput("binary data (NUL byte): a task file is text")
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    raise InvalidInput(f"not UTF-8 text ({e.reason}): a task file is text") from e
                stripped = line.strip()
                if not stripped or stripped.startswith("#"):
                    continue
                if "\r" in line and not self.as_json:  # (JSON takes a CR as a space)
                    raise InvalidInput("a carriage return (CR) inside a line: a task file's "
                                       "lines end in LF or CR LF; convert one whose lines end "
                                       "in CR alone with tr '\\r' '\\n'")  # fmt: skip
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
