"""``qdo load Q FILE`` of a 1,000,000-line file, as a real subprocess: wall time and peak RSS.

Peer (the ceiling): a minimal Python loader in a subprocess of the same interpreter,
streaming the same file into a fresh WAL SQLite table with one ``executemany`` in
one transaction (qdo's settings: WAL, ``synchronous = NORMAL``).  It does no
validation, so it shows what any Python loader costs at least.

The peak RSS is the child's own maximum resident set size, as GNU ``/usr/bin/time``
reports it (``%M``); see ``_common.rss_method`` for why not ``getrusage`` here.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from _common import (
    Config,
    Ratio,
    Report,
    Row,
    clean_env,
    progress,
    qdo_command,
    rss_method,
    run_child,
    scratch_dir,
    shell_tasks,
)

TARGET_SECONDS = 10.0
TARGET_RSS_MB = 200.0

PEER_LOADER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[2], isolation_level=None)
conn.execute("PRAGMA journal_mode = WAL")
conn.execute("PRAGMA synchronous = NORMAL")
conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
conn.execute("BEGIN IMMEDIATE")
with open(sys.argv[1], "rb") as f:
    rows = ((line.decode("utf-8").rstrip("\\r\\n"),) for line in f)
    conn.executemany("INSERT INTO tasks (text) VALUES (?)", rows)
conn.execute("COMMIT")
"""


def write_task_file(path: Path, n: int) -> None:
    with open(path, "w") as f:
        for task in shell_tasks(n):
            f.write(task + "\n")


def count_rows(db: Path, table: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def megabytes(n: int | None) -> float:
    assert n is not None, "run_child(rss=True) measures it"
    return n / 1e6


def run(cfg: Config) -> Report:
    n = cfg.size(1_000_000, 100_000)
    seconds = Row("qdo  `qdo load` wall time", "s", target=TARGET_SECONDS, higher_is_better=False)
    rss = Row("qdo  `qdo load` peak RSS", "MB", target=TARGET_RSS_MB, higher_is_better=False)
    peer_seconds = Row("peer python+sqlite3 loader wall time", "s", higher_is_better=False)
    peer_rss = Row("peer python+sqlite3 loader peak RSS", "MB", higher_is_better=False)
    with scratch_dir(cfg, "load-file") as files:
        task_file = files / "tasks.txt"
        write_task_file(task_file, n)
        for i in range(cfg.runs):
            progress(f"load: run {i + 1}/{cfg.runs}, {n:,} lines")
            with scratch_dir(cfg, "load-qdo") as d:
                argv = [*qdo_command(), "load", "bench", str(task_file)]
                got = run_child(argv, clean_env(d), rss=True)
                assert f"loaded {n:,} tasks" in got.stdout, got.stdout
                assert count_rows(d / "qdo.sqlite", "tasks") == n
                seconds.values.append(got.seconds)
                rss.values.append(megabytes(got.max_rss))
            with scratch_dir(cfg, "load-peer") as d:
                db = d / "peer.sqlite"
                argv = [sys.executable, "-c", PEER_LOADER, str(task_file), str(db)]
                got = run_child(argv, clean_env(d), rss=True)
                assert count_rows(db, "tasks") == n
                peer_seconds.values.append(got.seconds)
                peer_rss.values.append(megabytes(got.max_rss))
    return Report(
        f"qdo load: a file of {n:,} lines ('echo Wow 123'), as a subprocess",
        [seconds, rss, peer_seconds, peer_rss],
        [
            Ratio("ratio qdo / peer, wall time", seconds, peer_seconds),
            Ratio("ratio qdo / peer, peak RSS", rss, peer_rss),
        ],
        [f"command: {' '.join(qdo_command())} load bench FILE, with QDO_DIR a fresh directory; "
         "wall time includes interpreter start-up; RSS in MB of 10^6 bytes, "
         f"measured with {'GNU time' if rss_method() == 'time' else 'wait4 (upper bound)'}"],
    )  # fmt: skip
