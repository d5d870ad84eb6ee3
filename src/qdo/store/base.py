"""The storage contract: what every qdo backend (SQLite, PostgreSQL) guarantees.

A store keeps queues and their tasks.  Its verbs work at the level of tasks,
never of SQL, and each verb is one transaction: it happens entirely or not at
all, whatever kills the process that calls it.

States and transitions (see :class:`qdo.models.State`)::

    add ──> Waiting ──(all requirements Succeeded)──> Pending ──claim──> Running
                                                         ^                  │
                    requeue_expired / recover / give back└──────────────────┤
                                                                            v
                                                  Succeeded | Failed | Killed

Leases.  ``claim`` hands out Pending tasks and marks each Running with the
claimer's worker id, a fresh lease token and a lease expiry measured by the
*store's* clock (``now + lease`` seconds).  A task is held by exactly one
(worker, token) at a time: two claims never return the same task while it is
Running.  The holder reports with ``finish`` (or ``renew``s the lease while it
works); a report whose token does not match the current one is refused, so a
worker that lost its lease can never overwrite the result of the next holder.
When a lease expires the task is handed out again (``requeue_expired``).

Users.  A store object acts for one ``user`` (the owner of the queues it names):
every verb that takes a queue name means that user's queue of that name.  Only
``list_queues`` and ``all_counts`` can look at everybody's (``all_users=True``).

Dependencies.  A task that requires others is Waiting until every one of them
has Succeeded.  When a task Succeeds, every dependent whose requirements have
now all Succeeded becomes Pending in the same transaction.  Requirements may
point at tasks in any queue of the same store; ids are unique in the store
and never reused.
"""

from __future__ import annotations

import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from ..errors import ConfigError
from ..models import (
    Attempt,
    QueueInfo,
    QueueState,
    State,
    Task,
    decode_payload,
    is_utf8,
    timestamp,
)

#: The columns of a task in an archive, and in what ``export_queue`` yields, in order.
TASK_COLUMNS = (
    "id", "payload", "is_json", "state", "priority", "exitcode", "message", "attempts",
    "created", "started", "finished", "worker", "jobid", "log", "lease_expires",
    "lease_token", "timeout", "max_retries", "failures", "lost",
)  # fmt: skip
#: A requirement: the task, the task it requires, and whether that one is in the queue.
REQUIRE_COLUMNS = ("task_id", "req_id", "internal")
#: One finished attempt of a task.
ATTEMPT_COLUMNS = (
    "task_id", "attempt", "state", "worker", "jobid", "started", "finished", "exitcode",
    "message", "cpu", "rss", "log",
)  # fmt: skip


class NewTask(NamedTuple):
    """A task to add: its payload already encoded (see ``models.encode_payload``).

    A NamedTuple rather than a frozen dataclass: loads build a million of these,
    and a tuple is made three times faster.
    """

    payload: str
    is_json: bool = False
    priority: int = 0
    requires: Sequence[int] = ()
    timeout: float | None = None
    max_retries: int | None = None


class SameTasks(NamedTuple):
    """Tasks alike in all but their payloads (already encoded and checked), in the
    columns they are kept in: a list of a million shell commands, say, is added without
    a tuple made for each (``Store.add_many`` takes this as well as NewTasks)."""

    payloads: Sequence[str]
    is_json: bool = False
    priority: int = 0


class Outcome(NamedTuple):
    """What a holder reports for one task it holds.  Its message and tail are kept as
    given, on every backend, but for what the text of a backend cannot hold (a NUL, a
    lone surrogate: U+FFFD stands in its place) and for the end of a message over 65,536
    characters, which is cut (``set_state``'s message likewise)."""

    task_id: int
    token: int
    state: State  # Succeeded, Failed, Killed, or Pending to give it back unrun
    exitcode: int | None = None
    message: str | None = None
    log: str | None = None  # where the attempt's output went
    started: float | None = None  # when it really started (epoch), if not at its claim
    #: a call's result (qdo.calls.encode_result): what it returned if Succeeded, what it
    #: raised if Failed; kept once the task's state is final (not when a retry follows)
    value: bytes | None = None
    cpu: float | None = None  # CPU seconds it used (user + system), where measured
    rss: int | None = None  # its peak resident memory, bytes, where measured
    #: when it really ended (epoch), if known: else when the report arrives (reports
    #: are batched: up to a fraction of a second later)
    ended: float | None = None
    #: the last line of its log, for a failure whose message says nothing more than its
    #: exit code (qdo.failures.signature)
    tail: str | None = None


