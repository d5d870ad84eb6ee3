"""Claim-and-finish from 2 processes at once, against huey's ``SqliteHuey`` with 2 workers.

qdo: a queue pre-loaded with N no-op tasks; 2 processes, released together by a
barrier, each loop ``task = q.get()`` / ``task.set_state(qdo.Task.SUCCEEDED)`` until
``get()`` returns None.

huey: N calls of a no-op ``@huey.task()`` (huey's own enqueue, one transaction each),
then 2 processes, released together by a barrier, each drive huey's own consumer
worker, ``huey.consumer.Worker.loop()`` (``huey.dequeue()`` + ``huey.execute(task)``,
with huey's revoke check and error handling), until the queue is empty.  That is
what ``huey_consumer -k process -w 2`` runs in each worker process, without the
supervisor and scheduler around it (and with no idle back-off sleep, so that the
last empty poll costs nothing).

Rates are tasks / (last worker's end - first worker's start).  huey runs twice per
run: with its defaults (``SqliteHuey(filename=...)``: WAL, SQLite's default
``synchronous = FULL``, an fsync per commit) and with ``synchronous = NORMAL``, the
setting qdo uses, so that both do the same durability work.

Diag rows, one process, microseconds a task: qdo's ``store.claim`` of one task and its
``store.finish`` (each one write transaction), ``q.get()`` + ``set_state`` as a whole,
and huey's ``dequeue()`` (one write transaction) at synchronous=NORMAL: what each
transaction costs, apart from two processes taking turns at SQLite's write lock.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from _common import (
    Config,
    Ratio,
    Report,
    Row,
    in_child,
    progress,
    released,
    scratch_dir,
    use_qdo_dir,
)
from huey import SqliteHuey
from huey.consumer import Worker
from huey.storage import SqliteStorage

TARGET = 5_000  # tasks/s, both processes together
WORKERS = 2


# -- qdo ----------------------------------------------------------------------------------
def qdo_load(qdo_dir: str, n: int, one_by_one: bool) -> float:
    """Seconds to put ``n`` no-op tasks into a new queue."""
    use_qdo_dir(qdo_dir)
    import qdo

    q = qdo.create("bench")
    start = time.perf_counter()
    if one_by_one:
        for _ in range(n):
            q.add("true")
    else:
        q.add_multiple(["true"] * n)
    return time.perf_counter() - start


def qdo_consume(qdo_dir: str, barrier: Barrier) -> tuple[int, float, float]:
    use_qdo_dir(qdo_dir)
    import qdo

    q = qdo.connect("bench")
    barrier.wait()
    start, done = time.monotonic(), 0
    while (task := q.get()) is not None:
        task.set_state(qdo.Task.SUCCEEDED)
        done += 1
    return done, start, time.monotonic()


def qdo_transactions(qdo_dir: str, n: int) -> tuple[float, float, float]:
    """One process, a queue of ``n`` tasks: microseconds of ``store.claim`` of one task
    and of ``store.finish`` of it (each a write transaction), over the first half; of
    ``q.get()`` + ``set_state`` (both, with the heartbeat), over the second."""
    use_qdo_dir(qdo_dir)
    import qdo
    from qdo.models import State
    from qdo.store.base import Outcome

    q = qdo.connect("bench")
    store, half = q.store, n // 2
    claiming = finishing = 0.0
    for _ in range(half):
        t0 = time.perf_counter()
        (task,) = store.claim("bench", "diag:1", 1, 60.0)
        t1 = time.perf_counter()
        store.finish("diag:1", [Outcome(task.id, task._token or 0, State.SUCCEEDED)])
        claiming += t1 - t0
        finishing += time.perf_counter() - t1
    t0 = time.perf_counter()
    while (got := q.get()) is not None:
        got.set_state(qdo.Task.SUCCEEDED)
    both = time.perf_counter() - t0
    return claiming / half * 1e6, finishing / half * 1e6, both / (n - half) * 1e6


# -- huey ---------------------------------------------------------------------------------
def noop() -> None:
    """The task: does nothing."""


class NormalSyncStorage(SqliteStorage):
    """huey's SQLite storage with ``synchronous = NORMAL``, as qdo's store sets it."""

    def _create_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = super()._create_connection()
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn


def make_huey(path: str, normal_sync: bool) -> tuple[SqliteHuey, Any]:
    extra = {"storage_class": NormalSyncStorage} if normal_sync else {}
    huey = SqliteHuey("bench", filename=path, **extra)
    return huey, huey.task()(noop)


def huey_load(path: str, normal_sync: bool, n: int) -> float:
    """Seconds to enqueue ``n`` no-op tasks, one ``task()`` call each."""
    huey, task = make_huey(path, normal_sync)
    start = time.perf_counter()
    for _ in range(n):
        task()
    seconds = time.perf_counter() - start
    assert huey.pending_count() == n
    huey.storage.close()
    return seconds


def huey_consume(path: str, normal_sync: bool, barrier: Barrier) -> tuple[int, float, float]:
    huey, _ = make_huey(path, normal_sync)
    # huey_consumer's defaults, except no idle sleep: the only empty poll is the last one
    worker = Worker(huey, threading.Event(), default_delay=0.0, max_delay=10.0, backoff=1.15)
    worker.initialize()
    barrier.wait()
    start = time.monotonic()
    while True:
        before = worker.task_count
        worker.loop()
        if worker.task_count == before and huey.pending_count() == 0:
            break
    end = time.monotonic()
    worker.shutdown()
    return worker.task_count, start, end


def huey_transactions(path: str, n: int) -> float:
    """One process: microseconds of huey's ``dequeue()`` (its one write transaction: a
    SELECT and a DELETE), synchronous=NORMAL."""
    huey, _ = make_huey(path, True)
    start = time.perf_counter()
    for _ in range(n):
        assert huey.dequeue() is not None
    return (time.perf_counter() - start) / n * 1e6


# -- both ---------------------------------------------------------------------------------
def consume(func: Callable[..., Any], *args: Any) -> tuple[float, list[int]]:
    """Run ``func(*args, barrier)`` in WORKERS processes released together.

    Returns the total rate (tasks/s) and each process's count.
    """
    results = released(func, [args] * WORKERS)
    counts = [r[0] for r in results]
    start, end = min(r[1] for r in results), max(r[2] for r in results)
    return sum(counts) / (end - start), counts


def count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def run(cfg: Config) -> Report:
    n = cfg.size(20_000, 2_000)
    qdo_c = Row("qdo  consume: get + set_state", "/s", target=TARGET)
    huey_c = Row("huey consume: dequeue + execute, defaults", "/s")
    huey_cn = Row("huey consume: ..., synchronous=NORMAL", "/s")
    qdo_many = Row("qdo  enqueue: q.add_multiple", "/s")
    qdo_one = Row("qdo  enqueue: q.add one at a time", "/s")
    huey_e = Row("huey enqueue: task() one at a time, defaults", "/s")
    huey_en = Row("huey enqueue: ..., synchronous=NORMAL", "/s")

    def micros(label: str) -> Row:
        return Row(f"diag one process: {label}", "µs", higher_is_better=False)

    tx_claim = micros("qdo store.claim(1), a transaction")
    tx_finish = micros("qdo store.finish(1), a transaction")
    tx_both = micros("qdo q.get() + set_state")
    tx_huey = micros("huey dequeue(), NORMAL, a transaction")
    splits: list[str] = []
    for i in range(cfg.runs):
        progress(f"claim: run {i + 1}/{cfg.runs}, {n:,} tasks, {WORKERS} processes")
        with scratch_dir(cfg, "claim-qdo") as d:
            qdo_many.values.append(n / in_child(qdo_load, str(d), n, False))
            rate, counts = consume(qdo_consume, str(d))
            assert sum(counts) == n, counts
            done = count(d / "qdo.sqlite", "SELECT count(*) FROM tasks WHERE state = 'Succeeded'")
            assert done == n, done
            qdo_c.values.append(rate)
            splits.append(f"qdo {counts}")
        with scratch_dir(cfg, "claim-qdo-add") as d:
            qdo_one.values.append(n / in_child(qdo_load, str(d), n, True))
            claim_us, finish_us, both_us = in_child(qdo_transactions, str(d), n)
            tx_claim.values.append(claim_us)
            tx_finish.values.append(finish_us)
            tx_both.values.append(both_us)
        for normal_sync, enqueue_row, consume_row in (
            (False, huey_e, huey_c),
            (True, huey_en, huey_cn),
        ):
            with scratch_dir(cfg, "claim-huey") as d:
                db = str(d / "huey.sqlite")
                enqueue_row.values.append(n / in_child(huey_load, db, normal_sync, n))
                rate, counts = consume(huey_consume, db, normal_sync)
                assert sum(counts) == n and count(Path(db), "SELECT count(*) FROM task") == 0
                consume_row.values.append(rate)
                splits.append(f"huey{'(NORMAL)' if normal_sync else ''} {counts}")
                if normal_sync:
                    in_child(huey_load, db, normal_sync, n)
                    tx_huey.values.append(in_child(huey_transactions, db, n))
    return Report(
        f"claim and finish: {n:,} no-op tasks, {WORKERS} processes at once",
        [qdo_c, huey_c, huey_cn, qdo_many, qdo_one, huey_e, huey_en, tx_claim, tx_finish,
         tx_both, tx_huey],
        [
            Ratio("ratio qdo / huey consume, defaults", qdo_c, huey_c),
            Ratio("ratio qdo / huey consume, NORMAL", qdo_c, huey_cn),
            Ratio("ratio qdo add / huey enqueue, defaults", qdo_one, huey_e),
            Ratio("ratio qdo add / huey enqueue, NORMAL", qdo_one, huey_en),
        ],
        [f"tasks per process: {'; '.join(splits)}",
         "huey's dequeue deletes the task (at most once); qdo's get leases it and "
         "set_state records the outcome (two write transactions per task)"],
    )  # fmt: skip
