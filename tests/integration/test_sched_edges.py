"""The scheduler's edges: its futures' conditions (locks, waiters, wake-ups, several
threads in concurrent.futures.wait), a task's future as its planner node, argument tuples
kept as requirements, callbacks that run while the plan is ahead of the futures, items,
hold sessions that never end.  Real threads throughout."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import pickle
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from qdo.errors import InvalidInput
from qdo.sched import DependencyError, Queue, Scheduler


@pytest.fixture
def sch() -> Iterator[Scheduler]:
    s = Scheduler()
    yield s
    s.shutdown()


class Blob:
    """An argument or a result the test can watch die (weakref)."""

    def __init__(self, n: int = 0) -> None:
        self.n = n


# -- concurrent.futures.wait / as_completed from two threads ---------------------------
def _split_around(
    low_kind: list[cf.Future[Any]], pivots: list[cf.Future[Any]]
) -> tuple[list[cf.Future[Any]], cf.Future[Any], cf.Future[Any]]:
    """A pivot future of the second kind, the futures of the first kind below it in
    id order (as many as can be), and one of the first kind above it."""
    best = None
    for p in pivots:
        below = [f for f in low_kind if id(f) < id(p)]
        above = [f for f in low_kind if id(f) > id(p)]
        if above and (best is None or len(below) > len(best[0])):
            best = (below, p, above[0])
    assert best is not None and len(best[0]) >= 2000, "could not lay the futures out"
    return best


def _one_wait_gets_through(
    first: list[cf.Future[Any]], second: list[cf.Future[Any]], how: str = "wait"
) -> bool:
    """Thread A waits (timeout 0) once on ``first``; thread B waits on ``second`` over and
    over until A is through.  concurrent.futures takes the futures' locks in id order, so
    this can never deadlock when each future has a lock of its own.  True if A got
    through; False on a deadlock: neither thread got a step further for a whole minute
    (a busy machine makes them slow, never still)."""
    through = threading.Event()
    steps = [0]

    def run(fs: list[cf.Future[Any]]) -> None:
        if how == "wait":
            cf.wait(fs, timeout=0)
        else:
            list(cf.as_completed(fs))  # all done already: no timeout to run out
        steps[0] += 1

    def a() -> None:
        for _ in range(5):
            run(first)
        through.set()

    def b() -> None:
        while not through.is_set():
            run(second)

    # switch threads often, so that B runs while A goes through its futures' locks
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        tb = threading.Thread(target=b, daemon=True)
        ta = threading.Thread(target=a, daemon=True)
        tb.start()
        ta.start()
        last, still = steps[0], 0  # seconds without a step by either thread
        while not through.wait(1.0):
            last, still = (steps[0], 0) if steps[0] != last else (last, still + 1)
            if still >= 60:
                return False
        return True
    finally:
        sys.setswitchinterval(interval)


def test_cf_wait_on_task_and_pool_futures_from_two_threads_does_not_deadlock(
    sch: Scheduler,
) -> None:
    """A thread that waits on task futures and on a thread pool's future, while another
    thread waits on that pool future and another task future: ordinary use of
    cf.wait.  With one lock for all the task futures, the id order of the futures is no
    longer an order of the locks: A holds the tasks' lock and wants the pool future's,
    B holds the pool future's and wants the tasks' lock."""
    Q = Queue(sch, max_workers=1)
    pool = cf.ThreadPoolExecutor(1)
    try:
        tasks: list[cf.Future[Any]] = []
        pooled: list[cf.Future[Any]] = []
        for _ in range(40):  # interleaved, so that pool futures lie between task futures
            tasks += [Q.submit(int) for _ in range(1000)]
            pooled.append(pool.submit(int))
        sch.start()
        assert sch.wait(timeout=10)
        cf.wait(pooled, timeout=10)
        below, pivot, above = _split_around(tasks, pooled)
        ok = _one_wait_gets_through([*below, pivot], [pivot, above])
        # when it deadlocked, the scheduler is stuck too: a new task cannot settle
        late = Q.submit(int)
        settled = sch.wait(timeout=1)
        assert ok, f"cf.wait deadlocked (a later task settled: {settled}, {late!r})"
    finally:
        pool.shutdown(wait=False)


def test_cf_wait_on_futures_of_two_schedulers_from_two_threads_does_not_deadlock() -> None:
    """The same with the futures of two schedulers (each its own lock), as
    test_many_threads_waiting_on_futures_of_two_schedulers mixes them in one cf.wait."""
    one, two = Scheduler(), Scheduler()
    try:
        Q1, Q2 = Queue(one, max_workers=1), Queue(two, max_workers=1)
        ones: list[cf.Future[Any]] = []
        twos: list[cf.Future[Any]] = []
        for _ in range(40):
            ones += [Q1.submit(int) for _ in range(1000)]
            twos.append(Q2.submit(int))
        one.start()
        two.start()
        assert one.wait(timeout=10) and two.wait(timeout=10)
        below, pivot, above = _split_around(ones, twos)
        # (the result in a name: pytest would repr a deadlocked future to explain)
        ok = _one_wait_gets_through([*below, pivot], [pivot, above])
        assert ok, "cf.wait deadlocked"
    finally:
        one.shutdown()
        two.shutdown()


def test_as_completed_on_task_and_pool_futures_from_two_threads_does_not_deadlock(
    sch: Scheduler,
) -> None:
    """as_completed takes the futures' locks the way cf.wait does."""
    Q = Queue(sch, max_workers=1)
    pool = cf.ThreadPoolExecutor(1)
    try:
        tasks: list[cf.Future[Any]] = []
        pooled: list[cf.Future[Any]] = []
        for _ in range(40):
            tasks += [Q.submit(int) for _ in range(1000)]
            pooled.append(pool.submit(int))
        sch.start()
        assert sch.wait(timeout=10)
        cf.wait(pooled, timeout=10)
        below, pivot, above = _split_around(tasks, pooled)
        ok = _one_wait_gets_through([*below, pivot], [pivot, above], "as_completed")
        assert ok, "as_completed deadlocked"
    finally:
        pool.shutdown(wait=False)