class NewCall(NamedTuple):
    """A Python call to add to a queue of calls (see ``Store.submit_calls``)."""

    key: str  # the same key finds the same call again
    payload: str  # how it reads, for people (``qdo tasks``)
    call: bytes  # the function and its arguments (qdo.calls.encode_call)
    priority: int = 0
    requires: Sequence[int] = ()  # the calls whose results it takes (by task id)


class CallResult(NamedTuple):
    """A row of a call's results: ``item`` -1 for what the call returned (``ok``) or
    raised; 0, 1, ... for the items a generator yielded.  ``seq`` numbers the rows in
    the order they were written."""

    seq: int
    task_id: int
    item: int
    ok: bool
    data: bytes


class Submitted(NamedTuple):
    """What became of a submitted call: its task, the state it is in, and for a call
    found Succeeded, its result (read in the same transaction)."""

    task_id: int
    state: State
    new: bool  # made now (else found by its key)
    result: CallResult | None = None


class Item(NamedTuple):
    """An item that a running call's generator yielded (see ``Store.add_items``)."""

    task_id: int
    token: int  # the holder's lease token
    item: int  # 0, 1, ...: the order the generator yielded it in
    data: bytes  # pickled (qdo.calls.encode_result)


class Begun(NamedTuple):
    """A reserved task that its holder started (see ``Store.claim``)."""

    task_id: int
    token: int
    started: float  # epoch seconds


class Stats(NamedTuple):
    """What the Succeeded attempts of a queue took (``Store.stats``): run times (from
    their real start) in seconds, CPU efficiency (CPU seconds over run seconds, of those
    measured), peak resident memory in bytes; None where there is nothing to tell."""

    succeeded: int
    p50: float | None
    p95: float | None
    longest: float | None
    cpu_efficiency: float | None
    rss_p95: int | None


class FailureGroup(NamedTuple):
    """Failed or Killed tasks of a queue that went wrong the same way (``signature``, see
    qdo.failures): how many, and the first ids."""

    signature: str
    state: State
    exitcode: int | None
    count: int  # type: ignore[assignment]  # (a field: it hides tuple.count, unused here)
    examples: list[int]


#: Seconds between an agent's heartbeats (``Store.agent_seen``).
AGENT_BEAT = 10.0
#: An agent not seen for this long is gone (it died, or its node did).
AGENT_LIVE = 3 * AGENT_BEAT


class Agent(NamedTuple):
    """A live agent (``qdo do``) of a queue."""

    worker: str  # host:pid, as tasks name their holder
    host: str
    slots: int  # how many tasks it runs at once
    #: how many it keeps claimed: those running and those ahead of its slots, as many
    #: as its tasks' durations call for (a driver keeps that many in the queue for it)
    hand: int
    jobid: str | None  # the batch job it runs in
    started: float  # epoch seconds
    seen: float  # its last heartbeat


class Job(NamedTuple):
    """A batch job launched for a queue."""

    jobid: str
    profile: str
    workers: int
    submitted: float  # epoch seconds


class Counts(NamedTuple):
    """Number of tasks per state in one queue, and how many Waiting ones are stuck."""

    by_state: dict[State, int]
    blocked: int = 0  # Waiting on a requirement that Failed, was Killed, or was deleted
    #: Running, but claimed ahead by an agent and not started yet (one queue's counts)
    claimed: int = 0

    def by_state_names(self) -> dict[str, int]:
        return {state.value: n for state, n in self.by_state.items()}


NO_SHARING = (
    "sharing a queue needs a shared PostgreSQL database (its owner sets it up with "
    "`qdo admin init-db`), where each user connects as their own role; a SQLite file "
    "is one user's (qdo creates it readable by you alone)"
)


