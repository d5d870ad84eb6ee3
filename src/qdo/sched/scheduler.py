"""The threads around the pure planner: queues of workers, futures, stop and resume.

One lock guards the planner; tasks run outside it, and future callbacks run outside
it too (as in ``concurrent.futures``).  A thread queue owns ``max_workers`` threads
that take their next task themselves; a queue with another executor hands tasks to
it and is called back when they end.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import copy
import inspect
import json
import math
import operator
import os
import pickle
import threading
import time
import warnings
from array import array
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import InvalidInput
from .futures import _NO_KWARGS, DependencyError, Taken, TaskFuture
from .plan import DONE, FAILED, Node, Planner, PlanQueue


class Scheduler:
    """Runs tasks submitted to its queues, output-first.  ``start()`` returns at once."""

    def __init__(self) -> None:
        self._lock = _Lock()
        # (threading.Condition uses only the lock's acquire and release: any lock will do;
        # its docs say a Lock or an RLock, so test_sched_internals checks it does)
        self._idle = threading.Condition(self._lock)  # type: ignore[arg-type]
        self._planner = Planner()
        self._queues: list[Queue] = []
        self._running = False
        self._shut = False
        self._unfinished = 0
        # what ran when, in parallel columns: no object per task for the GC to walk
        self._ran_task: list[str] = []
        self._ran_queue: list[str] = []
        self._ran_slot = array("i")
        self._ran_start = array("d")
        self._ran_end = array("d")
        self._t0 = time.perf_counter()

    # -- control --------------------------------------------------------------------------
    def start(self) -> None:
        """Start (or resume) running tasks in the background."""
        with self._lock:
            if self._shut:
                raise RuntimeError("this scheduler was shut down: it does not start again")
            self._running = True
            queues = list(self._queues)
        for q in queues:
            q._wake()

    def stop(self) -> None:
        """Start no new task; running ones finish.  Nothing is lost: ``start()`` resumes."""
        with self._lock:
            self._running = False

    def is_running(self) -> bool:
        return self._running

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every task submitted so far has ended; False on timeout.  Waiting
        for ever on a scheduler that is not running warns, as ``result()`` does: nothing
        ends until it is started again."""
        if timeout is not None and timeout > threading.TIMEOUT_MAX:  # (inf, say)
            timeout = None
        if timeout is None and not self._running and self._unfinished:
            warnings.warn(
                f"waiting for {self._unfinished} task{'s' * (self._unfinished != 1)} on a "
                "scheduler that is not running: "
                "call sch.start() (or this waits until another thread does)",
                RuntimeWarning,
                stacklevel=2,
            )
        with self._idle:
            return self._idle.wait_for(lambda: self._unfinished == 0, timeout)

    def __enter__(self) -> Scheduler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # as an executor's: what was submitted ends first; but a scheduler stopped in the
        # block starts nothing more, and waiting would never end (and hide any error)
        if self._running:
            self.wait()
        self.shutdown()

    def shutdown(self) -> None:
        """Stop, and let the worker threads and executors of every queue go.  Tasks not
        started stay undone (``stop()`` and ``start()`` pause and resume; a scheduler
        shut down takes no more tasks and does not start again)."""
        with self._lock:
            self._shut = True
        self.stop()
        for q in self._queues:
            q._shutdown()

    # -- seeing ---------------------------------------------------------------------------
    def timeline(self) -> Timeline:
        """What ran when: (task, queue, slot, start, end) in seconds since creation."""
        with self._lock:
            return Timeline(zip(self._ran_task, self._ran_queue, self._ran_slot,
                                self._ran_start, self._ran_end, strict=True))  # fmt: skip

    def stats(self) -> dict[str, Any]:
        """Counts of tasks per state, in all and per queue."""
        with self._lock:
            per_queue = {q.name: dict(q._counts) for q in self._queues}
        total: dict[str, int] = {}
        for counts in per_queue.values():
            for state, n in counts.items():
                total[state] = total.get(state, 0) + n
        return {"total": total, "queues": per_queue}

    # -- internals ------------------------------------------------------------------------
    def _cancel(self, future: TaskFuture) -> bool:
        if not future.seq:
            return False  # in no plan: done when it was made
        with self._lock:
            gone = self._planner.cancel(future)
            remote = future.remote
        if gone is None:
            # handed to an executor: cancelled if the executor has not started it (its
            # callback then settles this future, and what depends on it fails)
            return remote is not None and not future.done() and remote.cancel()
        with self._lock:
            gone = self._and_items(gone)
            freed = self._end_sessions(gone)
            self._unfinished -= sum(1 for n in gone if not n.external)
            for n in gone:
                owner = _task(n).owner
                if owner is not None and not n.external:
                    owner._counts["pending"] -= 1
                    owner._counts["cancelled"] += 1
            if self._unfinished == 0:
                self._idle.notify_all()
        for n in gone:
            cf.Future.cancel(_task(n))
        _kick_queues(freed, None)
        return True

    def _item(self, gen: TaskFuture, index: int) -> TaskFuture:
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise IndexError(f"item index must be an integer of 0 or more, got {index!r}")
        if gen._announced is not None and index >= gen._announced:
            raise IndexError(f"{gen.name} announced {gen._announced} results; no item {index}")
        with self._lock:
            items = gen._items
            assert items is not None
            f = items.get(index)
            if f is not None:
                return f
            f = TaskFuture(self, f"{gen.name}[{index}]")
            items[index] = f
            # an item known already stays out of the plan: only its state says how it went
            if index < len(gen._produced):  # produced already
                f.state = DONE
                f.set_result(gen._produced[index])
            elif gen.state == DONE:
                f.state = FAILED
                f.set_exception(_missing(gen, index, len(gen._produced)))
            elif gen.state == FAILED:
                f.state = FAILED
                f.set_exception(_dependency(f.name, gen))
            else:
                self._planner.submit(None, external_of=gen, node=f)
        return f

    def _end_sessions(self, failed: list[Node]) -> list[Node]:
        """Free the slots that sessions keep for the tasks in ``failed`` to release: those
        will never run, and nothing else would free them.  Returns the holders (their
        queues have a slot more).  The caller holds the lock."""
        holders: list[Node] = []
        for n in failed:
            for h in _task(n).releases:
                self._planner.release(h)
                holders.append(h)
        return holders

    def _and_items(self, failed: list[Node]) -> list[Node]:
        """``failed`` (tasks the plan just failed without running them), with the items
        asked of the generators among them and what depends on those: a generator that
        never runs yields nothing.  The caller holds the lock."""
        i = 0
        while i < len(failed):
            items = _task(failed[i])._items
            for f in items.values() if items else ():
                if f.seq and f.state not in (DONE, FAILED):
                    failed += [f, *self._planner.fail(f)]
            i += 1
        return failed

    def _finish_items(self, gen: TaskFuture, produced: int) -> list[tuple[TaskFuture, Any]]:
        """After a generator ended: the items asked for but never produced fail."""
        out = []
        with self._lock:
            assert gen._items is not None
            for index, f in gen._items.items():
                if index >= produced and not f.done():
                    out.append((f, _missing(gen, index, produced)))
        return out


