"""Durable futures: a ``concurrent.futures.Executor`` over a queue of Python calls.

``ex = qdo.connect("Grid", create_ok=True).executor()``; ``f = ex.submit(fn, *args)``
stores the call as a task of the queue (``qdo.calls`` says how it is pickled), which
any ``qdo do`` agent runs, on this machine or in batch jobs (``qdo launch``); what the
call returns or raises comes back to ``f``.  Nothing of a call lives only in this
process: a driver that dies is run again, and each call, found again by its key
(``key=``; by default a hash of the function and its arguments, and how many equal
calls came before it in this run), returns its stored result if it Succeeded, is
waited for if it is still Pending or Running, and runs again only if it never ran to
the end (Failed or Killed).  ``ex.forget()`` clears the queue for a fresh run.

One watcher thread per executor does all the talking to the database: it submits the
calls in batches (one transaction for up to ``BATCH``, which also brings back the
results of those that Succeeded before: a re-run costs a round trip per ``BATCH``
finished calls), follows the results in the
order they were written (``Store.results_since``: a few rows a query, however many
futures wait), and now and then asks for the states of the calls it waits for, which
also catches the calls that end without a result (Killed) and, on PostgreSQL, a result
committed out of order.  While results come, it asks again at once; when none come it
waits a little longer each time, up to ``poll`` seconds; a submit wakes it, and on
PostgreSQL so does a result (the agents' report notifies the queue's channel).
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import contextlib
import functools
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from . import calls
from .errors import CallFailed, InvalidInput, QdoError, UnknownQueue, error_repr
from .models import State, is_seconds, is_utf8
from .runtime import Log
from .store.base import CallResult, NewCall

if TYPE_CHECKING:
    from .queue import Queue

__all__ = ["BATCH", "CallFuture", "DurableExecutor", "ItemFuture"]

log = Log(__name__)

#: Calls submitted in one transaction, and results read in one query, at most.
BATCH = 1000
#: Seconds between looks at the states of the calls waited for.
SWEEP = 1.0
#: Calls a scheduler's queue keeps in the durable queue for each call that its live
#: agents keep in hand (at least a slot's worth: see ``Agent.hand``), so that none of
#: them waits for the driver between two calls.
PER_HAND = 2
#: Seconds between looks at the agents, while calls wait.
WIDTH_LOOK = 0.25
_FINAL = (State.SUCCEEDED, State.FAILED, State.KILLED)
#: Seconds the interpreter's exit waits at most for the calls submitted to be stored.
EXIT_WAIT = 60.0


class _Waited(cf.Future[Any]):
    """A future that its executor's watcher thread settles: that thread (which runs the
    futures' done callbacks) must not wait for one, or nothing would settle it."""

    _executor: DurableExecutor

    def result(self, timeout: float | None = None) -> Any:
        self._not_in_watcher()
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._not_in_watcher()
        return super().exception(timeout)

    def _not_in_watcher(self) -> None:
        if threading.current_thread() is self._executor._thread and not self.done():
            raise RuntimeError(
                f"a done callback waits for {self!r}, a future of the same executor: its "
                "executor runs the callbacks, and would never settle it (start a thread "
                "in the callback to wait, or chain the calls: pass the future to submit)"
            )