# -- plan state ahead of the futures' state (callbacks see it) --------------------------
def _keeping(got: list[object], call: Callable[[], object]) -> Callable[[object], None]:
    """A done-callback that keeps what ``call()`` returns, or the exception it raises."""

    def callback(_: object) -> None:
        try:
            got.append(call())
        except BaseException as e:  # reported by the test
            got.append(e)

    return callback


def test_submit_on_a_cancelled_dependent_from_a_cancel_callback(sch: Scheduler) -> None:
    """Cancelling ``a`` cancels its dependent ``b``; a's callbacks run before b's future
    is cancelled.  A task submitted on b from such a callback must fail with a
    DependencyError, not make submit raise."""
    Q = Queue(sch, max_workers=1)
    a = Q.submit(int)
    b = Q.submit(lambda v: v, a)
    got: list[object] = []
    a.add_done_callback(_keeping(got, lambda: Q.submit(lambda v: v, b)))
    assert a.cancel()
    assert b.cancelled()
    assert len(got) == 1
    assert not isinstance(got[0], BaseException), f"submit raised {got[0]!r}"
    assert isinstance(got[0].exception(0), DependencyError)  # type: ignore[attr-defined]


def test_submit_on_a_failed_dependent_from_a_failure_callback(sch: Scheduler) -> None:
    """The same when ``a`` raises: b and c fail without running; b's callback runs before
    c's future is set, and a task on c submitted there must fail, not raise."""
    Q = Queue(sch, max_workers=1)

    def boom() -> None:
        raise ValueError("bad")

    a = Q.submit(boom)
    b = Q.submit(lambda v: v, a)
    c = Q.submit(lambda v: v, b)
    got: list[object] = []
    b.add_done_callback(_keeping(got, lambda: Q.submit(lambda v: v, c)))
    sch.start()
    assert sch.wait(timeout=5)
    assert len(got) == 1
    assert not isinstance(got[0], BaseException), f"submit raised {got[0]!r}"
    assert isinstance(got[0].exception(5), DependencyError)  # type: ignore[attr-defined]


