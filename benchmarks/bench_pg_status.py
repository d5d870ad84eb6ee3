"""``qdo status Q`` on PostgreSQL, a queue of 1,000,000 tasks spread over the states.

The queue (fresh schema each run): 1,000,000 tasks loaded with ``store.add_many``,
then 300,000 of them claimed through the store (batches of 1,000) and reported:
200,000 Succeeded, 50,000 Failed, 50,000 left Running (long leases); 700,000 stay
Pending.  Right after that (nothing vacuumed by hand: autovacuum does what it does):

- ``q.status()``: the median of repeated calls in one process, after a first call,
  reported apart, that also connects;
- ``store.counts()``: the store's verb alone (``status()`` also looks for expired
  leases and reads the queue's record);
- ``qdo status bench`` as a subprocess: median wall time of repeated runs, and that
  minus the median wall time of ``python -c pass`` run as often.

Peer (the floor): the ``GROUP BY state`` count that ``counts()`` needs, run with psycopg
directly on the same table.  Then the table is ``VACUUM ANALYZE``d and ``q.status()`` and
the peer are timed again (the state a queue reaches once autovacuum has been by).
"""

from __future__ import annotations

import statistics
import sys
import time

from _common import (
    Config,
    Ratio,
    Report,
    Row,
    in_child,
    median_wall,
    pg_drop_schema,
    pg_env,
    pg_server_version,
    pg_url,
    progress,
    qdo_command,
    scratch_dir,
    use_pg,
)

TARGET = 0.2  # seconds
CALLS = 20  # q.status() calls per run
COMMANDS = 10  # subprocess runs per run
SCHEMA = "bench_pg_status"
CLAIM_BATCH = 1000


