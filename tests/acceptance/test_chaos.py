"""Chaos: SIGKILL random workers while they run 5,000 tasks; nothing may be lost.

Set QDO_TEST_CHAOS_REPORT=path to write the figures (tasks, kills, lost, re-runs and why)
as JSON; QDO_TEST_CHAOS_SECONDS changes how long the killing goes on (default 30).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import qdo

pytestmark = pytest.mark.backends

TASKS = 5000
WORKERS = 4
LEASE = "1.0"


def start_worker(log_dir: Path, n: int) -> subprocess.Popen[bytes]:
    with open(log_dir / f"worker-{n}.out", "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "qdo", "do", "Chaos", "--lease", LEASE, "--wait"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def test_killing_workers_loses_nothing(tmp_path: Path, qdo_dir: Path) -> None:
    seconds = float(os.environ.get("QDO_TEST_CHAOS_SECONDS", "30"))
    record = tmp_path / "ran"
    # lost workers must not turn tasks into Killed here: every task has to succeed
    q = qdo.create("Chaos", max_lost=1000)
    q.add_multiple([f"echo {i} >> {record}; sleep 0.01{i % 10}" for i in range(TASKS)])
    ids = [t.id for t in q.tasks()]
    payload_index = {t.id: int(t.task.split()[1]) for t in q.tasks()}

    rng = random.Random(20261123)
    workers = [start_worker(tmp_path, n) for n in range(WORKERS)]
    spawned = WORKERS
    killed: list[int] = []
    start = time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            time.sleep(0.5)
            victim = workers.pop(rng.randrange(len(workers)))
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            killed.append(victim.pid)
            workers.append(start_worker(tmp_path, spawned))
            spawned += 1
            if q.status()["ntasks"]["Succeeded"] == TASKS:
                break
        # no more killing: let the survivors finish (expired leases come back by themselves)
        deadline = time.monotonic() + 120
        while q.status()["ntasks"]["Succeeded"] < TASKS:
            assert time.monotonic() < deadline, f"not finished: {q.status()['ntasks']}"
            time.sleep(0.2)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(timeout=60)
    elapsed = time.monotonic() - start

    counts = q.status()["ntasks"]
    assert counts["Succeeded"] == TASKS and counts["Running"] == 0, counts

    assert q.store.check() == []
    history = q.store.attempts(ids)
    successes = Counter(i for i in ids for a in history.get(i, []) if a.state == "Succeeded")
    lost_on: dict[int, set[int]] = {}
    for task_id in ids:
        for a in history.get(task_id, []):
            if a.state == "Lost":
                assert a.worker is not None
                lost_on.setdefault(task_id, set()).add(int(a.worker.rpartition(":")[2]))
    # every success recorded exactly once
    assert sorted(successes) == ids and set(successes.values()) == {1}

    ran = Counter(int(line) for line in record.read_text().split())
    assert set(ran) == set(range(TASKS)), "every task ran"
    by_index = {payload_index[i]: i for i in ids}
    reruns = {i: n for i, n in ran.items() if n > 1}
    why = {}
    for index, n in reruns.items():
        task_id = by_index[index]
        # a task ran more than once only because a worker holding it was killed
        holders = lost_on.get(task_id, set())
        assert holders & set(killed), f"task {task_id} ran {n} times, no killed holder"
        why[task_id] = sorted(holders & set(killed))

    report = os.environ.get("QDO_TEST_CHAOS_REPORT")
    if report:
        Path(report).write_text(json.dumps({
            "tasks": TASKS, "workers": WORKERS, "lease_seconds": float(LEASE),
            "seconds": round(elapsed, 1), "kills": len(killed),
            "tasks_lost": TASKS - counts["Succeeded"],
            "tasks_run_more_than_once": len(reruns),
            "extra_runs": sum(n - 1 for n in reruns.values()),
            "tasks_requeued_after_a_kill": len(lost_on),
            "why": {str(k): f"held by killed worker pid {v}" for k, v in why.items()},
        }, indent=1))  # fmt: skip
