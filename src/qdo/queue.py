"""A queue and its verbs (``Queue``), over the store the settings point at.

The public constructors (``qdo.create``, ``qdo.connect``, ...) and the verbs that run
tasks (``do``, ``launch``) are in ``qdo.api``, above the node agent and batch launch."""

from __future__ import annotations

import contextlib
import itertools
import operator
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

from . import config, logs
from .errors import (
    InvalidInput,
    InvalidPayload,
    InvalidState,
    LeaseLost,
    TaskNotEditable,
    UnknownTask,
)
from .failures import failure_tail
from .heartbeat import heartbeat
from .models import (
    FINAL_STATES,
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    MAX_PAYLOAD_BYTES,
    PRIORITY_MAX,
    PRIORITY_MIN,
    QueueState,
    State,
    Task,
    UnreadablePayload,
    _short,
    check_priority,
    encode_payload,
    is_seconds,
)
from .runtime import batch_job_id, dead_here, hostname, worker_id
from .store.base import NewTask, Outcome, SameTasks, Store, login_name

#: ``get()`` puts back the tasks of vanished holders whenever it finds nothing to claim,
#: and at least this often (seconds) while it does.
COLLECT_EVERY = 30.0
#: How a queue may be shared (Queue.share): read it, or read and change it.
SHARE_MODES = ("read", "write", None)