def test_item_of_a_cancelled_generator_from_a_cancel_callback(sch: Scheduler) -> None:
    """A generator cancelled through its requirement: asking for an item in the
    requirement's cancel callback must give a failed item, not raise (nor leave a
    pending item behind for later askers)."""
    Q = Queue(sch, max_workers=1)
    root = Q.submit(int)

    def gen(_: object):  # type: ignore[no-untyped-def]
        yield 1

    g = Q.submit(gen, root)
    got: list[object] = []
    root.add_done_callback(_keeping(got, lambda: g[0]))
    assert root.cancel()
    assert len(got) == 1
    assert not isinstance(got[0], BaseException), f"g[0] raised {got[0]!r}"
    assert g[0].done(), "the item stays pending for ever"


def test_cancelling_an_item_does_not_kill_its_generator(sch: Scheduler) -> None:
    """An item future can be cancelled (it has not 'started'); the generator yielding it
    later must not die of InvalidStateError."""
    Q = Queue(sch, max_workers=1)

    def gen():  # type: ignore[no-untyped-def]
        yield from range(3)

    g = Q.submit(gen)
    item = g[1]
    cancelled = item.cancel()
    sch.start()
    assert sch.wait(timeout=5)
    assert cancelled and item.cancelled()
    assert g.exception(0) is None, repr(g.exception(0))
    assert g[2].result(0) == 2


@pytest.mark.parametrize("how", ["cancelled", "requirement failed"])
def test_items_of_a_generator_that_never_runs_fail(sch: Scheduler, how: str) -> None:
    """A generator that never runs (cancelled, or its requirement failed) produces no
    item: the items asked for must fail, and their dependents too, so that wait() ends."""
    Q = Queue(sch, max_workers=1)

    def boom() -> None:
        raise ValueError("x")

    def gen(_: object):  # type: ignore[no-untyped-def]
        yield 1

    root = Q.submit(boom if how == "requirement failed" else int)
    g = Q.submit(gen, root)
    item = g[0]
    dependent = Q.submit(lambda v: v, item)
    if how == "cancelled":
        assert g.cancel()
    sch.start()
    ended = sch.wait(timeout=1)
    assert item.done() and dependent.done() and ended, sch.stats()["total"]


@pytest.mark.parametrize("how", ["measure fails", "close cancelled"])
def test_a_session_whose_release_never_runs_gives_its_slot_back(sch: Scheduler, how: str) -> None:
    """A hold task keeps its slot until a task with release=[it] ends.  When that task
    can no longer run (its requirement failed, or it was cancelled), the slot must come
    back: on a queue of one slot, nothing would ever run there again."""
    instrument = Queue(sch, max_workers=1)

    def boom(_: object) -> None:
        raise ValueError("x")

    session = instrument.submit(lambda: "s", hold=True)
    measure = instrument.submit(boom if how == "measure fails" else (lambda v: v), session)
    close = instrument.submit(lambda m: None, measure, release=[session])
    if how == "close cancelled":
        assert close.cancel()
    sch.start()
    sch.wait(timeout=1)
    later = instrument.submit(lambda: "ran")
    ended = sch.wait(timeout=1)
    assert later.done() and ended, sch.stats()["total"]


# -- what passes: the futures' conditions, waiters and callbacks ----------------------
def test_many_waiters_with_short_timeouts_miss_no_wake_up(sch: Scheduler) -> None:
    """Threads wait on many futures with short timeouts, racing the notifications (a
    sleeper removed on timeout while notify_all runs): each gets every result."""
    Q = Queue(sch, max_workers=3)
    n = 600

    def work(i: int) -> int:
        time.sleep(0.0002 * (i % 3))
        return i

    fs = [Q.submit(work, i) for i in range(n)]
    errors: list[BaseException] = []
    seen: list[int] = [0] * 8

    def waiter(k: int) -> None:
        try:
            for i in range(k, n, 8):
                while True:
                    try:
                        assert fs[i].result(timeout=0.0005) == i
                        break
                    except cf.TimeoutError:
                        continue
                seen[k] += 1
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=waiter, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    sch.start()
    for t in threads:
        t.join(10)
    assert not errors and sum(seen) == n
    assert all(f._sleepers in (None, []) for f in fs)  # no sleeper left behind


