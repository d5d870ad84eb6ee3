"""Loading 1,000,000 tasks into PostgreSQL: ``store.add_many`` and ``qdo load``.

- ``store.add_many(queue, generator)``: the store's bulk verb, fed a generator of
  1,000,000 ``NewTask('echo Wow 123')`` (streamed into one COPY, one transaction),
  timed in a fresh process from the call to its return (the commit included);
- ``qdo load bench FILE`` of a 1,000,000-line file, as a real subprocess with
  ``QDO_BACKEND=postgres QDO_DB_URL=... QDO_DB_SCHEMA=...``: wall time (interpreter
  start-up included) and peak RSS.

Peer (the floor), in the same run on the same server: psycopg's COPY of the same
(id, text) rows into a plain table (``id bigint PRIMARY KEY, text text NOT NULL``),
one transaction, ``copy.write_row`` per row as qdo does; in-process for the first
figure, and as a subprocess reading the same file for the second.

Every run uses fresh schemas, dropped afterwards.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _common import (
    Config,
    Ratio,
    Report,
    Row,
    clean_env,
    in_child,
    pg_drop_schema,
    pg_env,
    pg_server_version,
    pg_url,
    progress,
    qdo_command,
    rss_method,
    run_child,
    scratch_dir,
)

TARGET_RATE = 100_000  # tasks/s, store.add_many
TARGET_SECONDS = 10.0  # qdo load of 1,000,000 lines: the SQLite load target (issue 1)
QDO_SCHEMA = "bench_pg_load"
PEER_SCHEMA = "bench_pg_load_peer"

PEER_TABLE = f"""
CREATE SCHEMA {PEER_SCHEMA};
CREATE TABLE {PEER_SCHEMA}.tasks (id bigint PRIMARY KEY, text text NOT NULL);
"""

PEER_LOADER = f"""
import sys, psycopg
with psycopg.connect(sys.argv[2]) as conn:
    conn.execute('''{PEER_TABLE}''')
    with conn.cursor() as cur, open(sys.argv[1], "rb") as f:
        with cur.copy("COPY {PEER_SCHEMA}.tasks (id, text) FROM STDIN") as copy:
            for i, line in enumerate(f, 1):
                copy.write_row((i, line.decode("utf-8").rstrip("\\r\\n")))
"""


def write_task_file(path: Path, n: int) -> None:
    with open(path, "w") as f:
        for i in range(n):
            f.write(f"echo Wow {i}\n")


def qdo_add_many(url: str, n: int) -> float:
    """Seconds of one ``store.add_many`` of ``n`` tasks from a generator."""
    from qdo.store.base import NewTask
    from qdo.store.postgres import PostgresStore

    store = PostgresStore(url, schema=QDO_SCHEMA)
    store.create_queue("bench")
    start = time.perf_counter()
    ids = store.add_many("bench", (NewTask(f"echo Wow {i}") for i in range(n)))
    seconds = time.perf_counter() - start
    assert len(ids) == n
    store.close()
    return seconds


def peer_copy(url: str, n: int) -> float:
    """Seconds of one psycopg COPY of ``n`` (id, text) rows into a plain table."""
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute(PEER_TABLE)
        conn.commit()
        start = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY {PEER_SCHEMA}.tasks (id, text) FROM STDIN") as c:
            for i in range(n):
                c.write_row((i + 1, f"echo Wow {i}"))
        conn.commit()
        return time.perf_counter() - start


def count_rows(url: str, table: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else -1


def megabytes(n: int | None) -> float:
    assert n is not None, "run_child(rss=True) measures it"
    return n / 1e6


def run(cfg: Config) -> Report:
    n = cfg.size(1_000_000, 100_000)
    url = pg_url()
    server = pg_server_version(url)
    add = Row("qdo  store.add_many(generator)", "/s", target=TARGET_RATE)
    peer = Row("peer psycopg COPY (id, text), in-process", "/s")
    cli = Row("qdo  `qdo load` wall time", "s", target=TARGET_SECONDS, higher_is_better=False)
    cli_rate = Row("qdo  `qdo load` tasks / wall time", "/s")
    cli_rss = Row("qdo  `qdo load` peak RSS", "MB", higher_is_better=False)
    peer_cli = Row("peer python+psycopg COPY loader wall time", "s", higher_is_better=False)
    peer_rss = Row("peer python+psycopg COPY loader peak RSS", "MB", higher_is_better=False)
    schemas = (QDO_SCHEMA, PEER_SCHEMA)
    with scratch_dir(cfg, "pg-load-file") as files:
        task_file = files / "tasks.txt"
        write_task_file(task_file, n)
        for i in range(cfg.runs):
            progress(f"pg-load: run {i + 1}/{cfg.runs}, {n:,} tasks")
            for s in schemas:
                pg_drop_schema(url, s)
            try:
                add.values.append(n / in_child(qdo_add_many, url, n))
                assert count_rows(url, f"{QDO_SCHEMA}.tasks") == n
                peer.values.append(n / in_child(peer_copy, url, n))
                assert count_rows(url, f"{PEER_SCHEMA}.tasks") == n
                for s in schemas:
                    pg_drop_schema(url, s)
                with scratch_dir(cfg, "pg-load-qdo") as d:
                    argv = [*qdo_command(), "load", "bench", str(task_file)]
                    got = run_child(argv, pg_env(d, url, QDO_SCHEMA), rss=True)
                    assert f"loaded {n:,} tasks" in got.stdout, got.stdout
                    assert count_rows(url, f"{QDO_SCHEMA}.tasks") == n
                    cli.values.append(got.seconds)
                    cli_rate.values.append(n / got.seconds)
                    cli_rss.values.append(megabytes(got.max_rss))
                with scratch_dir(cfg, "pg-load-peer") as d:
                    argv = [sys.executable, "-c", PEER_LOADER, str(task_file), url]
                    got = run_child(argv, clean_env(d), rss=True)
                    assert count_rows(url, f"{PEER_SCHEMA}.tasks") == n
                    peer_cli.values.append(got.seconds)
                    peer_rss.values.append(megabytes(got.max_rss))
            finally:
                for s in schemas:
                    pg_drop_schema(url, s)
    return Report(
        f"pg-load: {n:,} tasks ('echo Wow 123') into PostgreSQL",
        [add, peer, cli, cli_rate, cli_rss, peer_cli, peer_rss],
        [
            Ratio("ratio qdo add_many / peer COPY, rate", add, peer),
            Ratio("ratio qdo load / peer loader, wall time", cli, peer_cli),
            Ratio("ratio qdo load / peer loader, peak RSS", cli_rss, peer_rss),
        ],
        [server,
         f"command: QDO_BACKEND=postgres QDO_DB_URL=... QDO_DB_SCHEMA={QDO_SCHEMA} "
         f"{' '.join(qdo_command())} load bench FILE; wall time includes interpreter start-up; "
         f"RSS in MB of 10^6 bytes, measured with "
         f"{'GNU time' if rss_method() == 'time' else 'wait4 (upper bound)'}",
         f"the `qdo load` target is the SQLite one (issue 1: {TARGET_SECONDS:.0f} s for "
         "1,000,000 lines)"],
    )  # fmt: skip
