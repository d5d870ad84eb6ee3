"""Slots that run held tasks for the agent: shell subprocesses, or Python functions.

A runner has ``slots`` places; the agent ``start``s a task when one is ``free`` and
collects ``results``.  ``kill_all`` ends everything at once; what it ends comes back
as a result with ``stopped`` set, to be handed back rather than counted as failed.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib
import inspect
import itertools
import json
import multiprocessing as mp
import os
import queue as queue_module
import re
import resource
import select
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, BinaryIO

from .calls import encode_error, encode_result, run_items
from .errors import InvalidInput, error_text
from .failures import failure_tail
from .logs import Segments, file_chunks, log_path
from .models import State, Task
from .reaper import Reaper
from .runtime import pid_alive
from .store.base import Item, Outcome

#: After SIGTERM, a task's process group gets this long before SIGKILL.
KILL_AFTER = 2.0


@dataclass
class Result:
    task: Task
    state: State
    exitcode: int | None = None
    message: str | None = None
    log: str | None = None
    seconds: float = 0.0
    stopped: bool = False  # ended by the agent stopping: hand it back, it did not fail
    started: float | None = None  # epoch time it really started (after waiting for a slot)
    value: bytes | None = None  # a call's result (qdo.calls.encode_result / encode_error)
    cpu: float | None = None  # CPU seconds it used (user + system), where measured
    rss: int | None = None  # its peak resident memory (bytes), where measured

    def outcome(self) -> Outcome:
        token = self.task._token or 0
        if self.stopped:
            return Outcome(self.task.id, token, State.PENDING, None, self.message)
        # (it ended its run time after it started: not when the batched report arrives)
        ended = None if self.started is None else self.started + self.seconds
        return Outcome(self.task.id, token, self.state, self.exitcode, self.message, self.log,
                       self.started, self.value, self.cpu, self.rss, ended,
                       failure_tail(self.state, self.message, self.log))  # fmt: skip

    @classmethod
    def given_back(cls, task: Task, why: str) -> Result:
        return cls(task, State.PENDING, message=why, stopped=True)


class Runner(ABC):
    slots: int
    stopping: bool = False

    @abstractmethod
    def free(self) -> int:
        """How many more tasks ``start`` accepts now."""

    @abstractmethod
    def start(self, task: Task) -> None: ...

    @abstractmethod
    def results(self, timeout: float, drain: bool = False) -> list[Result]:
        """Results that arrived, waiting up to ``timeout`` for the first; with ``drain``,
        wait for every started task (call after ``kill_all``)."""

    @abstractmethod
    def kill_all(self) -> None: ...

    @abstractmethod
    def kill(self, task_ids: set[int]) -> None:
        """Stop these tasks at once (SIGKILL), or never start them: their leases are
        lost, and another worker may run them now.  Their results come back as usual
        (the database will refuse them)."""

    def tune(self, batch: int) -> None:  # noqa: B027 - optional hook
        """The agent's current batch size (a runner may group work by it)."""

    def take_items(self) -> list[Item]:
        """The items that running calls' generators yielded since the last look (see
        ``qdo.calls``), to write before their calls' results."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


# -- shell tasks ------------------------------------------------------------------------------
def default_shell(given: str = "") -> str:
    """The shell that runs shell tasks: ``given`` (the ``shell`` setting, QDO_SHELL),
    else bash, else /bin/sh."""
    return given or shutil.which("bash") or "/bin/sh"


#: Words a shell must run itself (builtins with no program of the same name, keywords).
# fmt: off
SHELL_ONLY = frozenset((
    "alias", "bg", "bind", "break", "builtin", "caller", "case", "cd", "command", "compgen",
    "complete", "continue", "declare", "dirs", "disown", "enable", "eval", "exec", "exit",
    "export", "fc", "fg", "for", "function", "getopts", "hash", "help", "history", "if", "jobs",
    "let", "local", "logout", "mapfile", "popd", "pushd", "read", "readarray", "readonly",
    "return", "select", "set", "shift", "shopt", "source", "suspend", "time", "times", "trap",
    "type", "typeset", "ulimit", "umask", "unalias", "unset", "until", "wait", "while",
    "coproc", ".", ":", "{", "}", "!", "[[", "]]",
))
# fmt: on
_PLAIN = re.compile(r"[A-Za-z0-9_./,@%+:-]+(?:[ \t]+[A-Za-z0-9_./,@%+:=-]+)*")


@lru_cache(maxsize=4096)
def direct_argv(command: str) -> tuple[str, ...] | None:
    """The argv of a command that needs no shell, or None.

    Like make, qdo runs a command made only of plain words (no quotes, variables,
    globs, redirections, pipes or assignments, and not a shell builtin) directly:
    the result is the same and it starts twice as fast.
    """
    text = command.strip()
    if not _PLAIN.fullmatch(text):
        return None
    words = tuple(text.split())
    if words[0] in SHELL_ONLY or shutil.which(words[0]) is None:
        return None
    return words


def command_for(task: Task, script: str | None, shell: str) -> list[str]:
    """The argv that runs a task: the shell command itself, or ``script`` with the
    task's words (shell tasks) or its JSON (parameter tasks) as arguments."""
    if script is not None:
        args = shlex.split(task.task) if task.is_shell else [json.dumps(task.task)]
        return [*shlex.split(script), *args]
    if not task.is_shell:
        raise InvalidInput("a parameter task needs a script or a function: use --script or --func")
    return list(direct_argv(task.task) or (shell, "-c", task.task))