class Queue:
    """A named, persistent queue of tasks.  Get one with ``qdo.create`` or ``qdo.connect``."""

    def __init__(self, name: str, *, store: Store, settings: config.Settings | None = None) -> None:
        self.name = name
        self.store = store
        self.settings = settings or config.load()
        #: The status this queue had when ``qlist()`` listed it (None otherwise).
        self.listed: dict[str, Any] | None = None
        self._next_collect = 0.0  # when get() next puts back expired leases anyway

    def __repr__(self) -> str:
        return f"<qdo.Queue {self.name!r} in {self.store.location}>"

    def __getitem__(self, key: str) -> Any:
        """Deprecated: ``qlist()`` gave dicts before 0.2; ``q['ntasks']`` still reads the
        listed status.  Use ``q.listed[...]`` or ``q.status()[...]``."""
        warnings.warn(
            "qlist() returns Queue objects since qdo 0.2: use q.listed[key] (the status "
            "when listed) or q.status()[key] instead of q[key]",
            DeprecationWarning,
            stacklevel=2,
        )
        status = self.listed or {**self.status(), "user": self.store.user}
        return status[key]

    # -- adding ---------------------------------------------------------------------------
    def add(
        self,
        task: Any,
        priority: int = 0,
        requires: Sequence[int] | None = None,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
    ) -> int:
        """Add one task; return its id.

        ``task`` is a shell command (str) or any JSON value (parameters).  Higher
        ``priority`` runs first (ties: first added, first out).  ``requires`` lists
        ids of tasks (in any queue) that must Succeed before this one runs.
        ``timeout`` (seconds) kills it when it runs longer; ``max_retries`` overrides
        the queue's for this task.
        """
        new = _new_task(None, task, priority, requires)
        if timeout is not None or max_retries is not None:
            _check_limits(max_retries, None)
            new = new._replace(timeout=_check_timeout(timeout), max_retries=max_retries)
        return self.store.add_many(self.name, [new])[0]

    def add_multiple(
        self,
        tasks: Sequence[Any],
        priorities: int | Sequence[int] | None = None,
        requires: Sequence[Sequence[int] | None] | None = None,
    ) -> list[int]:
        """Add many tasks in one transaction (all or nothing); return their ids in order.

        ``priorities`` is one priority for all or a list with one per task;
        ``requires`` is a list with one list of required ids (or None) per task.
        """
        if isinstance(tasks, (str, bytes, dict)) or not isinstance(tasks, Iterable):
            raise InvalidInput("add_multiple takes a list of tasks; use add() for one task, "
                               f"got {_short(tasks)}")  # fmt: skip
        tasks = list(tasks)
        if requires is None and (priorities is None or type(priorities) is int):
            same = _plain_commands(tasks, priorities or 0)
            if same is not None:
                return list(self.store.add_many(self.name, same))
        if priorities is None or isinstance(priorities, int):
            prios: Iterable[Any] = itertools.repeat(priorities or 0)
        else:
            prios = _same_length("priorities", priorities, len(tasks))
        reqs: Iterable[Any] = (
            itertools.repeat(None) if requires is None
            else _same_length("requires", requires, len(tasks))
        )  # fmt: skip
        rows = (
            _new_task(i, t, p, r)
            for i, (t, p, r) in enumerate(zip(tasks, prios, reqs, strict=False))
        )
        return list(self.store.add_many(self.name, rows))

    def set(self, *, max_retries: int | None = None, max_lost: int | None = None) -> None:
        """Change the queue's retry policy (see ``qdo.create``)."""
        _check_limits(max_retries, max_lost)
        self.store.set_queue_options(self.name, max_retries=max_retries, max_lost=max_lost)

    def add_requires(self, task_id: int, requires: Sequence[int]) -> None:
        """Make a Waiting or Pending task also require ``requires`` (no cycles allowed)."""
        self.store.add_requires(self.name, _task_id(task_id), _requires(requires))

    # -- consuming ------------------------------------------------------------------------
    def get(self, timeout: float | None = 0, lease: float | None = None) -> Task | None:
        """Take the next task to run, or None if none came within ``timeout`` seconds.

        ``timeout=0`` (the default) does not wait; ``None`` waits for ever.  The task
        is Running and reserved for this client: a background thread of this process
        renews its ``lease`` (seconds, default from the configuration) until it is
        reported with ``task.set_state(...)``.  If the process dies, the lease runs out
        and the task goes back to Pending for someone else.
        """
        lease = self.settings.lease if lease is None else lease
        for name, value in (("timeout", timeout), ("lease", lease)):
            if value is not None and not is_seconds(value, positive=name == "lease"):
                raise InvalidInput(f"{name} must be a number of seconds, up to a year, got "
                                   f"{_short(value)}")  # fmt: skip
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.005
        if self.store.notifies and timeout != 0:
            self.store.listen(self.name)  # before the first look: no task slips by
        while True:
            if time.monotonic() >= self._next_collect:
                self._collect_expired()
            got = self.store.claim(self.name, worker_id(), 1, lease, batch_job_id())
            if got:
                task = got[0]
                task._handle, task._held = self, True
                assert task._token is not None and task.worker is not None
                if isinstance(task.task, UnreadablePayload):  # it fails alone; go on
                    failed = Outcome(task.id, task._token, State.FAILED, None, task.task.failure)
                    self.store.finish(task.worker, [failed])
                    continue
                heartbeat().hold(self.store, task.worker, task.id, task._token, lease)
                return task
            # nothing to claim: the tasks of holders that vanished come back (this also
            # tells a deleted queue, UnknownQueue, from an empty one)
            if self._collect_expired():
                continue
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                delay = min(delay, remaining)
            if self.store.notifies:  # woken by the server when tasks come
                self.store.wait_for_tasks(self.name, 5.0 if deadline is None else remaining)
            else:
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _collect_expired(self) -> bool:
        """Put back the tasks whose lease ran out; whether there were any."""
        self._next_collect = time.monotonic() + COLLECT_EVERY
        return bool(self.store.requeue_expired(self.name))

    def _report(
        self,
        task: Task,
        state: State,
        err: int | None,
        message: str | None,
        log: str | None = None,
    ) -> None:
        if state not in FINAL_STATES and state is not State.PENDING:
            raise InvalidState(state, [s.value for s in (*FINAL_STATES, State.PENDING)])
        exitcode = _exit_code(state, err)
        message = _message(message)
        if task._token is None:
            raise TaskNotEditable(
                f"task {task.id} was reported already ({task.state.value}) by this client: "
                "a task is reported once (q.set_task_state changes it by hand)"
            )
        outcome = Outcome(
            task.id,
            task._token,
            state,
            exitcode,
            message,
            log,
            tail=failure_tail(state, message, log),
        )
        worker = task.worker or worker_id()
        refused = self.store.finish(worker, [outcome])
        # reported or refused, this client holds it no more (if the database could not
        # be reached, it still does: the lease goes on being renewed, try again)
        heartbeat().release(self.store, task.id, task._token)
        if refused:
            raise LeaseLost(task.id, worker)
        task.state, task.exitcode, task.message = state, exitcode, message
        task.log = log or task.log
        task._token = None  # reported: it is held no more

    def _renew(self, task: Task, seconds: float | None) -> None:
        worker = task.worker or worker_id()
        if task._token is None:
            raise TaskNotEditable(
                f"task {task.id} was reported already: there is no lease to renew"
            )
        lease = self.settings.lease if seconds is None else seconds
        if self.store.renew(worker, [(task.id, task._token)], lease):
            heartbeat().release(self.store, task.id, task._token)
            raise LeaseLost(task.id, worker)
        heartbeat().renewed(self.store, task.id, task._token, lease)

    def set_task_state(
        self, task_id: int | str, state: State | str, err: int | None = None,
        message: str | None = None,
    ) -> State:  # fmt: skip
        """Set the state of task ``task_id`` of this queue, whoever holds it, from any
        thread, process or node (the original QDO's call); return the state it is in.

        An administrative change, in one transaction: ``state`` is Pending (Waiting
        while a requirement has not Succeeded; the task gets fresh retry budgets),
        Succeeded, Failed or Killed; ``err`` is the exit code (0 by default for
        Succeeded).  A Running task's lease is revoked: its holder's report is refused
        (``LeaseLost``) and nobody renews it any more.  Succeeded releases the tasks
        that wait for it.  The attempt history records who made the change.  Raises
        UnknownTask (a ValueError and a LookupError) for an id not in this queue.
        """
        task_id = _task_id(task_id, text_ok=True)
        state = State.parse(state)
        if state not in FINAL_STATES and state is not State.PENDING:
            raise InvalidState(state, [s.value for s in (State.PENDING, *FINAL_STATES)])
        exitcode = _exit_code(state, err)
        message = _message(message)
        who = f"{login_name()}@{worker_id()}"
        new = self.store.set_state(self.name, task_id, state, exitcode, message, who)
        heartbeat().release(self.store, task_id)  # in case this process held it
        return new

    def _set(self, task: Task, state: State, err: int | None, message: str | None) -> None:
        """``Task.set_state`` on a record read with ``tasks()``."""
        task.state = self.set_task_state(task.id, state, err, message)
        task.exitcode = _exit_code(state, err)
        task.message = message or task.message

    # -- reading --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """``{'name', 'state', 'ntasks': {state: n}, 'blocked': n, 'max_retries': n,
        'max_lost': n, 'claimed': n}``; ``blocked`` counts Waiting tasks that wait on a
        Failed, Killed or deleted requirement; ``claimed`` the Running ones that an agent
        holds ahead and has not started.  Tasks whose lease expired are put back first."""
        info, counts = self.store.queue_status(self.name)
        return {
            **_status(self.name, info.state, counts.by_state, counts.blocked),
            "max_retries": info.max_retries,
            "max_lost": info.max_lost,
            "claimed": counts.claimed,
        }

    def summary(self) -> dict[str, Any]:
        """The queue's status (as :meth:`status`) and whose queue it is: the original
        QDO's name for it."""
        return {**self.status(), "user": self.store.user}

    @overload
    def tasks(
        self, id: None = None, state: State | str | None = None, exitcode: int | None = None,
        *, history: bool = False,
    ) -> list[Task]: ...  # fmt: skip

    @overload
    def tasks(
        self, id: int | str, state: State | str | None = None, exitcode: int | None = None,
        *, history: bool = False,
    ) -> Task: ...  # fmt: skip

    def tasks(
        self,
        id: int | str | None = None,
        state: State | str | None = None,
        exitcode: int | None = None,
        *,
        history: bool = False,
    ) -> Task | list[Task]:
        """With ``id`` (an int or an int-like string): that task of this queue, a
        :class:`Task`; UnknownTask (a ValueError and a LookupError) if there is none
        (in ``state``, with ``exitcode``, when those are given too).

        Without: a list of this queue's tasks in id order, only those in ``state``
        and with ``exitcode`` when given.  With ``history`` each carries its finished
        attempts (``task.history``).  Records can be set with ``task.set_state``."""
        if id is not None and state is None and _is_state(id):
            warnings.warn(
                "q.tasks(STATE) is deprecated since qdo 0.2, where the first argument is "
                "the task id (as in the original QDO): write q.tasks(state=STATE)",
                DeprecationWarning,
                stacklevel=2,
            )
            id, state = None, id
        if id is None:
            return list(self.iter_tasks(state=state, exitcode=exitcode, history=history))
        task_id = _task_id(id, text_ok=True)
        found = list(self.iter_tasks(state=state, id=task_id, history=history,
                                     exitcode=exitcode))  # fmt: skip
        if not found:
            which = "".join(
                f" {w} {v}" for w, v in (("in state", state), ("with exit code", exitcode))
                if v is not None
            )  # fmt: skip
            raise UnknownTask([task_id], f"task of queue {self.name!r}{which}")
        return found[0]

    def output(self, id: int | str) -> bytes | None:
        """What task ``id`` printed, every attempt's output in order; None if there is
        none (it printed nothing, or has not run).  Raises
        :class:`qdo.logs.LogDamaged` if a record of it is damaged, and InvalidInput if
        the database names a log outside this qdo's log folder (it reads none there)."""
        task = self.tasks(id, history=True)
        # each attempt's record; a log file of its own is the same for every attempt,
        # and a task that ran before attempts had logs has just its own
        where = [a.log for a in task.history if a.log]
        where.append(task.log or str(logs.log_path(self.settings.log_dir, self.name, task.id)))
        found = [logs.read(log, self.settings.log_dir) for log in dict.fromkeys(where)]
        kept = [data for data in found if data is not None]
        return b"".join(kept) if kept else None

    def iter_tasks(
        self,
        state: State | str | None = None,
        id: int | None = None,
        history: bool = False,
        page: int = 10_000,
        exitcode: int | None = None,
    ) -> Iterator[Task]:
        """Like :meth:`tasks` without an id, reading a page at a time (for very large
        queues); with ``id``, that task alone if it is there."""
        wanted = None if state is None else State.parse(state)
        if exitcode is not None:
            exitcode = _exit_code(State.FAILED, exitcode)  # checked as an exit code
        after = 0
        while True:
            if id is not None:
                batch = self.store.tasks(self.name, wanted, task_id=_task_id(id),
                                         exitcode=exitcode)  # fmt: skip
            else:
                batch = self.store.tasks(self.name, wanted, after=after, limit=page,
                                         exitcode=exitcode)  # fmt: skip
            for t in batch:
                t._handle = self
            if history and batch:
                attempts = self.store.attempts([t.id for t in batch])
                for t in batch:
                    t.history = tuple(attempts.get(t.id, ()))
            yield from batch
            if id is not None or len(batch) < page:
                return
            after = batch[-1].id

    # -- controlling ----------------------------------------------------------------------
    def pause(self) -> None:
        """Hand out nothing more; Running tasks finish and report as usual."""
        self.store.set_queue_state(self.name, QueueState.PAUSED)

    def resume(self) -> None:
        self.store.set_queue_state(self.name, QueueState.ACTIVE)

    def share(self, role: str, mode: str | None = "read") -> None:
        """Let PostgreSQL role ``role`` read this queue (``"read"``: its tasks, logs'
        records and status), or also add, run and reset its tasks (``"write"``), or no
        longer (``None``).  Only on a shared database (``qdo admin init-db``), where the
        database itself enforces it; only the queue's owner can share it."""
        if mode not in SHARE_MODES:
            raise InvalidInput(f"share mode {mode!r}: use 'read', 'write' or None (no longer)")
        if not isinstance(role, str) or not role:
            raise InvalidInput(f"share with {role!r}: give the name of a PostgreSQL role")
        self.store.share(self.name, role, mode)

    def shares(self) -> list[tuple[str, str]]:
        """(role, "read" | "write") for each role this queue is shared with."""
        return self.store.shares(self.name)

    def retry(self, ids: Sequence[int] | None = None) -> int:
        """Failed and Killed tasks (of ``ids`` only, if given) go back to Pending; return
        how many."""
        if ids is not None and (isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable)):
            raise InvalidInput(f"ids must be a list of task ids, got {_short(ids)}")
        return self.store.retry(self.name, ids=None if ids is None else [_task_id(i) for i in ids])

    def revive(self, priority: int | None = None) -> int:
        """Killed tasks go back to Pending (with ``priority``, if given), as in the fork
        of QDO that production runs; return how many."""
        if priority is not None:
            check_priority(priority)
        return self.store.retry(self.name, states=(State.KILLED,), priority=priority)

    def rerun(self) -> int:
        """Every task starts over (Pending, or Waiting on unfinished requirements)."""
        return self.store.rerun(self.name)

    def recover(self, dead: bool = False, *, all: bool = False) -> int:
        """Running tasks whose worker is gone go back to Pending at once; return how many.

        Gone means: its lease expired, or it ran on this host and its process no
        longer exists; with ``dead``, also: the batch job it ran in is no longer active
        (this machine's batch system is asked once).  With ``all`` every Running task
        goes back, as the original QDO's ``recover`` did: only for when you know
        nothing runs.  Either way each counts as an attempt whose worker was lost.
        """
        ids = self.store.requeue_expired(self.name)
        running = self.store.running_workers(self.name)
        if all:
            why = "recovered by hand (qdo recover --all)"
            return len(ids + self.store.requeue_workers(self.name, running, why=why))
        from . import jobstate  # (here: what every other command needs is imported quickly)

        host = hostname()
        gone = [w for w in running if dead_here(w, host)]
        ended = jobstate.ended(self.store.running_jobs(self.name)) if dead else []
        if gone:
            ids += self.store.requeue_workers(self.name, gone)
        if ended:
            ids += self.store.requeue_workers(self.name, jobids=ended, why="batch job ended")
        return len(ids)

    def dump(self, path: str | os.PathLike[str]) -> dict[str, int]:
        """Write the queue (every task and field, requirements and attempts) to an
        archive file that ``qdo.restore`` rebuilds on any backend; return the counts."""
        from . import archive

        return archive.dump(self.store, self.name, path)

    def delete(self) -> int:
        """Delete the queue and its tasks, and their logs here (``logs.remove``); return
        how many tasks were deleted."""
        n = self.store.delete_queue(self.name)
        logs.remove(self.settings.log_dir, self.name)
        return n


