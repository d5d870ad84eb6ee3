"""The in-process scheduler with real threads (and a real process pool)."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections.abc import Iterator

import pytest

import qdo.sched
from qdo.errors import InvalidInput
from qdo.sched import DependencyError, Queue, Scheduler


@pytest.fixture
def sch() -> Iterator[Scheduler]:
    s = Scheduler()
    yield s
    s.shutdown()


def test_importable_as_smqsched() -> None:
    import smqsched

    assert smqsched.Scheduler is qdo.sched.Scheduler and smqsched.Queue is qdo.sched.Queue


def test_seed_grid_with_numpy_results(sch: Scheduler) -> None:
    numpy = pytest.importorskip("numpy")
    acq = Queue(sch, max_workers=1)
    Q = Queue(sch)
    n = 12
    A = [Q.submit(numpy.random.random, (20, 20)) for _ in range(n)]
    B = [Q.submit(numpy.linalg.inv, a) for a in A]
    C = [Q.submit(lambda a, b: a * b, B[i], B[k]) for i in range(n) for k in range(n)]
    sch.start()
    results = [c.result(timeout=60) for c in C]
    for i in range(n):
        assert numpy.allclose(A[i].result() @ B[i].result(), numpy.eye(20))
    assert numpy.allclose(results[5 * n + 7], B[5].result() * B[7].result())
    assert acq.max_workers == 1


def test_one_slot_runs_output_first(sch: Scheduler) -> None:
    Q = Queue(sch, max_workers=1)
    ran: list[str] = []

    def task(name: str, *deps: object) -> str:
        ran.append(name)
        return name

    n = 4
    A = [Q.submit(task, f"A{i}") for i in range(n)]
    B = [Q.submit(task, f"B{i}", A[i]) for i in range(n)]
    C = [Q.submit(task, f"C{i * n + k}", B[i], B[k]) for i in range(n) for k in range(n)]
    sch.start()
    sch.wait()
    assert ran[:9] == ["A3", "B3", "C15", "A2", "B2", "C14", "A1", "B1", "C13"]
    assert len(ran) == len(A) + len(B) + len(C)


def test_seed_generator_example(sch: Scheduler) -> None:
    Q = Queue(sch, max_workers=2)
    found: list[int] = []
    events: list[str] = []

    def find_minima(x):  # type: ignore[no-untyped-def]
        yield False
        for i in range(1, len(x) - 1):
            yield x[i] < x[i - 1] and x[i] < x[i + 1]
            time.sleep(0.02)
        events.append("generator done")
        yield False

    find_minima.number_of_results = lambda x: len(x)  # type: ignore[attr-defined]

    def print_minimum(i: int, is_minimum: bool) -> None:
        if is_minimum:
            found.append(i)
            events.append(f"minimum {i}")

    x = [3, 1, 2, 0, 5, 4, 6, 7, 2, 9]
    is_min = Q.submit(find_minima, x)
    assert len(is_min) == len(x)
    for i in range(len(x)):
        Q.submit(print_minimum, i, is_min[i])
    sch.start()
    sch.wait()
    assert sorted(found) == [1, 3, 5, 8]
    assert is_min.result() == [False, True, False, True, False, True, False, False, True, False]
    # the dependents of early items ran while the generator was still going
    assert events.index("minimum 1") < events.index("generator done")


def test_generator_that_breaks_its_promise(sch: Scheduler) -> None:
    Q = Queue(sch, max_workers=1)

    def short(n):  # type: ignore[no-untyped-def]
        yield from range(n - 2)

    short.number_of_results = lambda n: n  # type: ignore[attr-defined]
    g = Q.submit(short, 5)
    items = [g[i] for i in range(5)]
    with pytest.raises(IndexError):
        g[5]
    sch.start()
    sch.wait()
    assert [f.result() for f in items[:3]] == [0, 1, 2]
    with pytest.raises(IndexError, match="yielded 3 items of the 5"):
        items[4].result()

    def long(n):  # type: ignore[no-untyped-def]
        yield from range(n + 3)

    long.number_of_results = lambda n: n  # type: ignore[attr-defined]
    h = Q.submit(long, 2)
    sch.wait()
    with pytest.raises(IndexError, match="more than the 2"):
        h.result()


def test_number_of_results_counts_once_future_arguments_are_known(sch: Scheduler) -> None:
    # the seed's pattern with x itself a future: the count comes when x does
    Q = Queue(sch, max_workers=2)

    def short(x):  # type: ignore[no-untyped-def]
        yield from x[:-1]  # one item fewer than it announces

    short.number_of_results = lambda x: len(x)  # type: ignore[attr-defined]
    x = Q.submit(lambda: [10, 20, 30])
    g = Q.submit(short, x)
    with pytest.raises(TypeError, match="once its arguments are known"):
        len(g)
    items = [g[i] for i in range(3)]
    sch.start()
    sch.wait()
    assert len(g) == 3
    assert [items[0].result(), items[1].result()] == [10, 20]
    with pytest.raises(IndexError, match="yielded 2 items of the 3 it announced"):
        items[2].result()
    with pytest.raises(IndexError, match="announced 3 results; no item 3"):
        g[3]

    def long(x):  # type: ignore[no-untyped-def]
        yield from [*x, 0]

    long.number_of_results = lambda x: len(x)  # type: ignore[attr-defined]
    h = Q.submit(long, Q.submit(lambda: [1, 2]))
    sch.wait()
    with pytest.raises(IndexError, match="more than the 2 results it announced"):
        h.result()


def test_futures_anywhere_in_arguments_and_after(sch: Scheduler) -> None:
    Q = Queue(sch, max_workers=2)
    a = Q.submit(lambda: 1)
    b = Q.submit(lambda: 2)
    order: list[str] = []
    c = Q.submit(lambda d, lst, *, kw: d["x"] + lst[0][1] + kw, {"x": a}, [(0, b)], kw=a)
    first = Q.submit(lambda: order.append("first"))
    Q.submit(lambda: order.append("second"), after=[first])
    sch.start()
    assert c.result(timeout=10) == 4
    sch.wait()
    assert order == ["first", "second"]


def test_concurrent_futures_compatibility(sch: Scheduler) -> None:
    Q = Queue(sch, max_workers=2)
    fs = [Q.submit(time.sleep, 0.01 * i) for i in range(5)]
    seen: list[object] = []
    fs[0].add_done_callback(seen.append)
    sch.start()
    done, not_done = cf.wait(fs, timeout=10)
    assert len(done) == 5 and not not_done
    assert len(list(cf.as_completed(fs, timeout=10))) == 5
    assert seen == [fs[0]] and fs[0].exception() is None


def test_waiting_on_futures_times_out_and_wakes(sch: Scheduler) -> None:
    """The futures' own lock and wake-ups (not threading.Condition): a timeout expires,
    a blocked result() and cf.wait wake when the task ends, callbacks run once."""
    Q = Queue(sch, max_workers=1)
    gate = threading.Event()
    slow = Q.submit(gate.wait, 10)
    with pytest.raises(cf.TimeoutError):
        slow.result(timeout=0.05)  # not started at all
    sch.start()
    with pytest.raises(cf.TimeoutError):
        slow.exception(timeout=0.05)  # running
    calls: list[object] = []
    slow.add_done_callback(calls.append)
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(slow.result(timeout=10)))
    waiter.start()
    done, pending = cf.wait([slow], timeout=0.05, return_when=cf.FIRST_COMPLETED)
    assert not done and pending == {slow}
    gate.set()
    done, pending = cf.wait([slow], timeout=10, return_when=cf.FIRST_COMPLETED)
    waiter.join(10)
    assert done == {slow} and got == [True] and calls == [slow]
    slow.add_done_callback(calls.append)  # added when done: runs at once
    assert calls == [slow, slow]


def test_failure_names_its_cause_and_spares_the_rest(sch: Scheduler) -> None:
    Q = Queue(sch, max_workers=2)

    def boom() -> None:
        raise ValueError("bad input")

    f = Q.submit(boom)
    g = Q.submit(lambda v: v, f)
    h = Q.submit(lambda v: v, g)
    ok = Q.submit(lambda: "fine")
    sch.start()
    sch.wait()
    with pytest.raises(ValueError):
        f.result()
    for dependent in (g, h):
        err = dependent.exception()
        assert isinstance(err, DependencyError)
    assert "boom raised ValueError: bad input" in str(g.exception())
    assert isinstance(g.exception().__cause__, ValueError)  # type: ignore[union-attr]
    assert ok.result() == "fine"
    late = Q.submit(lambda v: v, f)
    assert isinstance(late.exception(timeout=5), DependencyError)


def test_cancel_cancels_dependents(sch: Scheduler) -> None:
    Q = Queue(sch, max_workers=1)
    a = Q.submit(lambda: 1)
    b = Q.submit(lambda v: v, a)
    other = Q.submit(lambda: 2)
    assert a.cancel() and a.cancelled() and b.cancelled()
    sch.start()
    assert other.result(timeout=10) == 2
    assert sch.wait(timeout=10)
    assert not other.cancel()


def test_widths_are_never_exceeded(sch: Scheduler) -> None:
    lock = threading.Lock()
    now = {"narrow": 0, "wide": 0}
    peak = {"narrow": 0, "wide": 0}

    def work(kind: str) -> None:
        with lock:
            now[kind] += 1
            peak[kind] = max(peak[kind], now[kind])
        time.sleep(0.002)
        with lock:
            now[kind] -= 1

    narrow = Queue(sch, max_workers=1)
    wide = Queue(sch, max_workers=3)
    for i in range(60):
        (narrow if i % 2 else wide).submit(work, "narrow" if i % 2 else "wide")
    sch.start()
    sch.wait()
    assert peak == {"narrow": 1, "wide": 3}


def test_resources_are_counted(sch: Scheduler) -> None:
    lock = threading.Lock()
    used = [0, 0]  # now, peak

    def job(units: int) -> None:
        with lock:
            used[0] += units
            used[1] = max(used[1], used[0])
        time.sleep(0.005)
        with lock:
            used[0] -= units

    gpu = Queue(sch, max_workers=4, resources={"gpu_mem": 32})
    for i in range(20):
        units = 8 if i % 2 else 16
        gpu.submit(job, units, resources={"gpu_mem": units})
    sch.start()
    sch.wait()
    assert used[1] <= 32
    with pytest.raises(ValueError):
        gpu.submit(job, 1, resources={"gpu_mem": 64})


def test_cross_queue_dependencies(sch: Scheduler) -> None:
    acq = Queue(sch, max_workers=1)
    cpu = Queue(sch, max_workers=2)
    raw = [acq.submit(lambda i=i: i * 10) for i in range(5)]
    done = [cpu.submit(lambda r: r + 1, r) for r in raw]
    sch.start()
    assert [d.result(timeout=10) for d in done] == [1, 11, 21, 31, 41]


def test_stop_and_resume_lose_nothing_and_rerun_nothing(sch: Scheduler) -> None:
    Q = Queue(sch, max_workers=2)
    runs: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            runs.append(i)
        time.sleep(0.003)
        return i

    fs = [Q.submit(work, i) for i in range(200)]
    sch.start()
    time.sleep(0.05)
    sch.stop()
    assert not sch.is_running()
    time.sleep(0.05)  # running tasks finish
    frozen = len(runs)
    time.sleep(0.05)
    assert len(runs) == frozen, "no task starts while stopped"
    more = [Q.submit(work, 1000 + i) for i in range(5)]  # submitting while stopped
    sch.start()
    assert sch.wait(timeout=30)
    assert sorted(runs) == list(range(200)) + [1000 + i for i in range(5)]
    assert [f.result() for f in fs] == list(range(200))
    assert all(f.done() for f in more)


def test_hold_keeps_the_instrument_for_its_session(sch: Scheduler) -> None:
    instrument = Queue(sch, max_workers=1)
    log: list[str] = []
    session = instrument.submit(lambda: log.append("open") or "s", hold=True)
    measure = instrument.submit(lambda s: log.append("measure"), session)
    instrument.submit(lambda m: log.append("close"), measure, release=[session])
    intruder = instrument.submit(lambda: log.append("intruder"))
    sch.start()
    assert sch.wait(timeout=10)
    assert intruder.done()
    i = log.index("intruder")
    assert not (log.index("open") < i < log.index("close")), log


def test_process_executor(sch: Scheduler) -> None:
    Q = Queue(sch, max_workers=2, executor="process")
    a = Q.submit(pow, 2, 10)
    b = Q.submit(divmod, a, 7)
    sch.start()
    assert b.result(timeout=60) == divmod(1024, 7)
    with pytest.raises(InvalidInput, match="cannot be sent to a process"):
        Q.submit(lambda: 1)

    def gen():  # type: ignore[no-untyped-def]
        yield 1

    with pytest.raises(InvalidInput, match="generator"):
        Q.submit(gen)


def test_any_executor(sch: Scheduler) -> None:
    with cf.ThreadPoolExecutor(2) as pool:
        Q = Queue(sch, max_workers=2, executor=pool)
        fs = [Q.submit(lambda i=i: i * i) for i in range(10)]
        sch.start()
        assert [f.result(timeout=10) for f in fs] == [i * i for i in range(10)]


def test_context_manager_timeline_and_stats(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    with Scheduler() as s:
        Q = Queue(s, max_workers=2, name="cpu")
        fs = [Q.submit(time.sleep, 0.001) for _ in range(10)]
    assert all(f.done() for f in fs)
    rows = s.timeline()
    assert len(rows) == 10 and {r[1] for r in rows} == {"cpu"}
    assert all(start <= end for _, _, _, start, end in rows)
    path = tmp_path / "trace.json"
    rows.to_chrome(path)
    assert len(json.loads(path.read_text())["traceEvents"]) == 10
    assert s.stats()["queues"]["cpu"]["done"] == 10


def test_bad_arguments() -> None:
    s = Scheduler()
    with pytest.raises(InvalidInput):
        Queue(s, max_workers=0)
    with pytest.raises(InvalidInput):
        Queue(s, executor="gpu")
    Q = Queue(s)
    with pytest.raises(InvalidInput):
        Q.submit(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        Q.submit(print, after=[1])  # type: ignore[list-item]
    s.shutdown()


def test_a_failing_generator_fails_its_missing_items(sch: Scheduler) -> None:
    Q = Queue(sch, max_workers=1)

    def gen():  # type: ignore[no-untyped-def]
        yield "first"
        raise RuntimeError("sensor lost")

    g = Q.submit(gen)
    first, second = g[0], g[1]
    after = Q.submit(lambda v: v, second)
    sch.start()
    sch.wait()
    assert first.result() == "first"
    assert "sensor lost" in str(second.exception())
    assert isinstance(after.exception(), DependencyError)


def test_requirements_given_twice_and_items_asked_for_late(sch: Scheduler) -> None:
    Q = Queue(sch, max_workers=2)
    x = Q.submit(lambda: 3)
    twice = Q.submit(lambda a, b: a * b, x, x)  # one requirement, counted once
    assert twice and x  # a future is true, even one of no generator (no len())

    def gen():  # type: ignore[no-untyped-def]
        yield "a"
        raise RuntimeError("sensor lost")

    g = Q.submit(gen)
    sch.start()
    sch.wait()
    assert twice.result() == 9
    # items asked for after the generator ended are made done (or failed) at once, and
    # tasks that take them as arguments run (or fail) like any other dependents
    late_ok, late_missing = g[0], g[1]
    assert late_ok.result(0) == "a"
    assert "sensor lost" in str(late_missing.exception(0))
    echo = Q.submit(lambda v: v + "!", late_ok)
    blocked = Q.submit(lambda v: v, late_missing)
    sch.wait()
    assert echo.result(0) == "a!"
    err = blocked.exception(0)
    assert isinstance(err, DependencyError) and "gen[1]" in str(err)
    assert sch.stats()["total"]["done"] == 3 and sch.stats()["total"]["failed"] == 2


def test_many_threads_waiting_on_futures_of_two_schedulers() -> None:
    """The futures of a scheduler share one reentrant lock: waiters on different futures
    wake only for theirs, cf.wait takes it once per future, tasks may wait on futures,
    and futures of two schedulers mix in one cf.wait."""
    one, two = Scheduler(), Scheduler()
    try:
        Q1, Q2 = Queue(one, max_workers=2), Queue(two, max_workers=2)
        xs = [Q1.submit(lambda i=i: (time.sleep(0.001), i)[1]) for i in range(200)]
        # tasks that block on other futures (not arguments): on the other scheduler
        ys = [Q2.submit(lambda x=x: x.result(timeout=30) * 2) for x in xs[::10]]
        results: dict[int, int] = {}
        errors: list[BaseException] = []

        def waiter(k: int) -> None:
            try:
                for i in range(k, len(xs), 8):
                    results[i] = xs[i].result(timeout=30)
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=waiter, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        two.start()
        one.start()
        done, not_done = cf.wait([*xs, *ys], timeout=30)
        assert not not_done
        order = [f.result() for f in cf.as_completed([*ys, *xs[:50]], timeout=30)]
        for t in threads:
            t.join(30)
        assert not errors and results == {i: i for i in range(200)}
        assert [y.result() for y in ys] == [2 * i for i in range(0, 200, 10)]
        assert len(order) == 70
    finally:
        one.shutdown()
        two.shutdown()


def test_waiting_on_a_scheduler_never_started_says_so() -> None:
    """The seed's ``C = map(lambda a: a.result(), C)`` without ``sch.start()`` hung
    silently; now it warns, and a TimeoutError says why."""

    sch = Scheduler()
    f = Queue(sch, max_workers=1).submit(lambda: 1)
    with pytest.raises(cf.TimeoutError, match=r"not running \(call sch.start\(\)\)"):
        f.result(timeout=0.01)
    with pytest.warns(RuntimeWarning, match="call sch.start"):
        threading.Timer(0.2, sch.start).start()  # another thread starts it: that works
        assert f.result() == 1
    sch.wait()