def test_callbacks_may_block_on_futures_of_the_same_scheduler(sch: Scheduler) -> None:
    """A done callback runs outside the shared lock: it may wait for another future of
    the same scheduler that is still running on another slot."""
    Q = Queue(sch, max_workers=2)
    gate = threading.Event()
    slow = Q.submit(gate.wait, 5)
    fast = Q.submit(lambda: "fast")
    got: list[object] = []

    def cb(_: object) -> None:
        gate.set()
        got.append(slow.result(timeout=5))

    fast.add_done_callback(cb)
    sch.start()
    assert sch.wait(timeout=5)
    assert got == [True]


def test_cf_wait_first_exception_with_task_futures(sch: Scheduler) -> None:
    """cf.wait(FIRST_EXCEPTION) tests each done future while it holds the locks of all
    of them: bool(f), f.cancelled() and f.exception() take a future's condition again
    (so it must be reentrant), and a future of a task that is no generator is true."""
    Q = Queue(sch, max_workers=2)

    def boom() -> None:
        raise ValueError("x")

    gate = threading.Event()
    bad = Q.submit(boom)
    slow = Q.submit(gate.wait, 5)
    sch.start()
    bad.exception(5)
    got: list[Any] = []
    t = threading.Thread(  # in a thread: a self-deadlock must fail the test, not hang it
        target=lambda: got.append(cf.wait([bad, slow], timeout=5, return_when=cf.FIRST_EXCEPTION)),
        daemon=True,
    )
    t.start()
    t.join(5)
    gate.set()
    assert got, "cf.wait(return_when=FIRST_EXCEPTION) hung"
    done, not_done = got[0]
    assert done == {bad} and not_done == {slow}
    g = Q.submit(lambda: (yield 1))
    g.result(5)
    assert bool(g) and bool(bad)


def test_cf_wait_and_as_completed_on_generator_items(sch: Scheduler) -> None:
    """Items share the scheduler's lock with the tasks: cf.wait and as_completed see them
    done as the generator yields them, and a missing one fails."""
    Q = Queue(sch, max_workers=1)

    def gen():  # type: ignore[no-untyped-def]
        for i in range(5):
            time.sleep(0.005)
            yield i * i

    g = Q.submit(gen)
    items = [g[i] for i in range(7)]
    sch.start()
    order: list[Any] = list(cf.as_completed(items, timeout=5))  # type: ignore[arg-type]
    assert set(order) == set(items)
    done, not_done = cf.wait(items, timeout=5)
    assert not not_done
    assert [f.result(0) for f in items[:5]] == [0, 1, 4, 9, 16]
    assert isinstance(items[6].exception(0), IndexError)


def test_a_future_is_pending_until_set_and_its_repr_pickling_unchanged(sch: Scheduler) -> None:
    """What users see of a future: repr, cf.Future states, running(), not picklable (it
    never was: it holds its scheduler)."""
    Q = Queue(sch, max_workers=1)
    gate = threading.Event()
    f = Q.submit(gate.wait, 5)
    assert repr(f).startswith("<TaskFuture ") and repr(f).endswith(" pending>")
    assert not f.running() and not f.done() and not f.cancelled()
    sch.start()
    deadline = time.monotonic() + 5
    while not f.running() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert f.running() and repr(f).endswith(" running>")
    gate.set()
    assert f.result(5) is True and repr(f).endswith(" finished>")
    with pytest.raises((TypeError, pickle.PicklingError)):
        pickle.dumps(f)


