"""``q.add_multiple`` of 1,000,000 shell tasks, against raw ``sqlite3`` ``executemany``.

Peer (the ceiling): Python's ``sqlite3`` inserting the same strings as ``(id, text)``
rows into a fresh table in a fresh WAL database on the same disk, in one
transaction, with qdo's connection settings (WAL, ``synchronous = NORMAL``).

Diagnostic: the same ``executemany`` into qdo's own ``tasks`` table (its schema,
CHECKs and index, its INSERT statement), which tells the cost of qdo's schema apart
from the cost of its Python code.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from _common import (
    Config,
    Ratio,
    Report,
    Row,
    in_child,
    progress,
    scratch_dir,
    shell_tasks,
    use_qdo_dir,
)

PEER_TARGET = 0.5  # issue 16: half the rows a second of the bare executemany
TARGET = 200_000  # tasks/s


def qdo_add(qdo_dir: str, n: int) -> float:
    """Seconds for ``q.add_multiple`` of ``n`` shell tasks into a new queue."""
    use_qdo_dir(qdo_dir)
    import qdo

    q = qdo.create("bench")
    tasks = shell_tasks(n)
    start = time.perf_counter()
    ids = q.add_multiple(tasks)
    seconds = time.perf_counter() - start
    assert len(ids) == n and q.status()["ntasks"]["Pending"] == n
    return seconds


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")  # as qdo's store sets it
    return conn


def sqlite_add(db_path: str, n: int) -> float:
    """Seconds for ``executemany`` of ``n`` (id, text) rows into a fresh WAL database."""
    tasks = shell_tasks(n)
    conn = _connect(Path(db_path))
    conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO tasks (id, text) VALUES (?, ?)", enumerate(tasks, 1))
    conn.execute("COMMIT")
    seconds = time.perf_counter() - start
    assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == n
    conn.close()
    return seconds


def sqlite_into_qdo_schema(qdo_dir: str, n: int) -> float:
    """Seconds for raw ``executemany`` of qdo's own INSERT into a fresh qdo database."""
    use_qdo_dir(qdo_dir)
    import qdo
    from qdo.store.dialect import NEW_TASK_COLUMNS
    from qdo.store.sqlite import insert_statement  # the statement qdo's add_many runs

    q = qdo.create("bench")
    queue_id = q.store.get_queue("bench").id
    db_path = q.store.location
    q.store.close()
    tasks = shell_tasks(n)
    conn = _connect(Path(db_path))
    now = time.time()
    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        insert_statement("tasks", NEW_TASK_COLUMNS),
        ((i, queue_id, t, False, "Pending", 0, now, None, None) for i, t in enumerate(tasks, 1)),
    )
    conn.execute("COMMIT")
    seconds = time.perf_counter() - start
    conn.close()
    return seconds


def run(cfg: Config) -> Report:
    n = cfg.size(1_000_000, 100_000)
    qdo_row = Row("qdo  q.add_multiple", "/s", target=TARGET)
    peer = Row("peer sqlite3 executemany (id, text), WAL", "/s")
    schema = Row("diag sqlite3 executemany, qdo's schema", "/s")
    for i in range(cfg.runs):
        progress(f"add: run {i + 1}/{cfg.runs}, {n:,} tasks")
        with scratch_dir(cfg, "add-qdo") as d:
            qdo_row.values.append(n / in_child(qdo_add, str(d), n))
        with scratch_dir(cfg, "add-sqlite") as d:
            peer.values.append(n / in_child(sqlite_add, str(d / "peer.sqlite"), n))
        with scratch_dir(cfg, "add-schema") as d:
            schema.values.append(n / in_child(sqlite_into_qdo_schema, str(d), n))
    return Report(
        f"add_multiple: {n:,} shell tasks ('echo Wow 123') into a new queue",
        [qdo_row, peer, schema],
        [
            Ratio("ratio qdo / peer sqlite3", qdo_row, peer, target=PEER_TARGET),
            Ratio("ratio qdo / sqlite3 into qdo's schema", qdo_row, schema),
        ],
        ["rates are tasks (rows) per second, one transaction each, timed from the call "
         "to its return (commit included); the task list is built beforehand"],
    )  # fmt: skip
