"""Where the time of pg-load and pg-status goes (an analysis, no targets).

Load: 1,000,000 rows COPYed, each in a fresh process and a fresh schema, timed
from the first row to the commit, with the client's CPU time beside the wall time:

- ``store.add_many``: qdo itself (a generator of ``NewTask``, 9 columns per row);
- the same 9 columns qdo sends (``Q["copy_tasks"]``), with psycopg, into a table like
  qdo's ``tasks`` with, step by step, nothing but NOT NULL, + its primary key, + its
  ``tasks_by_state`` index, + its CHECK constraints, + its foreign key to ``queues``
  (= qdo's own table: the remaining difference to the first row is qdo's Python);
- the 2-column peer of pg-load: (id, text) into a table with a primary key.

Status: the queue of pg-status (1,000,000 tasks: 700,000 Pending, 200,000 Succeeded,
50,000 Failed, 50,000 Running with long leases), and the median time of each verb
``q.status()`` calls (``requeue_expired``, which looks for an expired lease with
the ``any_expired`` statement; ``get_queue``; ``counts``), right after the fill and
again after ``VACUUM ANALYZE``; the notes give the plans of ``any_expired``.  Plus
what ``qdo status`` pays before it asks anything: importing qdo's CLI and psycopg,
and opening a store (connect, SCRAM authentication, schema check).

Finish: why pg-claim's claim(500) is slower than claim(100).  A fresh queue of 50,000
(and 1,000,000) tasks; one worker claims B tasks, then the ``finish`` statement of
``store.finish`` for them runs under ``EXPLAIN ANALYZE`` (rolled back): its execution
time for B = 100, 500 and 2,000, and (in the notes) the join it was planned with.
"""

from __future__ import annotations

import statistics
import sys
import time

import bench_pg_status
from _common import (
    Config,
    Report,
    Row,
    clean_env,
    in_child,
    pg_drop_schema,
    pg_server_version,
    pg_url,
    progress,
    run_child,
    scratch_dir,
)

SCHEMA = "bench_pg_where"
CALLS = 10
COMMANDS = 10

# the steps from a bare table to qdo's own (its schema.sql, pieces of it)
BARE = """
CREATE TABLE queues (id bigserial PRIMARY KEY, owner text NOT NULL, name text NOT NULL,
                     state text NOT NULL DEFAULT 'Active', created double precision NOT NULL,
                     max_retries integer NOT NULL DEFAULT 0, max_lost integer NOT NULL DEFAULT 3);
INSERT INTO queues (owner, name, created) VALUES ('bench', 'bench', 0);
CREATE TABLE tasks (
    id bigint NOT NULL, queue_id bigint NOT NULL, payload text NOT NULL,
    is_json boolean NOT NULL DEFAULT false, state text NOT NULL,
    priority bigint NOT NULL DEFAULT 0, exitcode integer, message text,
    attempts integer NOT NULL DEFAULT 0, created double precision NOT NULL,
    started double precision, finished double precision, worker text, jobid text, log text,
    lease_expires double precision, lease_token bigint, timeout double precision,
    max_retries integer, failures integer NOT NULL DEFAULT 0, lost integer NOT NULL DEFAULT 0
);
"""
PKEY = "ALTER TABLE tasks ADD PRIMARY KEY (id);"
INDEX = "CREATE INDEX tasks_by_state ON tasks (queue_id, state, priority DESC, id);"
FKEY = "ALTER TABLE tasks ADD FOREIGN KEY (queue_id) REFERENCES queues (id) ON DELETE CASCADE;"
CHECKS = """
ALTER TABLE tasks ADD CHECK (state IN ('Waiting', 'Pending', 'Running', 'Succeeded',
                                       'Failed', 'Killed'));
ALTER TABLE tasks ADD CHECK (attempts >= 0);
ALTER TABLE tasks ADD CHECK (timeout > 0);
ALTER TABLE tasks ADD CHECK (max_retries >= 0);
ALTER TABLE tasks ADD CHECK ((state = 'Running') = (lease_expires IS NOT NULL
                             AND lease_token IS NOT NULL AND worker IS NOT NULL));
"""
VARIANTS = {
    "bare (NOT NULL only)": BARE,
    "+ primary key": BARE + PKEY,
    "+ primary key + tasks_by_state": BARE + PKEY + INDEX,
    "+ primary key + tasks_by_state + CHECKs": BARE + PKEY + INDEX + CHECKS,
    "+ ... + CHECKs + foreign key (= qdo's table)": BARE + PKEY + INDEX + CHECKS + FKEY,
}


