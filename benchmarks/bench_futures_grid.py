"""The seed's grid through durable futures (issue 14): ``qdo.sched`` plans output-first in
the driver, two local ``qdo do`` agents run the calls through a durable executor on
SQLite; against dask.distributed futures on a LocalCluster of two worker processes, in
the same run.

The grid, n = 100 (10,200 calls), with k x k arrays (k = 100) as arguments and results:
``A[i] = matrix(i, k)`` (seeded, so both sides compute the same), ``B[i] = inv(A[i])``,
``C[i, j] = B[i] @ B[j]``.  Timed from the first submit to the last C result, with the
time of the first C result; checked: every C equals numpy's own product of the B's.
BLAS on one thread everywhere (``OPENBLAS_NUM_THREADS=1`` and the like).

qdo: a fresh ``QDO_DIR``; the queue made a queue of calls, two ``qdo do --wait`` agents
(one slot each) given a second to come up, then the driver in a child process:
``Queue(sch, executor=ex)``.  dask: ``LocalCluster(n_workers=2, threads_per_worker=1,
processes=True)`` started untimed, ``client.submit(f, *futures, pure=False)`` for each
call, so that dask moves the arrays between its workers itself.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from _common import Config, Ratio, Report, Row, in_child, progress, scratch_dir, use_env
from bench_futures import AGENTS, HERE, agents_on, futures_env

QUEUE = "grid"
ONE_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def qdo_grid(qdo_dir: str, n: int, k: int) -> tuple[float, float]:
    use_env(futures_env(Path(qdo_dir), **ONE_THREAD))
    import numpy
    from noop_tasks import matrix

    import qdo
    from qdo.sched import Queue, Scheduler

    ex = qdo.connect(QUEUE, create_ok=True).executor()
    sch = Scheduler()
    Q = Queue(sch, executor=ex)
    start = time.perf_counter()
    A = [Q.submit(matrix, i, k) for i in range(n)]
    B = [Q.submit(numpy.linalg.inv, a) for a in A]
    C = [Q.submit(numpy.matmul, B[i], B[j]) for i in range(n) for j in range(n)]
    first: list[float] = []
    for c in C:
        c.add_done_callback(lambda _: first or first.append(time.perf_counter()))
    started = time.perf_counter()
    sch.start()
    results = [c.result() for c in C]
    end = time.perf_counter()
    sch.shutdown()
    ex.shutdown()
    b = [f.result() for f in B]
    assert all(numpy.allclose(results[i * n + j], b[i] @ b[j]) for i, j in ((0, 1), (n - 1, 3)))
    # (the first C result against the makespan from sch.start() too: nothing can run
    # before it, as bench_sched_grid judges the planner)
    return end - start, first[0] - start, (first[0] - started) / (end - started)


def dask_grid(n: int, k: int) -> tuple[float, float]:
    os.environ.update(ONE_THREAD)
    import numpy
    from dask.distributed import Client, LocalCluster
    from noop_tasks import matrix

    with LocalCluster(n_workers=AGENTS, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:  # fmt: skip
        client.submit(abs, -1).result()
        start = time.perf_counter()
        A = [client.submit(matrix, i, k, pure=False) for i in range(n)]
        B = [client.submit(numpy.linalg.inv, a, pure=False) for a in A]
        C = [client.submit(numpy.matmul, B[i], B[j], pure=False)
             for i in range(n) for j in range(n)]  # fmt: skip
        first: list[float] = []
        for c in C:
            c.add_done_callback(lambda _: first or first.append(time.perf_counter()))
        results = client.gather(C)
        seconds = time.perf_counter() - start
        b = client.gather(B)
    assert all(numpy.allclose(results[i * n + j], b[i] @ b[j]) for i, j in ((0, 1), (n - 1, 3)))
    return seconds, first[0] - start


def run(cfg: Config) -> Report:
    n, k = cfg.size(100, 30), 100
    qdo_span = Row(f"qdo  makespan, sched + executor, {AGENTS} agents, SQLite", "s",
                   higher_is_better=False)  # fmt: skip
    qdo_first = Row("qdo  first C result / makespan", "%", higher_is_better=False)
    qdo_first_run = Row("qdo  the same, from sch.start()", "%", target=2.0,
                        higher_is_better=False)  # fmt: skip
    dask_span = Row(f"dask.distributed makespan, LocalCluster, {AGENTS} processes", "s",
                    higher_is_better=False)  # fmt: skip
    dask_first = Row("dask first C result / makespan", "%", higher_is_better=False)
    sys.path.insert(0, str(HERE))
    for i in range(cfg.runs):
        for step in ["qdo", "dask"] if i % 2 == 0 else ["dask", "qdo"]:
            progress(f"futures-grid: run {i + 1}/{cfg.runs}, n={n}, {step}")
            if step == "dask":
                span, first = in_child(dask_grid, n, k)
                dask_span.values.append(span)
                dask_first.values.append(100 * first / span)
                continue
            with scratch_dir(cfg, "futures-grid") as d:
                with agents_on(QUEUE, futures_env(d, **ONE_THREAD)):
                    span, first, first_run = in_child(qdo_grid, str(d), n, k)
                qdo_span.values.append(span)
                qdo_first.values.append(100 * first / span)
                qdo_first_run.values.append(100 * first_run)
    return Report(
        f"the seed grid through durable futures: n={n} ({n + n + n * n:,} calls), {k}x{k} arrays",
        [qdo_span, qdo_first, qdo_first_run, dask_span, dask_first],
        [
            Ratio(
                "ratio qdo / dask makespan", qdo_span, dask_span, target=1.0, higher_is_better=False
            )
        ],  # fmt: skip
        [
            "from the first submit to the last C result, in the driver; workers started "
            "before (untimed); BLAS on one thread; the order alternates from run to run"
        ],
    )