def _too_many(gen: TaskFuture) -> Exception:
    return IndexError(f"{gen.name} yielded more than the {gen._announced} results it announced")


def _missing(gen: TaskFuture, index: int, produced: int) -> Exception:
    return IndexError(
        f"{gen.name} yielded {produced} items"
        + (f" of the {gen._announced} it announced" if gen._announced is not None else "")
        + f": item {index} was never produced"
    )


def _dependency(name: str, failed: TaskFuture) -> DependencyError:
    """The error of a task that will not run because ``failed`` failed (or was cancelled)."""
    if failed.done():
        cause = None if failed.cancelled() else failed.exception(0)
    else:
        # failed in the plan, but its own future is not set yet (a callback of another
        # future runs in between): the cause is what it will be told
        root = failed
        while not root.done():
            up = _failed_req(root)
            if up is root:
                break
            root = up
        cause = _dependency(failed.name, root) if root.done() else None
    err = DependencyError(name, failed.name, cause)
    err.__cause__ = cause
    return err


class _Ended:
    """A task that has just run, on its way to the planner."""

    __slots__ = ("task", "slot", "start", "end", "error", "items_failed")

    def __init__(
        self, task: TaskFuture, slot: int, start: float, end: float,
        error: BaseException | None, items_failed: list[tuple[TaskFuture, Exception]],
    ) -> None:  # fmt: skip
        self.task = task
        self.slot = slot
        self.start = start
        self.end = end
        self.error = error
        self.items_failed = items_failed