class Store(ABC):
    """A place where queues and tasks persist.  Safe to share between threads."""

    #: Where the data lives, for messages (a path, or a URL without password).
    location: str
    #: Whose queues this store object sees and changes.
    user: str

    # -- queues --------------------------------------------------------------------------
    @abstractmethod
    def create_queue(self, name: str) -> QueueInfo:
        """Create an empty Active queue.  Raises QueueExists if the name is taken."""

    @abstractmethod
    def get_queue(self, name: str) -> QueueInfo:
        """Return the queue's record.  Raises UnknownQueue."""

    @abstractmethod
    def list_queues(self, all_users: bool = False) -> list[QueueInfo]:
        """The user's queues (or everybody's), by name."""

    @abstractmethod
    def set_queue_state(self, name: str, state: QueueState) -> None:
        """Pause or resume a queue.  A paused queue hands out nothing; tasks already
        Running finish and report as usual.  Raises UnknownQueue."""

    @abstractmethod
    def set_queue_options(
        self, name: str, *, max_retries: int | None = None, max_lost: int | None = None
    ) -> QueueInfo:
        """Change a queue's retry policy (None leaves a value as it is).  Raises
        UnknownQueue."""

    @abstractmethod
    def delete_queue(self, name: str) -> int:
        """Delete a queue and all its tasks; return how many tasks went.  Tasks of other
        queues that required them stay Waiting and count as blocked."""

    # -- adding --------------------------------------------------------------------------
    @abstractmethod
    def add_many(
        self, queue: str, tasks: Iterable[NewTask] | SameTasks, *, create_queue: bool = False
    ) -> range:
        """Add tasks in one transaction and return their ids, consecutive and in order.

        ``tasks`` may be a generator of any length; it is consumed as a stream, so a
        million tasks need not be in memory at once.  If it raises, or a requirement
        names an id that does not exist yet, nothing is written (UnknownTask).  A new
        task is Pending, or Waiting if a requirement has not Succeeded.  With
        ``create_queue`` a missing queue is created in the same transaction.
        """

    @abstractmethod
    def add_requires(self, queue: str, task_id: int, requires: Sequence[int]) -> None:
        """Make an existing Waiting or Pending task of ``queue`` also require ``requires``.

        Refuses (and writes nothing) on unknown ids or a task of another queue
        (UnknownTask), on a task that
        already started (TaskNotEditable) and when a requirement depends on the task,
        directly or not, or is the task itself (DependencyCycle)."""

    # -- working -------------------------------------------------------------------------
    @abstractmethod
    def claim(
        self, queue: str, worker: str, n: int, lease: float, jobid: str | None = None,
        max_seconds: float | None = None, reserve: bool = False, calls: bool = False,
    ) -> list[Task]:  # fmt: skip
        """Hand out up to ``n`` Pending tasks of an Active queue, highest priority first,
        then lowest id.  Each becomes Running, its attempts grow by one, and it holds a
        new lease token until ``now + lease``.  Returns [] if there is nothing to hand
        out or the queue is paused.  ``max_seconds``: only tasks that declare no run
        time (``timeout``) or one of at most this (a worker whose batch job ends soon).

        With ``reserve`` they are only reserved (``started`` unset) until
        ``finish(begun=...)`` says they started: a reserved task whose holder vanishes
        goes back to Pending without counting as a lost attempt, since it never ran.
        ``calls``: the queue must be a queue of calls (else it must hold shell tasks):
        a claimer of the other kind gets nothing, so a call never runs as a command."""

    @abstractmethod
    def renew(self, worker: str, tokens: Sequence[tuple[int, int]], lease: float) -> list[int]:
        """Extend to ``now + lease`` the leases of the (task id, token) pairs that this
        worker still holds; return the ids it no longer holds."""

    @abstractmethod
    def finish(
        self, worker: str, outcomes: Sequence[Outcome], begun: Sequence[Begun] = ()
    ) -> list[int]:
        """Record outcomes in one transaction; return the ids whose report was refused
        because the worker no longer holds them (nothing is written for those).

        Every accepted outcome adds a row to the task's attempt history.  A Succeeded
        task releases its ready dependents.  A Failed task goes back to Pending while
        its ``failures`` are fewer than its ``max_retries`` (else the queue's).  Pending
        gives the task back unfinished: neither a failure nor a lost attempt.
        ``begun``: reserved tasks (see ``claim``) that the worker has started since,
        recorded first (one it no longer holds is left alone)."""

    @abstractmethod
    def set_state(
        self, queue: str, task_id: int, state: State, exitcode: int | None,
        message: str | None, who: str,
    ) -> State:  # fmt: skip
        """An administrative change of one task of ``queue``, whoever holds it, in one
        transaction; returns the state it is now in.

        ``state`` is Pending (Waiting instead while a requirement has not Succeeded;
        with fresh failure and loss budgets, as ``retry`` gives), Succeeded, Failed or
        Killed.  A Running task's lease is revoked: its holder's later report or renewal
        is refused.  The change is a row of the attempt history: it ends the running
        attempt, else it is an attempt of its own by ``who``; either way its message
        names ``who``.  Succeeded releases the ready dependents; a task that is no
        longer Succeeded makes its Pending dependents wait again.  Raises UnknownTask."""

    @abstractmethod
    def requeue_expired(self, queue: str | None = None) -> list[int]:
        """Running tasks whose lease expired (by the store's clock) lost their worker:
        each goes back to Pending, or becomes Killed once it lost ``max_lost`` workers
        (a queue setting).  A task that was only reserved, never started (see
        ``claim``), goes back to Pending and counts as no lost attempt.  Returns their
        ids.  Cheap when nothing expired: it looks before it takes a write lock."""

    @abstractmethod
    def requeue_workers(
        self, queue: str, workers: Sequence[str] | None = None,
        jobids: Sequence[str] | None = None, why: str = "process gone",
    ) -> list[int]:  # fmt: skip
        """Like ``requeue_expired``, for the Running tasks of ``queue`` held by
        ``workers`` or run in the batch jobs ``jobids`` (known to be dead), whatever
        their lease says; ``why`` goes into their message."""

    @abstractmethod
    def running_jobs(self, queue: str) -> list[str]:
        """Batch job ids recorded on the Running tasks of the queue."""

    # -- reading -------------------------------------------------------------------------
    @abstractmethod
    def counts(self, queue: str) -> Counts:
        """Task counts by state (every state present, zeros included)."""

    @abstractmethod
    def queue_status(self, queue: str) -> tuple[QueueInfo, Counts]:
        """The queue's record and its counts, read together (one transaction, where
        nothing expired), after ``requeue_expired`` of the queue."""

    @abstractmethod
    def all_counts(self, all_users: bool = False) -> dict[int, Counts]:
        """Counts of the user's queues (or everybody's), by queue id."""

    @abstractmethod
    def tasks(
        self,
        queue: str,
        state: State | None = None,
        task_id: int | None = None,
        after: int = 0,
        limit: int | None = None,
        exitcode: int | None = None,
    ) -> list[Task]:
        """Tasks of a queue in id order, optionally of one state, one id or one exit
        code, starting after id ``after`` (for paging through large queues)."""

    @abstractmethod
    def attempts(self, task_ids: Sequence[int]) -> dict[int, list[Attempt]]:
        """The finished attempts of each task, oldest first (reset by ``rerun``)."""

    @abstractmethod
    def running_workers(self, queue: str) -> list[str]:
        """Worker ids that hold Running tasks of the queue."""

    # -- resetting -----------------------------------------------------------------------
    @abstractmethod
    def retry(
        self, queue: str, states: Sequence[State] = (State.FAILED, State.KILLED),
        priority: int | None = None, ids: Sequence[int] | None = None,
        signatures: Sequence[str] | None = None,
    ) -> int:  # fmt: skip
        """Tasks in ``states`` (Failed and Killed) go back to Pending (Waiting if a
        requirement is no longer Succeeded) with fresh failure and loss budgets, and
        ``priority`` if given; return how many.  ``ids``: only those of these tasks;
        ``signatures``: only those of these failure groups."""

    @abstractmethod
    def failure_groups(
        self, queue: str, limit: int | None = None, examples: int = 5
    ) -> list[FailureGroup]:
        """The Failed and Killed tasks of ``queue`` grouped by signature, the largest
        groups first (``limit`` of them), each with its first ``examples`` ids."""

    @abstractmethod
    def rerun(self, queue: str) -> int:
        """Every task of the queue starts over: Pending, or Waiting where a requirement
        has not Succeeded; results, attempts (and their history) and leases are cleared.
        Pending tasks of other queues that required them become Waiting again.  Returns
        how many."""

    # -- batch jobs ----------------------------------------------------------------------
    @abstractmethod
    def add_job(self, queue: str, jobid: str, profile: str, workers: int) -> None:
        """Remember a batch job launched to work on ``queue``."""

    @abstractmethod
    def jobs(self, queue: str) -> list[Job]:
        """The batch jobs launched for ``queue``, oldest first."""

    @abstractmethod
    def last_id(self, queue: str) -> int:
        """The highest task id of ``queue`` (0 if it has none)."""

    @abstractmethod
    def stats(self, queue: str) -> Stats:
        """What the Succeeded attempts of ``queue`` took (see ``Stats``), in one read."""

    # -- agents -----------------------------------------------------------------------------
    @abstractmethod
    def agent_seen(
        self, queue: str, worker: str, host: str, slots: int, hand: int, jobid: str | None
    ) -> None:
        """An agent of ``queue`` is alive (added at its first heartbeat, then renewed:
        every ``AGENT_BEAT`` seconds, and soon when its hand changes much)."""

    @abstractmethod
    def agent_gone(self, queue: str, worker: str) -> None:
        """An agent of ``queue`` ended."""

    @abstractmethod
    def agents(self, queue: str) -> list[Agent]:
        """The live agents of ``queue`` (seen within ``AGENT_LIVE`` seconds), the oldest
        first."""

    @abstractmethod
    def pending_fits(self, queue: str, max_seconds: float) -> bool:
        """Whether a Pending task of ``queue`` declares no run time (``timeout``) or one
        of at most ``max_seconds``: what a batch job of that length could claim."""

    # -- waiting -------------------------------------------------------------------------
    #: Whether ``wait_for_tasks`` wakes when tasks arrive (else it just sleeps).
    notifies = False

    def listen(self, queue: str) -> None:
        """Start noticing new tasks of ``queue`` now, before looking for some, so that
        one added in between still wakes the next ``wait_for_tasks``."""
        del queue  # this one only sleeps: there is nothing to start

    def wait_for_tasks(
        self, queue: str, timeout: float, stop: Callable[[], bool] | None = None
    ) -> bool:
        """Block until tasks of ``queue`` may have become Pending, ``timeout`` seconds
        passed, or ``stop()`` (asked every second or so) says so; True if woken by new
        tasks.  This one just sleeps: a store that can be told (PostgreSQL's LISTEN)
        wakes at once, without asking the server anything while it waits."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0 and not (stop and stop()):
            time.sleep(min(left, 1.0))
        return False

    # -- sharing -------------------------------------------------------------------------
    def share(self, queue: str, role: str, mode: str | None) -> None:
        """Let ``role`` read (``mode="read"``), or read and change (``"write"``), a queue
        of this user's; ``None``: no longer.  Only a shared PostgreSQL database has roles
        to share with (``qdo admin init-db``)."""
        del queue, role, mode
        raise ConfigError(NO_SHARING)

    def shares(self, queue: str) -> list[tuple[str, str]]:
        """(role, mode) of each role a queue is shared with, by role."""
        del queue
        raise ConfigError(NO_SHARING)

    # -- calls (durable futures: qdo.executor) ---------------------------------------------
    @abstractmethod
    def make_call_queue(self, queue: str) -> None:
        """Make ``queue`` a queue of Python calls (kind "calls"), which ``qdo do`` runs
        in function worker processes; nothing if it is one already.  Raises
        InvalidInput if it holds shell tasks, UnknownQueue."""

    @abstractmethod
    def submit_calls(self, queue: str, calls: Sequence[NewCall]) -> list[Submitted]:
        """Add the calls whose key is new to this queue of calls, in one transaction;
        find the others by their key.  A call found Failed or Killed runs again (as
        ``retry`` would); one found Succeeded stays so, and its result comes back with
        it.  Returns what became of each, in order.  Raises InvalidInput for a queue of
        shell tasks."""

    @abstractmethod
    def call_data(self, task_ids: Sequence[int]) -> dict[int, bytes]:
        """The calls (``NewCall.call``) of these tasks, those that are calls."""

    @abstractmethod
    def results_since(self, queue: str, after: int, limit: int) -> list[CallResult]:
        """The queue's result rows with ``seq > after``, in seq order, at most
        ``limit``."""

    @abstractmethod
    def last_result(self, queue: str) -> int:
        """The highest seq of the queue's results (0: none yet)."""

    @abstractmethod
    def add_items(self, worker: str, items: Sequence[Item]) -> list[int]:
        """Keep the items that running calls' generators yielded, in one transaction, as
        results (``CallResult.item`` their index); return the ids of the tasks that this
        worker no longer holds (nothing is written for those).  An item an earlier
        attempt of the call wrote already stays as it was: a driver may have used it."""

    @abstractmethod
    def results_of(self, task_ids: Sequence[int]) -> list[CallResult]:
        """Every result row of these tasks, in seq order."""

    @abstractmethod
    def task_states(self, task_ids: Sequence[int]) -> dict[int, tuple[State, str | None]]:
        """The state and message of each of these tasks that exists."""

    @abstractmethod
    def cancel_calls(self, queue: str, task_ids: Sequence[int]) -> list[int]:
        """Delete those of these tasks of ``queue`` that are still Waiting or Pending
        (with their calls); return their ids."""

    @abstractmethod
    def forget_calls(self, queue: str) -> int:
        """Delete every task of ``queue`` (and its call and results), leaving the
        queue; return how many went."""

    # -- archives ------------------------------------------------------------------------
    @abstractmethod
    def export_queue(self, queue: str) -> Iterator[tuple[str, tuple[Any, ...]]]:
        """Everything of a queue, from one snapshot: ``("queue", QueueInfo fields)``
        and ``("span", (lowest id, highest id, number of tasks))`` first, then
        ``("task", row)`` in id order (``TASK_COLUMNS``), ``("requires", row)``
        (``REQUIRE_COLUMNS``) and ``("attempt", row)`` (``ATTEMPT_COLUMNS``)."""

    @abstractmethod
    def import_queue(
        self, name: str, info: QueueInfo, span: tuple[int, int], records: Iterable[Any]
    ) -> int:
        """Make queue ``name`` (of this user) from an export, in one transaction.

        ``span``: the lowest and highest task id of the export.  The tasks keep their ids
        when every id ever handed out here is below the lowest; otherwise all of them
        move up by the same offset past the highest id used here (ids are never reused),
        and so do the requirements between them.  ``records`` are the export's
        ("task" | "requires" | "attempt", row) pairs in that order; if it raises,
        nothing is written.  Returns the offset (0: ids kept).  Raises QueueExists."""

    # -- housekeeping --------------------------------------------------------------------
    @abstractmethod
    def check(self) -> list[str]:
        """Problems the database finds in itself (empty when healthy), among them a
        queue's count of tasks in a state that differs from the count kept for it."""

    @abstractmethod
    def repair_counts(self) -> None:
        """Count every queue's tasks by state again, and keep that (the database's
        owner; nothing changes a task meanwhile)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections held by this process."""


