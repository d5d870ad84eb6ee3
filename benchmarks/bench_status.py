"""``qdo status Q`` on a queue of 1,000,000 tasks: the Python call and the command.

- ``q.status()``: the median of repeated calls in one process (after a first call,
  reported apart, that also opens the database);
- ``qdo status bench`` as a subprocess: median wall time of repeated runs, and that
  minus the median wall time of ``python -c pass`` (the same interpreter) run as often;
  ``python -c "import qdo.cli"`` shows how much of it is importing qdo.

Peer (the floor): the ``GROUP BY state`` count that ``q.status()`` needs, run with
Python's ``sqlite3`` directly on the same database.
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import time

from _common import (
    Config,
    Ratio,
    Report,
    Row,
    clean_env,
    in_child,
    median_wall,
    progress,
    qdo_command,
    scratch_dir,
    shell_tasks,
    use_qdo_dir,
)

TARGET = 0.2  # seconds
CALLS = 20  # q.status() calls per run
COMMANDS = 10  # subprocess runs per run


def fill(qdo_dir: str, n: int) -> None:
    use_qdo_dir(qdo_dir)
    import qdo

    qdo.create("bench").add_multiple(shell_tasks(n))


def time_status(qdo_dir: str, n: int) -> tuple[float, float]:
    """Seconds of the first ``q.status()`` of a fresh process, and the median of the next."""
    use_qdo_dir(qdo_dir)
    import qdo

    start = time.perf_counter()
    q = qdo.connect("bench")
    status = q.status()
    first = time.perf_counter() - start
    assert status["ntasks"]["Pending"] == n, status
    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        q.status()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def time_raw_count(db_path: str) -> float:
    """Median seconds of the bare count query on a fresh connection."""
    conn = sqlite3.connect(db_path)
    sql = "SELECT state, count(*) FROM tasks WHERE queue_id = ? GROUP BY state"
    conn.execute(sql, (1,)).fetchall()  # open the database, as q.status()'s first call did
    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        conn.execute(sql, (1,)).fetchall()
        times.append(time.perf_counter() - start)
    conn.close()
    return statistics.median(times)


def run(cfg: Config) -> Report:
    n = cfg.size(1_000_000, 100_000)
    warm = Row("qdo  q.status(), repeated", "s", target=TARGET, higher_is_better=False)
    first = Row("qdo  q.status(), first in a process", "s", target=TARGET, higher_is_better=False)
    peer = Row("peer sqlite3 GROUP BY state count", "s", higher_is_better=False)
    cli = Row("qdo  `qdo status bench` wall time", "s", target=TARGET, higher_is_better=False)
    net = Row("qdo  `qdo status` - `python -c pass`", "s", target=TARGET, higher_is_better=False)
    bare = Row("base `python -c pass` wall time", "s", higher_is_better=False)
    imports = Row("base `python -c 'import qdo.cli'`", "s", higher_is_better=False)
    for i in range(cfg.runs):
        progress(f"status: run {i + 1}/{cfg.runs}, {n:,} tasks")
        with scratch_dir(cfg, "status") as d:
            in_child(fill, str(d), n)
            first_s, warm_s = in_child(time_status, str(d), n)
            first.values.append(first_s)
            warm.values.append(warm_s)
            peer.values.append(in_child(time_raw_count, str(d / "qdo.sqlite")))
            env = clean_env(d)
            cli_s = median_wall([*qdo_command(), "status", "bench"], env, COMMANDS)
            bare_s = median_wall([sys.executable, "-c", "pass"], env, COMMANDS)
            cli.values.append(cli_s)
            bare.values.append(bare_s)
            net.values.append(cli_s - bare_s)
            imports.values.append(
                median_wall([sys.executable, "-c", "import qdo.cli"], env, COMMANDS)
            )
    return Report(
        f"status: a queue of {n:,} Pending tasks",
        [warm, first, peer, cli, net, bare, imports],
        [Ratio("ratio q.status() / peer count", warm, peer)],
        [f"each run: {CALLS} q.status() calls, {COMMANDS} runs of each command, medians"],
    )
