"""The in-process scheduler's overhead (issue 4): 100,000 no-op tasks on a queue of 2
threads, against ``concurrent.futures.ThreadPoolExecutor(2)`` and ``dask.delayed``, and
1,000,000 no-op tasks against 100,000.

qdo: ``sch = Scheduler(); Q = Queue(sch, max_workers=2)``, ``Q.submit(noop)`` N times,
then ``sch.start(); sch.wait()``: timed from before the Scheduler is made to the return
of ``wait()``, so submitting and running are both inside.  Every future is then checked
done, without an exception (untimed).

Peers, each in the same run:

- pool: ``ThreadPoolExecutor(2)``, ``ex.submit(noop)`` N times, then
  ``concurrent.futures.wait`` on all N futures (timed from before the pool is made);
- dask: ``dask.compute(*[dask.delayed(noop)() for _ in range(n)], scheduler="threads",
  num_workers=2)`` at N / 10 tasks (dask's threaded scheduler takes most of a
  millisecond a task; at 100,000 it would take over a minute a run); compared per task.

Each figure is the time of one measurement divided by its number of tasks (µs a task),
each measurement in a freshly spawned process after ``gc.collect()``.  Python's cyclic
GC makes workloads of many live objects superlinear, so the figures are with GC on (the
default, judged) and, as diagnostic rows, with ``gc.disable()`` before the timed part.
A diagnostic row runs qdo with ``max_workers=1``: no-ops hold the GIL, so a second
worker thread adds only contention (lock and GIL hand-offs between the two threads).
The 1,000,000-task rows run once (in the first run): about 40 s with GC on.  The order
of the rows rotates from run to run.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

from _common import Config, Ratio, Report, Row, in_child, progress

WORKERS = 2
TARGET_VS_POOL = 1.5  # qdo's time at most 1.5x the pool's
TARGET_VS_DASK = 20.0  # qdo at least 20x faster a task than dask.delayed, threads
TARGET_1M = 12.0  # 1,000,000 tasks at most 12x the time of 100,000


def noop() -> None:
    pass


def _prepare(gc_on: bool) -> None:
    gc.collect()
    if not gc_on:
        gc.disable()


def qdo_noops(n: int, gc_on: bool, workers: int = WORKERS) -> float:
    from qdo.sched import Queue, Scheduler

    _prepare(gc_on)
    start = time.perf_counter()
    sch = Scheduler()
    q = Queue(sch, max_workers=workers)
    futures = [q.submit(noop) for _ in range(n)]
    sch.start()
    sch.wait()
    seconds = time.perf_counter() - start
    gc.enable()
    bad = sum(1 for f in futures if not f.done() or f.exception() is not None)
    sch.shutdown()
    if bad:
        raise RuntimeError(f"{bad} of {n:,} qdo futures not done or failed")
    return seconds


def pool_noops(n: int, gc_on: bool) -> float:
    from concurrent.futures import ThreadPoolExecutor, wait

    _prepare(gc_on)
    start = time.perf_counter()
    ex = ThreadPoolExecutor(WORKERS)
    futures = [ex.submit(noop) for _ in range(n)]
    wait(futures)
    seconds = time.perf_counter() - start
    gc.enable()
    ex.shutdown()
    bad = sum(1 for f in futures if f.exception() is not None)
    if bad:
        raise RuntimeError(f"{bad} of {n:,} pool futures failed")
    return seconds


def dask_noops(n: int) -> float:
    import dask

    _prepare(True)
    start = time.perf_counter()
    tasks = [dask.delayed(noop)() for _ in range(n)]
    results = dask.compute(*tasks, scheduler="threads", num_workers=WORKERS)
    seconds = time.perf_counter() - start
    if len(results) != n:
        raise RuntimeError(f"dask computed {len(results)} results of {n:,}")
    return seconds


def run(cfg: Config) -> Report:
    n = cfg.size(100_000, 10_000)
    n_dask = n // 10
    n_big = n * 10
    f = str(WORKERS)
    qdo = Row(f"qdo  {n:,} no-ops, Queue(sch, max_workers={f})", "µs")
    pool = Row(f"peer {n:,} no-ops, ThreadPoolExecutor({f})", "µs")
    dask_row = Row(f"peer {n_dask:,} no-ops, dask.delayed, threads, num_workers={f}", "µs")
    qdo_small = Row(f"qdo  {n_dask:,} no-ops (dask's size)", "µs")
    qdo_big = Row(f"qdo  {n_big:,} no-ops (1 run)", "µs")
    qdo_nogc = Row(f"diag qdo  {n:,} no-ops, gc.disable()", "µs")
    pool_nogc = Row(f"diag pool {n:,} no-ops, gc.disable()", "µs")
    qdo_one = Row(f"diag qdo  {n:,} no-ops, max_workers=1", "µs")
    qdo_big_nogc = Row(f"diag qdo  {n_big:,} no-ops, gc.disable() (1 run)", "µs")

    def per_task(func: Callable[..., float], size: int, *args: object) -> Callable[[], float]:
        return lambda: in_child(func, size, *args) / size * 1e6

    steps: list[tuple[Row, Callable[[], float]]] = [
        (qdo, per_task(qdo_noops, n, True)),
        (pool, per_task(pool_noops, n, True)),
        (dask_row, per_task(dask_noops, n_dask)),
        (qdo_small, per_task(qdo_noops, n_dask, True)),
        (qdo_nogc, per_task(qdo_noops, n, False)),
        (pool_nogc, per_task(pool_noops, n, False)),
        (qdo_one, per_task(qdo_noops, n, True, 1)),
    ]
    for i in range(cfg.runs):
        k = i % len(steps)
        for row, measure in steps[k:] + steps[:k]:
            progress(f"sched-noop: run {i + 1}/{cfg.runs}, {row.label}")
            row.values.append(measure())
    for row, gc_on in ((qdo_big, True), (qdo_big_nogc, False)):
        progress(f"sched-noop: {row.label}")
        row.values.append(per_task(qdo_noops, n_big, gc_on)())

    # time of n_big tasks over the median time of n tasks
    scale = Row(f"ratio qdo {n_big:,} / {n:,} tasks, time", "x", target=TARGET_1M,
                higher_is_better=False)  # fmt: skip
    scale.values.append(qdo_big.median * n_big / (statistics.median(qdo.values) * n))
    scale_nogc = Row(f"diag ratio {n_big:,} / {n:,} tasks, gc.disable()", "x")
    scale_nogc.values.append(qdo_big_nogc.median * n_big / (qdo_nogc.median * n))
    rows = [qdo, pool, dask_row, qdo_small, qdo_big, scale, qdo_nogc, pool_nogc, qdo_big_nogc,
            scale_nogc, qdo_one]  # fmt: skip
    ratios = [
        Ratio("ratio qdo / pool, time a task", qdo, pool, target=TARGET_VS_POOL,
              higher_is_better=False),
        Ratio(f"ratio dask ({n_dask:,}) / qdo ({n:,}), time a task", dask_row, qdo,
              target=TARGET_VS_DASK),
        Ratio(f"diag ratio dask / qdo, both {n_dask:,} tasks", dask_row, qdo_small),
        Ratio("diag ratio qdo / pool, both gc.disable()", qdo_nogc, pool_nogc),
        Ratio("diag ratio qdo 2 workers / 1 worker", qdo, qdo_one),
    ]  # fmt: skip
    notes = [
        f"figures are µs a task: wall time of submitting and running all tasks, divided by "
        f"their number; qdo: Scheduler(), Queue(sch, max_workers={f}), Q.submit(noop) x N, "
        f"sch.start(), sch.wait(); pool: ThreadPoolExecutor({f}), ex.submit(noop) x N, "
        f"wait(all); dask: delayed(noop)() x N, dask.compute(..., scheduler='threads', "
        f"num_workers={f}); each in a fresh spawned process after gc.collect(); GC on "
        f"(default) unless the row says gc.disable()",
        f"qdo {n:,}: median {statistics.median(qdo.values) * n / 1e6:.2f} s in all; "
        f"{n_big:,}: {qdo_big.median * n_big / 1e6:.1f} s (GC on), "
        f"{qdo_big_nogc.median * n_big / 1e6:.1f} s (gc.disable())",
        "the dask rows run at a tenth of qdo's size and are compared per task",
    ]
    return Report(f"qdo.sched: no-op tasks, {f} worker threads, µs a task", rows, ratios, notes)
