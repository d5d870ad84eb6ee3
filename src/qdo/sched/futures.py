"""Futures of scheduled tasks: ``concurrent.futures.Future`` with dependencies.

A ``TaskFuture`` works with ``concurrent.futures.wait`` and ``as_completed``.  A future
of a generator task is also indexable: ``f[i]`` is the future of its i-th item, done as
soon as the generator yields it.
"""

from __future__ import annotations

import _thread
import concurrent.futures as cf
from collections.abc import Callable
from concurrent.futures._base import PENDING
from typing import TYPE_CHECKING, Any

from ..errors import QdoError
from .plan import Node

if TYPE_CHECKING:
    from .scheduler import Queue, Scheduler

_NO_KWARGS: dict[str, Any] = {}
_NO_FUTURES: list[Any] = []


class DependencyError(QdoError):
    """A task did not run because a task it depends on failed or was cancelled.

    ``cause`` is the failed task's exception (also this error's ``__cause__``)."""

    def __init__(self, task: str, requirement: str, cause: BaseException | None) -> None:
        self.cause = cause
        why = "was cancelled" if cause is None else f"raised {type(cause).__name__}: {cause}"
        super().__init__(f"{task} did not run: its requirement {requirement} {why}")


class _Signal:
    """What ``concurrent.futures.Future`` needs of its ``_condition`` (a lock, ``wait``
    and ``notify_all``), in two objects where ``threading.Condition`` takes eight: a
    million futures are a million of them for the garbage collector to walk.  Every
    user of a future's condition takes it once at a time, so the lock need not be
    reentrant."""

    __slots__ = ("_lock", "_sleepers")

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._sleepers: list[_thread.LockType] | None = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock until ``notify_all`` or ``timeout``; hold it again after."""
        sleeper = _thread.allocate_lock()
        sleeper.acquire()
        if self._sleepers is None:
            self._sleepers = []
        self._sleepers.append(sleeper)
        self._lock.release()
        woken = False
        try:
            if timeout is None:
                woken = sleeper.acquire()
            elif timeout > 0:
                woken = sleeper.acquire(True, timeout)
            else:
                woken = sleeper.acquire(False)
        finally:
            self._lock.acquire()
            if not woken and self._sleepers is not None and sleeper in self._sleepers:
                self._sleepers.remove(sleeper)
        return woken

    def notify_all(self) -> None:
        sleepers, self._sleepers = self._sleepers, None
        for sleeper in sleepers or ():
            sleeper.release()


class _ListWhenUsed:
    """A list attribute of ``cf.Future`` (``_waiters``, ``_done_callbacks``) that only
    exists once something is put in it: most futures never get a waiter or a callback,
    and two empty lists a future are two more objects for the garbage collector.

    Read before any ``append``, it is an empty stand-in; the first ``append`` (made
    under the future's lock, as ``concurrent.futures`` does) puts a real list in the
    instance, which hides this descriptor from then on."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        return self if obj is None else _NoneYet(obj, self.name)


class _NoneYet:
    __slots__ = ("_obj", "_name")

    def __init__(self, obj: object, name: str) -> None:
        self._obj = obj
        self._name = name

    def append(self, item: Any) -> None:
        self._obj.__dict__[self._name] = [item]

    def remove(self, item: Any) -> None:
        raise ValueError(f"{item!r} is not in the list")

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 0


class TaskFuture(cf.Future[Any], Node):
    """The result of a submitted task (or of one item of a generator task).

    A task's future is also its node in the plan, and keeps what the scheduler needs to
    run it: one object a task, where a future, a node and a job would be three for the
    garbage collector to walk at every full collection.  The attributes it has from
    ``Node`` (``seq``, ``state``, ...) and the job's (``fn``, ``args``, ...) are the
    scheduler's, not part of the API."""

    __slots__ = ("_state", "_result", "_exception", "_scheduler", "name", "_items",
                 "_announced", "_produced", "owner", "fn", "args", "kwargs", "resolve",
                 "releases")  # fmt: skip
    _waiters = _ListWhenUsed()
    _done_callbacks = _ListWhenUsed()

    def __init__(self, scheduler: Scheduler, name: str) -> None:
        # what cf.Future.__init__ sets, with a lighter condition (see _Signal), made
        # only when first used (``_condition``): a task waiting for its turn costs no lock
        Node.__init__(self)  # seq 0: in no plan until submitted
        self._state = PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._scheduler = scheduler
        self.name = name
        self._items: dict[int, TaskFuture] | None = None  # generator tasks only
        self._announced: int | None = None
        self._produced: list[Any]  # a generator task's items so far (generator tasks only)
        # the job: who runs it, and the call (let go once it ran)
        self.owner: Queue | None = None  # None for a generator's item
        self.fn: Callable[..., Any] | None = None
        self.args: tuple[Any, ...] = ()
        # empty ones are not kept: a million tasks would keep a million empty containers
        self.kwargs: dict[str, Any] = _NO_KWARGS
        self.resolve = False  # futures among the arguments, to replace by their results
        self.releases: list[TaskFuture] = _NO_FUTURES  # the hold tasks it ends the sessions of

    @property
    def _condition(self) -> _Signal:  # type: ignore[override]
        attrs = self.__dict__
        signal: _Signal | None = attrs.get("_signal")
        if signal is None:
            # two threads may each make one; setdefault (atomic) keeps the first.  (A
            # lock here would be taken by every task: two workers would then queue on
            # it and hand the GIL back and forth at every task.)
            signal = attrs.setdefault("_signal", _Signal())
        return signal

    def __repr__(self) -> str:
        return f"<TaskFuture {self.name} {self._state.lower()}>"

    def __bool__(self) -> bool:  # a future is true, whatever its len() would say
        return True

    def cancel(self) -> bool:
        """Cancel the task, and every task that depends on it, if it has not started."""
        return self._scheduler._cancel(self)

    def __getitem__(self, index: int) -> TaskFuture:
        """The future of item ``index`` of a generator task."""
        if self._items is None:
            raise TypeError(f"{self.name} is not a generator task: its future has no items")
        return self._scheduler._item(self, index)

    def __len__(self) -> int:
        if self._announced is None:
            raise TypeError(f"{self.name} announced no number_of_results")
        return self._announced

    def __iter__(self) -> Any:
        raise TypeError("iterate with range(len(f)) and f[i]: a future is not a sequence")