def test_cancels_racing_the_workers_keep_the_counts(sch: Scheduler) -> None:
    """A thread cancels tasks (and through them their dependents) while the workers take
    them: each future ends once, cancelled or run, and the counts add up."""
    Q = Queue(sch, max_workers=3)
    roots = [Q.submit(time.sleep, 0.0001) for _ in range(300)]
    kids = [Q.submit(lambda v: v, r) for r in roots]
    sch.start()
    said = [r.cancel() for r in reversed(roots)]
    assert sch.wait(timeout=5)
    for ok, r in zip(reversed(said), roots, strict=True):
        assert r.done() and r.cancelled() == ok
    for r, k in zip(roots, kids, strict=True):
        assert k.done() and (k.cancelled() if r.cancelled() else k.result(0) is None)
    total = sch.stats()["total"]
    assert total["cancelled"] == sum(2 for r in roots if r.cancelled())
    assert total["done"] + total["cancelled"] == 600 and total["pending"] == 0
    assert total["running"] == 0 and total["failed"] == 0


# -- what passes: futures as planner nodes, argument tuples as requirements -------------
def test_a_ran_task_lets_its_arguments_and_requirements_go(sch: Scheduler) -> None:
    """Once a task ran, its future (kept by the caller) keeps neither its arguments nor
    its requirements' futures (the argument tuple was its requirements: f(x, y))."""
    Q = Queue(sch, max_workers=1)
    arg = Blob()
    x = Q.submit(Blob, 1)
    y = Q.submit(Blob, 2)
    z = Q.submit(lambda a, b: a.n + b.n, x, y)  # the arguments are the requirements
    w = Q.submit(lambda a, b: b.n, arg, x)
    refs = [weakref.ref(o) for o in (arg, x, y)]
    sch.start()
    assert sch.wait(timeout=5)
    assert z.result(0) == 3 and w.result(0) == 1
    del arg, x, y
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
    assert z.args == () and z.ups == () and w.args == ()


def test_failed_dependents_name_the_failed_requirement(sch: Scheduler) -> None:
    """With the argument tuple kept as requirements, dependents failing because an item
    was never produced name the requirement that failed (found in their ``ups``), not
    one that succeeded."""
    Q = Queue(sch, max_workers=1)

    def gen():  # type: ignore[no-untyped-def]
        yield "only"

    ok = Q.submit(lambda: 1)
    g = Q.submit(gen)
    missing = g[1]
    mid = Q.submit(lambda u, v: u, ok, missing)  # plain: its ups are (ok, g[1])
    top = Q.submit(lambda u, v: v, ok, mid)
    sch.start()
    assert sch.wait(timeout=5)
    assert isinstance(missing.exception(0), IndexError)
    assert "its requirement gen[1] raised IndexError" in str(mid.exception(0)).replace(
        f"{gen.__qualname__}", "gen"
    )
    assert "its requirement <lambda> raised DependencyError" in str(top.exception(0)).replace(
        f"{top.name}", "<lambda>"
    )
    assert top.exception(0).cause is mid.exception(0)  # type: ignore[union-attr]


def test_cancel_with_plain_argument_tuples_and_counts(sch: Scheduler) -> None:
    """Cancel through tasks whose argument tuple is their requirements; counts, cancelled
    states and wait() come out right, and the rest runs."""
    Q = Queue(sch, max_workers=2)
    a = Q.submit(lambda: 1)
    b = Q.submit(lambda: 2)
    c = Q.submit(lambda u, v: u + v, a, b)
    d = Q.submit(lambda u, v: u * v, c, b)
    e = Q.submit(lambda u: u, b)
    assert a.cancel()
    assert a.cancelled() and c.cancelled() and d.cancelled() and not b.cancelled()
    assert not c.cancel() or c.cancelled()
    sch.start()
    assert sch.wait(timeout=5)
    assert e.result(0) == 2
    total = sch.stats()["total"]
    assert total["cancelled"] == 3 and total["done"] == 2 and total["pending"] == 0