def left_to_run(status: dict[str, Any]) -> int:
    """How many tasks of a queue's ``status()`` may still run: Pending, Running, and
    Waiting but for those blocked by a requirement that cannot succeed."""
    n = status["ntasks"]
    return int(n["Pending"] + n["Running"] + n["Waiting"] - status["blocked"])


def _status(
    name: str, state: QueueState, by_state: dict[State, int], blocked: int
) -> dict[str, Any]:
    return {
        "name": name,
        "state": state.value,
        "ntasks": {s.value: by_state.get(s, 0) for s in State},
        "blocked": blocked,
    }


def _plain_commands(tasks: list[Any], priority: int) -> SameTasks | None:
    """The tasks as they are kept, if all are shell commands that ``_new_task`` would
    keep as they are (the common load), checked a condition at a time over the list
    (loops in C: a million in about 0.1 s); else None."""
    if not tasks or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        return None
    if set(map(type, tasks)) != {str} or any(map(str.isspace, tasks)):
        return None
    if min(map(len, tasks)) == 0 or max(map(len, tasks)) > MAX_PAYLOAD_BYTES // 4:
        return None
    if any(map(operator.contains, tasks, itertools.repeat("\0"))):
        return None
    if not all(map(str.isascii, tasks)):
        try:  # all of it as UTF-8 at once (in C); a lone surrogate: _new_task says which
            "".join(tasks).encode("utf-8")
        except UnicodeEncodeError:
            return None
    return SameTasks(tasks, False, priority)


