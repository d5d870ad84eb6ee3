"""Claim-and-finish from 8 processes at once on PostgreSQL, against procrastinate.

Both run on the same server (``scripts/postgres``, or ``$QDO_BENCH_PG_URL``) in the
same run, each in a schema of its own that is dropped afterwards.

qdo: a queue pre-loaded with N no-op tasks (``store.add_many``, one COPY); 8
processes, each with its own ``PostgresStore``, released together by a barrier, each
loop ``store.claim(queue, worker, B, lease)`` / ``store.finish(worker, outcomes)``
(all Succeeded) until ``claim`` returns nothing.  That is what a ``qdo do`` agent does
once it has learnt that tasks are short, without running anything: it claims in
batches that grow to ``MAX_BATCH`` (500) and reports in batches.  B = 100 is the
figure judged against the target; B = 500 (the agent's largest batch) and B = 1 (what
``q.get()`` + ``task.set_state()`` send: a claim and a report per task) are shown
beside it.

procrastinate (the peer, PostgreSQL-only, asyncio): its schema applied with its own
``SchemaManager.apply_schema_async`` into a fresh PostgreSQL schema (the connections'
``search_path``), N calls of an ``async`` no-op task deferred with its batch defer
(``task.batch_defer_async``, 10,000 jobs a call), then 8 processes, released together
by a barrier, each run ``app.run_worker_async(queues=["bench"], concurrency=1,
wait=False)``: procrastinate's own worker, which stops once the queue is empty.  Its
defaults otherwise: LISTEN/NOTIFY on, jobs kept when finished (``delete_jobs="never"``,
as qdo keeps its tasks).  procrastinate fetches one job per query (its
``procrastinate_fetch_job_v2`` has ``LIMIT 1``) and records each result with one more.

Rates are tasks / (last process's end - first process's start after the barrier).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from multiprocessing.synchronize import Barrier
from typing import Any

from _common import (
    Config,
    Ratio,
    Report,
    Row,
    in_child,
    pg_drop_schema,
    pg_server_version,
    pg_url,
    progress,
    released,
)

TARGET = 5_000  # tasks/s, the 8 processes together
WORKERS = 8
BATCH = 100  # the judged figure
OTHER_BATCHES = (500, 1)
LEASE = 600.0
QDO_SCHEMA = "bench_pg_claim"
PEER_SCHEMA = "bench_pg_claim_procrastinate"
DEFER_CHUNK = 10_000


# -- qdo ----------------------------------------------------------------------------------
def qdo_load(url: str, n: int, schema: str = QDO_SCHEMA, queue: str = "bench") -> float:
    """Seconds to put ``n`` no-op tasks into a new queue (of a fresh schema)."""
    from qdo.store.base import NewTask
    from qdo.store.postgres import PostgresStore

    store = PostgresStore(url, schema=schema)
    store.create_queue(queue)
    start = time.perf_counter()
    ids = store.add_many(queue, [NewTask("true")] * n)
    seconds = time.perf_counter() - start
    assert len(ids) == n
    store.close()
    return seconds


def qdo_consume(
    url: str, schema: str, queue: str, batch: int, index: int, barrier: Barrier
) -> tuple[int, float, float]:
    """Claim ``batch`` tasks of ``queue`` and finish them until none is left."""
    from qdo.models import State
    from qdo.store.base import Outcome
    from qdo.store.postgres import PostgresStore

    store = PostgresStore(url, schema=schema)
    store.get_queue(queue)  # connected, before the clock starts
    worker = f"bench-{index}"
    barrier.wait()
    start, done = time.monotonic(), 0
    while tasks := store.claim(queue, worker, batch, LEASE):
        outcomes = [Outcome(t.id, t._token or 0, State.SUCCEEDED, 0) for t in tasks]
        refused = store.finish(worker, outcomes)
        assert not refused, refused
        done += len(tasks)
    end = time.monotonic()
    store.close()
    return done, start, end


def qdo_check(url: str, n: int) -> None:
    """All ``n`` tasks Succeeded, each with one attempt on record."""
    import psycopg

    from qdo.store.postgres import PostgresStore

    store = PostgresStore(url, schema=QDO_SCHEMA)
    counts = store.counts("bench").by_state_names()
    store.close()
    if counts.get("Succeeded") != n or sum(counts.values()) != n:
        raise RuntimeError(f"expected {n:,} tasks, all Succeeded; counts say {counts}")
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {QDO_SCHEMA}.attempts").fetchone()
    if not row or row[0] != n:
        raise RuntimeError(f"expected {n:,} attempts on record, found {row}")


# -- procrastinate ------------------------------------------------------------------------
async def noop() -> None:
    """The task: does nothing."""


def make_app(url: str) -> tuple[Any, Any]:
    """A procrastinate App whose connections see only PEER_SCHEMA, and its no-op task."""
    import psycopg
    from procrastinate import App, PsycopgConnector

    conninfo = psycopg.conninfo.make_conninfo(url, options=f"-c search_path={PEER_SCHEMA}")
    app = App(connector=PsycopgConnector(conninfo=conninfo))
    task = app.task(name="noop", queue="bench")(noop)
    return app, task


def peer_load(url: str, n: int) -> float:
    """Create PEER_SCHEMA, apply procrastinate's schema there; seconds to defer ``n`` jobs."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(PEER_SCHEMA)))
    app, task = make_app(url)

    async def main() -> float:
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            start = time.perf_counter()
            for low in range(0, n, DEFER_CHUNK):
                await task.batch_defer_async(*({} for _ in range(min(DEFER_CHUNK, n - low))))
            return time.perf_counter() - start

    return asyncio.run(main())