class CallFuture(_Waited):
    """The future of one durable call: ``key`` finds the call again; ``task_id`` is its
    task in the queue (None until the watcher has submitted it).  As an argument of
    another call of an executor on the same database, it stands for its result: see
    ``DurableExecutor.submit``."""

    def __init__(self, executor: DurableExecutor, key: str) -> None:
        super().__init__()
        self.key = key
        self.task_id: int | None = None
        self._executor = executor
        # the call, until it is submitted, when it takes other calls' results (its pickle
        # needs their task ids): fn, args, kwargs and those calls' futures
        self._call: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any],
                          list[CallFuture | ItemFuture]] | None = None  # fmt: skip
        self._gen: _Items | None = None  # a generator call's items, once there are any

    def _items(self) -> _Items:
        """Its items (made on first use: most calls have none; the executor's lock)."""
        if self._gen is None:
            self._gen = _Items()
        return self._gen

    def __getitem__(self, index: int) -> ItemFuture:
        """The future of item ``index`` of the generator that the call returns: done as
        soon as the agent has written it, while the generator goes on."""
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise IndexError(f"item index must be an integer of 0 or more, got {index!r}")
        return self._executor._item(self, index)

    def add_item_callback(self, fn: Callable[[int, Any], None]) -> None:
        """Call ``fn(index, item)`` for each item of the generator that the call returns,
        in order, as they come (those that came already: at once)."""
        self._executor._add_item_callback(self, fn)

    def cancel(self) -> bool:
        """Cancel the call if it has not started: it is then taken off the queue.  False
        if it runs already, or is done (True if it was cancelled already, as for any
        concurrent.futures future)."""
        return self.cancelled() or self._executor._cancel(self)

    def __repr__(self) -> str:
        return f"<CallFuture {self.key[:12]} task {self.task_id} {self._state.lower()}>"


class _Items:
    """The items of a generator call, in the driver: those that came, by index; how many
    went to the item callbacks (in order: ``deliver`` is held while they run); the item
    futures asked for; the callbacks; how many items the call yielded, once it ended
    (None until then, and for a call that returned a value, not a generator)."""

    __slots__ = ("produced", "delivered", "deliver", "futures", "callbacks", "yielded")

    def __init__(self) -> None:
        self.yielded: int | None = None
        self.produced: dict[int, Any] = {}
        self.delivered = 0
        self.deliver = threading.Lock()
        self.futures: dict[int, ItemFuture] = {}
        self.callbacks: list[Callable[[int, Any], None]] = []


class ItemFuture(_Waited):
    """The future of item ``index`` of the generator that call ``call`` returns (see
    ``CallFuture.__getitem__``); as an argument of another call of the same executor,
    that call waits in the driver until the item came, and takes its value."""

    def __init__(self, call: CallFuture, index: int) -> None:
        super().__init__()
        self.call = call
        self.index = index
        self._executor = call._executor

    @property
    def key(self) -> str:
        return f"{self.call.key}[{self.index}]"

    @property
    def task_id(self) -> int | None:
        return self.call.task_id

    def __repr__(self) -> str:
        return f"<ItemFuture {self.call.key[:12]}[{self.index}] {self._state.lower()}>"