def _new_task(index: int | None, task: Any, priority: Any, requires: Any) -> NewTask:
    if (
        type(task) is str and type(priority) is int and not requires
        and not task.isspace() and "\0" not in task and task.isascii()
        and 0 < len(task) <= MAX_PAYLOAD_BYTES // 4 and PRIORITY_MIN <= priority <= PRIORITY_MAX
    ):  # fmt: skip
        return NewTask(task, False, priority, ())  # the common case, checked inline: loads
    try:
        payload, is_json = encode_payload(task)
        return NewTask(payload, is_json, check_priority(priority), _requires(requires))
    except InvalidPayload as e:
        if index is None:
            raise
        raise InvalidPayload(f"task #{index}: {e}") from e


#: The most a retry or loss budget may be (they are 32-bit integers in the database).
MAX_LIMIT = 1_000_000


def _check_limits(max_retries: Any, max_lost: Any) -> None:
    for name, value, low in (("max_retries", max_retries, 0), ("max_lost", max_lost, 1)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int)
            or not low <= value <= MAX_LIMIT
        ):  # fmt: skip
            raise InvalidInput(
                f"{name} must be an integer from {low} to {MAX_LIMIT:,}, got {value!r}"
            )


def _check_timeout(timeout: Any) -> float | None:
    if timeout is None:
        return None
    if not is_seconds(timeout, positive=True):
        raise InvalidInput(
            f"timeout must be a positive number of seconds, up to a year, got {timeout!r}"
        )
    return float(timeout)


