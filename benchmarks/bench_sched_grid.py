"""The seed's grid (issue 4): how soon the first final results arrive, qdo.sched against
``dask.distributed`` futures, in the same run.

The workload, with n = 100 and K x K arrays (K = 120):

    A = [submit(numpy.random.random, (K, K)) for i in range(n)]          # 100 tasks
    B = [submit(numpy.linalg.inv, a) for a in A]                         # 100 tasks
    C = [submit(mul, B[i], B[k]) for i in range(n) for k in range(n)]    # 10,000: a * b

10,200 tasks, 2 workers.  K = 120 makes a C task about 60 µs here (the result is a new
115 KB array; 10,000 of them, 1.1 GB, stay alive in their futures), an A task about
55 µs and a B task about 0.4 ms.  Each C future gets an ``add_done_callback`` that
records ``time.perf_counter()`` when it completes.

- qdo: ``Scheduler()``, ``Queue(sch, max_workers=2)``, the submissions above, then
  ``sch.start()`` and ``sch.wait()`` (the seed's order: everything is submitted before
  it starts).
- dask.distributed: ``LocalCluster(n_workers=1, threads_per_worker=2, processes=False)``
  and a ``Client`` (made, and warmed with one round trip, before the clock starts);
  ``client.submit(..., pure=False)`` in the same order, then ``distributed.wait(C)``.
  A distributed future runs as soon as it is submitted, and calls its callbacks from
  another thread.

The clock starts before the first submission.  For qdo the planner's figures are also
given from ``sch.start()``: the issue's target (first C result within 1% of the
makespan) is judged on those, since nothing can run before ``start()``.  Every process
sets ``OPENBLAS_NUM_THREADS=1`` (and OMP/MKL) before importing numpy, so that the two
worker threads do not each start a BLAS thread pool on 2 cores; numpy's first calls
(lazy imports, about 12 ms) are made once before the clock starts.
"""

from __future__ import annotations

import gc
import math
import os
import sys
import time
from typing import Any

from _common import Config, Ratio, Report, Row, in_child, progress

WORKERS = 2
K = 120
TARGET_FIRST = 1.0  # % of the makespan


def mul(a: Any, b: Any) -> Any:
    return a * b


def _numpy() -> Any:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    if "numpy" in sys.modules:
        raise RuntimeError("numpy was imported before its thread settings")
    import numpy

    a = numpy.random.random((K, K))  # warm: numpy.random, numpy.linalg load lazily
    mul(a, numpy.linalg.inv(a))
    return numpy


def _figures(t0: float, submitted: float, arrivals: list[float], end: float) -> dict[str, float]:
    arrivals = sorted(arrivals)
    n = len(arrivals)
    return {
        "submit": submitted - t0,
        "first": arrivals[0] - t0,
        "p10": arrivals[math.ceil(n * 0.1) - 1] - t0,
        "p50": arrivals[math.ceil(n * 0.5) - 1] - t0,
        "last": arrivals[-1] - t0,
        "end": end - t0,
    }


