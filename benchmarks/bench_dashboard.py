"""The dashboard's cost (issue 15), with a real ``qdo serve`` on SQLite:

- one refresh of a queue's page (``GET /api/queues/bench``, what the page asks every
  second) on a queue of 1,000,000 tasks (900,000 Pending, 99,000 Succeeded, 1,000
  Failed in 20 kinds), the median of repeated requests: wall time of the request,
  which holds the database time (target: under 50 ms); ``q.status()`` alone beside it;
- ``qdo do bench --workers 2`` on 20,000 shell tasks ``true``, with and without a
  client refreshing the queue's page every second, alternating: the rate with it open
  over the rate without (target: a drop under 5 %).
"""

from __future__ import annotations

import json
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from _common import (
    Config,
    Ratio,
    Report,
    Row,
    clean_env,
    in_child,
    progress,
    qdo_command,
    run_child,
    scratch_dir,
    use_qdo_dir,
)

QUEUE = "bench"
TOKEN = "bench-token-0123456789abcdef"
REFRESHES = 20
TARGET_MS = 50.0


def fill(qdo_dir: str, n: int) -> None:
    """``n`` tasks: 90 % Pending, the rest Succeeded but for 1,000 Failed of 20 kinds."""
    use_qdo_dir(qdo_dir)
    import qdo

    qdo.create(QUEUE).add_multiple([f"echo {i}" for i in range(n)])
    db = sqlite3.connect(Path(qdo_dir) / "qdo.sqlite")
    done = n // 10
    now = time.time()
    with db:
        db.execute("UPDATE tasks SET state = 'Succeeded', exitcode = 0, attempts = 1, "
                   "started = ?, finished = ? WHERE id <= ?", (now - 60, now, done))  # fmt: skip
        db.execute("UPDATE tasks SET state = 'Failed', exitcode = id % 20 + 1, "
                   "message = 'exit code ' || (id % 20 + 1) WHERE id <= 1000")  # fmt: skip
    db.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(env: dict[str, str], token_file: Path) -> tuple[subprocess.Popen[bytes], str]:
    token_file.write_text(TOKEN)
    port = free_port()
    proc = subprocess.Popen([*qdo_command(), "serve", "--port", str(port), "--token-file",
                             str(token_file)], env=env, stdout=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("qdo serve did not come up") from None
            time.sleep(0.05)


def refresh(url: str) -> dict[str, object]:
    req = urllib.request.Request(f"{url}/api/queues/{QUEUE}",
                                 headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def time_refreshes(url: str) -> float:
    """Median seconds of a refresh, after a first one (that reads the failure groups,
    kept for 5 s, as every refresh of an open page within them does not)."""
    refresh(url)
    times = []
    for _ in range(REFRESHES):
        start = time.perf_counter()
        got = refresh(url)
        times.append(time.perf_counter() - start)
        time.sleep(0.05)
    assert got["ntasks"]["Failed"] == 1000, got["ntasks"]  # type: ignore[index]
    return statistics.median(times)


def time_status(qdo_dir: str) -> float:
    use_qdo_dir(qdo_dir)
    import qdo

    q = qdo.connect(QUEUE)
    q.status()
    times = []
    for _ in range(REFRESHES):
        start = time.perf_counter()
        q.status()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def do_rate(cfg: Config, n: int, watched: bool) -> float:
    with scratch_dir(cfg, "dashboard-do") as d:
        env = clean_env(d)
        tasks = d / "tasks.txt"
        tasks.write_text("true\n" * n)
        run_child([*qdo_command(), "load", QUEUE, str(tasks)], env)
        server, url = start_server(env, d / "token")
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(1.0):
                refresh(url)

        watcher = threading.Thread(target=watch, daemon=True)
        try:
            if watched:
                refresh(url)
                watcher.start()
            got = run_child([*qdo_command(), "do", QUEUE, "--workers", "2"], env)
            assert f"ran {n:,} tasks" in got.stdout, got.stdout
        finally:
            stop.set()
            if watched:
                watcher.join()
            server.terminate()
            server.wait()
        return n / got.seconds


def run(cfg: Config) -> Report:
    n = cfg.size(1_000_000, 100_000)
    m = cfg.size(20_000, 2_000)
    page = Row(f"qdo  one refresh of a queue's page, {n:,} tasks", "ms", target=TARGET_MS,
               higher_is_better=False)  # fmt: skip
    status = Row("base q.status() alone, same queue", "ms", higher_is_better=False)
    plain = Row(f"base `qdo do --workers 2`, {m:,} tasks 'true'", "/s")
    watched = Row("qdo  the same, the page refreshed every second", "/s")
    for i in range(cfg.runs):
        progress(f"dashboard: run {i + 1}/{cfg.runs}, a page on {n:,} tasks")
        with scratch_dir(cfg, "dashboard") as d:
            in_child(fill, str(d), n)
            server, url = start_server(clean_env(d), d / "token")
            try:
                page.values.append(1000 * time_refreshes(url))
            finally:
                server.terminate()
                server.wait()
            status.values.append(1000 * in_child(time_status, str(d)))
        for open_ in (True, False) if i % 2 else (False, True):
            progress(
                f"dashboard: run {i + 1}/{cfg.runs}, qdo do, page {'open' if open_ else 'closed'}"
            )
            (watched if open_ else plain).values.append(do_rate(cfg, m, open_))
    return Report(
        "the dashboard: a refresh on a large queue, and qdo do with the page open",
        [page, status, plain, watched],
        [Ratio("ratio qdo do with the page open / without", watched, plain, target=0.95)],
        [
            f"{REFRESHES} refreshes a run, HTTP included (uvicorn on this machine); the do "
            "rows alternate from run to run",
            f"python {sys.version.split()[0]}",
        ],
    )