def queue_info(row: Any) -> QueueInfo:
    """A QueueInfo from a row of queues (id, name, state, created, max_retries, max_lost,
    owner, kind; by column name)."""
    return QueueInfo(id=row["id"], name=row["name"], state=QueueState(row["state"]),
                     created=timestamp(row["created"]), max_retries=row["max_retries"],
                     max_lost=row["max_lost"], owner=row["owner"],
                     kind=row["kind"])  # fmt: skip


#: The longest message kept, in characters (the end of a longer one is cut): a task's
#: output is for its log, and a dump's line must stay one that restore reads.
LONGEST_MESSAGE = 65_536
_NUL = "\x00"
_SURROGATE = re.compile("[\ud800-\udfff]")


def kept_text(text: str | None) -> str | None:
    """``text``, what a task said (a message, its log's last line), as every store keeps
    it: a NUL or a lone surrogate, which the text of neither backend can hold, becomes
    U+FFFD, and the end of a text longer than LONGEST_MESSAGE is cut."""
    if not text:
        return text
    if len(text) > LONGEST_MESSAGE:
        text = f"{text[:LONGEST_MESSAGE]} ... ({len(text) - LONGEST_MESSAGE:,} characters cut)"
    if _NUL in text:
        text = text.replace(_NUL, "\ufffd")
    return text if is_utf8(text) else _SURROGATE.sub("\ufffd", text)