class DurableExecutor(cf.Executor):
    """Run calls through ``queue``, which becomes (or is) a queue of calls; see the
    module's docstring.  ``poll``: the longest the watcher waits between looks for
    results when none come; ``max_workers``: see the property."""

    def __init__(
        self, queue: Queue, *, poll: float = 0.02, max_workers: int | None = None
    ) -> None:  # fmt: skip
        if not hasattr(queue, "store") or not hasattr(queue, "name"):
            raise InvalidInput(f"an executor runs calls through a qdo queue, got {queue!r}")
        if isinstance(poll, bool) or not (isinstance(poll, (int, float)) and 0.001 <= poll <= 60):
            raise InvalidInput(f"poll must be a number of seconds from 0.001 to 60, got {poll!r}")
        if max_workers is not None and (
            isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1
        ):
            raise InvalidInput(f"max_workers must be a positive integer, got {max_workers!r}")
        self.queue = queue
        self.store = queue.store
        self.poll = float(poll)
        self.store.make_call_queue(queue.name)
        self._fixed = max_workers
        self._width = max_workers or 1
        self._width_callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._new: list[tuple[NewCall, CallFuture]] = []  # to submit
        # to submit once the generators' items they take have come, by id of the future
        self._held: dict[int, tuple[NewCall, CallFuture]] = {}
        self._waiting: dict[int, list[CallFuture]] = {}  # submitted, by task id
        self._after = self.store.last_result(queue.name)  # results seen up to this seq
        self._closed = False
        self._seen: dict[str, int] = {}  # equal calls so far, by the hash of the call
        self._named: dict[str, str] = {}  # the hash of the call of each key given
        self.calls_submitted = 0  # new calls it added (not those found again)
        self.calls_found = 0  # calls found again by their key
        self._sending = False  # a batch taken from _new is being submitted
        self._follow_agents()
        self._thread = threading.Thread(target=self._watch, name=f"qdo-executor-{queue.name}",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        # a script that ends without shutdown(): its calls are stored before it goes
        atexit.register(_store_at_exit, weakref.ref(self))

    def __repr__(self) -> str:
        return f"<qdo DurableExecutor of queue {self.queue.name!r}>"

    @property
    def max_workers(self) -> int:
        """How many calls a scheduler's queue over this executor keeps in the durable
        queue at once (qdo.sched.Queue takes it as its width): enough to keep the agents'
        slots busy, few enough that the plan's order still decides.  Given, it stays;
        else it follows the live agents of the queue: ``PER_HAND`` calls per call they
        keep in hand (their slots, and as many ahead as their calls' durations call for:
        short calls need many in the queue to keep a slot busy, long ones one each; 1
        while there are no agents), looked at every ``WIDTH_LOOK`` seconds while calls
        wait; ``add_width_callback`` hears of a change."""
        return self._width

    def add_width_callback(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` (in the watcher's thread) when ``max_workers`` changes."""
        with self._lock:
            self._width_callbacks.append(fn)

    def _follow_agents(self) -> None:
        if self._fixed is not None:
            return
        hands = sum(max(a.slots, a.hand) for a in self.store.agents(self.queue.name))
        width = max(1, PER_HAND * hands)
        with self._lock:
            changed, self._width = width != self._width, width
            callbacks = list(self._width_callbacks)
        if changed:
            for fn in callbacks:
                try:
                    fn()
                except Exception:
                    log.exception("qdo: a width callback of %r failed", self)

    # -- the Executor API -------------------------------------------------------------------
    def submit(  # type: ignore[override]
        self, fn: Callable[..., Any], /, *args: Any, key: str | None = None, **kwargs: Any
    ) -> CallFuture:
        """Store ``fn(*args, **kwargs)`` as a call; return its future.  ``key`` names the
        call (a function that takes a ``key`` argument gets it with functools.partial).

        A future of a call of this database, anywhere in the arguments, stands for that
        call's result: the call waits in the queue until that one Succeeded, and the
        agent that runs it reads the result from the database (the driver never sends
        it back).  If that call fails, so does this one, without running."""
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 200
                                or "\0" in key or not is_utf8(key)):  # fmt: skip
            raise InvalidInput(f"key must be a string of 1 to 200 characters (no NUL, no lone "
                               f"surrogate), got {key!r}")  # fmt: skip
        (future,) = self._enqueue(fn, [(args, kwargs, key)])
        return future

    def map(
        self, fn: Callable[..., Any], *iterables: Any, timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:  # fmt: skip
        """As ``Executor.map``, but every call reaches the watcher at once, so that they
        go to the database in batches of ``BATCH`` (``chunksize`` has no use here)."""
        if timeout is not None and not is_seconds(timeout):
            raise InvalidInput(f"timeout must be a number of seconds, got {timeout!r}")
        # (zip: as Executor.map, up to the shortest iterable)
        futures = self._enqueue(fn, [(a, {}, None) for a in zip(*iterables, strict=False)])
        end = None if timeout is None else time.monotonic() + timeout

        def results() -> Iterator[Any]:
            try:
                futures.reverse()
                while futures:
                    left = None if end is None else end - time.monotonic()
                    yield futures.pop().result(left)
            finally:
                for f in futures:
                    f.cancel()

        return results()

    def _enqueue(
        self, fn: Callable[..., Any],
        calls_of: list[tuple[tuple[Any, ...], dict[str, Any], str | None]],
    ) -> list[CallFuture]:  # fmt: skip
        """Futures for these calls of ``fn``, handed to the watcher in one go."""
        if not callable(fn):
            raise InvalidInput(f"submit needs a callable first, got {fn!r}")
        # a call's pickle with the futures in it as their keys: the key's hash, and (if it
        # has no futures) what is stored
        made = [(*calls.encode_call(fn, args, kwargs, self._by_key), args, kwargs, key)
                for args, kwargs, key in calls_of]  # fmt: skip
        futures = []
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            for call, takes, args, kwargs, key in made:
                base = calls.call_key(call)
                if key is not None:
                    # found again across runs by its key alone, by design; but one key
                    # for two different calls of this run would hand one the other's result
                    if self._named.setdefault(key, base) != base:
                        raise InvalidInput(f"key {key!r} names another call of this executor "
                                           "already: give each call its own key")  # fmt: skip
                else:
                    # the n-th equal call of this run: numpy.random.random((3, 3)) ten
                    # times is ten calls, and the same ten again when the driver runs again
                    n = self._seen[base] = self._seen.get(base, -1) + 1
                    key = f"{base}.{n}"
                future = CallFuture(self, key)
                new = NewCall(key, calls.describe(fn, args, kwargs), call)
                if takes:  # pickled again once their task ids are known (see _submit)
                    future._call = (fn, args, kwargs, takes)
                    new = new._replace(call=b"")
                if any(type(up) is ItemFuture and not up.done() for up in takes):
                    self._held[id(future)] = (new, future)
                else:
                    self._new.append((new, future))
                futures.append(future)
        self._wake.set()
        for future in futures:
            if future._call is not None:
                for up in future._call[3]:
                    up.add_done_callback(self._upstream_done(future))
                    if type(up) is ItemFuture:
                        up.add_done_callback(functools.partial(self._unhold, future))
        return futures

    def _unhold(self, future: CallFuture, _: object = None) -> None:
        """Submit a held call once every item it takes came (one that failed fails it:
        see _upstream_done)."""
        assert future._call is not None
        if not all(up.done() and not up.cancelled() and up.exception() is None
                   for up in future._call[3]):  # fmt: skip
            return
        with self._lock:
            held = self._held.pop(id(future), None)
            if held is not None:
                self._new.append(held)
        self._wake.set()

    #: its futures of calls that return generators stream their items
    #: (``add_item_callback``): qdo.sched runs generator tasks on it
    generators = True

    def takes(self, future: cf.Future[Any]) -> bool:
        """Whether ``future``, in the arguments of a call, stands for its result (a future
        of a call of this database); qdo.sched asks, to hand over futures, not values."""
        call = future.call if isinstance(future, ItemFuture) else future
        return isinstance(call, CallFuture) and call._executor.store is self.store

    def _by_key(self, obj: Any) -> Any:
        if type(obj) is CallFuture and self.takes(obj):
            return ("qdo.key", obj.key)
        if type(obj) is ItemFuture and self.takes(obj):
            return ("qdo.key", obj.call.key, obj.index)
        if isinstance(obj, cf.Future):  # (no future pickles: say why this one won't go)
            raise InvalidInput(
                f"{obj!r} cannot be an argument of a call of queue {self.queue.name!r}: only "
                "the futures of calls of the same database stand for their results (pass "
                "this one's result instead)"
            )
        return None

    def _by_id(self, obj: Any) -> Any:
        if type(obj) is CallFuture and self.takes(obj):
            assert obj.task_id is not None
            return calls.result_ref(obj.task_id)
        if type(obj) is ItemFuture and self.takes(obj):
            return calls.value_ref(obj.result())  # (it came: the call was held till then)
        return None

    def _item(self, call: CallFuture, index: int) -> ItemFuture:
        with self._lock:
            gen = call._items()
            first = not gen.futures
            item = gen.futures.get(index)
            if item is None:
                item = gen.futures[index] = ItemFuture(call, index)
            came = index in gen.produced
            value = gen.produced.get(index)
        if came:
            _settle(item, True, value)
        if first:  # (the call's end settles the items it never produced)
            call.add_done_callback(lambda _: self._settle_items(call))
        elif call.done():
            self._settle_items(call)
        return item

    def _add_item_callback(self, call: CallFuture, fn: Callable[[int, Any], None]) -> None:
        with self._lock:
            gen = call._items()
        with gen.deliver:  # (in order: no item goes out while those that came do)
            with self._lock:
                came = [(i, gen.produced[i]) for i in range(gen.delivered)]
                gen.callbacks.append(fn)
            for index, value in came:
                fn(index, value)

    def _upstream_done(self, future: CallFuture) -> Callable[[cf.Future[Any]], None]:
        def done(up: cf.Future[Any]) -> None:
            if not up.cancelled() and up.exception() is None:
                return
            # it will never run: off the queue (if it is there), and its future fails
            with self._lock:
                self._take_unsent(future)
                task_id = future.task_id
                if task_id is not None:
                    self._unwait(future)
            if task_id is not None:
                with contextlib.suppress(QdoError):  # (if not, it stays Waiting: harmless)
                    self.store.cancel_calls(self.queue.name, [task_id])
            what = "was cancelled" if up.cancelled() else f"failed: {_failure(up)}"
            error = CallFailed(self.queue.name, task_id or 0, "not run",
                               f"a call whose result it takes {what}")  # fmt: skip
            _settle(future, False, error)

        return done

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submits; with ``cancel_futures``, cancel the calls not started yet;
        with ``wait``, return once every future is done."""
        with self._lock:
            self._closed = True
            waiting = [f for fs in self._waiting.values() for f in fs]
            unsent = [f for _, f in self._new] + [f for _, f in self._held.values()]
        if cancel_futures:
            for f in unsent + waiting:
                f.cancel()
        self._wake.set()
        if wait:
            self._thread.join()

    def _store_unsent(self, timeout: float) -> None:
        """Wait, at most ``timeout`` seconds, until every call submitted so far has reached
        the database (not for their results)."""
        end = time.monotonic() + timeout
        while True:
            with self._lock:
                unsent, held = len(self._new) + self._sending, len(self._held)
            if not unsent or time.monotonic() >= end or not self._thread.is_alive():
                break
            self._wake.set()
            time.sleep(0.005)
        if unsent or held:
            log.warning("qdo: %d calls submitted to the executor of queue %s were not stored "
                        "(%s): run the script again to submit them", unsent + held,
                        self.queue.name, "its store could not be reached" if unsent else
                        "they take items that their generators had not yielded yet")  # fmt: skip

    def forget(self) -> int:
        """Delete every call of the queue and its result, for a fresh run; return how
        many went.  Not while futures of this executor wait."""
        with self._lock:
            if self._new or self._waiting or self._held:
                raise InvalidInput("forget() clears the queue's calls: not while futures "
                                   "of this executor wait for theirs")  # fmt: skip
        return self.store.forget_calls(self.queue.name)

    # -- cancelling --------------------------------------------------------------------------
    def _cancel(self, future: CallFuture) -> bool:
        with self._lock:
            if future.done():
                return False
            unsent = self._take_unsent(future)  # not submitted yet: never reaches the queue
            task_id = future.task_id
            others = [f for f in self._waiting.get(task_id, ()) if f is not future]  # type: ignore[arg-type]
        if unsent:
            return cf.Future.cancel(future)  # (its callbacks run outside the lock)
        if task_id is None:
            return False
        if not others and not self.store.cancel_calls(self.queue.name, [task_id]):
            return False  # it runs, or has ended
        with self._lock:
            self._unwait(future)
        return cf.Future.cancel(future)

    def _take_unsent(self, future: CallFuture) -> bool:
        """Take ``future`` off the calls still to submit, if it is there (the caller holds
        the lock)."""
        unsent = next((i for i, (_, f) in enumerate(self._new) if f is future), None)
        if unsent is not None:
            del self._new[unsent]
        return unsent is not None or self._held.pop(id(future), None) is not None

    def _unwait(self, future: CallFuture) -> None:
        """Stop waiting for ``future``'s result (the caller holds the lock)."""
        futures = self._waiting.get(future.task_id, [])  # type: ignore[arg-type]
        if future in futures:
            futures.remove(future)
        if not futures:
            self._waiting.pop(future.task_id, None)  # type: ignore[arg-type]

    # -- the watcher ---------------------------------------------------------------------------
    def _watch(self) -> None:
        pause = 0.0
        next_sweep = time.monotonic() + SWEEP
        next_look = time.monotonic() + WIDTH_LOOK
        away = False  # whether the store could not be reached (said once)
        while True:
            busy = False
            try:
                with self._lock:
                    batch = self._next_batch()
                    self._sending = bool(batch)
                if batch:
                    busy = True
                    try:
                        self._submit(batch)
                    finally:
                        with self._lock:
                            self._sending = False
                with self._lock:
                    waiting = bool(self._waiting)
                if waiting:  # (a re-run whose calls all Succeeded asks nothing more)
                    busy = self._collect() or busy
                    if time.monotonic() >= next_sweep:
                        next_sweep = time.monotonic() + SWEEP
                        self._sweep()
                    if time.monotonic() >= next_look and self._fixed is None:
                        next_look = time.monotonic() + WIDTH_LOOK
                        self._follow_agents()
                if away:
                    log.warning("qdo: the executor of queue %s reached its store again",
                                self.queue.name)  # fmt: skip
                    away = False
            except UnknownQueue as e:  # deleted: nothing it waits for will ever come
                self._fail_all(e)
                continue
            except Exception as e:  # the database away, say: the futures wait, it tries again
                if not away:
                    away = True
                    if isinstance(e, QdoError):
                        log.warning("qdo: the executor of queue %s could not reach its store "
                                    "(%s): trying again", self.queue.name, e)  # fmt: skip
                    else:  # (a defect of qdo's: said in full, once; the futures still wait)
                        log.exception("qdo: the executor of queue %s failed: trying again",
                                      self.queue.name)  # fmt: skip
                # (twice as long each time, up to a second: not 50 looks a second at a
                # server that is away)
                pause = min(1.0, max(self.poll, pause * 2))
                self._wake.wait(pause)
                self._wake.clear()
                continue
            with self._lock:
                if self._closed and not self._new and not self._waiting and not self._held:
                    return
                # (calls left that wait for the task id of another executor's call: a
                # pause, not a spin)
                more = bool(self._new) and bool(batch)
            if busy or more:
                pause = 0.0
                continue
            # nothing came: wait a little longer each time (a submit wakes it at once;
            # on PostgreSQL so does a result, told on the queue's channel)
            pause = min(self.poll, max(0.002, pause * 2))
            if self.store.notifies:
                self.store.wait_for_tasks(self.queue.name, pause, stop=self._wake.is_set)
            else:
                self._wake.wait(pause)
            self._wake.clear()

    def _fail_all(self, error: BaseException) -> None:
        """Every future of this executor not done fails with ``error`` (its queue is
        gone)."""
        with self._lock:
            futures = [f for fs in self._waiting.values() for f in fs]
            futures += [f for _, f in self._new] + [f for _, f in self._held.values()]
            self._waiting, self._new, self._held = {}, [], {}
        for f in futures:
            _settle(f, False, error)

    def _next_batch(self) -> list[tuple[NewCall, CallFuture]]:
        """The next calls to submit (the caller holds the lock): up to BATCH, and none
        that takes the result of a call not submitted yet (its pickle needs the task id:
        it goes in the next batch)."""
        end = min(len(self._new), BATCH)
        for i in range(end):
            future = self._new[i][1]
            if future._call is not None and any(up.task_id is None for up in future._call[3]):
                end = i
                break
        batch, self._new = self._new[:end], self._new[end:]
        return batch

    def _submit(self, batch: list[tuple[NewCall, CallFuture]]) -> None:
        ready = []
        for new, future in batch:
            if future._call is not None:  # now that the task ids are known
                fn, args, kwargs, takes = future._call
                future._call = None
                try:  # (pickled at submit already; but an argument may have changed since)
                    call, _ = calls.encode_call(fn, args, kwargs, self._by_id)
                except QdoError as e:
                    _settle(future, False, e)
                    continue
                requires = sorted(
                    {
                        up.task_id
                        for up in takes  # (items: held till they came)
                        if type(up) is CallFuture and up.task_id is not None
                    }
                )
                new = new._replace(call=call, requires=requires)
            ready.append((new, future))
        batch = ready
        if not batch:
            return
        try:
            done = self.store.submit_calls(self.queue.name, [n for n, _ in batch])
        except Exception as e:  # (any: these futures are nowhere else, they must not hang)
            for _, f in batch:  # refused as a whole (the queue deleted, say): they fail
                _settle(f, False, e)
            return
        stored: dict[int, CallResult] = {}
        dropped = []
        going = []  # found again, not done: the items their generators yielded so far
        with self._lock:
            for (_, f), sub in zip(batch, done, strict=True):
                f.task_id = sub.task_id
                if f.done():  # a call whose result it takes failed meanwhile: it won't run
                    dropped.append(sub.task_id)
                    continue
                self._waiting.setdefault(sub.task_id, []).append(f)
                if sub.new:
                    self.calls_submitted += 1
                else:
                    self.calls_found += 1
                    if sub.result is not None:  # Succeeded in an earlier run
                        stored[sub.task_id] = sub.result
                    else:
                        going.append(sub.task_id)
        if dropped:
            self.store.cancel_calls(self.queue.name, dropped)
        if going:  # (a round trip of a re-run, for the calls still running)
            self._resolve(self.store.results_of(going))
        self._resolve(list(stored.values()))

    def _collect(self) -> bool:
        """Resolve the futures of the results written since the last look."""
        got = False
        while True:
            rows = self.store.results_since(self.queue.name, self._after, BATCH)
            if rows:
                got = True
                self._after = max(self._after, rows[-1].seq)
                self._resolve(rows)
            if len(rows) < BATCH:
                return got

    def _resolve(self, rows: list[CallResult]) -> None:
        ends = []
        # calls with an item that does not unpickle here: they fail at it (its later
        # items are not handed on)
        broken: dict[int, BaseException] = {}
        for row in rows:
            with self._lock:
                futures = list(self._waiting.get(row.task_id, ()))
            if not futures or row.task_id in broken:
                continue
            if row.item >= 0:  # an item its generator yielded (in order, for one call)
                error = self._hand_on(futures, row)
                if error is not None:
                    broken[row.task_id] = error
                    ends.append((row, futures, False, error))
            else:
                ends.append((row, futures, *calls.decode_result(row.ok, row.data)))
        # a generator's end: its result is the list of its items (those this watcher
        # missed, as those of a re-run's calls written before it started, read now)
        short = [row.task_id for row, futures, ok, outcome in ends
                 if ok and isinstance(outcome, calls.Yielded)
                 and len(futures[0]._items().produced) < outcome.items]  # fmt: skip
        for row in self.store.results_of(short) if short else ():
            if row.item >= 0 and row.task_id not in broken:
                with self._lock:
                    futures = list(self._waiting.get(row.task_id, ()))
                error = self._hand_on(futures, row)
                if error is not None:
                    broken[row.task_id] = error
        for row, futures, ok, outcome in ends:
            with self._lock:
                if self._waiting.pop(row.task_id, None) is None:
                    continue  # (settled meanwhile: cancelled, say)
            if row.task_id in broken:
                ok, outcome = False, broken[row.task_id]
            for f in futures:
                if ok and isinstance(outcome, calls.Yielded):
                    items = f._items()
                    items.yielded = outcome.items
                    produced = items.produced
                    _settle(f, True, [produced.get(i) for i in range(outcome.items)])
                else:
                    _settle(f, ok, outcome)

    def _hand_on(self, futures: list[CallFuture], row: CallResult) -> BaseException | None:
        """Item ``row.item`` of these futures' call, handed on (see _produce); or, if it
        does not unpickle here, the error that their call fails with."""
        ok, value = calls.decode_result(True, row.data, f"item {row.item}")
        if not ok:
            return value  # type: ignore[no-any-return]
        self._produce(futures, row.item, value)
        return None

    def _produce(self, futures: list[CallFuture], index: int, value: Any) -> None:
        """Item ``index`` of these futures' call came: to the item callbacks, in order,
        and to the item futures asked for."""
        for f in futures:
            with self._lock:
                gen = f._items()
            with gen.deliver:
                with self._lock:
                    if index in gen.produced:
                        continue  # (seen already)
                    gen.produced[index] = value
                    came = []
                    while gen.delivered in gen.produced:
                        came.append((gen.delivered, gen.produced[gen.delivered]))
                        gen.delivered += 1
                    callbacks = list(gen.callbacks)
                    item = gen.futures.get(index)
                for i, v in came:
                    for fn in callbacks:
                        try:
                            fn(i, v)
                        except Exception:
                            log.exception("qdo: an item callback of %r failed", f)
            if item is not None:
                _settle(item, True, value)

    def _settle_items(self, call: CallFuture) -> None:
        """Once ``call`` is done, settle the item futures asked of it that are not: those
        never produced, or all those not produced if the call failed."""
        with self._lock:
            gen = call._items()
            items = [(i, f) for i, f in gen.futures.items() if not f.done()]
            produced = dict(gen.produced) if items else {}
            yielded = gen.yielded
        for index, item in items:
            if index in produced:
                _settle(item, True, produced[index])
            elif call.done():
                if call.cancelled():
                    error: BaseException = cf.CancelledError()
                elif call.exception() is not None:
                    error = CallFailed(self.queue.name, call.task_id or 0, "not produced",
                                       f"its call failed: {_failure(call)}")  # fmt: skip
                elif yielded is None:
                    error = IndexError(f"the call {call.key} returned a value, not a "
                                       f"generator: it has no item {index}")  # fmt: skip
                else:
                    error = IndexError(f"the call {call.key} yielded {yielded} items: "
                                       f"item {index} was never produced")  # fmt: skip
                _settle(item, False, error)

    def _sweep(self) -> None:
        """The calls waited for that ended without this watcher seeing a result."""
        with self._lock:
            ids = sorted(self._waiting)
        for i in range(0, len(ids), BATCH):
            chunk = ids[i : i + BATCH]
            states = self.store.task_states(chunk)
            ended = [t for t in chunk if t not in states or states[t][0] in _FINAL]
            if not ended:
                continue
            rows = self.store.results_of(ended)
            self._resolve(rows)
            with self._lock:
                lost = {t: self._waiting.pop(t) for t in ended if t in self._waiting}
            for task_id, futures in lost.items():
                state, message = states.get(task_id, (None, "it was deleted from the queue"))
                error = CallFailed(self.queue.name, task_id,
                                   state.value if state else "gone", message)  # fmt: skip
                for f in futures:
                    _settle(f, False, error)


def _store_at_exit(ref: weakref.ref[DurableExecutor]) -> None:
    """At the interpreter's exit (a ThreadPoolExecutor waits for its calls to run; this
    one for its calls to be stored, since agents run them)."""
    executor = ref()
    if executor is not None:
        executor._store_unsent(EXIT_WAIT)


def _failure(future: cf.Future[Any]) -> str:
    """How a future failed, for the message of those that took its result."""
    error = future.exception()
    return "?" if error is None else error_repr(error)


def _settle(future: cf.Future[Any], ok: bool, outcome: Any) -> None:
    if future.done():
        return
    if not future.set_running_or_notify_cancel():
        return
    if ok:
        future.set_result(outcome)
    else:
        future.set_exception(outcome)
