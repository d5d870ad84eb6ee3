"""Every error qdo raises on purpose is a :class:`QdoError`.

The message of each one is a single line that says what went wrong and what to
do next; the command line prints exactly that line.  Structured fields let
programs react without parsing messages.
"""

from __future__ import annotations

from collections.abc import Iterable


class QdoError(Exception):
    """Base class of all qdo errors."""


class QdoWarning(UserWarning):
    """Something works, but not the way it should (for example SQLite on NFS)."""


class ConfigError(QdoError):
    """A setting in the environment or in the qdorc file is not usable."""


class InvalidInput(QdoError, ValueError):
    """A value given to qdo (name, priority, payload, file, ...) is not acceptable."""


class InvalidQueueName(InvalidInput):
    def __init__(self, name: object) -> None:
        self.name = name
        super().__init__(
            f"invalid queue name {name!r}: use 1 to 100 characters from A-Z a-z 0-9 . _ - "
            "(but not . or .. alone)"
        )


class InvalidPriority(InvalidInput):
    def __init__(self, priority: object) -> None:
        self.priority = priority
        super().__init__(
            f"invalid priority {priority!r}: a priority is an integer "
            "(higher runs first, default 0)"
        )


class InvalidPayload(InvalidInput):
    """A task payload is not a non-empty string or a JSON value, or is too large."""


class InvalidState(InvalidInput):
    def __init__(self, state: object, allowed: Iterable[str]) -> None:
        self.state = state
        super().__init__(f"invalid state {state!r}: use one of {', '.join(allowed)}")


class UnknownQueue(QdoError, LookupError, ValueError):
    """No such queue.  Also a ValueError: that is what the original QDO raised, and what
    scripts written for it catch."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"no queue named {name!r}: see `qdo list`, or create it with `qdo create {name}`"
        )


class QueueExists(QdoError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"queue {name!r} already exists: use qdo.connect({name!r}) to open it, "
            f"or `qdo delete {name} --force` first"
        )


class UnknownTask(QdoError, LookupError, ValueError):
    """No such task (a ValueError too, as in the original QDO)."""

    def __init__(self, task_ids: Iterable[int], what: str = "task") -> None:
        self.task_ids = sorted(set(task_ids))
        shown = ", ".join(str(i) for i in self.task_ids[:10])
        more = f" and {len(self.task_ids) - 10} more" if len(self.task_ids) > 10 else ""
        super().__init__(f"no {what} with id {shown}{more}: check the ids with `qdo tasks`")


class DependencyCycle(QdoError):
    def __init__(self, task_id: int, requires: Iterable[int]) -> None:
        self.task_id = task_id
        self.requires = sorted(set(requires))
        super().__init__(
            f"task {task_id} cannot require {', '.join(map(str, self.requires))}: "
            "that task already depends on it, so this would make a cycle"
        )


class TaskNotEditable(QdoError):
    """The task is in a state in which the requested change makes no sense."""


class LeaseLost(QdoError):
    """A result was reported for a task this client no longer holds.

    This happens when the lease expired (the task was handed to someone else
    or put back) or when the queue was rerun meanwhile.  The result is dropped.
    """

    def __init__(self, task_id: int, worker: str) -> None:
        self.task_id = task_id
        self.worker = worker
        super().__init__(
            f"task {task_id} is no longer held by {worker}: its lease ran out (the process "
            "stopped renewing it), someone set its state (set_task_state), the queue was "
            "rerun, or it was deleted (with its queue); this result was not recorded"
        )


class DatabaseError(QdoError):
    """The database cannot be opened or used (not a qdo database, too new, broken)."""


class SchemaTooNew(DatabaseError):
    def __init__(self, where: str, found: int, supported: int) -> None:
        self.found = found
        self.supported = supported
        super().__init__(
            f"{where} has qdo schema version {found}, newer than this qdo understands "
            f"({supported}): upgrade qdo (pip install -U qdo-queue)"
        )


class NotQdoDatabase(DatabaseError):
    def __init__(self, where: str, why: str) -> None:
        self.where = where
        super().__init__(
            f"{where} is not a qdo database ({why}): point QDO_DB_NAME elsewhere (see `qdo config`)"
        )


class BadArchive(InvalidInput):
    """A queue archive is corrupt, truncated or not an archive at all: nothing restored."""

    def __init__(self, path: str, why: str) -> None:
        self.path = path
        self.why = why
        super().__init__(f"{path} is not a usable qdo archive ({why}): nothing was restored")


class NotAllowed(QdoError):
    """The database refused: the queue is another user's, not shared with you for this
    (a shared PostgreSQL keeps each role to its own queues; see ``qdo share``)."""

    def __init__(self, where: str, why: str) -> None:
        self.where = where
        super().__init__(
            f"PostgreSQL at {where} refused: {why} (another user's queues are reached only "
            "when they share them with you: qdo share QUEUE --with ROLE --read|--write)"
        )


class DiskFull(DatabaseError):
    """The disk that holds the database is full: the change was not made (nothing of
    it was written).  Free some space, and it can be made again."""

    def __init__(self, where: str, detail: str) -> None:
        self.where = where
        super().__init__(
            f"disk full: {where} cannot grow ({detail}); nothing was written: free some "
            "space and try again"
        )


class CallFailed(QdoError):
    """A call of a durable executor (``qdo.executor``) ended without a result of its
    own: Killed (its worker was lost too often, it timed out, an administrator said
    so) or Failed outside the function (its result was too large, say)."""

    def __init__(self, queue: str, task_id: int, state: str, message: str | None) -> None:
        self.queue, self.task_id, self.state = queue, task_id, state
        which = f"call {task_id}" if task_id else "a call (not submitted yet)"  # (0: none)
        super().__init__(f"{which} of queue {queue!r} is {state}: {message or 'no reason given'}")


class RemoteTraceback(Exception):
    """The traceback of an exception raised by a call in a worker process, attached as
    the ``__cause__`` of the exception its future raises (as ``ProcessPoolExecutor``
    does)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


def error_text(error: BaseException) -> str:
    """``Type: message`` of an exception, whatever its ``__str__`` does (a user's
    exception may raise there: its text is then said to be unreadable, and nothing that
    reports it fails)."""
    try:
        text = str(error)
    except Exception as e:  # noqa: BLE001 - any: its __str__ is the user's code
        text = f"<its message cannot be read: {type(e).__name__} in its __str__>"
    return f"{type(error).__name__}: {text}"


def error_repr(error: BaseException) -> str:
    """``repr(error)``, whatever its ``__repr__`` does."""
    try:
        return repr(error)
    except Exception:  # noqa: BLE001 - any: its __repr__ is the user's code
        return f"<{error_text(error)}>"