#: The columns of a task's row (its archive's, and its queue's id), in the order in which
#: every statement that reads whole tasks returns them first (``Tx.tuples``).
TASK_ROW = ("id", "queue_id", *TASK_COLUMNS[1:])
_STATES = {s.value: s for s in State}


def task_from_row(row: Sequence[Any], queue: str, requires: Sequence[int]) -> Task:
    """A Task from a row of tasks that starts with TASK_ROW (a plain tuple)."""
    (id, _, payload, is_json, state, priority, exitcode, message, attempts, created,
     started, finished, worker, jobid, log, lease_expires, token, timeout, max_retries,
     failures, lost, *_) = row  # fmt: skip
    return Task(
        id=id, queue=queue, task=decode_payload(payload, bool(is_json)), state=_STATES[state],
        priority=priority, requires=tuple(requires), exitcode=exitcode, message=message,
        attempts=attempts, created=timestamp(created), started=timestamp(started),
        finished=timestamp(finished), worker=worker, jobid=jobid, log=log,
        lease_expires=timestamp(lease_expires), timeout=timeout, max_retries=max_retries,
        failures=failures, lost=lost, _token=token,
    )  # fmt: skip


class AdminChange(NamedTuple):
    """What an administrative change writes (see ``Store.set_state``): the task's new
    message and attempt count, and its attempt-history row (without the task id)."""

    message: str
    attempts: int
    history: tuple[Any, ...]