# -- load ---------------------------------------------------------------------------------
def qdo_add_many(url: str, n: int) -> tuple[float, float]:
    from qdo.store.base import NewTask
    from qdo.store.postgres import PostgresStore

    store = PostgresStore(url, schema=SCHEMA)
    store.create_queue("bench")
    wall, cpu = time.perf_counter(), time.process_time()
    store.add_many("bench", (NewTask(f"echo Wow {i}") for i in range(n)))
    out = time.perf_counter() - wall, time.process_time() - cpu
    store.close()
    return out


def copy_variant(url: str, ddl: str, n: int) -> tuple[float, float]:
    """qdo's 9 columns, COPYed with psycopg into a table made by ``ddl``."""
    import psycopg

    from qdo.store.postgres import Q

    with psycopg.connect(url) as conn:
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        conn.execute(f"SET search_path TO {SCHEMA}")
        conn.execute(ddl)
        conn.commit()
        wall, cpu = time.perf_counter(), time.process_time()
        with conn.cursor() as cur, cur.copy(Q["copy_tasks"]) as copy:
            for i in range(n):
                copy.write_row((i + 1, 1, f"echo Wow {i}", False, "Pending", 0, 0.0, None, None))
        conn.commit()
        return time.perf_counter() - wall, time.process_time() - cpu


def copy_peer(url: str, n: int) -> tuple[float, float]:
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        conn.execute(f"CREATE TABLE {SCHEMA}.tasks (id bigint PRIMARY KEY, text text NOT NULL)")
        conn.commit()
        wall, cpu = time.perf_counter(), time.process_time()
        with conn.cursor() as cur, cur.copy(f"COPY {SCHEMA}.tasks (id, text) FROM STDIN") as c:
            for i in range(n):
                c.write_row((i + 1, f"echo Wow {i}"))
        conn.commit()
        return time.perf_counter() - wall, time.process_time() - cpu


# -- status -------------------------------------------------------------------------------
def time_verbs(url: str) -> dict[str, float]:
    """Median seconds of each verb of ``q.status()``, and of its two statements run
    bare on a psycopg connection."""
    import psycopg

    from qdo.store.postgres import PostgresStore, Q

    store = PostgresStore(url, schema=bench_pg_status.SCHEMA)
    verbs = {
        "requeue_expired": lambda: store.requeue_expired("bench"),
        "get_queue": lambda: store.get_queue("bench"),
        "counts": lambda: store.counts("bench"),
    }
    out = {}
    for name, verb in verbs.items():
        verb()
        times = []
        for _ in range(CALLS):
            start = time.perf_counter()
            verb()
            times.append(time.perf_counter() - start)
        out[name] = statistics.median(times)
    store.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {bench_pg_status.SCHEMA}, pg_catalog")
        for name in ("any_expired", "counts"):
            conn.execute(Q[name], {"queue_id": 1}).fetchall()
            times = []
            for _ in range(CALLS):
                start = time.perf_counter()
                conn.execute(Q[name], {"queue_id": 1}).fetchall()
                times.append(time.perf_counter() - start)
            out[f"raw {name}"] = statistics.median(times)
    return out


def plan_of_any_expired(url: str) -> str:
    import psycopg

    from qdo.store.postgres import Q

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {bench_pg_status.SCHEMA}, pg_catalog")
        sql = "EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON) " + Q["any_expired"].replace(
            "%(queue_id)s", "1"
        )
        lines = [r[0].strip() for r in conn.execute(sql)]
    return " | ".join(line for line in lines if not line.startswith("Filter"))


