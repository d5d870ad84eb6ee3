"""Futures of scheduled tasks: ``concurrent.futures.Future`` with dependencies.

A ``TaskFuture`` works with ``concurrent.futures.wait`` and ``as_completed``.  A future
of a generator task is also indexable: ``f[i]`` is the future of its i-th item, done as
soon as the generator yields it.

One private contract of ``concurrent.futures`` is relied on, and only one: a
``TaskFuture`` does not call ``Future.__init__`` but sets the six attributes it would
(``_condition``, ``_state``, ``_result``, ``_exception``, ``_waiters``,
``_done_callbacks``) in a leaner form, which ``Future``'s own methods and ``wait`` /
``as_completed`` then use.  Calling ``Future.__init__`` instead costs a
``threading.Condition`` and two lists a future, about ten objects more for the garbage
collector to walk: 100,000 no-op tasks took about a third longer with it (GC on).
``tests/integration/test_sched_internals.py`` checks that contract against the running
Python, so an upgrade that changes it fails there, loudly.  Everything else here is
public API (``threading`` locks, ``Future``'s public methods).
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import QdoError, error_text
from .plan import Node

if TYPE_CHECKING:
    from .scheduler import Queue, Scheduler

_NO_KWARGS: dict[str, Any] = {}
_NO_FUTURES: list[Any] = []
# the state Future.__init__ starts a future in, read off a real one rather than imported
# from the private concurrent.futures._base (part of the contract: see the docstring)
_PENDING: str = cf.Future()._state


class DependencyError(QdoError):
    """A task did not run because a task it depends on failed or was cancelled.

    ``cause`` is the failed task's exception (also this error's ``__cause__``)."""

    def __init__(self, task: str, requirement: str, cause: BaseException | None) -> None:
        self.cause = cause
        why = "was cancelled" if cause is None else f"raised {error_text(cause)}"
        super().__init__(f"{task} did not run: its requirement {requirement} {why}")


def take(lock: Any, blocking: bool = True, timeout: float = -1) -> bool:
    """Acquire ``lock`` without a convoy.  A blocking ``acquire`` that has to wait hands
    the lock to a thread that does not hold the GIL, and two busy threads then switch
    at every turn.  This tries first, then yields the GIL while the holder finishes
    (briefly: these locks guard a few lines), and blocks only if that takes long."""
    if lock.acquire(False):
        return True
    if not blocking:
        return False
    if timeout < 0:
        for _ in range(100):
            time.sleep(0)
            if lock.acquire(False):
                return True
    return bool(lock.acquire(True, timeout))


class Taken:
    """A lock's ``acquire``, ``release`` and ``with``, each taken through ``take``: the
    scheduler's lock and the futures' conditions are both this, over their own lock."""

    __slots__ = ("_lock",)
    _lock: Any

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return take(self._lock, blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return take(self._lock)

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


_MAKING = threading.Lock()  # makes each future's lock, once
# the class of what threading.RLock() returns: threading.RLock is a Python function around
# it, and calling the class itself saves that call (0.1 µs, at every task's start)
_RLock = type(threading.RLock())


class _Condition(Taken):
    """What ``concurrent.futures.Future`` needs of its ``_condition`` (a lock: ``with``,
    ``acquire``, ``release``; ``wait`` and ``notify_all``: checked by
    test_sched_internals), made afresh at each use over what the future keeps: its own
    lock, made when first needed (when its task starts, for most), and its list of
    sleeping waiters (None until one waits).  A ``threading.Condition`` would be eight
    objects more a future, and a kept future is walked by the garbage collector at
    every full collection.

    Each future has a lock of its own, never one shared by several:
    ``concurrent.futures.wait`` takes the lock of every future it waits for, in the
    order of their ``id()``, and two threads doing that with shared locks could each
    hold one the other wants.  And reentrant, as ``threading.Condition``'s is: with
    ``FIRST_EXCEPTION``, ``concurrent.futures.wait`` calls ``f.exception()`` while it
    holds ``f``'s condition."""

    __slots__ = ("_future",)

    def __init__(self, future: TaskFuture) -> None:
        self._future = future
        lock = future._mutex
        if lock is None:
            # two threads may want it at once: one makes it, under a lock of its own
            # (held for two lines, so it costs a busy worker next to nothing)
            take(_MAKING)
            try:
                lock = future._mutex
                if lock is None:
                    lock = future._mutex = _RLock()
            finally:
                _MAKING.release()
        self._lock = lock

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock until ``notify_all`` or ``timeout``; hold it again after,
        as many times over as before."""
        future = self._future
        lock = self._lock
        sleeper = threading.Lock()
        sleeper.acquire()
        if future._sleepers is None:
            future._sleepers = []
        future._sleepers.append(sleeper)
        # let go of the lock as many times as this thread holds it, as threading.Condition
        # does, but with public calls: a reentrant lock's release() raises RuntimeError
        # once this thread holds it no more (even if another thread took it meanwhile).
        # That one exception is paid only by a thread about to sleep.
        held = 0
        try:
            while True:
                lock.release()
                held += 1
        except RuntimeError:
            if not held:  # as threading.Condition.wait says
                if sleeper in (future._sleepers or ()):
                    future._sleepers.remove(sleeper)
                raise RuntimeError("cannot wait on un-acquired lock") from None
        woken = False
        try:
            if timeout is None:
                woken = sleeper.acquire()
            elif timeout > 0:
                woken = sleeper.acquire(True, timeout)
            else:
                woken = sleeper.acquire(False)
        finally:
            take(lock)
            for _ in range(held - 1):
                lock.acquire()
            sleepers = future._sleepers
            if not woken and sleepers is not None and sleeper in sleepers:
                sleepers.remove(sleeper)
        return woken

    def notify_all(self) -> None:
        future = self._future
        sleepers, future._sleepers = future._sleepers, None
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

    __slots__ = ("_state", "_result", "_exception", "_mutex", "_sleepers", "_scheduler",
                 "name", "_items", "_announced", "_produced", "owner", "fn", "args", "kwargs",
                 "resolve", "releases", "remote")  # fmt: skip
    _waiters = _ListWhenUsed()
    _done_callbacks = _ListWhenUsed()

    def __init__(self, scheduler: Scheduler, name: str) -> None:
        # what cf.Future.__init__ sets (the private contract of the module docstring), but
        # no condition of its own (see _Condition) and no empty lists (see _ListWhenUsed)
        Node.__init__(self)  # seq 0: in no plan until submitted
        self._state = _PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._mutex: Any = None  # a threading.RLock once needed: see _Condition
        self._sleepers: list[threading.Lock] | None = None  # threads in result(), ...
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
        # the future of the executor that ran it (a queue with an executor): an executor
        # that ``takes`` it gets it in place of the result, as an argument of a later task
        self.remote: cf.Future[Any] | None = None

    @property
    def _condition(self) -> _Condition:  # type: ignore[override]
        return _Condition(self)

    def __repr__(self) -> str:
        # the state as cf.Future keeps it, read without its lock: a future held by a
        # deadlocked thread can still be shown (pytest shows them when a test fails)
        return f"<TaskFuture {self.name} {self._state.lower()}>"

    def __bool__(self) -> bool:  # a future is true, whatever its len() would say
        return True

    def result(self, timeout: float | None = None) -> Any:
        """As ``concurrent.futures.Future.result``; waiting on a scheduler that is not
        running (never started, or stopped) warns, and its TimeoutError says so."""
        return self._waited(super().result, timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._waited(super().exception, timeout)  # type: ignore[no-any-return]

    def _waited(self, wait: Callable[[float | None], Any], timeout: float | None) -> Any:
        # (running ones end; asked only when idle: done() and running() take the lock)
        idle = not self._scheduler._running and not self.done() and not self.running()
        if idle and timeout is None:
            warnings.warn(
                f"waiting for {self.name} on a scheduler that is not running: call "
                "sch.start() (or this waits until another thread does)",
                RuntimeWarning,
                stacklevel=3,
            )
        try:
            return wait(timeout)
        except cf.TimeoutError as e:
            if self._scheduler._running:
                raise
            raise cf.TimeoutError(
                f"{self.name} did not finish within {timeout:g} s: its scheduler is not "
                "running (call sch.start())"
            ) from e

    def cancel(self) -> bool:
        """Cancel the task, and every task that depends on it, if it has not started
        (True if it was cancelled already, as for any concurrent.futures future)."""
        return self.cancelled() or self._scheduler._cancel(self)

    def __getitem__(self, index: int) -> TaskFuture:
        """The future of item ``index`` of a generator task."""
        if self._items is None:
            raise TypeError(f"{self.name} is not a generator task: its future has no items")
        return self._scheduler._item(self, index)

    def __len__(self) -> int:
        if self._announced is None:
            if getattr(self.fn, "number_of_results", None) is not None:
                raise TypeError(
                    f"{self.name} counts its results once its arguments are known (some are "
                    "futures): ask len() after it starts, or index its items meanwhile"
                )
            raise TypeError(f"{self.name} announced no number_of_results")
        return self._announced

    def __iter__(self) -> Any:
        raise TypeError("iterate with range(len(f)) and f[i]: a future is not a sequence")
