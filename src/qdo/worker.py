"""The node agent behind ``qdo do``: one process that alone talks to the database.

It claims tasks in batches, runs them in N slots, renews the leases of the tasks it
holds, and reports results in batches.  Shell tasks run as subprocesses driven by
slot threads (see ``runners``); Python functions (``--func``) run in N long-lived
worker processes.  On SIGTERM or SIGINT it takes nothing more, hands back what it
has not started, lets running tasks finish for ``grace`` seconds, then kills them
and hands them back too, and exits leaving nothing Running.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from .errors import DiskFull, InvalidInput, QdoError
from .logs import log_path
from .models import State, Task, UnreadablePayload, timestamp
from .queue import Queue
from .runners import Result, Runner, ShellRunner, log_dir_error
from .runtime import Log, batch_job_id, hostname, worker_id
from .store.base import AGENT_BEAT, Begun, Item

__all__ = ["RunSummary", "WorkerOptions", "do", "log_path"]

T = TypeVar("T")

#: Seconds of work an agent may hold unstarted per slot when tasks are short: enough to
#: keep slots busy between claims, too little to starve other agents near the end.
BACKLOG_SECONDS = 0.25
MAX_BATCH = 500
#: A result waits at most this long before it is reported: results come in batches,
#: a transaction each.  A call's result sooner: a driver waits for it (qdo.executor).
REPORT_DELAY = 0.2
CALL_REPORT_DELAY = 0.02
#: Seconds at least between heartbeats that tell of a hand that doubled or halved.
HAND_BEAT = 0.25
#: A worker in a batch job claims tasks that declare at most the time it has left, less
#: this: they will still fit when they start a moment later.
CLAIM_MARGIN = 5.0
#: On a full disk the agent waits this long before it tries again, twice as long each
#: time it is still full, up to FULL_WAIT_MAX.
FULL_WAIT = 1.0
FULL_WAIT_MAX = 30.0
#: Less free space than this where the task logs go counts as a full disk.
LOW_SPACE = 64 * 1024
log = Log("qdo.worker")


@dataclass
class WorkerOptions:
    """How ``do`` runs tasks.  See ``qdo do --help`` for each."""

    workers: int = 1
    script: str | None = None
    func: str | Callable[..., Any] | None = None
    timeout: float | None = None
    runtime: float | None = None
    wait: bool = False
    grace: float = 10.0
    lease: float = 60.0
    poll: float = 1.0  # seconds between claims when idle with wait=True
    mpiproc: int | None = None  # each task runs as an srun job step of this many ranks
    #: a log file per task (True) or records in segment files (False); None: the
    #: log_files setting
    log_files: bool | None = None


@dataclass
class RunSummary:
    """What one ``do`` run did (so far, when passed to a progress callback)."""

    ran: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    returned: int = 0  # handed back unfinished (signal, runtime, lost lease)
    refused: int = 0  # results the database refused: the lease had been lost
    stopped_by: str | None = None  # the signal that stopped the run, if any
    held: int = 0  # claimed and not yet finished: running or queued for a slot
    batch: int = 1
    # seconds the batch job had left when a claim for tasks that fit in them found none
    # (None: the last claim took anything that was there)
    time_left: float | None = None


def do(
    queue: Queue,
    options: WorkerOptions | None = None,
    progress: Callable[[RunSummary], None] | None = None,
    **kw: Any,
) -> RunSummary:
    """Run the queue's tasks on this machine until none is left (see ``Agent``)."""
    return Agent(queue, options or WorkerOptions(**kw), progress).run()