def _task_id(value: Any, text_ok: bool = False) -> int:
    """A task id from an int or an integer of numpy; with ``text_ok`` also from an
    int-like string ('42', as a REST client or a command line gives it)."""
    n = 0
    if isinstance(value, str) and text_ok:
        text = value.strip()
        if text.isascii() and text.isdigit():
            n = int(text)
    elif not isinstance(value, bool):
        with contextlib.suppress(TypeError):
            n = operator.index(value)
    if not 0 < n <= INT64_MAX:  # (what a task id column holds: beyond, no task has it)
        raise InvalidInput(f"invalid task id {_short(value)}: task ids are positive 64-bit "
                           "integers")  # fmt: skip
    return n


def _is_state(value: Any) -> bool:
    """Whether a value given where a task id goes is a state instead (qdo 0.1 order)."""
    if isinstance(value, State):
        return True
    if not isinstance(value, str) or value.strip().isdigit():
        return False
    try:
        State.parse(value)
    except InvalidState:
        return False
    return True


def _exit_code(state: State, err: Any) -> int | None:
    """The exit code to record: ``err`` if given (a 32-bit integer), else 0 for
    Succeeded."""
    if err is None:
        return 0 if state is State.SUCCEEDED else None
    code = None
    if not isinstance(err, bool):
        with contextlib.suppress(TypeError):
            code = operator.index(err)
    if code is None or not INT32_MIN <= code <= INT32_MAX:
        raise InvalidInput(f"err must be an integer exit code (32 bits), got {_short(err)}")
    return code


def _message(message: Any) -> str | None:
    if message is not None and not isinstance(message, str):
        raise InvalidInput(f"message must be a str or None, got {_short(message)}")
    return message


def _requires(requires: Any) -> tuple[int, ...]:
    if requires is None:
        return ()
    if isinstance(requires, int) and not isinstance(requires, bool):
        requires = [requires]
    if isinstance(requires, (str, bytes, Mapping)) or not isinstance(requires, Iterable):
        raise InvalidInput(f"requires must be a list of task ids, got {requires!r}")
    return tuple(_task_id(r) for r in requires)


def _same_length(what: str, values: Any, n: int) -> Sequence[Any]:
    """``values`` (a list, or any iterable) as a list of one entry per task."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise InvalidInput(f"{what} must be a list with one entry per task ({n}), "
                           f"got {_short(values)}")  # fmt: skip
    listed = list(values)
    if len(listed) != n:
        raise InvalidInput(f"{what} must have one entry per task ({n}), got {len(listed)}")
    return listed