def spread(n: int) -> dict[str, int]:
    """How many tasks end in each state."""
    return {"Succeeded": n // 5, "Failed": n // 20, "Running": n // 20}


def fill(url: str, n: int) -> dict[str, int]:
    """Load ``n`` tasks, then move some to Succeeded, Failed and Running; the counts."""
    from qdo.models import State
    from qdo.store.base import NewTask, Outcome
    from qdo.store.postgres import PostgresStore

    store = PostgresStore(url, schema=SCHEMA)
    store.add_many("bench", (NewTask(f"echo Wow {i}") for i in range(n)), create_queue=True)
    want = spread(n)
    for state, how_many in ((State.SUCCEEDED, want["Succeeded"]), (State.FAILED, want["Failed"])):
        left = how_many
        while left > 0:
            tasks = store.claim("bench", "filler", min(CLAIM_BATCH, left), 3600)
            assert tasks
            store.finish("filler", [Outcome(t.id, t._token or 0, state, int(state is State.FAILED))
                                    for t in tasks])  # fmt: skip
            left -= len(tasks)
    left = want["Running"]
    while left > 0:
        left -= len(store.claim("bench", "runner", min(CLAIM_BATCH, left), 3600))
    counts = store.counts("bench").by_state_names()
    store.close()
    return counts


def time_status(qdo_dir: str, url: str, expect: dict[str, int]) -> tuple[float, float, float]:
    """Seconds of the first ``q.status()`` of a fresh process, the median of the next,
    and the median of ``store.counts()``."""
    use_pg(qdo_dir, url, SCHEMA)
    import qdo

    start = time.perf_counter()
    q = qdo.connect("bench")
    status = q.status()
    first = time.perf_counter() - start
    assert status["ntasks"] == expect, status
    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        q.status()
        times.append(time.perf_counter() - start)
    counts = []
    for _ in range(CALLS):
        start = time.perf_counter()
        q.store.counts("bench")
        counts.append(time.perf_counter() - start)
    return first, statistics.median(times), statistics.median(counts)


def time_raw_count(url: str) -> float:
    """Median seconds of the bare count query (autocommit, a warm connection)."""
    import psycopg

    sql = f"SELECT state, count(*) FROM {SCHEMA}.tasks WHERE queue_id = %s GROUP BY state"
    with psycopg.connect(url, autocommit=True) as conn:
        queue_id = 1
        conn.execute(sql, (queue_id,)).fetchall()
        times = []
        for _ in range(CALLS):
            start = time.perf_counter()
            conn.execute(sql, (queue_id,)).fetchall()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def vacuum(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {SCHEMA}.tasks")


def explain(url: str) -> str:
    """The plan of the count query, as it ran (for the notes)."""
    import psycopg

    sql = (f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) SELECT state, count(*) "
           f"FROM {SCHEMA}.tasks WHERE queue_id = 1 GROUP BY state")  # fmt: skip
    with psycopg.connect(url, autocommit=True) as conn:
        lines = [r[0].strip() for r in conn.execute(sql)]
    return " | ".join(lines)


def run(cfg: Config) -> Report:
    n = cfg.size(1_000_000, 100_000)
    url = pg_url()
    server = pg_server_version(url)

    def seconds(label: str, target: float | None = TARGET) -> Row:
        return Row(label, "s", target=target, higher_is_better=False)

    warm = seconds("qdo  q.status(), repeated")
    first = seconds("qdo  q.status(), first in a process")
    counts = seconds("qdo  store.counts(), repeated")
    peer = seconds("peer psycopg GROUP BY state count", None)
    cli = seconds("qdo  `qdo status bench` wall time")
    net = seconds("qdo  `qdo status` - `python -c pass`")
    bare = seconds("base `python -c pass` wall time", None)
    warm_v = seconds("qdo  q.status(), after VACUUM ANALYZE")
    peer_v = seconds("peer count, after VACUUM ANALYZE", None)
    plans: list[str] = []
    for i in range(cfg.runs):
        progress(f"pg-status: run {i + 1}/{cfg.runs}, {n:,} tasks")
        pg_drop_schema(url, SCHEMA)
        try:
            with scratch_dir(cfg, "pg-status") as d:
                expect = {"Waiting": 0, "Pending": 0, "Running": 0, "Succeeded": 0, "Failed": 0,
                          "Killed": 0, **spread(n)}  # fmt: skip
                expect["Pending"] = n - sum(spread(n).values())
                got = in_child(fill, url, n)
                assert got == expect, got
                first_s, warm_s, counts_s = in_child(time_status, str(d), url, expect)
                first.values.append(first_s)
                warm.values.append(warm_s)
                counts.values.append(counts_s)
                peer.values.append(in_child(time_raw_count, url))
                env = pg_env(d, url, SCHEMA)
                cli_s = median_wall([*qdo_command(), "status", "bench"], env, COMMANDS)
                bare_s = median_wall([sys.executable, "-c", "pass"], env, COMMANDS)
                cli.values.append(cli_s)
                bare.values.append(bare_s)
                net.values.append(cli_s - bare_s)
                if i == 0:
                    plans.append(f"plan before VACUUM: {explain(url)}")
                vacuum(url)
                warm_v.values.append(in_child(time_status, str(d), url, expect)[1])
                peer_v.values.append(in_child(time_raw_count, url))
                if i == 0:
                    plans.append(f"plan after VACUUM ANALYZE: {explain(url)}")
        finally:
            pg_drop_schema(url, SCHEMA)
    spread_text = ", ".join(f"{v:,} {k}" for k, v in spread(n).items())
    return Report(
        f"pg-status: a queue of {n:,} tasks ({spread_text}, the rest Pending) on PostgreSQL",
        [warm, first, counts, peer, cli, net, bare, warm_v, peer_v],
        [Ratio("ratio q.status() / peer count", warm, peer),
         Ratio("ratio store.counts() / peer count", counts, peer),
         Ratio("ratio q.status() / peer, after VACUUM", warm_v, peer_v)],
        [server, f"each run: {CALLS} q.status() calls, {COMMANDS} runs of each command, medians",
         *plans],
    )  # fmt: skip
