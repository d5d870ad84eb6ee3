"""The task model shared by every part of qdo: states, records, payload encoding."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from enum import Enum
from typing import Any, ClassVar, NamedTuple, Protocol

from .errors import InvalidInput, InvalidPayload, InvalidPriority, InvalidQueueName, InvalidState

#: A payload larger than this (in UTF-8 bytes) is refused: queues hold commands and
#: parameters, not data.  Put data in files and pass their names.
MAX_PAYLOAD_BYTES = 1_000_000

#: Lists and objects nested deeper than this are refused: decoding them takes a deep
#: recursion, which would fail in whoever claims the task, not where it was added.
MAX_PAYLOAD_DEPTH = 100

#: What a column of 64-bit integers holds (ids, tokens, priorities, counts of bytes).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: What a column of 32-bit integers holds (exit codes, attempt counts).
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
#: Priorities are stored as 64-bit integers.
PRIORITY_MIN, PRIORITY_MAX = INT64_MIN, INT64_MAX
#: The most slots one agent runs: beyond that, run more agents (qdo launch --jobs).
MAX_WORKERS = 1024
#: The most batch jobs one launch submits (each runs an agent of up to MAX_WORKERS).
MAX_JOBS = 10_000
#: The longest duration qdo takes (a lease, a timeout), seconds: a year.  The times it
#: leads to must stay dates (a lease of 1e308 seconds never ran out, and every reading of
#: its task failed: no datetime holds its end).
MAX_SECONDS = 366 * 86_400.0

_QUEUE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
_USER_NAME = re.compile(r"[A-Za-z0-9._@-]{1,100}")


class State(str, Enum):
    """The state of a task.  Stored as its text value."""

    WAITING = "Waiting"  # a requirement has not Succeeded
    PENDING = "Pending"  # ready to be handed out
    RUNNING = "Running"  # handed out, held by a lease
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"  # ran and failed
    KILLED = "Killed"  # lost its worker too often, timed out, or was cancelled

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: object) -> State:
        """Accept a State or its name in any case ('failed', 'FAILED', 'Failed')."""
        if isinstance(value, State):
            return value
        if isinstance(value, str):
            for state in cls:
                if value.lower() == state.value.lower():
                    return state
        raise InvalidState(value, [s.value for s in cls])


#: States a task may be set to by whoever holds it.
FINAL_STATES = (State.SUCCEEDED, State.FAILED, State.KILLED)


class QueueState(str, Enum):
    ACTIVE = "Active"
    PAUSED = "Paused"

    def __str__(self) -> str:
        return self.value


def check_queue_name(name: object) -> str:
    if not isinstance(name, str) or not _QUEUE_NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidQueueName(name)
    return name


def check_user_name(user: object) -> str:
    if not isinstance(user, str) or not _USER_NAME.fullmatch(user):
        raise InvalidInput(
            f"invalid user name {user!r}: use 1 to 100 characters from A-Z a-z 0-9 . _ @ -"
        )
    return user


def is_seconds(value: object, positive: bool = False) -> bool:
    """Whether ``value`` is a duration qdo takes: a number of seconds from 0 (more than
    0 if ``positive``) to MAX_SECONDS."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and (value > 0 if positive else value >= 0) and value <= MAX_SECONDS)  # fmt: skip


def is_utf8(text: str) -> bool:
    """Whether ``text`` can be stored as UTF-8: it holds no lone surrogate (as a name
    decoded with ``surrogateescape`` does, where its bytes are not UTF-8)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_priority(priority: object) -> int:
    # bool is an int subclass, but True as a priority is a mistake, not a number
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidPriority(priority)
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise InvalidPriority(priority)
    return priority


#: (made once: json.dumps with options makes an encoder at every call)
_PAYLOAD = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def encode_payload(task: object) -> tuple[str, bool]:
    """Return (text, is_json) for a task payload, or raise InvalidPayload.

    A str is a shell command and is stored as it is; anything else must be a
    JSON value (dict, list, number, bool) and is stored as JSON text.
    """
    if isinstance(task, str):
        if not task or task.isspace():
            raise InvalidPayload("a shell task must not be empty")
        if "\0" in task:
            raise InvalidPayload("a shell task must not contain NUL characters")
        text, is_json = task, False
    else:
        if task is None:
            raise InvalidPayload("a task must be a shell command (str) or a JSON value, not None")
        try:
            text = _PAYLOAD.encode(task)
        except RecursionError:
            text = ""  # (too deep)
        except (TypeError, ValueError) as e:
            raise InvalidPayload(
                f"task {_short(task)} is not a str and does not serialize to JSON: {e}"
            ) from e
        # (its text takes 2 characters a level: a short one cannot nest too deep)
        if not text or len(text) > 2 * MAX_PAYLOAD_DEPTH and _too_deep(task):
            raise InvalidPayload(
                f"task {_short(task)} nests lists or objects more than {MAX_PAYLOAD_DEPTH} "
                "deep: flatten it, or keep the data in a file and pass its name"
            )
        is_json = True
    if not text.isascii():
        _check_unicode(text, task)
    if len(text) > MAX_PAYLOAD_BYTES // 4 and len(text.encode()) > MAX_PAYLOAD_BYTES:
        raise InvalidPayload(
            f"task payload of {len(text.encode()):,} bytes is larger than the limit of "
            f"{MAX_PAYLOAD_BYTES:,}: keep data in files and pass their names"
        )
    return text, is_json


def _check_unicode(text: str, task: object) -> None:
    """Raise InvalidPayload if ``text`` cannot be stored as UTF-8: it holds a lone
    surrogate, as a name decoded with ``surrogateescape`` does (``os.listdir``, ``argv``)
    where its bytes are not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = text[e.start : e.end]
        raise InvalidPayload(
            f"task {_short(task)} is not valid Unicode text: it holds {bad!r}, a lone "
            "surrogate (bytes that are not UTF-8, as os.listdir and sys.argv give them "
            "for such file names)"
        ) from None