def admin_change(
    before: Any, state: State, exitcode: int | None, message: str | None, who: str,
    now: float,
) -> AdminChange:  # fmt: skip
    """The change of a task that was ``before`` (a row of state, attempts, worker, jobid,
    started): it ends the running attempt, else it is an attempt of its own, by ``who``."""
    old, attempts, worker = before["state"], before["attempts"], before["worker"]
    jobid, started = before["jobid"], before["started"]
    said = f"set to {state.value} by {who}"
    kind = "Returned" if state is State.PENDING else state.value
    if old == State.RUNNING.value:
        note = f"{said}, revoking the lease of {worker}"
        row = (attempts, kind, worker, jobid, started, now, exitcode,
               f"{message}; {note}" if message else note, None, None, None)  # fmt: skip
        return AdminChange(message or said, attempts, row)
    row = (attempts + 1, kind, who, None, None, now, exitcode,
           f"{message}; {said}" if message else said, None, None, None)  # fmt: skip
    return AdminChange(message or said, attempts + 1, row)


#: At most this much time (seconds) is given back to every lease after an outage.
MAX_OUTAGE_CREDIT = 60.0


def outage_credit(last_ok: float) -> float:
    """The time a write that goes through after writes failed (a full disk, a server
    away) gives the leases that ran out meanwhile, or would soon (``extend_leases``):
    the time since the last one went through (``last_ok``, on the monotonic clock), at
    most ``MAX_OUTAGE_CREDIT``.  The holders could not renew meanwhile; a dead one's
    task comes back at most that much later."""
    return min(max(0.0, time.monotonic() - last_ok), MAX_OUTAGE_CREDIT)