def peer_consume(url: str, index: int, barrier: Barrier) -> tuple[int, float, float]:
    app, _ = make_app(url)

    async def main() -> tuple[float, float]:
        async with app.open_async():
            await app.check_connection_async()  # connected, before the clock starts
            barrier.wait()
            start = time.monotonic()
            await app.run_worker_async(
                queues=["bench"], concurrency=1, wait=False, name=f"bench-{index}",
                install_signal_handlers=False,
            )  # fmt: skip
            return start, time.monotonic()

    start, end = asyncio.run(main())
    return -1, start, end  # jobs are counted afterwards, in the database


def peer_check(url: str, n: int) -> None:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT status, count(*) FROM {PEER_SCHEMA}.procrastinate_jobs GROUP BY status"
        ).fetchall()
    counts = {str(s): int(c) for s, c in rows}
    if counts != {"succeeded": n}:
        raise RuntimeError(f"expected {n:,} procrastinate jobs, all succeeded; got {counts}")


# -- both ---------------------------------------------------------------------------------
def consume(func: Callable[..., Any], *args: Any) -> tuple[float, list[int]]:
    """Run ``func(*args, index, barrier)`` in WORKERS processes released together.

    Returns the seconds from the first start to the last end, and each process's count.
    """
    results = released(func, [(*args, i) for i in range(WORKERS)])
    start, end = min(r[1] for r in results), max(r[2] for r in results)
    return end - start, [r[0] for r in results]


def run(cfg: Config) -> Report:
    n = cfg.size(50_000, 5_000)
    url = pg_url()
    server = pg_server_version(url)
    qdo_rows = {
        b: Row(f"qdo  claim({b}) + finish, {WORKERS} processes", "/s",
               target=TARGET if b == BATCH else None)
        for b in (BATCH, *OTHER_BATCHES)
    }  # fmt: skip
    peer = Row(f"procrastinate worker, {WORKERS} processes x concurrency 1", "/s")
    qdo_add = Row("qdo  enqueue: store.add_many (COPY)", "/s")
    peer_defer = Row("procrastinate enqueue: batch_defer_async", "/s")
    splits: list[str] = []
    for i in range(cfg.runs):
        for b, row in qdo_rows.items():
            progress(f"pg-claim: run {i + 1}/{cfg.runs}, qdo batch {b}, {n:,} tasks")
            pg_drop_schema(url, QDO_SCHEMA)
            try:
                load_s = in_child(qdo_load, url, n)
                if b == BATCH:
                    qdo_add.values.append(n / load_s)
                seconds, counts = consume(qdo_consume, url, QDO_SCHEMA, "bench", b)
                assert sum(counts) == n, counts
                in_child(qdo_check, url, n)
                row.values.append(n / seconds)
                if b == BATCH:
                    splits.append(f"qdo {counts}")
            finally:
                pg_drop_schema(url, QDO_SCHEMA)
        progress(f"pg-claim: run {i + 1}/{cfg.runs}, procrastinate, {n:,} jobs, {WORKERS} procs")
        pg_drop_schema(url, PEER_SCHEMA)
        try:
            peer_defer.values.append(n / in_child(peer_load, url, n))
            seconds, _ = consume(peer_consume, url)
            in_child(peer_check, url, n)
            peer.values.append(n / seconds)
        finally:
            pg_drop_schema(url, PEER_SCHEMA)
    return Report(
        f"pg-claim: claim and finish {n:,} no-op tasks on PostgreSQL, {WORKERS} processes at once",
        [*qdo_rows.values(), peer, qdo_add, peer_defer],
        [Ratio(f"ratio qdo claim({b}) / procrastinate", r, peer) for b, r in qdo_rows.items()]
        + [Ratio("ratio qdo add_many / procrastinate batch_defer", qdo_add, peer_defer)],
        [server,
         f"tasks per process (qdo, batch {BATCH}): {'; '.join(splits)}",
         f"qdo batch {BATCH} is the judged figure; procrastinate fetches one job per query, "
         "so qdo claim(1) is the like-for-like row"],
    )  # fmt: skip