class Agent:
    """One agent: the only thing in this process that talks to the queue's store."""

    def __init__(
        self,
        queue: Queue,
        options: WorkerOptions,
        progress: Callable[[RunSummary], None] | None = None,
    ) -> None:
        if options.workers < 1:
            raise ValueError("workers must be at least 1")
        self.queue = queue
        self.store = queue.store
        self.opts = options
        self.progress = progress
        self.worker = worker_id()
        self.jobid = batch_job_id()
        self.summary = RunSummary()
        self.todo: deque[Task] = deque()  # claimed, not started
        self.running: dict[int, Task] = {}
        self.outbox: list[Result] = []
        self.begun: list[Begun] = []  # tasks about to start, for the report before they do
        self.items: list[Item] = []  # generators' items, for the report (before results)
        self.told_hand, self.told_at = 1, 0.0  # what the last heartbeat said, and when
        self.outbox_since = 0.0
        self.mean_seconds: float | None = None  # running mean of task durations
        self.stop_signal: str | None = None
        self.stop_at = 0.0
        self.job_end: float | None = None  # when the batch job's time limit hits (epoch)
        self.job_end_checked = -math.inf
        self.stop_deadline: float | None = None
        self.log_dir = queue.settings.log_dir
        # a full disk (the database's, or the logs'): why, and when to try again
        self.full: str | None = None
        self.full_database = False  # the database's disk (else the logs')
        self.full_until = 0.0
        self.full_wait = FULL_WAIT
        # a queue of Python calls (qdo.executor) runs them in function worker processes
        self.calls = self.store.get_queue(queue.name).kind == "calls"
        if self.calls and (options.func is not None or options.script is not None):
            raise InvalidInput(f"queue {queue.name!r} holds Python calls: they run as they "
                               "are (no --func, no --script)")  # fmt: skip
        self.runner: Runner = self._make_runner()
        self.report_delay = CALL_REPORT_DELAY if self.calls else REPORT_DELAY
        if self.calls:
            from .calls import Refs

            self.refs = Refs(self._results_of)

    def _results_of(self, ids: list[int]) -> dict[int, bytes]:
        """What these calls returned, those that Succeeded."""
        from .calls import whole_result

        rows = self._db(self.store.results_of, ids)
        items: dict[int, list[tuple[int, bytes]]] = {}
        for r in rows:
            if r.item >= 0:  # a generator's: what it takes is the list of them
                items.setdefault(r.task_id, []).append((r.item, r.data))
        return {r.task_id: whole_result(r.data, items.get(r.task_id, [])) for r in rows
                if r.item == -1 and r.ok}  # fmt: skip

    def _make_runner(self) -> Runner:
        log_dir = self.log_dir
        try:  # before a task is claimed
            log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise log_dir_error(log_dir, e) from None
        files = self.opts.log_files
        files = self.queue.settings.log_files if files is None else files
        if self.calls:
            from .calls import run_call
            from .runners import FuncRunner

            return FuncRunner(run_call, self.opts.workers, self.opts.timeout, log_dir,
                              values=True, log_files=files)  # fmt: skip
        if self.opts.func is not None:
            from .runners import FuncRunner

            return FuncRunner(self.opts.func, self.opts.workers, self.opts.timeout, log_dir,
                              log_files=files)  # fmt: skip
        prefix: list[str] = []
        if self.opts.mpiproc:
            if not os.environ.get("SLURM_JOB_ID"):
                raise InvalidInput(
                    "--mpiproc runs each task as an srun job step: it works inside a Slurm "
                    "job (start the workers with qdo launch)"
                )
            # --export=ALL: the ranks get the task's environment (QDO_TASK_ID, ...), not
            # just the job's --export list, which sbatch leaves to srun in SLURM_EXPORT_ENV
            prefix = ["srun", f"--ntasks={self.opts.mpiproc}", "--exact", "--quiet",
                      "--kill-on-bad-exit=1", "--export=ALL"]  # fmt: skip
        return ShellRunner(self.opts.workers, self.opts.script, self.opts.timeout, log_dir,
                           prefix=prefix, shell=self.queue.settings["shell"],
                           log_files=files)  # fmt: skip

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> RunSummary:
        start = time.monotonic()
        restore = self._install_signals()
        if self.store.notifies and self.opts.wait:
            self.store.listen(self.queue.name)  # before the first claim: no task slips by
        next_renew = next_collect = next_progress = next_beat = start
        idle_until = 0.0
        try:
            while True:
                now = time.monotonic()
                if now >= next_beat or self._hand_moved(now):
                    # alive, with these slots and this hand (drivers size their work by it)
                    next_beat = now + AGENT_BEAT
                    self._beat(now)
                self.summary.seconds = now - start
                if self.stop_deadline is not None and now >= self.stop_deadline:
                    self.runner.kill_all()  # grace is over; their results come back "stopped"
                    self.stop_deadline = math.inf
                taking = self.stop_signal is None and not self._runtime_over(now)
                # a full disk: nothing new starts until it is time to look again; tasks
                # that run go on (their leases renewed), their results wait in the outbox
                held = self.full is not None and not self._look_again(now)
                # queued tasks come back unstarted
                self.runner.stopping = not taking or held
                empty = False
                try:
                    if now >= next_renew:  # first, and always: what runs stays ours
                        next_renew = now + self.opts.lease / 3
                        self._renew()
                    if self.stop_signal and self.stop_deadline is None:
                        self._begin_stop(now)
                    if not taking and self.todo:
                        self._give_back_todo()
                    if not held:
                        if now >= next_collect:
                            self._db(self.store.requeue_expired, self.queue.name)
                            next_collect = now + min(self.opts.lease / 2, 10.0)
                        if taking and now >= idle_until and self._want() > 0:
                            empty = not self._claim(self._want())
                        self._dispatch()
                except DiskFull as e:
                    self._disk_full(str(e), now, database=True)
                    held = True
                if not self.running and not self.todo and (not held or self.stop_signal):
                    if not taking or (empty and not self.opts.wait):
                        break
                    if empty:
                        self._report()
                        idle_until = now + self.opts.poll
                        if self.opts.wait:
                            # asleep until the store says there may be tasks (PostgreSQL:
                            # the server's word; SQLite: a cheap look, often); but still
                            # collect expired leases now and then
                            until = next_collect
                            if self.opts.runtime is not None:  # (--runtime ends the wait)
                                until = min(until, start + self.opts.runtime)
                            self.store.wait_for_tasks(
                                self.queue.name, max(0.0, until - now),
                                stop=lambda: self.stop_signal is not None,
                            )  # fmt: skip
                            idle_until = 0.0
                            continue
                self._collect(timeout=self._sleep(now, idle_until, next_renew))
                if (
                    (self.outbox or self.items)
                    and not held
                    and (
                        len(self.outbox) >= self.summary.batch
                        or now - self.outbox_since >= self.report_delay
                        or not self.running
                    )
                ):
                    try:
                        self._report()
                    except DiskFull as e:
                        self._disk_full(str(e), now, database=True)
                if self.progress and now >= next_progress:
                    self.summary.held = len(self.running) + len(self.todo)
                    self.progress(self.summary)
                    next_progress = now + 0.2
        finally:
            try:
                self.runner.kill_all()
                self._collect(timeout=0.0, drain=True)
                if self.todo:
                    self.outbox.extend(self._given_back(self.todo))
                    self.todo.clear()
                self._report()
            except DiskFull as e:
                # stopped while the disk is full: what could not be recorded comes back
                # when its leases run out, as for an agent that died
                log.warning("qdo do %s: %s; %d tasks are left to their leases",
                            self.queue.name, e, len(self.outbox))  # fmt: skip
            finally:
                self.runner.close()
                restore()
                with contextlib.suppress(QdoError):  # (else it is gone after AGENT_LIVE)
                    self.store.agent_gone(self.queue.name, self.worker)
        self.summary.seconds = time.monotonic() - start
        self.summary.held = 0
        return self.summary

    def _sleep(self, now: float, idle_until: float, next_renew: float) -> float:
        """How long to wait for a result before looking around again."""
        limit = max(0.0, next_renew - now)
        if self.full is not None:
            limit = min(limit, max(0.0, self.full_until - now))
        if self.stop_deadline is not None and self.stop_deadline != math.inf:
            limit = min(limit, max(0.0, self.stop_deadline - now))
        if self.outbox or self.items:
            limit = min(limit, self.report_delay)
        if not self.running:
            return min(limit, max(0.0, idle_until - now))
        return min(limit, 1.0)

    def _hand(self) -> int:
        """How many tasks it keeps claimed: its slots, or its batch if more."""
        return max(self.runner.slots, self.summary.batch)

    def _hand_moved(self, now: float) -> bool:
        """Has the hand doubled or halved since the last heartbeat said it (and was that
        a while ago)?  Then a driver should hear of it before the next one."""
        told = self.told_hand
        hand = self._hand()
        return now >= self.told_at + HAND_BEAT and (hand >= 2 * told or 2 * hand <= told)

    def _beat(self, now: float) -> None:
        hand = self._hand()
        try:
            self.store.agent_seen(self.queue.name, self.worker, hostname(),
                                  self.runner.slots, hand, self.jobid)  # fmt: skip
        except QdoError as e:  # (a full disk, the server away: its tasks are what matter)
            log.warning("qdo do %s: could not say it is alive (%s)", self.queue.name, e)
        self.told_hand, self.told_at = hand, now

    def _runtime_over(self, now: float) -> bool:
        return self.opts.runtime is not None and self.summary.seconds >= self.opts.runtime

    def _want(self) -> int:
        """How many tasks to claim now: enough for the free slots, plus a backlog sized
        to about BACKLOG_SECONDS of work per slot once tasks are known to be short."""
        free = self.runner.free() - len(self.todo)
        if free <= 0:
            return 0
        return max(free, self.summary.batch - len(self.todo))

    def _claim(self, n: int) -> bool:
        """Claim up to ``n`` tasks; in a batch job with a time limit, only tasks that
        declare no run time (``timeout``) or one that ends before the limit does."""
        left = self._time_left()
        budget = None if left is None else max(0.0, left - CLAIM_MARGIN)
        # reserved: each counts as started (and, if this agent dies, as a lost attempt)
        # only once it is handed to a slot (see _dispatch)
        tasks = self._db(self.store.claim, self.queue.name, self.worker, n, self.opts.lease,
                         self.jobid, max_seconds=budget, reserve=True,
                         calls=self.calls)  # fmt: skip
        if not tasks and not self.calls and self.store.get_queue(self.queue.name).kind == "calls":
            # made a queue of calls (an executor) after this agent started on it, empty
            raise InvalidInput(f"queue {self.queue.name!r} holds Python calls now: start "
                               "qdo do again to run them")  # fmt: skip
        self.summary.time_left = None if tasks else left
        if self.calls and tasks:
            # what each runs: the pickled call, in place of its description
            data = self._db(self.store.call_data, [t.id for t in tasks])
            # and the results it takes by reference (the tasks it requires)
            refs = self.refs.get(r for t in tasks for r in t.requires)
            for t in tasks:
                call = data.get(t.id)
                if call is None:
                    t.task = UnreadablePayload(str(t.task), "its call is missing")
                elif t.requires:
                    t.task = (call, {r: refs[r] for r in t.requires if r in refs})
                else:
                    t.task = call
        self.todo.extend(tasks)
        return bool(tasks)

    def _dispatch(self) -> None:
        """Hand claimed tasks to the slots.  The database learns that they started
        first, with the results waiting to be reported (one transaction): a task that
        runs is never taken for one that did not, if this agent dies."""
        starting: list[Task] = []
        while self.todo and self.runner.free() > len(starting):
            task = self.todo.popleft()
            if isinstance(task.task, UnreadablePayload):  # fails alone, runs nowhere
                self._later(Result(task, State.FAILED, None, task.task.failure))
                continue
            if not self._time_for(task):
                # it fitted when it was claimed, but waited for a slot since: leave it to
                # a worker with more time, and go on with the others
                why = "handed back unstarted (batch job time limit too close)"
                self._later(Result.given_back(task, why))
                continue
            starting.append(task)
        if not starting:
            return
        now = time.time()
        for task in starting:
            assert task._token is not None
            self.begun.append(Begun(task.id, task._token, now))
        try:
            self._report()
        except DiskFull:
            self.begun = []  # not marked, so not started: back in line, in order
            self.todo.extendleft(reversed(starting))
            raise
        for task in starting:
            task.started = timestamp(now)
            self.running[task.id] = task
            self.runner.start(task)

    def _time_left(self) -> float | None:
        """Seconds until the batch job's time limit, or None (no job, or no limit)."""
        now = time.time()
        if now >= self.job_end_checked + 60:  # the limit can change (scontrol update)
            self.job_end = job_end_time(self.queue.settings.job_end)
            self.job_end_checked = now
        return None if self.job_end is None else self.job_end - now

    def _time_for(self, task: Task) -> bool:
        """Can a task that declares its run time (its ``timeout``) end before the batch
        job's time limit?  Tasks that declare nothing are always started."""
        if task.timeout is None:
            return True
        left = self._time_left()
        return left is None or task.timeout <= left

    def _collect(self, timeout: float, drain: bool = False) -> None:
        results = self.runner.results(timeout, drain=drain)
        items = self.runner.take_items()
        if items:
            if not self.outbox and not self.items:
                self.outbox_since = time.monotonic()
            self.items += items
        full = bool(results) and _low_space(self.log_dir)
        for result in results:
            task = self.running.pop(result.task.id, None)
            if task is None:
                continue
            if full and not result.stopped and result.state is not State.KILLED:
                # what it wrote may be cut short: the task fails, and nothing more
                # starts until there is room again
                why = f"disk full: the log directory {self.log_dir} has no room"
                result = replace(result, state=State.FAILED,
                                 message=f"its output may be incomplete: {why}")  # fmt: skip
                self._disk_full(why, time.monotonic(), database=False)
            killed_by = _signal_of(result.exitcode)
            if self.stop_signal and result.state is State.FAILED and killed_by:
                # killed by a signal while we stop: the batch system's time limit signals
                # every process of the job, tasks too; they did not fail, hand them back
                result = replace(result, state=State.PENDING, stopped=True,
                                 message=f"stopped by {self.stop_signal} (killed by signal "
                                         f"{killed_by})")  # fmt: skip
            self._later(result)
            if result.stopped:
                continue
            self.summary.ran += 1
            state = result.state.value
            self.summary.by_state[state] = self.summary.by_state.get(state, 0) + 1
            self._learn(result.seconds)

    def _learn(self, seconds: float) -> None:
        """Grow the batch while tasks finish quickly; shrink it when they are slow."""
        mean = seconds if self.mean_seconds is None else 0.8 * self.mean_seconds + 0.2 * seconds
        self.mean_seconds = mean
        slots = self.runner.slots
        ideal = slots * BACKLOG_SECONDS / max(mean, 1e-4)
        batch = self.summary.batch
        if ideal > batch:
            batch = min(batch * 2, int(ideal), MAX_BATCH)
        elif ideal < batch / 2:
            batch = max(1, batch // 2)
        self.summary.batch = max(1, batch)
        self.runner.tune(self.summary.batch)

    def _later(self, result: Result) -> None:
        """Keep a result for the next report."""
        if not self.outbox and not self.items:
            self.outbox_since = time.monotonic()
        self.outbox.append(result)

    def _report(self) -> None:
        """Report the results waiting in the outbox, and the tasks about to start; kept
        for the next time if the database cannot take them (a full disk)."""
        if self.items:  # first: a call's items are in before its result
            refused_items = self._db(self.store.add_items, self.worker, self.items)
            self.items = []
            if refused_items:  # (its lease is lost: _renew stops it)
                log.warning("qdo do %s: %d running calls are no longer ours: their items "
                            "were not kept", self.queue.name, len(refused_items))  # fmt: skip
        if not self.outbox and not self.begun:
            return
        outbox, begun = self.outbox, self.begun
        refused = self._db(self.store.finish, self.worker, [r.outcome() for r in outbox], begun)
        self.outbox, self.begun = [], []
        self.summary.refused += len(refused)
        self.summary.returned += sum(1 for r in outbox if r.stopped and r.task.id not in refused)

    def _renew(self) -> None:
        held = [*self.todo, *self.running.values()]
        if not held:
            return
        pairs = [(t.id, t._token or 0) for t in held]
        lost = set(self._db(self.store.renew, self.worker, pairs, self.opts.lease))
        if lost:
            # someone else may hold these now: start none of them, and stop those that
            # run (a second copy may be starting elsewhere); their reports are refused
            self.todo = deque(t for t in self.todo if t.id not in lost)
            running = {i for i in lost if i in self.running}
            if running:
                log.warning("qdo do %s: the leases of %d running tasks ran out before they "
                            "were renewed (is this machine overloaded? raise --lease): "
                            "stopping them", self.queue.name, len(running))  # fmt: skip
                self.runner.kill(running)

    def _give_back_todo(self) -> None:
        self.outbox.extend(self._given_back(self.todo))
        self.todo.clear()
        self._report()

    def _given_back(self, tasks: Iterable[Task]) -> list[Result]:
        why = f"handed back unstarted ({self.stop_signal or 'runtime over'})"
        return [Result.given_back(t, why) for t in tasks]

    # -- a full disk ----------------------------------------------------------------------
    def _db(self, verb: Callable[..., T], *args: Any, **kw: Any) -> T:
        """A write to the store; the first to go through after a full disk says so."""
        out = verb(*args, **kw)
        if self.full is not None and self.full_database:
            self._room_again()
        return out

    def _room_again(self) -> None:
        log.warning("qdo do %s: there is room again: carrying on", self.queue.name)
        self.full = None
        self.full_wait = FULL_WAIT

    def _disk_full(self, why: str, now: float, database: bool) -> None:
        """Start nothing for a while (the database's disk is full, or the logs'): say
        why the first time."""
        if self.full is None:
            log.warning("qdo do %s: %s; holding %d results and %d running tasks, starting "
                        "nothing until there is room (looking again every %g s at most)",
                        self.queue.name, why, len(self.outbox), len(self.running),
                        FULL_WAIT_MAX)  # fmt: skip
        else:
            self.full_wait = min(self.full_wait * 2, FULL_WAIT_MAX)
        self.full = why
        self.full_database = database
        self.full_until = now + self.full_wait
        self.runner.stopping = True  # what waits for a slot comes back unstarted

    def _look_again(self, now: float) -> bool:
        """After a full disk: is it time to try again (and is there room for logs)?"""
        if now < self.full_until:
            return False
        if _low_space(self.log_dir):
            self._disk_full(self.full or "disk full", now, database=self.full_database)
            return False
        if not self.full_database:
            self._room_again()  # (the database's disk is known to have room once written)
        return True

    # -- signals --------------------------------------------------------------------------
    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def handler(signum: int, frame: FrameType | None) -> None:
            if self.stop_signal is not None:  # a second signal: no more grace
                self.stop_deadline = 0.0 if self.stop_deadline != math.inf else math.inf
                return
            self.stop_signal = signal.Signals(signum).name
            self.summary.stopped_by = self.stop_signal
            self.stop_at = time.monotonic()
            # at once, not when the loop next looks: no queued task may start from now on
            self.runner.stopping = True

        for sig in previous:
            signal.signal(sig, handler)

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore

    def _begin_stop(self, now: float) -> None:
        self.runner.stopping = True
        self.stop_deadline = self.stop_at + self.opts.grace
        self._give_back_todo()


def _low_space(path: Path) -> bool:
    """Is the file system of ``path`` (or of its nearest existing parent) full?"""
    for folder in (path, *path.parents):
        try:
            st = os.statvfs(folder)
        except OSError:
            continue
        free = st.f_bfree if os.geteuid() == 0 else st.f_bavail  # root may use the reserve
        return free * st.f_frsize < LOW_SPACE or (st.f_files > 0 and st.f_ffree == 0)
    return False


def _signal_of(exitcode: int | None) -> int | None:
    """The signal that ended a task: a negative exit code, or 128 + N from a shell
    whose command the signal killed first (SIGTERM reaches both; either may go first)."""
    if exitcode is None:
        return None
    if exitcode < 0:
        return -exitcode
    return exitcode - 128 if exitcode - 128 in (signal.SIGTERM, signal.SIGINT) else None


def job_end_time(given: float | None = None) -> float | None:
    """When this process's batch job reaches its time limit (epoch seconds), or None
    (no job, no limit, or the batch system can't say).  ``given`` (the ``job_end``
    setting, ``QDO_JOB_END``) wins; else Slurm is asked (the PBS wrappers of Slurm run
    Slurm jobs too)."""
    if given is not None:
        return given
    jobid = os.environ.get("SLURM_JOB_ID")
    if not jobid or shutil.which("squeue") is None:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", jobid, "-o", "%e"], capture_output=True,
                             text=True, timeout=30).stdout.strip()  # fmt: skip
        return time.mktime(time.strptime(out, "%Y-%m-%dT%H:%M:%S"))
    except (OSError, subprocess.SubprocessError, ValueError):
        return None  # "N/A", "NONE" (no limit) or no answer