def vacuum(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {bench_pg_status.SCHEMA}.tasks")


def open_store(url: str) -> float:
    """Median seconds of opening a store and reading a queue (a fresh connection)."""
    from qdo.store.postgres import PostgresStore

    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        store = PostgresStore(url, schema=bench_pg_status.SCHEMA)
        store.get_queue("bench")
        times.append(time.perf_counter() - start)
        store.close()
    return statistics.median(times)


# -- finish -------------------------------------------------------------------------------
FINISH_TABLES = (50_000, 1_000_000)
FINISH_BATCHES = (100, 500, 2000)


def explain_finish(url: str, n: int) -> dict[int, tuple[float, str]]:
    """For each batch size: the finish statement's execution time (s) and its plan."""
    import psycopg

    from qdo.store.base import NewTask
    from qdo.store.postgres import PostgresStore, Q

    store = PostgresStore(url, schema=SCHEMA)
    store.add_many("bench", [NewTask("true")] * n, create_queue=True)
    out = {}
    with psycopg.connect(url) as conn:
        for batch in FINISH_BATCHES:
            tasks = store.claim("bench", "w", batch, 600)
            k = len(tasks)
            params = {"worker": "w", "ids": [t.id for t in tasks],
                      "tokens": [t._token for t in tasks], "states": ["Succeeded"] * k,
                      "exitcodes": [0] * k, "messages": [None] * k, "logs": [None] * k,
                      "started": [None] * k}  # fmt: skip
            conn.execute(f"SET search_path TO {SCHEMA}, pg_catalog")
            lines = [r[0] for r in conn.execute("EXPLAIN (ANALYZE, TIMING OFF) " + Q["finish"],
                                                params)]  # fmt: skip
            conn.rollback()
            ms = next(float(x.split()[2]) for x in lines if x.startswith("Execution Time"))
            keep = ("Nested Loop", "Hash Join", "Scan on", "Scan using", "Rows Removed by Join")
            plan = " / ".join(x.strip().split("  (")[0] for x in lines if any(w in x for w in keep))
            out[batch] = (ms / 1000, plan)
    store.close()
    return out


def run(cfg: Config) -> Report:
    n = cfg.size(1_000_000, 100_000)
    url = pg_url()
    server = pg_server_version(url)
    rows: list[Row] = []

    def row(label: str, unit: str) -> Row:
        got = next((r for r in rows if r.label == label), None)
        if got is None:
            got = Row(label, unit, higher_is_better=unit == "/s")
            rows.append(got)
        return got

    plans: list[str] = []
    for i in range(cfg.runs):
        progress(f"pg-where: run {i + 1}/{cfg.runs}, load variants, {n:,} rows")
        loads = [("load qdo store.add_many", qdo_add_many, ())]
        loads += [(f"load COPY 9 cols, {k}", copy_variant, (v,)) for k, v in VARIANTS.items()]
        loads += [("load COPY 2 cols (the pg-load peer)", copy_peer, ())]
        for label, func, args in loads:
            pg_drop_schema(url, SCHEMA)
            try:
                wall, cpu = in_child(func, url, *args, n)
            finally:
                pg_drop_schema(url, SCHEMA)
            row(label, "/s").values.append(n / wall)
            row(f"  client CPU / wall time of: {label[5:]}", "%").values.append(100 * cpu / wall)
        progress(f"pg-where: run {i + 1}/{cfg.runs}, status verbs, {n:,} tasks")
        pg_drop_schema(url, bench_pg_status.SCHEMA)
        try:
            in_child(bench_pg_status.fill, url, n)
            for when in ("", ", after VACUUM ANALYZE"):
                if when:
                    vacuum(url)
                for name, seconds in in_child(time_verbs, url).items():
                    what = name if name.startswith("raw") else f"store.{name}()"
                    row(f"status {what}{when}", "s").values.append(seconds)
                if i == 0:
                    plans.append(f"any_expired{when or ' before VACUUM'}: "
                                 f"{plan_of_any_expired(url)}")  # fmt: skip
            row("status open a store + get_queue", "s").values.append(in_child(open_store, url))
        finally:
            pg_drop_schema(url, bench_pg_status.SCHEMA)
        progress(f"pg-where: run {i + 1}/{cfg.runs}, finish plans")
        for size in FINISH_TABLES:
            size = cfg.size(size, size // 10)
            pg_drop_schema(url, SCHEMA)
            try:
                got = in_child(explain_finish, url, size)
            finally:
                pg_drop_schema(url, SCHEMA)
            for batch, (seconds, plan) in got.items():
                row(f"finish of {batch:,} tasks, queue of {size:,}", "s").values.append(seconds)
                if i == 0:
                    plans.append(f"finish of {batch:,}, queue of {size:,}: {plan}")
        with scratch_dir(cfg, "pg-where") as d:
            env = clean_env(d)
            for label, code in (
                ("python -c pass", "pass"),
                ("python -c 'import qdo.cli'", "import qdo.cli"),
                ("python -c 'import psycopg'", "import psycopg"),
                ("python -c 'import qdo.cli, qdo.store.postgres'",
                 "import qdo.cli, qdo.store.postgres"),
            ):  # fmt: skip
                argv = [sys.executable, "-c", code]
                wall = statistics.median(run_child(argv, env).seconds for _ in range(COMMANDS))
                row(f"cli  {label}", "s").values.append(wall)
    return Report(
        f"pg-where: where the time of pg-load, pg-status and pg-claim goes ({n:,} rows / tasks)",
        rows,
        [],
        [server, *plans],
    )