def _task(node: Node) -> TaskFuture:
    """The task of a node the scheduler entered in its plan (each one is its future)."""
    assert isinstance(node, TaskFuture)
    return node


def _arguments(
    task: TaskFuture, takes: Callable[[cf.Future[Any]], bool] | None = None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's arguments, futures replaced by their results, or by the futures of
    the executor that ran them where ``takes`` (the executor's) says it takes those."""
    if not task.resolve:
        return task.args, task.kwargs
    return (_resolve(task.args, takes),
            _resolve(task.kwargs, takes) if task.kwargs else task.kwargs)  # fmt: skip


class Timeline(list[tuple[str, str, int, float, float]]):
    """Rows of (task, queue, slot, start, end); ``to_chrome`` writes a Perfetto trace."""

    def to_chrome(self, path: str | os.PathLike[str]) -> None:
        """Write the Chrome trace event format (open it in https://ui.perfetto.dev)."""
        events = [
            {"name": task, "cat": queue, "ph": "X", "pid": queue, "tid": slot,
             "ts": start * 1e6, "dur": (end - start) * 1e6}
            for task, queue, slot, start, end in self
        ]  # fmt: skip
        with open(path, "w") as f:
            json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, f)


class Queue:
    """A queue of a scheduler: ``max_workers`` slots (default: the executor's
    ``max_workers`` where it has one, as a durable executor does, else the number of CPUs),
    optional counted ``resources``, and where its work runs (``executor``: threads by
    default, ``'process'``, or any ``concurrent.futures.Executor``).  Without
    ``max_workers``, over an executor whose width changes (one with
    ``add_width_callback``, as a durable executor that follows its agents' slots), the
    queue's width follows it."""

    def __init__(
        self,
        scheduler: Scheduler,
        max_workers: int | None = None,
        *,
        executor: str | cf.Executor | None = None,
        resources: Mapping[str, float] | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(scheduler, Scheduler):
            raise InvalidInput(f"a queue belongs to a Scheduler, got {scheduler!r}")
        given = max_workers is not None
        if max_workers is None:  # an executor that says how wide it is, else the CPUs
            max_workers = getattr(executor, "max_workers", None) or os.cpu_count() or 1
        workers = max_workers
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InvalidInput(f"max_workers must be a positive integer, got {max_workers!r}")
        self.scheduler = scheduler
        self.max_workers = workers
        self.name = name or f"queue{len(scheduler._queues)}"
        self._owned_executor = False
        if executor == "process":
            self._executor: cf.Executor | None = cf.ProcessPoolExecutor(workers)
            self._owned_executor = True
        elif executor in (None, "thread"):
            self._executor = None
        elif isinstance(executor, cf.Executor):
            self._executor = executor
        else:
            raise InvalidInput(
                f"executor must be 'thread', 'process' or a concurrent.futures.Executor, "
                f"got {executor!r}"
            )
        self._counts = {"pending": 0, "running": 0, "done": 0, "failed": 0, "cancelled": 0}
        self._cond = threading.Condition(scheduler._lock)  # type: ignore[arg-type]
        self._threads: list[threading.Thread] = []
        self._narrowed = False  # (whether it said that it has fewer threads than its width)
        self._waiting = 0
        self._closed = False
        resources = _amounts(resources, "resources")
        with scheduler._lock:
            self._pq: PlanQueue = scheduler._planner.add_queue(workers, resources)
            scheduler._queues.append(self)
        follow = getattr(self._executor, "add_width_callback", None)
        if not given and follow is not None:
            follow(self._follow_width)

    def __repr__(self) -> str:
        return f"<qdo.sched.Queue {self.name} max_workers={self.max_workers}>"

    # -- submitting -----------------------------------------------------------------------
    def submit(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        after: Iterable[TaskFuture] = (),
        resources: Mapping[str, float] | None = None,
        hold: bool = False,
        release: Iterable[TaskFuture] = (),
        **kwargs: Any,
    ) -> TaskFuture:
        """Schedule ``fn(*args, **kwargs)``; return its future.

        Futures anywhere in the arguments (nested in lists, tuples and dicts too) are
        requirements and are replaced by their results; ``after`` adds requirements
        without passing values.  ``hold`` keeps this task's slot after it returns,
        until a task with ``release=[this future]`` ends (a session on an instrument).
        """
        if not callable(fn):
            raise InvalidInput(f"submit needs a callable first, got {fn!r}")
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        resources = _amounts(resources, "resources")
        for what, given in (("after", after), ("release", release)):
            if isinstance(given, (TaskFuture, str)) or not isinstance(given, Iterable):
                raise InvalidInput(f"{what}= takes a list of futures, got {given!r}")
        code = getattr(fn, "__code__", None)
        is_generator = (
            bool(code.co_flags & inspect.CO_GENERATOR) if code is not None
            else inspect.isgeneratorfunction(fn)
        )  # fmt: skip
        if self._executor is not None:
            if is_generator and not getattr(self._executor, "generators", False):
                raise InvalidInput(
                    f"{_name(fn)} is a generator: generator tasks run on thread queues, and "
                    "on executors whose futures stream their items (qdo's durable executor)"
                )
            if isinstance(self._executor, cf.ProcessPoolExecutor):
                try:
                    pickle.dumps(fn)
                except Exception as e:
                    raise InvalidInput(
                        f"{_name(fn)} cannot be sent to a process ({e}): define it at the top "
                        "level of a module, or use a thread queue"
                    ) from e
        requires: list[TaskFuture] = []
        _collect(args, requires)
        if kwargs:
            _collect(kwargs, requires)
        for f in after:
            if not isinstance(f, TaskFuture):
                raise InvalidInput(f"after= takes futures of this scheduler, got {f!r}")
            requires.append(f)
        released: list[TaskFuture] = list(release)
        for f in released:
            if not isinstance(f, TaskFuture):
                raise InvalidInput(f"release= takes futures of this scheduler, got {f!r}")
        sch = self.scheduler
        future = TaskFuture(sch, _name(fn))
        if is_generator:
            future._items = {}
            future._produced = []
            counter = getattr(fn, "number_of_results", None)
            if counter is not None and not requires:
                n = counter(*args, **kwargs)
                if not _is_amount(n) or n != int(n):
                    raise InvalidInput(f"{_name(fn)}.number_of_results must give a whole "
                                       f"number of at least 0, got {n!r}")  # fmt: skip
                future._announced = int(n)
        for f in (*requires, *released):
            if f._scheduler is not sch:
                raise InvalidInput(f"{f!r} belongs to another scheduler")
        # when the arguments are the requirements themselves, as in f(x, y) on futures x
        # and y, the plan keeps the arguments' tuple as the task's requirements
        plain = len(requires) == len(args) and all(map(operator.is_, args, requires))
        future.owner, future.fn, future.args = self, fn, args
        if kwargs:
            future.kwargs = kwargs
        future.resolve = bool(requires)
        if released:
            future.releases = released
        with sch._lock:
            try:
                sch._planner.submit(self._pq, args if plain else requires, needs=resources,
                                    hold=hold, release=released, node=future)  # fmt: skip
            except ValueError as e:  # (what it needs: a resource the queue has not, or more)
                raise InvalidInput(f"{_name(fn)}: {e}") from None
            freed: list[Node] = []
            if future.state == FAILED:
                failed = next(f for f in (*requires, *released) if f.state == FAILED)
                self._counts["failed"] += 1
                freed = sch._end_sessions([future])
            else:
                failed = None
                sch._unfinished += 1
                self._counts["pending"] += 1
                if self._waiting and sch._running and self._executor is None:
                    self._cond.notify()  # an idle worker of this queue: here is work
        if failed is not None:
            future.set_exception(_dependency(future.name, failed))
            _kick_queues(freed, None)
            return future
        if self._executor is None:
            if len(self._threads) < self.max_workers:
                self._ensure_threads()
        else:
            self._pump()
        return future

    # -- running --------------------------------------------------------------------------
    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
        self._kick()

    def _follow_width(self) -> None:
        """The executor's width changed: so does this queue's (a wider one starts more
        now; a narrower one starts nothing until it has fewer running)."""
        width = self._executor.max_workers  # type: ignore[union-attr]
        with self.scheduler._lock:
            self._pq.width = self.max_workers = width
        self._pump()

    def _kick(self) -> None:
        """Make sure ready tasks of this queue get going."""
        if self._executor is None:
            self._ensure_threads()
            with self._cond:
                if self._waiting:
                    self._cond.notify()
        else:
            self._pump()

    def _ensure_threads(self) -> None:
        """A thread for each task this queue has to run (submitted, not ended), up to its
        width: started as tasks come, not all at once (a queue 20,000 wide that runs 5
        tasks starts 5).  If the system starts no more threads, the queue runs on those
        it has, and says so once; with none at all, that is an error."""
        if len(self._threads) >= self.max_workers or self._closed:
            return
        with self.scheduler._lock:
            counts = self._counts
            want = min(self.max_workers, counts["pending"] + counts["running"])
            first = len(self._threads)
            new = [threading.Thread(target=self._worker, args=(slot,), daemon=True,
                                    name=f"qdo-sched-{self.name}-{slot}")
                   for slot in range(first, want)]  # fmt: skip
            self._threads.extend(new)
        for n, t in enumerate(new):
            try:
                t.start()
            except RuntimeError as e:  # (can't start new thread: a limit of the system)
                with self.scheduler._lock:
                    unstarted = set(map(id, new[n:]))
                    self._threads = [x for x in self._threads if id(x) not in unstarted]
                    left = len(self._threads)
                if not left:
                    raise RuntimeError(f"queue {self.name!r} cannot start a thread to run "
                                       f"its tasks: {e}") from e  # fmt: skip
                if not self._narrowed:
                    self._narrowed = True
                    warnings.warn(f"queue {self.name!r} runs its tasks on {left} threads, "
                                  f"not {self.max_workers}: the system starts no more ({e})",
                                  RuntimeWarning, stacklevel=2)  # fmt: skip
                return

    def _worker(self, slot: int) -> None:
        """A thread queue's slot: one lock round per task, for what ended and what next."""
        sch = self.scheduler
        planner = sch._planner
        lock = sch._lock
        ended: _Ended | None = None
        while True:
            node = None
            woke: list[Node] = []
            failed: list[Node] = []
            with lock:
                if ended is not None:
                    woke, failed = self._record(ended)
                while not self._closed:
                    if sch._running:
                        node = planner.next(self._pq)
                        if node is not None:
                            self._counts["pending"] -= 1
                            self._counts["running"] += 1
                            break
                    if ended is not None:
                        break  # settle outside the lock first, then come back to wait
                    self._waiting += 1
                    self._cond.wait()
                    self._waiting -= 1
                closing = self._closed
            if ended is not None:
                self._notify_failed(ended, failed)
                _kick_queues(woke, self)
                if self._waiting and (
                    ended.task.needs or ended.task.releases
                    or any(n.queue is self._pq for n in woke)
                ):  # fmt: skip
                    # what ended may let more than this worker start: wake a sibling
                    with self._cond:
                        self._cond.notify()
                ended = None
            if node is not None:
                ended = self._execute(_task(node), slot)
            elif closing:
                return

    def _execute(self, task: TaskFuture, slot: int) -> _Ended:
        """Run a task here and complete its future (outside the lock)."""
        start = time.perf_counter()
        result: Any = None
        error: BaseException | None = None
        if not task.set_running_or_notify_cancel():
            error = cf.CancelledError()
        else:
            try:
                assert task.fn is not None
                call_args, call_kwargs = _arguments(task)
                if task._items is not None and task._announced is None:
                    self._announce(task, call_args, call_kwargs)
                result = task.fn(*call_args, **call_kwargs)
                if task._items is not None:
                    result = self._drain_generator(task, result)
            except BaseException as e:  # the task's own error: its future holds it
                error = e
        return self._complete(task, slot, start, result, error)

    def _announce(self, future: TaskFuture, args: Any, kwargs: Any) -> None:
        """A generator task whose arguments were futures learns its number of results
        now that they are known (at submit, with plain arguments, it learnt it then)."""
        counter = getattr(future.fn, "number_of_results", None)
        if counter is not None:
            announced = int(counter(*args, **kwargs))
            with self.scheduler._lock:  # _item() reads it
                future._announced = announced

    def _drain_generator(self, future: TaskFuture, gen: Any) -> list[Any]:
        for value in gen:
            if future._announced is not None and len(future._produced) >= future._announced:
                raise _too_many(future)
            self._produce(future, value)
        return future._produced

    def _produce(self, future: TaskFuture, value: Any) -> None:
        """A generator task yielded its next item: its future, and what waits for it."""
        sch = self.scheduler
        with sch._lock:
            produced = future._produced
            index = len(produced)
            produced.append(value)  # under the lock: _item() reads it
            assert future._items is not None
            item = future._items.get(index)
            # in the plan first: from here on the item can't be cancelled (its
            # dependents wait in result() for the value set just below)
            woke = []
            if item is not None and item.seq and item.state not in (DONE, FAILED):
                woke = sch._planner.finish(item)
        if item is not None and not item.done():  # a cancelled item: the rest goes on
            with contextlib.suppress(cf.InvalidStateError):
                item.set_result(value)
        _kick_queues(woke, None)

    def _settle(
        self, task: TaskFuture, slot: int, start: float,
        result: Any = None, error: BaseException | None = None,
    ) -> list[Node]:  # fmt: skip
        """Complete, record and notify in one go; return the tasks that became ready."""
        ended = self._complete(task, slot, start, result, error)
        with self.scheduler._lock:
            woke, failed = self._record(ended)
        self._notify_failed(ended, failed)
        return woke

    def _complete(
        self, task: TaskFuture, slot: int, start: float, result: Any, error: BaseException | None
    ) -> _Ended:
        """Set the task's future (outside the lock: its callbacks run here)."""
        sch = self.scheduler
        end = time.perf_counter()
        # what the call needed is not needed any more: let its arguments (and the
        # futures among them, and what those hold) go while the run goes on
        task.fn, task.args, task.kwargs = None, (), _NO_KWARGS
        items_failed: list[tuple[TaskFuture, Exception]] = []
        if error is None:
            task.set_result(result)
            if task._items is not None:
                items_failed = sch._finish_items(task, len(result))
        else:
            if not task.done():
                task.set_exception(error)
            if task._items is not None:
                items_failed = [
                    (f, _dependency(f.name, task))
                    for f, _ in sch._finish_items(task, len(task._produced))
                ]
        return _Ended(task, slot, start, end, error, items_failed)

    def _record(self, ended: _Ended) -> tuple[list[Node], list[Node]]:
        """The planner's side of an ended task; the caller holds the lock.  Returns the
        tasks that became ready and those that now fail without running."""
        sch = self.scheduler
        task, error = ended.task, ended.error
        sch._ran_task.append(task.name)
        sch._ran_queue.append(self.name)
        sch._ran_slot.append(ended.slot)
        sch._ran_start.append(ended.start - sch._t0)
        sch._ran_end.append(ended.end - sch._t0)
        self._counts["running"] -= 1
        failed: list[Node] = []
        if error is None:
            self._counts["done"] += 1
            woke = sch._planner.finish(task)
        else:
            self._counts["cancelled" if task.cancelled() else "failed"] += 1
            woke = []
            failed = sch._planner.fail(task)
        for f, _ in ended.items_failed:
            if f.seq:
                failed += [f, *sch._planner.fail(f)]
        failed = sch._and_items(failed)
        woke += sch._end_sessions(failed)  # (not ready: their queues have a slot more)
        for n in failed:
            owner = _task(n).owner
            if not n.external and owner is not None:
                owner._counts["pending"] -= 1
                owner._counts["failed"] += 1
                sch._unfinished -= 1
        for h in task.releases:
            sch._planner.release(h)
        sch._unfinished -= 1
        if sch._unfinished == 0:
            sch._idle.notify_all()
        return woke, failed

    @staticmethod
    def _notify_failed(ended: _Ended, failed: list[Node]) -> None:
        """Fail the futures of what can no longer run (outside the lock)."""
        for f, err in ended.items_failed:
            f.set_exception(err)
        for n in failed:
            f2 = _task(n)
            if not f2.done():
                cause = ended.task if ended.error else _failed_req(f2)
                f2.set_exception(_dependency(f2.name, cause))

    # -- other executors ------------------------------------------------------------------
    def _pump(self) -> None:
        """Hand every task that may start now to the executor."""
        sch = self.scheduler
        assert self._executor is not None
        while True:
            with sch._lock:
                if not sch._running or self._closed:
                    return
                node = sch._planner.next(self._pq)
                if node is None:
                    return
                self._counts["pending"] -= 1
                self._counts["running"] += 1
            task = _task(node)
            start = time.perf_counter()
            try:
                # (the future stays pending while the executor has not started the call:
                # cancel() then asks the executor to take it back)
                if task.cancelled():
                    raise cf.CancelledError()  # settled below, like a thread slot does
                assert task.fn is not None
                call_args, call_kwargs = _arguments(task, getattr(self._executor, "takes", None))
                if task._items is not None and task._announced is None:
                    self._announce(task, *_arguments(task))  # (with values, not futures)
                done = self._executor.submit(task.fn, *call_args, **call_kwargs)
            except BaseException as e:
                woke = self._settle(task, 0, start, error=e)
                _kick_queues(woke, self)
                continue
            with sch._lock:
                task.remote = done
            if task._items is not None:  # its items come one by one, as they are yielded
                done.add_item_callback(self._item_callback(task))  # type: ignore[attr-defined]
            done.add_done_callback(self._callback(task, start))

    def _item_callback(self, task: TaskFuture) -> Callable[[int, Any], None]:
        def produced(index: int, value: Any) -> None:
            del index  # (they come in order)
            if task._announced is None or len(task._produced) < task._announced:
                self._produce(task, value)  # (one too many fails the task: see _done)

        return produced

    def _callback(self, task: TaskFuture, start: float) -> Callable[[cf.Future[Any]], None]:
        return lambda done: self._done(done, task, start)

    def _done(self, done: cf.Future[Any], task: TaskFuture, start: float) -> None:
        if done.cancelled():  # taken back before it started (see Scheduler._cancel)
            cf.Future.cancel(task)
            error: BaseException | None = cf.CancelledError()
        else:
            error = done.exception()
        if error is None and task._announced is not None and len(done.result()) > task._announced:
            error = _too_many(task)
        if error is None:
            task.remote = done
            woke = self._settle(task, 0, start, result=done.result())
        else:
            woke = self._settle(task, 0, start, error=error)
        _kick_queues(woke, self)
        self._pump()

    def _shutdown(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._owned_executor and self._executor is not None:
            self._executor.shutdown(wait=True)


def _is_amount(n: object) -> bool:
    """A finite number of at least 0 (not a bool)."""
    return (isinstance(n, (int, float)) and not isinstance(n, bool) and math.isfinite(n)
            and n >= 0)  # fmt: skip


def _amounts(given: object, what: str) -> dict[str, float] | None:
    """Counted resources, a queue's or a task's: names to finite amounts of at least 0."""
    if given is None:
        return None
    if not isinstance(given, Mapping):
        raise InvalidInput(f"{what} must map names to amounts, got {given!r}")
    for name, amount in given.items():
        if not isinstance(name, str) or not _is_amount(amount):
            raise InvalidInput(f"{what} must map names to finite amounts of at least 0, "
                               f"got {name!r}: {amount!r}")  # fmt: skip
    return dict(given)


class _Lock(Taken):
    """The scheduler's lock, taken without a convoy wherever it is taken (``with``, and
    by the conditions built on it): see ``take``."""

    __slots__ = ()

    def __init__(self) -> None:
        self._lock = threading.Lock()


def _kick_queues(woke: list[Node], current: Queue | None) -> None:
    """Wake the queues that got ready tasks (the current worker looks by itself)."""
    seen: set[int] = set()
    for n in woke:
        owner = _task(n).owner
        if owner is None or owner is current or id(owner) in seen:
            continue
        seen.add(id(owner))
        owner._kick()
    if current is not None and current._executor is not None and woke:
        current._pump()


def _failed_req(task: TaskFuture) -> TaskFuture:
    """The requirement of ``task`` that failed (``task`` itself if none did)."""
    for up in task.ups:
        if up.state == FAILED:
            return _task(up)
    return task


_CONTAINERS = (list, tuple, set, frozenset, dict)


def _collect(obj: Any, out: list[TaskFuture], path: dict[int, bool] | None = None) -> None:
    """The futures in ``obj`` (an argument, or the arguments), into ``out``.  ``path``:
    the containers it is in, by id, and whether one of them holds itself (a list
    appended to itself, say): it is not entered again; and if futures are in it, its
    arguments cannot be rebuilt with their results, and the submit is refused."""
    if isinstance(obj, TaskFuture):
        out.append(obj)
        return
    if not isinstance(obj, _CONTAINERS) or not obj:
        return
    key = id(obj)
    if path is None:
        path = {}
    elif key in path:
        path[key] = True
        return
    path[key] = False
    before = len(out)
    for x in obj.values() if isinstance(obj, dict) else obj:
        _collect(x, out, path)
    if path.pop(key) and len(out) > before:
        raise InvalidInput(f"an argument holds itself (a {type(obj).__name__} that is in "
                           "itself) and futures too: the task's arguments cannot be made "
                           "with their results (pass the futures apart from it)")  # fmt: skip


def _resolve(
    obj: Any, takes: Callable[[cf.Future[Any]], bool] | None = None,
    path: set[int] | None = None,
) -> Any:  # fmt: skip
    """``obj`` with the futures in it replaced by their results (or, where ``takes``
    says so, by the executor's futures they stand for).  A container with no future in
    it is passed as it is; one with futures is rebuilt as its own type (a Counter stays
    a Counter, a defaultdict keeps its default).  ``path``: the ids of the containers it
    is in (one that holds itself has no futures, see _collect: it is passed as it is)."""
    if isinstance(obj, TaskFuture):
        remote = obj.remote
        if takes is not None and remote is not None and takes(remote):
            return remote
        return obj.result()
    if isinstance(obj, _CONTAINERS):
        key = id(obj)
        if path is None:
            path = set()
        elif key in path:
            return obj
        path.add(key)
        items = obj.values() if isinstance(obj, dict) else obj
        new = [_resolve(x, takes, path) for x in items]
        path.discard(key)
        return obj if all(map(operator.is_, new, items)) else _rebuilt(obj, new)
    return obj


def _rebuilt(obj: Any, new: list[Any]) -> Any:
    """Container ``obj`` (its values, for a dict) made of ``new``, as its own type."""
    kind = type(obj)
    if kind is list:
        return new
    if kind is dict:
        return dict(zip(obj, new, strict=True))
    if isinstance(obj, (list, dict)):
        out = copy.copy(obj)  # (a subclass: its own type, and what else it holds)
        if isinstance(out, dict):
            for key, value in zip(obj, new, strict=True):
                out[key] = value  # (not update(): a Counter's adds)
        else:
            out[:] = new
        return out
    if hasattr(obj, "_fields"):  # a named tuple
        return kind(*new)
    try:
        return kind(new)
    except TypeError:  # a subclass that is not made from one iterable
        return tuple(new) if isinstance(obj, tuple) else set(new)


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