def test_hold_and_release_with_plain_arguments(sch: Scheduler) -> None:
    """A session: the measure takes the session's future as its only argument (kept as
    its requirements), the close releases it; an intruder never runs inside."""
    instrument = Queue(sch, max_workers=1)
    log: list[str] = []
    for k in range(5):
        session = instrument.submit(lambda k=k: log.append(f"open{k}") or k, hold=True)  # type: ignore[func-returns-value]
        measure = instrument.submit(lambda s: log.append(f"measure{s}") or s, session)  # type: ignore[func-returns-value]
        instrument.submit(lambda m: log.append(f"close{m}"), measure, release=[session])
        instrument.submit(lambda: log.append("intruder"))
    sch.start()
    assert sch.wait(timeout=5)
    for k in range(5):
        i, j = log.index(f"open{k}"), log.index(f"close{k}")
        assert log[i : j + 1] == [f"open{k}", f"measure{k}", f"close{k}"], log


def test_process_and_pool_executors_with_plain_arguments(sch: Scheduler) -> None:
    """Other executors get the results, not the futures, when the argument tuple is the
    requirements."""
    P = Queue(sch, max_workers=2, executor="process")
    with cf.ThreadPoolExecutor(2) as pool:
        T = Queue(sch, max_workers=2, executor=pool)
        a = P.submit(pow, 3, 4)
        b = T.submit(lambda: 5)
        c = P.submit(divmod, a, b)
        d = T.submit(lambda u, v: (u, v), c, a)
        sch.start()
        assert d.result(timeout=60) == ((16, 1), 81)


def test_an_executor_that_cannot_stream_items_refuses_generator_tasks(sch: Scheduler) -> None:
    def gen() -> Iterator[int]:
        yield 1

    with cf.ThreadPoolExecutor(1) as pool:
        T = Queue(sch, executor=pool)
        with pytest.raises(InvalidInput, match="gen is a generator: generator tasks run on thread"):
            T.submit(gen)


def test_two_threads_ask_for_the_same_items_while_the_generator_runs(sch: Scheduler) -> None:
    """f[i] from several threads at once, while the generator yields: one future an
    item, each done with its value, and their dependents run."""
    Q = Queue(sch, max_workers=2)

    def gen():  # type: ignore[no-untyped-def]
        for i in range(200):
            if i % 20 == 0:
                time.sleep(0.001)
            yield i

    g = Q.submit(gen)
    sch.start()
    got: list[list[Any]] = [[], [], [], []]

    def ask(k: int) -> None:
        for i in range(0, 200, 1):
            got[k].append(g[i])

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert all(got[k][i] is got[0][i] for k in range(4) for i in range(200))
    plus = [Q.submit(lambda v: v + 1, f) for f in got[0]]
    assert [p.result(5) for p in plus] == list(range(1, 201))


def test_releasing_a_failed_session_fails_at_once(sch: Scheduler) -> None:
    """A task submitted with release=[a hold task that failed] fails at once, with a
    DependencyError naming the session (it used to raise StopIteration from submit)."""
    instrument = Queue(sch, max_workers=1)

    def broken() -> None:
        raise OSError("instrument offline")

    session = instrument.submit(broken, hold=True)
    sch.start()
    assert sch.wait(timeout=5)
    close = instrument.submit(lambda: None, release=[session])
    err = close.exception(0)
    assert isinstance(err, DependencyError) and "instrument offline" in str(err)
    assert instrument.submit(lambda: "free").result(timeout=5) == "free"


# -- misuse and hostile values (a sweep of the API) ---------------------------------------
class _BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ exploded")


def _raise_badstr() -> None:
    raise _BadStr()


def test_a_failure_whose_str_raises_fails_its_dependents_and_the_queue_goes_on(
    sch: Scheduler,
) -> None:
    q = Queue(sch, max_workers=1)
    bad = q.submit(_raise_badstr)
    dependent = q.submit(lambda x: x, bad)
    sch.start()
    error = dependent.exception(timeout=10)
    assert isinstance(error, DependencyError) and "its message cannot be read" in str(error)
    assert error.cause is bad.exception()
    assert q.submit(lambda: 42).result(timeout=10) == 42  # its one worker thread lives


