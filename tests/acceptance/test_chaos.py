"""Chaos: SIGKILL random workers while they run 5,000 tasks; nothing may be lost.  And
every kind of trouble at once: kills, crashing functions, a full disk, a server restart.

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
from collections.abc import Callable
from pathlib import Path

import pytest

import qdo
from qdo.store.factory import close_all
from tests.disks import database_disk

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


# -- every kind of trouble at once ---------------------------------------------------------
SHELL_TASKS = 600
FUNC_TASKS = 200
CRASH_EVERY = 50  # every 50th function task kills its worker process

FUNC_MODULE = """
import os, time
def work(i, crash, record):
    if crash:
        os._exit(3)  # as a segfault or the OOM killer would end it
    with open(record, "a") as f:
        f.write(f"{i}\\n")
    time.sleep(0.02)
"""


#: A lease a busy machine (CI) renews in time: a holder that renews too late loses its
#: task to another worker, which is the lease doing its job, not what this test is about.
CHAOS_LEASE = "3"


def seconds(i: int) -> float:
    return 1.5 * float(CHAOS_LEASE) if i % 40 == 0 else 0.05 + 0.1 * (i % 3)


class Agents:
    """Agents of two queues, started, SIGKILLed and started again at random."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env = folder, env
        self.procs: list[tuple[list[str], subprocess.Popen[bytes]]] = []
        self.kills = 0
        self.n = 0

    def start(self, *args: str) -> None:
        self.n += 1
        with open(self.folder / f"agent-{self.n}.out", "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "qdo", "do", *args], env=self.env,
                                    stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        self.procs.append((list(args), proc))

    def kill_one(self, rng: random.Random) -> None:
        args, victim = self.procs.pop(rng.randrange(len(self.procs)))
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.kills += 1
        self.start(*args)

    def said(self, text: str) -> bool:
        return any(text in p.read_text(errors="replace") for p in self.folder.glob("agent-*"))

    def stop(self) -> None:
        for _, proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for _, proc in self.procs:
            proc.wait(timeout=120)


def until(predicate: Callable[[], bool], what: str, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_chaos_of_every_kind(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Agents SIGKILLed while their tasks run, function tasks that kill their worker
    process, the database's disk full for a while, and (PostgreSQL) the server
    restarted: every task ends once, no two runs of a task ever overlap (each run holds
    its task's lock: a second copy finds it taken), and only the crashing functions fail."""
    with database_disk(backend, tmp_path, monkeypatch, size_mb=32) as (disk, server):
        record, overlaps, locks = tmp_path / "ran", tmp_path / "overlaps", tmp_path / "locks"
        locks.mkdir()
        (tmp_path / "chaosfunc.py").write_text(FUNC_MODULE)
        path = f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
        env = {**os.environ, "PYTHONPATH": path}
        shell = qdo.create("Chaos", max_lost=1000)
        shell.add_multiple([
            # one in forty outlives its lease: a copy left running by a dead agent would
            # still hold the lock when the task's next attempt starts
            f"flock -n {locks}/{i} sh -c 'echo {i} >> {record}; sleep {seconds(i)}' "
            f"|| echo {i} >> {overlaps}"
            for i in range(SHELL_TASKS)
        ])  # fmt: skip
        funcs = qdo.create("ChaosFunc", max_lost=1000)
        fran = str(tmp_path / "fran")
        funcs.add_multiple([{"i": i, "crash": i % CRASH_EVERY == 7, "record": fran}
                            for i in range(FUNC_TASKS)])  # fmt: skip
        crashing = {t.id for t in funcs.tasks() if t.task["crash"]}

        agents = Agents(tmp_path, env)
        for _ in range(3):
            agents.start("Chaos", "--workers", "2", "--lease", CHAOS_LEASE, "--wait")
        agents.start("ChaosFunc", "--func", "chaosfunc:work", "--workers", "2",
                     "--lease", CHAOS_LEASE, "--wait")  # fmt: skip
        rng = random.Random(20261202)

        def done(q: qdo.Queue) -> int:
            n = q.status()["ntasks"]
            return int(n["Succeeded"] + n["Failed"] + n["Killed"])

        def kill_until(fraction: float) -> None:
            while done(shell) < fraction * SHELL_TASKS:
                time.sleep(0.4)
                agents.kill_one(rng)

        try:
            kill_until(0.25)
            disk.fill()  # the database cannot grow; agents hold their results, and wait
            until(lambda: agents.said("disk full"), "an agent to say the disk is full")
            for _ in range(4):
                agents.kill_one(rng)  # a new agent starts on a full disk, too
                time.sleep(0.4)
            disk.free()
            kill_until(0.5)
            if server is not None:
                server.restart()  # every connection drops; agents reconnect
            kill_until(0.75)
            until(lambda: done(shell) == SHELL_TASKS and done(funcs) == FUNC_TASKS,
                  "every task to end")  # fmt: skip
            # what failed for want of room (its log may be short) runs again, in both
            # queues (a crashing function fails again, alone)
            for q, n in ((shell, SHELL_TASKS), (funcs, FUNC_TASKS)):
                q.retry()
                until(lambda q=q, n=n: done(q) == n and not q.tasks(state="Pending"),
                      "the retried tasks")  # fmt: skip
        finally:
            agents.stop()

        assert overlaps.exists() is False, f"runs overlapped: {overlaps.read_text()}"
        counts = shell.status()["ntasks"]
        assert counts["Succeeded"] == SHELL_TASKS and counts["Running"] == 0, counts
        ran = Counter(int(x) for x in record.read_text().split())
        assert set(ran) == set(range(SHELL_TASKS))
        ids = [t.id for t in shell.tasks()]
        ledger = shell.store.attempts(ids)
        successes = Counter(i for i in ids for a in ledger.get(i, []) if a.state == "Succeeded")
        assert set(successes.values()) == {1} and sorted(successes) == ids

        for t in funcs.tasks():
            if t.id in crashing:
                assert t.state == "Failed" and "worker process died" in (t.message or ""), t
            else:
                assert t.state == "Succeeded", (t, t.message)
        assert shell.store.check() == []
        assert agents.kills >= 8
        close_all()