def _check(np: Any, B: list[Any], C: list[Any], n: int) -> None:
    b = [f.result() for f in B]
    for i, k in ((0, 0), (n - 1, n - 1), (3, n - 2), (n // 2, 7)):
        if not np.array_equal(C[i * n + k].result(), b[i] * b[k]):
            raise RuntimeError(f"C[{i * n + k}] is not B[{i}] * B[{k}]")


def grid_qdo(n: int) -> dict[str, float]:
    np = _numpy()
    from qdo.sched import Queue, Scheduler

    arrivals: list[float] = []
    record = lambda _f: arrivals.append(time.perf_counter())  # noqa: E731
    gc.collect()
    t0 = time.perf_counter()
    sch = Scheduler()
    Q = Queue(sch, max_workers=WORKERS)
    A = [Q.submit(np.random.random, (K, K)) for _ in range(n)]
    B = [Q.submit(np.linalg.inv, a) for a in A]
    C = []
    for i in range(n):
        for k in range(n):
            c = Q.submit(mul, B[i], B[k])
            c.add_done_callback(record)
            C.append(c)
    submitted = time.perf_counter()
    sch.start()
    sch.wait()
    end = time.perf_counter()
    if len(arrivals) != n * n:
        raise RuntimeError(f"{len(arrivals)} C callbacks of {n * n}")
    got = _figures(t0, submitted, arrivals, end)
    got["start"] = submitted - t0  # sch.start() follows the submissions at once
    _check(np, B, C, n)
    sch.shutdown()
    return got


def grid_dask(n: int) -> dict[str, float]:
    import logging

    np = _numpy()
    from distributed import Client, LocalCluster, wait

    logging.getLogger("distributed").setLevel(logging.ERROR)
    arrivals: list[float] = []
    record = lambda _f: arrivals.append(time.perf_counter())  # noqa: E731
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=WORKERS, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.submit(mul, 1, 2, pure=False).result()  # the worker is up and connected
        gc.collect()
        t0 = time.perf_counter()
        A = [client.submit(np.random.random, (K, K), pure=False) for _ in range(n)]
        B = [client.submit(np.linalg.inv, a, pure=False) for a in A]
        C = []
        for i in range(n):
            for k in range(n):
                c = client.submit(mul, B[i], B[k], pure=False)
                c.add_done_callback(record)
                C.append(c)
        submitted = time.perf_counter()
        wait(C)
        end = time.perf_counter()
        deadline = time.monotonic() + 30
        while len(arrivals) < n * n and time.monotonic() < deadline:
            time.sleep(0.001)  # callbacks run in another thread
        if len(arrivals) != n * n:
            raise RuntimeError(f"{len(arrivals)} C callbacks of {n * n}")
        got = _figures(t0, submitted, arrivals, end)
        _check(np, B, C, n)
        del A, B, C
    return got


def run(cfg: Config) -> Report:
    n = cfg.size(100, 30)
    tasks = 2 * n + n * n
    f = str(WORKERS)
    ms = "ms"
    q = {
        "submit": Row(f"qdo  submit all {tasks:,} tasks", ms),
        "first": Row("qdo  first C result", ms),
        "p10": Row("qdo  10% of C results", ms),
        "p50": Row("qdo  50% of C results", ms),
        "end": Row("qdo  makespan (sch.wait() returns)", ms),
    }
    qs_first = Row("qdo  from start(): first C result", ms)
    qs_end = Row("qdo  from start(): makespan", ms)
    qs_pct = Row("qdo  from start(): first C / makespan", "%", target=TARGET_FIRST,
                 higher_is_better=False)  # fmt: skip
    q_pct = Row("diag qdo  from first submit: first C / makespan", "%")
    d = {
        "submit": Row(f"peer dask.distributed submit all {tasks:,}", ms),
        "first": Row("peer dask.distributed first C result", ms),
        "p10": Row("peer dask.distributed 10% of C results", ms),
        "p50": Row("peer dask.distributed 50% of C results", ms),
        "end": Row("peer dask.distributed makespan (wait(C) returns)", ms),
    }
    d_pct = Row("peer dask.distributed first C / makespan", "%")
    for i in range(cfg.runs):
        order = ("qdo", "dask") if i % 2 == 0 else ("dask", "qdo")
        for who in order:
            progress(f"sched-grid: run {i + 1}/{cfg.runs}, {tasks:,} tasks, {who}")
            if who == "qdo":
                got = in_child(grid_qdo, n)
                for key, row in q.items():
                    row.values.append(got[key] * 1e3)
                qs_first.values.append((got["first"] - got["start"]) * 1e3)
                qs_end.values.append((got["end"] - got["start"]) * 1e3)
                qs_pct.values.append(100 * qs_first.values[-1] / qs_end.values[-1])
                q_pct.values.append(100 * got["first"] / got["end"])
            else:
                got = in_child(grid_dask, n)
                for key, row in d.items():
                    row.values.append(got[key] * 1e3)
                d_pct.values.append(100 * got["first"] / got["end"])
    rows = [*q.values(), qs_first, qs_end, qs_pct, q_pct, *d.values(), d_pct]
    ratios = [
        Ratio("ratio dask / qdo, first C result", d["first"], q["first"]),
        Ratio("ratio dask / qdo, 10% of C results", d["p10"], q["p10"]),
        Ratio("ratio dask / qdo, 50% of C results", d["p50"], q["p50"]),
        Ratio("ratio dask / qdo, makespan", d["end"], q["end"]),
    ]
    notes = [
        f"A: {n} x numpy.random.random(({K}, {K})), B: {n} x numpy.linalg.inv(A[i]), "
        f"C: {n * n:,} x B[i] * B[k], submitted in that order; {f} workers; times from "
        f"before the first submission unless the row says from start() (qdo runs nothing "
        f"before sch.start(), called right after the last submission; dask.distributed "
        f"runs tasks while they are being submitted)",
        "C arrivals recorded by add_done_callback (qdo: in the worker thread as the future "
        "completes; dask.distributed: in a callback thread of the client)",
        f"dask.distributed: LocalCluster(n_workers=1, threads_per_worker={f}, "
        "processes=False), client.submit(..., pure=False); cluster start untimed",
        "OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=MKL_NUM_THREADS=1; numpy warmed before the "
        "clock; each measurement in a fresh spawned process; GC on (default); the order "
        "of qdo and dask alternates from run to run",
    ]
    return Report(f"qdo.sched: the seed's grid, n={n} ({tasks:,} tasks), {f} workers",
                  rows, ratios, notes)  # fmt: skip