def test_a_scheduler_shut_down_takes_no_more_tasks_and_does_not_start(sch: Scheduler) -> None:
    q = Queue(sch, 2)
    sch.start()
    assert q.submit(pow, 2, 3).result(timeout=10) == 8
    sch.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        q.submit(pow, 2, 4)
    with pytest.raises(RuntimeError, match="shut down"):
        sch.start()


def test_a_with_block_that_stopped_its_scheduler_ends_and_raises_its_error() -> None:
    done = threading.Event()

    def block() -> None:
        with pytest.raises(ValueError, match="in the block"), Scheduler() as s:
            q = Queue(s, 1)
            q.submit(time.sleep, 0.2)
            q.submit(time.sleep, 0.2)
            s.stop()
            raise ValueError("in the block")
        done.set()

    t = threading.Thread(target=block, daemon=True)
    t.start()
    # (a bound on a hang, not a timing: the block ends once its running task does)
    assert done.wait(60), "the with block never ended"


def test_waiting_for_ever_on_a_stopped_scheduler_warns(sch: Scheduler) -> None:
    f = Queue(sch, 1).submit(pow, 2, 2)
    starter = threading.Timer(0.2, sch.start)  # (another thread starts it, later)
    starter.start()
    with pytest.warns(RuntimeWarning, match="waiting for 1 task on a scheduler that is not"):
        assert sch.wait()
    starter.join()
    assert f.result() == 4


@pytest.mark.parametrize("resources", [{"gpu": float("nan")}, {"gpu": -1}, {"gpu": "1"},
                                       ["gpu"], {"gpu": float("inf")}, {3: 1}])  # fmt: skip
def test_resources_are_finite_amounts_of_at_least_zero(sch: Scheduler, resources: Any) -> None:
    with pytest.raises(InvalidInput, match="resources must map names to"):
        Queue(sch, 2, resources=resources)
    q = Queue(sch, 2, resources={"gpu": 8})
    with pytest.raises(InvalidInput, match="resources must map names to"):
        q.submit(pow, 2, 2, resources=resources)
    with pytest.raises(InvalidInput, match="more than the queue has"):
        q.submit(pow, 2, 2, resources={"gpu": 9})
    with pytest.raises(InvalidInput, match="no resource cpu"):
        q.submit(pow, 2, 2, resources={"cpu": 1})
    sch.start()
    assert q.submit(pow, 2, 2, resources={"gpu": 8}).result(timeout=10) == 4
    assert sch.stats()["queues"][q.name]["pending"] == 0  # (what was refused is nowhere)


def test_after_and_release_take_lists_and_counts_are_whole_numbers(sch: Scheduler) -> None:
    q = Queue(sch, 1)
    f = q.submit(pow, 2, 2)
    for kw in ({"after": f}, {"release": f}, {"after": 3}):
        with pytest.raises(InvalidInput, match="takes a list of futures"):
            q.submit(pow, 2, 3, **kw)

    def gen(n: int) -> Iterator[int]:
        yield from range(n)

    for bad in (float("nan"), "x", -1, 1.5, True):
        gen.number_of_results = lambda n, bad=bad: bad  # type: ignore[attr-defined]
        with pytest.raises(InvalidInput, match="number_of_results must give a whole number"):
            q.submit(gen, 2)
    sch.start()
    assert q.submit(pow, 2, 3, after=[f]).result(timeout=10) == 8


