"""The client library's heartbeat: a live holder never loses the tasks it got.

A task handed out by :meth:`qdo.Queue.get` is held under a lease.  One background
thread per process renews the lease of every task the process holds, each time a
third of it has passed, until the task is reported, handed back, or its lease is
found lost (an administrator set its state, or the queue was rerun).  It talks to the
database on a connection of its own (the stores keep one per thread).

A process that dies, or a node that is lost, stops renewing: its tasks come back by
themselves once their leases run out, as before.  After ``fork`` the child holds
nothing (its parent still does, and goes on renewing).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable

from .runtime import Log
from .store.base import Store

log = Log("qdo.heartbeat")

#: A lease is renewed when this share of it has passed since it was last renewed.
RENEW_AT = 1 / 3
#: After a failed renewal (the database away), try again this soon (seconds, at most).
RETRY_SECONDS = 5.0
#: With no renewal due sooner, the thread looks again after this many seconds: a new
#: task's first renewal is then almost never due before it looks, so ``hold`` need not
#: wake it (a wake-up for every ``get()`` cost a quarter of a fast client's rate).
IDLE_SECONDS = 1.0


class _Held:
    __slots__ = ("store", "worker", "task_id", "token", "lease", "due")

    def __init__(
        self, store: Store, worker: str, task_id: int, token: int, lease: float, due: float
    ) -> None:
        self.store = store
        self.worker = worker
        self.task_id = task_id
        self.token = token
        self.lease = lease
        self.due = due  # monotonic time of the next renewal


class Heartbeat:
    """Renews the leases of the tasks a process holds.  Use :func:`heartbeat`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._held: dict[tuple[int, int], _Held] = {}  # (id(store), task id) -> lease
        self._thread: threading.Thread | None = None
        self._wake_at = 0.0  # when the sleeping thread looks again (monotonic)
        self.renewals = 0  # renew calls made, for tests and benchmarks

    def hold(self, store: Store, worker: str, task_id: int, token: int, lease: float) -> None:
        """Keep renewing this task's lease (``lease`` seconds at a time) from now on."""
        entry = _Held(store, worker, task_id, token, lease, self._clock() + lease * RENEW_AT)
        with self._cond:
            self._held[(id(store), task_id)] = entry
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="qdo-heartbeat",
                                                daemon=True)  # fmt: skip
                self._thread.start()
            elif entry.due < self._wake_at:
                self._cond.notify()  # due before the thread looks again

    def renewed(self, store: Store, task_id: int, token: int, lease: float) -> None:
        """The holder renewed the lease itself (``Task.renew``): the next is due later."""
        with self._cond:
            entry = self._held.get((id(store), task_id))
            if entry is not None and entry.token == token:
                entry.lease = lease
                entry.due = self._clock() + lease * RENEW_AT

    def release(self, store: Store, task_id: int, token: int | None = None) -> None:
        """Stop renewing this task (reported, handed back, or taken away)."""
        with self._cond:
            key = (id(store), task_id)
            entry = self._held.get(key)
            if entry is not None and (token is None or entry.token == token):
                del self._held[key]

    def clear(self) -> None:
        """Stop renewing every lease (their tasks come back once the leases run out)."""
        with self._cond:
            self._held.clear()

    def holds(self, store: Store, task_id: int) -> bool:
        with self._cond:
            return (id(store), task_id) in self._held

    def __len__(self) -> int:
        with self._cond:
            return len(self._held)

    # -- the thread -----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                due = self._wait_for_due()
            for (store, worker, lease), entries in due.items():
                self._renew(store, worker, lease, entries)

    def _wait_for_due(self) -> dict[tuple[Store, str, float], list[_Held]]:
        """Sleep until some lease is due; return the due ones grouped by renew call
        (called with the lock held; the condition releases it while it sleeps)."""
        while True:
            now = self._clock()
            due: dict[tuple[Store, str, float], list[_Held]] = {}
            soonest = None
            for entry in self._held.values():
                if entry.due <= now:
                    due.setdefault((entry.store, entry.worker, entry.lease), []).append(entry)
                elif soonest is None or entry.due < soonest:
                    soonest = entry.due
            if due:
                return due
            self._wake_at = min(math.inf if soonest is None else soonest, now + IDLE_SECONDS)
            self._cond.wait(self._wake_at - now)

    def _renew(self, store: Store, worker: str, lease: float, entries: list[_Held]) -> None:
        try:
            lost = set(store.renew(worker, [(e.task_id, e.token) for e in entries], lease))
        except Exception as error:  # this thread must outlive any error
            # the database is away for now: keep the tasks, try again soon (the lease
            # has two thirds of its length left when the first renewal is due)
            log.warning("qdo: could not renew the leases of %d tasks: %s", len(entries), error)
            retry = self._clock() + min(RETRY_SECONDS, lease * RENEW_AT / 2)
            with self._cond:
                for e in entries:
                    e.due = retry
            return
        self.renewals += 1
        next_due = self._clock() + lease * RENEW_AT
        with self._cond:
            for e in entries:
                key = (id(e.store), e.task_id)
                if self._held.get(key) is not e:
                    continue  # reported (or held anew) meanwhile
                if e.task_id in lost:
                    del self._held[key]  # someone took it away: its report will be refused
                else:
                    e.due = next_due


_beat: Heartbeat | None = None
_beat_lock = threading.Lock()


def heartbeat() -> Heartbeat:
    """This process's heartbeat (made when first needed)."""
    global _beat
    beat = _beat
    if beat is None:
        with _beat_lock:
            if _beat is None:
                _beat = Heartbeat()
            beat = _beat
    return beat


def _forget_after_fork() -> None:
    # the parent's thread did not come along, and the parent renews its own tasks
    global _beat, _beat_lock
    _beat = None
    _beat_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
