"""A long write (a big load into another queue of the same database) while agents run
tasks under short leases: their renewals wait behind it (SQLite has one writer), yet no
live lease is lost, and no task runs twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import qdo
from tests.conftest import run_qdo

pytestmark = pytest.mark.backends

LEASE = "1"  # the shortest there is: a renewal blocked for over a second loses it
LINES = 1_500_000


def counts(queue: str) -> dict[str, int]:
    return dict(json.loads(run_qdo("status", queue, "--json", check=True).stdout)["ntasks"])


def agent(queue: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "qdo", "do", queue, "--lease", LEASE, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_a_long_load_costs_running_tasks_no_lease(backend: str, tmp_path: Path) -> None:
    del backend
    go = tmp_path / "go"  # the tasks run until the load is done
    q = qdo.create("work")
    q.add_multiple([f"while [ ! -e {go} ]; do sleep 0.05; done; echo ran" for _ in range(4)])
    big = tmp_path / "big.txt"
    big.write_text("true\n" * LINES)
    holder = agent("work", "--workers", "4")
    idle = agent("work", "--workers", "4", "--wait")  # takes whatever comes back
    try:
        while counts("work")["Running"] < 4:
            time.sleep(0.05)
        started = time.monotonic()
        run_qdo("load", "other", str(big), check=True, timeout=600)
        took = time.monotonic() - started
        go.touch()
        out, err = holder.communicate(timeout=120)
        assert holder.returncode == 0, err
    finally:
        for proc in (holder, idle):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        idle.communicate(timeout=60)
    assert counts("other")["Pending"] == LINES
    assert counts("work") == {**{s: 0 for s in counts("work")}, "Succeeded": 4}
    ledger = q.store.attempts([t.id for t in q.tasks()])
    for t in q.tasks():
        history = [a.state for a in ledger.get(t.id, [])]
        assert t.attempts == 1 and history == ["Succeeded"], (t.id, t.attempts, history, t.message)
    # (the load held the database long enough to matter: several leases)
    assert took > 3 * float(LEASE), f"the load took {took:.1f} s: too quick to test anything"