def _check_script(script: str) -> None:
    """Refuse, before any task is claimed, a ``--script`` that cannot run here: each task
    would fail with it (exit 127), and the queue's work be used up by a typo."""
    try:
        words = shlex.split(script)
    except ValueError as e:
        raise InvalidInput(f"--script {script!r}: {e}") from None
    if not words:
        raise InvalidInput("--script is empty: give the program that runs each task")
    program = words[0]
    if shutil.which(program) is None:
        if "/" not in program:
            why = "no such program on PATH"
        else:
            why = "it is not executable" if Path(program).is_file() else "no such file"
        raise InvalidInput(f"--script {script!r} cannot run {program!r} here: {why}")


class ShellRunner(Runner):
    """Each slot is a thread that takes the next task from a shared queue, starts its
    subprocess and waits for it.  The agent keeps that queue stocked (a backlog of up
    to ``chunk`` tasks per slot), so short tasks follow each other without waiting for
    the agent's thread, which wakes up only every few milliseconds to collect."""

    def __init__(
        self, slots: int, script: str | None, timeout: float | None, log_dir: Path,
        prefix: Sequence[str] = (), shell: str = "", log_files: bool = False,
    ) -> None:  # fmt: skip
        if script is not None:
            _check_script(script)
        self.slots = slots
        self.log_files = log_files  # a file per task's log, not a record in a segment
        self.script = script
        self.prefix = list(prefix)  # runs each task through this (srun for --mpiproc)
        self.timeout = timeout
        self.log_dir = log_dir
        self.spools = _make_spools(log_dir, slots, log_files)  # here: a slot cannot fail alone
        self.shell = default_shell(shell)
        self.env = dict(os.environ)
        self.chunk = 1
        self.busy = 0  # queued or running
        self.jobs: queue_module.SimpleQueue[Task | None] = queue_module.SimpleQueue()
        self.done: queue_module.SimpleQueue[Result] = queue_module.SimpleQueue()
        self.lock = threading.Lock()
        self.procs: dict[int, int] = {}  # task id -> pid (also its process group)
        self.stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.reaper = Reaper()  # the tasks' processes die with this agent, however it dies
        self.env["QDO_AGENT"] = self.reaper.token
        _no_inherit()
        self.killed: set[int] = set()
        self.cancelled: set[int] = set()  # lost their leases before they started
        self.made_dirs: set[Path] = set()
        self.threads = [
            threading.Thread(target=self._slot, args=(i,), name=f"qdo-slot-{i}", daemon=True)
            for i in range(slots)
        ]
        for t in self.threads:
            t.start()

    def tune(self, batch: int) -> None:
        self.chunk = max(1, batch // self.slots // 4)

    def free(self) -> int:
        return self.slots * (1 + self.chunk) - self.busy

    def start(self, task: Task) -> None:
        self.busy += 1
        self.jobs.put(task)

    def results(self, timeout: float, drain: bool = False) -> list[Result]:
        out: list[Result] = []
        if not drain and self.busy >= 2 * self.slots:
            # the slots have work queued: collect in batches instead of per result
            time.sleep(min(timeout, 0.02))
        deadline = time.monotonic() + (max(30.0, KILL_AFTER * 3) if drain else timeout)
        while self.busy:
            try:
                if out and not drain:
                    result = self.done.get_nowait()
                else:
                    result = self.done.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue_module.Empty:
                break
            self.busy -= 1
            out.append(result)
        return out

    def kill_all(self) -> None:
        with self.lock:
            procs = dict(self.procs)
            self.killed.update(procs)
        for pid in procs.values():
            _signal_group(pid, signal.SIGTERM)
        if procs:
            timer = threading.Timer(KILL_AFTER, self._kill_hard, args=(list(procs.values()),))
            timer.daemon = True
            timer.start()

    def kill(self, task_ids: set[int]) -> None:
        with self.lock:
            self.cancelled.update(task_ids)  # the slots skip those not started yet
            pids = [pid for task_id, pid in self.procs.items() if task_id in task_ids]
            self.killed.update(t for t in task_ids if t in self.procs)
        self._kill_hard(pids)

    @staticmethod
    def _kill_hard(pids: list[int]) -> None:
        for pid in pids:
            _signal_group(pid, signal.SIGKILL)  # a group that is gone already is no error

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)
        for t in self.threads:
            t.join(timeout=KILL_AFTER * 3)
        if not any(t.is_alive() for t in self.threads):
            os.close(self.stdin)
            self.reaper.close()

    def _slot(self, index: int) -> None:
        spool = self.spools[index]
        try:
            while (task := self.jobs.get()) is not None:
                with self.lock:
                    lost = task.id in self.cancelled
                    self.cancelled.discard(task.id)
                if self.stopping or lost:  # queued but not started: hand it back
                    why = "its lease was lost" if lost else "worker stopping"
                    self.done.put(Result.given_back(task, f"handed back unstarted ({why})"))
                    continue
                started = time.time()
                try:
                    result = self._run(task, spool)
                except OSError as e:  # (its log could not be written, say)
                    result = Result(task, State.FAILED, None, _os_failure(e))
                except Exception as e:  # never lose a slot: report the task as failed
                    result = Result(task, State.FAILED, None, f"qdo could not run it: {e}")
                result.started = started
                self.done.put(result)
        finally:
            spool.close()

    def _run(self, task: Task, spool: _Spool) -> Result:
        try:
            argv = [*self.prefix, *command_for(task, self.script, self.shell)]
        except InvalidInput as e:
            return Result(task, State.FAILED, None, str(e))
        env = {**self.env, "QDO_QUEUE": task.queue, "QDO_TASK_ID": str(task.id),
               "QDO_TASK_ATTEMPT": str(task.attempts)}  # fmt: skip
        limit = task.timeout or self.timeout
        started = time.monotonic()
        out = spool.ready()
        try:
            # posix_spawn rather than subprocess: a third of the parent's CPU per task.
            # setsid: its own session, so Ctrl-C on the terminal reaches the agent, not
            # the task, and a time limit can kill the task's whole process group.
            fd = out.fileno()
            pid = os.posix_spawnp(argv[0], argv, env, setsid=True, file_actions=[
                (os.POSIX_SPAWN_DUP2, self.stdin, 0), (os.POSIX_SPAWN_DUP2, fd, 1),
                (os.POSIX_SPAWN_DUP2, fd, 2)])  # fmt: skip
        except OSError as e:
            out.write(f"qdo: cannot run {argv[0]}: {e}\n".encode())
            return Result(task, State.FAILED, 127, f"cannot run {argv[0]}: {e.strerror}",
                          self._keep(spool, task), time.monotonic() - started)  # fmt: skip
        self.reaper.started(pid)
        with self.lock:
            self.procs[task.id] = pid
        timed_out = False
        try:
            ended = _wait(pid, limit)
            if ended is None:
                timed_out = True
                _signal_group(pid, signal.SIGTERM)
                ended = _wait(pid, KILL_AFTER)
                if ended is None:
                    _signal_group(pid, signal.SIGKILL)
                    ended = _wait(pid, None)
            assert ended is not None
            status, usage = ended
            code = os.waitstatus_to_exitcode(status)
        finally:
            self.reaper.ended(pid)
            with self.lock:
                self.procs.pop(task.id, None)
                stopped = task.id in self.killed
                self.killed.discard(task.id)
        seconds = time.monotonic() - started
        # what the task's processes used (those it waited for, and itself): ru_maxrss is
        # in kilobytes on Linux
        used = {"cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss * 1024}
        if stopped:
            out.write(b"\nqdo: stopped by the worker's shutdown; the task will run again\n")
            return Result(task, State.PENDING, code, "stopped by worker shutdown",
                          self._keep(spool, task), seconds, stopped=True)  # fmt: skip
        if timed_out:
            out.write(f"\nqdo: killed after its time limit of {limit:g} s\n".encode())
            return Result(task, State.KILLED, code, f"timed out after {limit:g} s",
                          self._keep(spool, task), seconds, **used)  # fmt: skip
        log = self._keep(spool, task)
        if code == 0:
            return Result(task, State.SUCCEEDED, 0, None, log, seconds, **used)
        why = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return Result(task, State.FAILED, code, why, log, seconds, **used)

    def _keep(self, spool: _Spool, task: Task) -> str | None:
        if spool.segments is not None:
            return spool.record(task)
        log = log_path(self.log_dir, task.queue, task.id)
        if log.parent not in self.made_dirs and not spool.empty():
            log.parent.mkdir(parents=True, exist_ok=True)
            self.made_dirs.add(log.parent)
        return str(log) if spool.keep(log) else None


def log_dir_error(log_dir: Path, e: OSError) -> InvalidInput:
    if e.errno in (errno.EMFILE, errno.ENFILE):
        fix = "run fewer --workers per agent, or raise the limit (ulimit -n)"
    else:
        fix = "set log_dir (QDO_LOG_DIR) to a folder this agent can write in"
    return InvalidInput(f"cannot keep the tasks' output in the log directory {log_dir} "
                        f"({e.strerror or e}): {fix}")  # fmt: skip


def _make_spools(log_dir: Path, slots: int, log_files: bool) -> list[_Spool]:
    """A spool per slot, all made before any slot starts: where one cannot be made (a
    folder not writable, too many open files for this many slots) the agent stops with
    one error before it claims a task, instead of a slot dying and its tasks hanging."""
    folder = log_dir / ".spool"
    spools: list[_Spool] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():  # left by an agent that was killed
            pid = old.name.partition("-")[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    old.unlink()
        for i in range(slots):
            segments = None if log_files else Segments(log_dir, f"s{i}")
            spools.append(_Spool(folder, segments))
    except OSError as e:
        for spool in spools:
            spool.close()
        raise log_dir_error(log_dir, e) from None
    return spools


#: (a spool file's name, with the pid: every agent of a process has its own, the same
#: folder for all)
_SPOOL_NUMBERS = itertools.count(1)


class _Spool:
    """A slot's output file, reused from task to task.

    What a task printed becomes a record of the slot's segment (``segments``), and the
    spool starts over.  With a file per log, the spool is renamed to the task's log
    file when it has something in it: creating a file costs a third of a millisecond
    on a disk filesystem, as much as starting a small process, and most short tasks
    print nothing.
    """

    def __init__(self, folder: Path, segments: Segments | None = None) -> None:
        self.folder = folder
        self.segments = segments
        self._open()

    def _open(self) -> None:
        self.path = self.folder / f"{os.getpid()}-{next(_SPOOL_NUMBERS)}"
        self.file = open(self.path, "a+b")  # noqa: SIM115 - lives as long as the slot

    def ready(self) -> BinaryIO:
        """The file for the next task's output; made again if that failed last time
        (a full disk: that task failed, the next one tries again)."""
        if self.file.closed:
            self._open()
        return self.file

    def size(self) -> int:
        self.file.flush()
        return os.fstat(self.file.fileno()).st_size

    def empty(self) -> bool:
        return self.size() == 0

    def record(self, task: Task) -> str | None:
        """Append what the task wrote to the slot's segment, and start over; its log
        (None if it wrote nothing)."""
        assert self.segments is not None
        size = self.size()
        if not size:
            return None
        try:
            return self.segments.append(task.queue, task.id, task.attempts,
                                        file_chunks(self.file.fileno(), 0, size), size)  # fmt: skip
        finally:
            self.file.truncate(0)  # (kept or not: it is not the next task's)

    def keep(self, dest: Path) -> bool:
        """Move what the task wrote to ``dest`` (appended if an earlier attempt wrote
        there); False if it wrote nothing."""
        if self.empty():
            return False
        if dest.exists():
            with open(dest, "ab") as out, open(self.path, "rb") as src:
                shutil.copyfileobj(src, out)
            self.file.truncate(0)
            return True
        self.file.close()
        os.replace(self.path, dest)
        self._open()
        return True

    def close(self) -> None:
        self.file.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
        if self.segments is not None:
            self.segments.close()


def _os_failure(e: OSError) -> str:
    """Why a task failed when qdo could not run it or keep its output."""
    if e.errno == errno.ENOSPC:
        return f"disk full: its output could not be kept in its log ({e.strerror})"
    return f"qdo could not run it: {e}"


def _no_inherit() -> None:
    """Mark every open descriptor above 2 close-on-exec, as subprocess's close_fds does:
    posix_spawn passes on whatever is inheritable, and tasks must not get the agent's
    files (or the pipes it inherited from whoever started it)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return
    for fd in fds:
        if fd > 2:
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _wait(pid: int, timeout: float | None) -> tuple[int, Any] | None:
    """Reap a child; its wait status and what it used (``resource.struct_rusage``), or
    None if it still runs after ``timeout`` s."""
    if timeout is None:
        return os.wait4(pid, 0)[1:]
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd (old kernel): poll
        end = time.monotonic() + timeout
        while True:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                return status, usage
            if time.monotonic() >= end:
                return None
            time.sleep(0.005)
    try:
        if not select.select([pidfd], [], [], timeout)[0]:
            return None
        return os.wait4(pid, 0)[1:]
    finally:
        os.close(pidfd)


# -- Python functions -------------------------------------------------------------------------
def resolve_func(spec: str | Callable[..., Any]) -> Callable[..., Any]:
    """``module:function`` (or ``module.function``) to the function itself."""
    if callable(spec):
        return spec
    module, sep, name = spec.partition(":")
    if not sep:
        module, _, name = spec.rpartition(".")
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        # as `python -m` does: `qdo do --func mypkg.tasks:f` finds ./mypkg (the `qdo`
        # command's sys.path starts with its own bin folder, not the current one)
        sys.path.insert(0, here)
    try:
        func = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise InvalidInput(f"cannot load function {spec!r} (use module:function): {e}") from e
    if not callable(func):
        raise InvalidInput(f"{spec!r} is not a function")
    return func  # type: ignore[no-any-return]


def call(func: Callable[..., Any], payload: Any) -> Any:
    """A dict is keyword arguments, a list positional ones, anything else the only one."""
    if isinstance(payload, dict):
        return func(**payload)
    if isinstance(payload, list):
        return func(*payload)
    return func(payload)


def _func_main(
    conn: Connection, spec: str | Callable[..., Any], log_dir: Path, values: bool = False,
    log_files: bool = False,
) -> None:  # fmt: skip
    """A function worker process: run chunks of (id, payload) until told to stop,
    sending the results it has a list at a time (``_Results``).  If it dies, the agent
    knows what it finished up to the last list, not which of the rest it died in
    (``FuncRunner._receive``).
    With ``values`` (a queue of calls), the payload is the one argument, and what the
    function returns or raises goes back, pickled (``qdo.calls``); a generator it returns
    sends its items, each as it comes, before that."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent decides when to stop
    # a process group of its own, with what its tasks start: the agent's watchdog kills
    # the group if the agent dies, and a task's time limit kills all of it
    os.setsid()
    func = resolve_func(spec)
    output = _Output(log_dir, None if log_files else Segments(log_dir, "f"))
    out = _Results(conn)
    meter = _Meter()
    while True:
        try:
            chunk = conn.recv()
        except EOFError:
            return
        if chunk is None:
            return
        for task_id, payload, queue, attempt in chunk:
            started = time.monotonic()
            meter.start()
            mark = output.mark()
            value = None
            try:
                if values:
                    got = func(payload)
                    if inspect.isgenerator(got):
                        got = run_items(got, functools.partial(out.item, task_id))
                    value = encode_result(got)
                else:
                    call(func, payload)
                error = trace = None
            except (Exception, SystemExit, KeyboardInterrupt) as e:
                # (the call's: sys.exit() in it ends the call, not the process that runs
                # the others, as in a ProcessPoolExecutor)
                error, trace = error_text(e), traceback.format_exc()
                sys.stderr.write(trace)
                if values:
                    value = encode_error(e, trace)
            log = None
            try:
                log = output.keep_since(mark, queue, task_id, attempt)  # what it printed
            except OSError as e:  # a full disk, say: this task fails, the process goes on
                error = error or _os_failure(e)
            cpu, peak = meter.stop()
            out.result((task_id, error, trace, time.monotonic() - started, value, cpu, peak,
                        log))  # fmt: skip
        out.flush()  # the chunk is done: its agent waits for the last of it


class _Meter:
    """What a function worker process's tasks use, one at a time: CPU seconds (the
    process's and its reaped children's) and peak resident memory.  The peak is started
    over for each task through ``/proc/self/clear_refs`` (Linux; elsewhere it is the
    process's peak).  The /proc files stay open: opening them for each task cost a
    no-op task more than its call (about 25 of 30 µs).

    A task that caused no page fault cannot have grown the process's resident memory
    (a page becomes resident in it only through a fault of its own, counted in
    ``ru_minflt`` or ``ru_majflt``): its peak is what was resident when it started, read
    from ``statm`` (1.5 µs).  Only the others read ``VmHWM`` from ``status``, which the
    kernel writes out whole at every read (9 to 15 µs, half of all a no-op task cost its
    worker process)."""

    def __init__(self) -> None:
        self.clear = self._open("/proc/self/clear_refs", os.O_WRONLY)
        self.status = self._open("/proc/self/status", os.O_RDONLY)
        self.statm = self._open("/proc/self/statm", os.O_RDONLY)
        self.page = resource.getpagesize()
        self.cpu0 = 0.0
        self.faults = -1
        self.resident: int | None = None

    @staticmethod
    def _open(path: str, flags: int) -> int | None:
        try:
            return os.open(path, flags | os.O_CLOEXEC)
        except OSError:
            return None

    @staticmethod
    def _usage() -> tuple[float, int]:
        """CPU seconds so far (the process's and its reaped children's), and the page
        faults of the process."""
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
        return cpu, me.ru_minflt + me.ru_majflt

    def start(self) -> None:
        """A task starts: its peak starts over."""
        self.resident = None
        if self.clear is not None:
            try:
                os.write(self.clear, b"5")
            except OSError:
                self.clear = None
        self.cpu0, self.faults = self._usage()
        if self.clear is not None and self.statm is not None:
            try:  # "size resident shared ...", in pages
                self.resident = int(os.pread(self.statm, 256, 0).split()[1]) * self.page
            except (OSError, ValueError, IndexError):
                self.statm = None

    def stop(self) -> tuple[float, int]:
        """The task has ended: the CPU seconds it used, and its peak resident memory."""
        cpu, faults = self._usage()
        if self.resident is not None and faults == self.faults:
            return cpu - self.cpu0, self.resident
        return cpu - self.cpu0, self._peak()

    def _peak(self) -> int:
        """The peak resident memory, bytes, since the last ``start``."""
        if self.status is not None:
            try:
                text = os.pread(self.status, 16384, 0)
                at = text.index(b"VmHWM:") + 6
                return int(text[at : text.index(b"kB", at)]) * 1024
            except (OSError, ValueError):
                self.status = None
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


#: A function worker process sends the results it has at most this often (seconds), a
#: list at a time: one message a task cost its agent more than a no-op call.
RESULTS_EVERY = 0.002


class _Results:
    """What a function worker process tells its agent, in order: results in lists (one
    per RESULTS_EVERY, and at the end of each chunk), and a generator's items at once
    (each after the results before it)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.kept: list[tuple[Any, ...]] = []
        self.sent = time.monotonic()

    def result(self, message: tuple[Any, ...]) -> None:
        self.kept.append(message)
        if time.monotonic() - self.sent >= RESULTS_EVERY:
            self.flush()

    def item(self, task_id: int, index: int, data: bytes) -> None:
        self.flush()
        self.conn.send((task_id, index, data))

    def flush(self) -> None:
        if self.kept:
            self.conn.send(self.kept)
            self.kept = []
        self.sent = time.monotonic()


class _Output:
    """A function worker process's stdout and stderr (Python's and the C level's) go to
    one scratch file; what a task wrote there is copied to its log (a record of the
    process's segment, or a file of its own), as a shell task's output is.  One file
    for all tasks: a file opened per task halved the rate."""

    def __init__(self, log_dir: Path, segments: Segments | None) -> None:
        self.log_dir = log_dir
        self.segments = segments
        self.file = tempfile.TemporaryFile(prefix="qdo-func-")  # noqa: SIM115 (for good)
        self.fd = self.file.fileno()
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.fd, 1)
        os.dup2(self.fd, 2)

    def mark(self) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        return os.lseek(self.fd, 0, os.SEEK_CUR)

    def keep_since(self, mark: int, queue: str, task_id: int, attempt: int) -> str | None:
        """Keep what was written since ``mark`` as the task's log; the log (None if
        nothing was written)."""
        end = self.mark()
        if end == mark:
            return None
        try:
            if self.segments is not None:
                chunks = file_chunks(self.fd, mark, end)
                return self.segments.append(queue, task_id, attempt, chunks, end - mark)
            path = log_path(self.log_dir, queue, task_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as out:
                out.write(os.pread(self.fd, end - mark, mark))
            return str(path)
        finally:
            if end > 1 << 20:  # start the scratch file over now and then
                os.ftruncate(self.fd, 0)
                os.lseek(self.fd, 0, os.SEEK_SET)


class _Proc:
    def __init__(
        self, ctx: Any, spec: str | Callable[..., Any], log_dir: Path, reaper: Reaper,
        values: bool = False, log_files: bool = False,
    ) -> None:  # fmt: skip
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_func_main, daemon=True,
                                   args=(child, spec, log_dir, values, log_files))  # fmt: skip
        self.process.start()
        self.reaper = reaper
        reaper.started(self.process.pid)
        child.close()
        self.tasks: list[Task] = []
        self.deadline = float("inf")

    def kill(self) -> None:
        """SIGKILL the process and what it started (its group), and wait for it."""
        _signal_group(self.process.pid, signal.SIGKILL)
        self.process.kill()  # (in case it had no group of its own yet)
        self.process.join()
        self.ended()

    def ended(self) -> None:
        self.reaper.ended(self.process.pid)


class FuncRunner(Runner):
    """N long-lived worker processes, each calling the function for a chunk of tasks."""

    def __init__(
        self, spec: str | Callable[..., Any], slots: int, timeout: float | None, log_dir: Path,
        values: bool = False, log_files: bool = False,
    ):  # fmt: skip
        resolve_func(spec)  # fail here, with a clear message, not in every process
        self.spec = spec
        self.log_files = log_files
        self.values = values  # a queue of calls: results come back (see _func_main)
        self.slots = slots
        self.timeout = timeout
        self.log_dir = log_dir
        self.chunk = 1
        # a function of the script being run (qdo.connect(...).do(func=f) in it) can
        # reach a spawned process only by running that script again, which fails unless
        # it has `if __name__ == "__main__":`; a forked one has it already
        in_main = getattr(spec, "__module__", None) == "__main__"
        self.ctx = mp.get_context("fork" if in_main and os.name == "posix" else "spawn")
        self.reaper = Reaper()  # the worker processes die with this agent, however it dies
        self.procs = [self._new_proc() for _ in range(slots)]
        self.buffer: deque[Task] = deque()
        self.ready: list[Result] = []
        self.yielded: list[Item] = []
        self.suspects: set[int] = set()  # tasks a process died among (see _receive)

    def take_items(self) -> list[Item]:
        out, self.yielded = self.yielded, []
        return out

    def _new_proc(self) -> _Proc:
        return _Proc(self.ctx, self.spec, self.log_dir, self.reaper, self.values, self.log_files)

    def tune(self, batch: int) -> None:
        self.chunk = max(1, batch // self.slots)

    def _limit(self, task: Task) -> float | None:
        return task.timeout or self.timeout

    def free(self) -> int:
        idle = sum(1 for p in self.procs if not p.tasks)
        return idle * self.chunk - len(self.buffer)

    def start(self, task: Task) -> None:
        self.buffer.append(task)

    def _send(self) -> None:
        if self.stopping:
            self.ready.extend(Result.given_back(t, "handed back unstarted (worker stopping)")
                              for t in self.buffer)  # fmt: skip
            self.buffer.clear()
        for p in self.procs:
            if p.tasks or not self.buffer:
                continue
            # a time limit is kept task by task; so is a task a process may have died in
            head = self.buffer[0]
            size = 1 if self._limit(head) is not None or head.id in self.suspects else self.chunk
            p.tasks = [self.buffer.popleft()]
            while len(p.tasks) < size and self.buffer and self.buffer[0].id not in self.suspects:
                p.tasks.append(self.buffer.popleft())
            self.suspects.discard(head.id)  # (a suspect goes alone)
            limit = self._limit(p.tasks[0])
            p.deadline = time.monotonic() + limit if limit else float("inf")
            p.conn.send([(t.id, t.task, t.queue, t.attempts) for t in p.tasks])

    def results(self, timeout: float, drain: bool = False) -> list[Result]:
        self._send()
        out, self.ready = self.ready, []
        end = time.monotonic() + (30.0 if drain else timeout)
        while True:
            busy = [p for p in self.procs if p.tasks]
            if not busy or ((out or self.yielded) and not drain):
                break
            now = time.monotonic()
            soonest = min(p.deadline for p in busy)
            wait_for = max(0.0, min(end, soonest) - now)
            for conn in wait([p.conn for p in busy], timeout=wait_for):
                p = next(p for p in busy if p.conn is conn)
                out.extend(self._receive(p))
            now = time.monotonic()
            for p in busy:
                if p.tasks and now >= p.deadline:
                    out.extend(self._expire(p))
            if now >= end:
                break
            self._send()
        return out

    def _receive(self, p: _Proc) -> list[Result]:
        out: list[Result] = []
        items = len(self.yielded)
        while p.tasks:
            try:
                if (out or len(self.yielded) > items) and not p.conn.poll():
                    break
                message = p.conn.recv()
            except (EOFError, OSError):
                # the process died in the first task it has not answered for: that one
                # failed; the rest of its chunk never started, and goes back in line
                p.process.join(timeout=5)
                code = p.process.exitcode
                how = f"killed by signal {-code}" if code and code < 0 else f"exit code {code}"
                if len(p.tasks) > 1:
                    # it may have finished some of them and not said so yet (it sends
                    # results a list at a time): which one it died in is not known.  They
                    # go back in line, to run one at a time, each told of at once.
                    self.suspects.update(t.id for t in p.tasks)
                    self.buffer.extendleft(reversed(p.tasks))
                    p.tasks = []
                    self._replace(p)
                    return out
                return out + self._restart(
                    p, State.FAILED, f"the function's worker process died ({how}) in this task"
                )
            if type(message) is tuple:  # an item its generator yielded: the call goes on
                task_id, index, data = message
                assert task_id == p.tasks[0].id
                self.yielded.append(Item(task_id, p.tasks[0]._token or 0, index, data))
                continue
            for task_id, error, _trace, seconds, value, cpu, rss, log in message:
                task = p.tasks.pop(0)
                assert task.id == task_id
                # (a failure's traceback is in its log)
                out.append(Result(task, State.SUCCEEDED if error is None else State.FAILED,
                                  0 if error is None else 1, error, log, seconds, value=value,
                                  cpu=cpu, rss=rss))  # fmt: skip
        return out

    def _expire(self, p: _Proc) -> list[Result]:
        limit = self._limit(p.tasks[0])
        return self._restart(p, State.KILLED, f"timed out after {limit:g} s")

    def _restart(
        self, p: _Proc, state: State, why: str, stopped: bool | None = None
    ) -> list[Result]:
        tasks, p.tasks = p.tasks, []
        self._replace(p)
        stopped = self.stopping if stopped is None else stopped
        return [Result(t, state, None, why, None, 0.0, stopped=stopped) for t in tasks]

    def _replace(self, p: _Proc) -> None:
        """Kill worker process ``p`` and start another in its place."""
        p.kill()
        p.conn.close()
        self.procs[self.procs.index(p)] = self._new_proc()

    def kill(self, task_ids: set[int]) -> None:
        kept = [t for t in self.buffer if t.id not in task_ids]
        if len(kept) < len(self.buffer):
            why = "handed back unstarted (its lease was lost)"
            self.ready.extend(Result.given_back(t, why) for t in self.buffer if t.id in task_ids)
            self.buffer = deque(kept)
        for p in self.procs:
            if any(t.id in task_ids for t in p.tasks):
                # the process and its chunk: the rest of the chunk never started
                self.buffer.extendleft(t for t in reversed(p.tasks[1:]) if t.id not in task_ids)
                p.tasks = p.tasks[:1]
                self.ready.extend(
                    self._restart(p, State.PENDING, "stopped: its lease was lost", stopped=True)
                )

    def kill_all(self) -> None:
        self.stopping = True
        for t in self.buffer:
            self.ready.append(Result.given_back(t, "stopped by worker shutdown"))
        self.buffer.clear()
        for p in self.procs:
            if p.tasks:
                tasks, p.tasks = p.tasks, []
                p.kill()
                self.ready.extend(
                    Result(t, State.PENDING, None, "stopped by worker shutdown", stopped=True)
                    for t in tasks
                )

    def close(self) -> None:
        for p in self.procs:
            try:
                if p.process.is_alive():
                    p.conn.send(None)
            except OSError:
                pass
        for p in self.procs:
            p.process.join(timeout=5)
            if p.process.is_alive():
                p.kill()
            else:
                p.ended()
        self.reaper.close()