def login_name() -> str:
    """The user a store acts for unless told otherwise: the login name."""
    try:
        import getpass  # (here: few commands need it)

        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (some containers)
        return f"uid{os.getuid()}"


def id_offset(span: tuple[int, int], last_used: int) -> int:
    """How far imported ids move: not at all when every id used so far is below them."""
    low, _high = span
    return 0 if last_used < low else last_used + 1 - low


def counts_by_queue(
    queue_ids: Iterable[int],
    rows: Iterable[Any],
    blocked: Callable[[int], int],
) -> dict[int, Counts]:
    """Counts of each queue from rows of (queue_id, state, n); ``blocked(queue id)`` is
    asked only for a queue that has Waiting tasks."""
    by_id = {i: dict.fromkeys(State, 0) for i in queue_ids}
    for row in rows:
        if row["queue_id"] in by_id:
            by_id[row["queue_id"]][State(row["state"])] = row["n"]
    return {i: Counts(c, blocked(i) if c[State.WAITING] else 0) for i, c in by_id.items()}


def requires_by_task(rows: Iterable[Any]) -> dict[int, list[int]]:
    """``{task_id: [req_id, ...]}`` of rows of (task_id, req_id), in row order."""
    out: dict[int, list[int]] = {}
    for row in rows:
        out.setdefault(row["task_id"], []).append(row["req_id"])
    return out


def attempts_by_task(rows: Iterable[Any]) -> dict[int, list[Attempt]]:
    """Rows of ATTEMPT_COLUMNS as the Attempt history of each task, in row order."""
    out: dict[int, list[Attempt]] = {}
    for r in rows:
        out.setdefault(r["task_id"], []).append(Attempt(
            r["attempt"], r["state"], r["worker"], r["jobid"], timestamp(r["started"]),
            timestamp(r["finished"]), r["exitcode"], r["message"], r["cpu"], r["rss"], r["log"],
        ))  # fmt: skip
    return out
