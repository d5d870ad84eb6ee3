"""Real processes against one database (each backend): concurrent claims, loaders killed
mid-write."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import qdo

pytestmark = pytest.mark.backends


def integrity(db: Path) -> str:
    """ "ok" when the database finds nothing wrong in itself (SQLite's integrity_check
    on the file; PostgreSQL's own checks through the store)."""
    if os.environ.get("QDO_BACKEND") == "postgres":
        return "ok" if qdo.connect("L", create_ok=True).store.check() == [] else "broken"
    with sqlite3.connect(db) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def _claimer(qdo_dir: str, barrier: mp.synchronize.Barrier, out: mp.Queue, finish: bool) -> None:
    os.environ["QDO_DIR"] = qdo_dir
    q = qdo.connect("C")
    got = []
    barrier.wait()
    while (task := q.get()) is not None:
        got.append(task.id)
        if finish:
            task.set_state(qdo.Task.SUCCEEDED)
    out.put((os.getpid(), got))


@pytest.mark.parametrize("finish", [False, True], ids=["claim-only", "claim-and-finish"])
def test_four_processes_never_get_the_same_task(qdo_dir: Path, finish: bool) -> None:
    q = qdo.create("C")
    ids = q.add_multiple([f"echo {i}" for i in range(5000)])
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    out: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(str(qdo_dir), barrier, out, finish))
             for _ in range(4)]  # fmt: skip
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    claimed = [i for _, got in results for i in got]
    assert len(claimed) == len(set(claimed)), "a task was handed out twice"
    assert sorted(claimed) == ids
    counts = q.status()["ntasks"]
    assert counts["Succeeded" if finish else "Running"] == 5000
    assert all(t.attempts == 1 for t in q.tasks())
    assert integrity(qdo_dir / "qdo.sqlite") == "ok"


LOADER = """
import os, sys, qdo

q = qdo.connect("L", create_ok=True)
mode, n = sys.argv[1], int(sys.argv[2])
def tasks():
    for i in range(n):
        if i == n // 10:
            print("inside", flush=True)   # the transaction is open and half-written
        yield f"echo {i}"
print("start", flush=True)
if mode == "stream":
    qdo.load("L", tasks())
else:
    q.add_multiple([f"echo {i}" for i in range(n)])
print("done", flush=True)
"""


@pytest.mark.parametrize("mode,delay", [("stream", 0.0), ("stream", 0.2), ("list", 0.5),
                                        ("list", 1.0)])  # fmt: skip
def test_loader_killed_mid_load_leaves_all_or_nothing(
    qdo_dir: Path, mode: str, delay: float
) -> None:
    qdo.create("L").add("already there")
    n = 300_000
    wanted = "inside" if mode == "stream" else "start"
    with subprocess.Popen([sys.executable, "-c", LOADER, mode, str(n)],
                          stdout=subprocess.PIPE, text=True) as proc:  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == wanted:
                break
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()
    count = sum(qdo.connect("L").status()["ntasks"].values())
    if "done" in rest:  # finished before the kill landed: all of it
        assert count == n + 1
    else:
        assert count in (1, n + 1)
    if mode == "stream":
        assert count == 1, "killed inside the transaction, nothing may remain"
    assert integrity(qdo_dir / "qdo.sqlite") == "ok"
    # the database is still fully usable afterwards
    qdo.connect("L").add_multiple(["after"] * 10)
    assert sum(qdo.connect("L").status()["ntasks"].values()) == count + 10