def _too_deep(value: object) -> bool:
    """Whether lists and dicts nest deeper than MAX_PAYLOAD_DEPTH (walked without
    recursion; a value that contains itself counts as too deep)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, tuple, dict)):
            if depth > MAX_PAYLOAD_DEPTH:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children if isinstance(c, (list, tuple, dict)))
    return False


class UnreadablePayload:
    """The payload of a task that cannot be decoded (written by something other than
    ``add``, or by an older qdo): whoever claims it fails it, with ``why``."""

    __slots__ = ("text", "why")

    def __init__(self, text: str, why: str) -> None:
        self.text, self.why = text, why

    def __repr__(self) -> str:
        return f"<unreadable payload: {self.why}>"

    @property
    def failure(self) -> str:
        """The message of the task that fails for it."""
        return f"qdo cannot read this task's payload ({self.why})"


def decode_payload(text: str, is_json: bool) -> Any:
    if not is_json:
        return text
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        return UnreadablePayload(text, f"{type(e).__name__}: {e}")


def _short(value: object, width: int = 60) -> str:
    try:
        r = repr(value)
    except RecursionError:
        return f"<a {type(value).__name__} nested too deep to show>"
    except ValueError:  # (an int of more digits than Python converts to text)
        return f"<a {type(value).__name__} too big to show>"
    return r if len(r) <= width else r[: width - 3] + "..."


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else (end - start).total_seconds()


def timestamp(value: float | None) -> datetime | None:
    """A stored epoch time as an aware UTC datetime."""
    return None if value is None else datetime.fromtimestamp(value, timezone.utc)


class TaskHandle(Protocol):
    """What a task record calls back into to change its task (its queue, which
    passes itself in): kept to a protocol, so that records know nothing of queues."""

    def _report(self, task: Task, state: State, err: int | None, message: str | None) -> None:
        """Report the result of a task this client holds."""

    def _set(self, task: Task, state: State, err: int | None, message: str | None) -> None:
        """Set the state of a task by hand (whoever holds it loses it)."""

    def _renew(self, task: Task, seconds: float | None) -> None:
        """Extend the lease of a task this client holds."""


class Task:
    """One task as read from a queue.

    A task returned by :meth:`qdo.Queue.get` is held by this client (it is
    Running, under a lease that the client library renews while this process
    lives) and is reported with :meth:`set_state`.  A record returned by
    :meth:`qdo.Queue.tasks` can be set too: that is an administrative change
    (:meth:`qdo.Queue.set_task_state`).  This class is not frozen only because
    ``set_state`` updates the copy in hand to match the database.
    """

    WAITING: ClassVar[State] = State.WAITING
    PENDING: ClassVar[State] = State.PENDING
    RUNNING: ClassVar[State] = State.RUNNING
    SUCCEEDED: ClassVar[State] = State.SUCCEEDED
    FAILED: ClassVar[State] = State.FAILED
    KILLED: ClassVar[State] = State.KILLED
    #: Every state, in the order of a task's life (as the original QDO has it).
    VALID_STATES: ClassVar[tuple[State, ...]] = tuple(State)

    __slots__ = (
        "id", "queue", "task", "state", "priority", "requires", "exitcode", "message",
        "attempts", "created", "started", "finished", "worker", "jobid", "log",
        "lease_expires", "timeout", "max_retries", "failures", "lost", "history",
        "_handle", "_token", "_held",
    )  # fmt: skip

    # (written out, not a dataclass: a frozen or slotted dataclass costs a command's
    # start-up about half a millisecond each, and its module about five)
    def __init__(
        self,
        id: int,
        queue: str,
        task: Any,
        state: State,
        priority: int = 0,
        requires: Sequence[int] = (),
        exitcode: int | None = None,
        message: str | None = None,
        attempts: int = 0,
        created: datetime | None = None,
        started: datetime | None = None,
        finished: datetime | None = None,
        worker: str | None = None,
        jobid: str | None = None,
        log: str | None = None,
        lease_expires: datetime | None = None,
        timeout: float | None = None,  # seconds; None: no limit (or the worker's --timeout)
        max_retries: int | None = None,  # None: the queue's
        failures: int = 0,  # attempts that Failed
        lost: int = 0,  # attempts whose worker vanished
        history: Sequence[Attempt] = (),  # earlier attempts, when asked for
        _handle: TaskHandle | None = None,
        _token: int | None = None,
        _held: bool = False,  # handed out by get()
    ) -> None:
        self.id = id
        self.queue = queue
        self.task = task
        self.state = state
        self.priority = priority
        self.requires = requires
        self.exitcode = exitcode
        self.message = message
        self.attempts = attempts
        self.created = created
        self.started = started
        self.finished = finished
        self.worker = worker
        self.jobid = jobid
        self.log = log
        self.lease_expires = lease_expires
        self.timeout = timeout
        self.max_retries = max_retries
        self.failures = failures
        self.lost = lost
        self.history = history
        self._handle = _handle
        self._token = _token
        self._held = _held

    def __repr__(self) -> str:
        return f"<qdo.Task {self.id} of {self.queue!r} {self.state.value}: {_short(self.task)}>"

    def set_state(
        self, state: State | str, err: int | None = None, message: str | None = None
    ) -> None:
        """Report the result of a task this client got with ``get()``, or set the
        state of a record read with ``tasks()``.

        For a task this client holds, ``state`` is Succeeded, Failed or Killed, or
        Pending to hand it back unrun; ``err`` is the exit code (0 by default for
        Succeeded).  Raises :class:`qdo.errors.LeaseLost` if this client no longer
        holds it (its lease ran out, or someone set its state meanwhile).  On any
        other record it is :meth:`qdo.Queue.set_task_state`: whoever holds it loses it.
        """
        if self._handle is None:
            raise InvalidState(state, ["(this task record belongs to no queue)"])
        if self._held:
            self._handle._report(self, State.parse(state), err, message)
        else:
            self._handle._set(self, State.parse(state), err, message)

    def renew(self, seconds: float | None = None) -> None:
        """Extend the lease of a task this client holds (for long tasks)."""
        if self._handle is None:
            raise InvalidState("renew", ["(this task was not handed out by get())"])
        self._handle._renew(self, seconds)

    @property
    def duration(self) -> float | None:
        """Seconds the last attempt ran (None until it finished)."""
        return seconds_between(self.started, self.finished)

    @property
    def err(self) -> int | None:
        """The exit code of the last attempt (the original QDO's name for it)."""
        return self.exitcode

    @property
    def is_shell(self) -> bool:
        return isinstance(self.task, str)

    def to_dict(self) -> dict[str, Any]:
        """All fields as JSON-friendly values (times as ISO 8601 UTC)."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            if name.startswith("_"):
                continue
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, State):
                value = value.value
            elif name == "requires":
                value = list(value)
            elif name == "history":
                value = [
                    {k: (v.isoformat() if isinstance(v, datetime) else v)
                     for k, v in a._asdict().items()}
                    for a in value
                ]  # fmt: skip
            out[name] = value
        return out


class QueueInfo(NamedTuple):
    """A queue's own record (not its task counts)."""

    id: int
    name: str
    state: QueueState
    created: datetime | None = None
    max_retries: int = 0  # a Failed task runs again up to this many times
    max_lost: int = 3  # a task whose worker vanished this many times is Killed
    owner: str = ""  # the user whose queue it is
    kind: str = "shell"  # what its tasks are: shell commands, or Python calls (executor)


class Attempt(NamedTuple):
    """One finished hand-out of a task.  ``state`` is Succeeded, Failed or Killed, or
    Lost (its worker vanished) or Returned (handed back unfinished)."""

    attempt: int
    state: str
    worker: str | None = None
    jobid: str | None = None
    started: datetime | None = None
    finished: datetime | None = None
    exitcode: int | None = None
    message: str | None = None
    cpu: float | None = None  # CPU seconds used (user + system), where measured
    rss: int | None = None  # peak resident memory in bytes, where measured
    log: str | None = None  # where its output went (qdo.logs), if it printed anything

    @property
    def duration(self) -> float | None:
        return seconds_between(self.started, self.finished)