def test_containers_keep_their_type_when_futures_in_them_are_replaced(sch: Scheduler) -> None:
    from collections import Counter, OrderedDict, defaultdict, namedtuple

    q = Queue(sch, 2)
    two = q.submit(lambda: 2)
    Pair = namedtuple("Pair", "a b")
    counts = Counter(x=1)
    plain = [1, 2]

    def look(n: int, c: Counter[str], d: defaultdict[str, list[int]], o: Any, p: Any,
             same: list[int]) -> tuple[Any, ...]:  # fmt: skip
        return n, c["missing"], d["new"], type(o), p, same is plain

    counted = q.submit(lambda c: c, Counter(a=two))  # (a future as a count: set, not added)
    f = q.submit(look, two, counts, defaultdict(list, k=two), OrderedDict(z=two), Pair(two, 3),
                 plain)  # fmt: skip
    sch.start()
    n, missing, new, kind, pair, same = f.result(timeout=10)
    assert (n, missing, new, kind) == (2, 0, [], OrderedDict)
    assert pair == Pair(2, 3) and type(pair) is Pair
    assert same  # (a container without a future in it goes as it is)
    assert counted.result(timeout=10) == Counter(a=2) and type(counted.result()) is Counter


def test_cancel_twice_is_true_and_wait_takes_an_endless_timeout(sch: Scheduler) -> None:
    q = Queue(sch, 1)
    f = q.submit(pow, 2, 2)
    assert f.cancel() and f.cancel() and f.cancelled()  # (as concurrent.futures says)
    sch.start()
    assert sch.wait(timeout=float("inf"))


def test_a_queue_belongs_to_a_scheduler() -> None:
    with pytest.raises(InvalidInput, match="belongs to a Scheduler"):
        Queue(None)  # type: ignore[arg-type]


# -- threads: as many as the tasks need, up to the queue's width ------------------------
def test_a_wide_queue_starts_a_thread_per_task_not_its_width(sch: Scheduler) -> None:
    q = Queue(sch, 10_000)
    sch.start()
    together = threading.Barrier(3, timeout=30)  # (each task runs only if all three do)
    futures = [q.submit(together.wait) for _ in range(3)]
    assert sorted(f.result(timeout=60) for f in futures) == [0, 1, 2]
    assert len(q._threads) == 3  # (10,000 before: each a thread of the process)


_FEW_THREADS = """
import resource, threading, time, warnings
threading.stack_size(256 * 2**20)  # (so that a 2 GiB address space holds a few)
resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
from qdo.sched import Queue, Scheduler
sch = Scheduler()
q = Queue(sch, 50)
sch.start()
with warnings.catch_warnings(record=True) as said:
    warnings.simplefilter("always")
    futures = [q.submit(lambda i=i: (time.sleep(0.02), i)[1]) for i in range(30)]
    assert [f.result(timeout=60) for f in futures] == list(range(30))
alive = sum(t.name.startswith("qdo-sched-") for t in threading.enumerate())
assert 0 < len(q._threads) == alive < 50, (len(q._threads), alive)
(warning,) = [str(w.message) for w in said]
assert f"runs its tasks on {alive} threads, not 50" in warning, warning
sch.shutdown()
print("ok")
"""


def test_a_queue_the_system_gives_fewer_threads_runs_on_those_it_has() -> None:
    # a real limit (its address space) in a process of its own: a thread that cannot
    # start failed the submit, and the queue counted it as one of its threads
    import subprocess

    got = subprocess.run([sys.executable, "-c", _FEW_THREADS], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert got.returncode == 0 and got.stdout.strip() == "ok", got.stderr[-2000:]


def test_an_argument_that_holds_itself(sch: Scheduler) -> None:
    q = Queue(sch, 2)
    sch.start()
    loop: list[Any] = [1, 2]
    loop.append(loop)
    five = q.submit(lambda: 5)
    # with no future in it, it goes as it is (RecursionError before), beside futures too
    assert q.submit(len, loop).result(timeout=30) == 3
    got = q.submit(lambda x, y: (x, y), five, loop).result(timeout=30)
    assert got[0] == 5 and got[1] is loop
    # with futures in it, its results have nowhere to go: one clear error, nothing queued
    held: list[Any] = [five]
    held.append(held)
    mapping: dict[str, Any] = {"five": five}
    mapping["me"] = mapping
    for arg in (held, mapping):
        with pytest.raises(InvalidInput, match="holds itself"):
            q.submit(len, arg)
    sch.wait(timeout=30)
    counts = sch.stats()["total"]
    assert counts["pending"] == 0 and counts["done"] == 3, counts
