"""A live holder keeps its task however long it works; a dead one's task comes back.

The client library renews the lease of every task got with ``q.get()`` from a
background thread (qdo/heartbeat.py).  These run real processes on both backends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import qdo
from qdo.errors import LeaseLost
from qdo.heartbeat import heartbeat
from tests.conftest import die_holding, run_qdo

pytestmark = pytest.mark.backends

#: Short enough that the test sees several leases go by; long enough that a busy CI
#: machine renews in time (a renewal is due after a third of it, so two thirds of a
#: lease is the slack).
LEASE = 2.0


def _poller(queue: str, stop_file: Path, got_file: Path) -> subprocess.Popen[str]:
    """Another client that keeps asking for a task, as farm.py's input threads do."""
    code = textwrap.dedent(f"""
        import os, time, qdo
        q = qdo.connect({queue!r})
        got = []
        while not os.path.exists({str(stop_file)!r}):
            t = q.get(timeout=0.2)
            if t is not None:
                got.append(t.id)
        open({str(got_file)!r}, "w").write(" ".join(map(str, got)))
    """)
    return subprocess.Popen([sys.executable, "-c", code], text=True)


def test_live_holder_keeps_its_task_for_three_leases(tmp_path: Path) -> None:
    """depth-cut.py / farm.py: ``task = q.get(timeout=10)``, hours of work, then
    ``task.set_state(qdo.Task.SUCCEEDED)``; meanwhile others poll ``get()`` and an
    operator runs ``qdo status`` (which puts back expired leases) in a loop."""
    q = qdo.create("Bricks")
    brick = q.add("runbrick 1234p567")
    task = q.get(timeout=10, lease=LEASE)
    assert task is not None and task.id == brick

    stop, got = tmp_path / "stop", tmp_path / "got"
    poller = _poller("Bricks", stop, got)
    statuses = 0
    beat = heartbeat()
    renewals = beat.renewals
    start = time.monotonic()
    try:
        while time.monotonic() - start < 3 * LEASE:  # the holder "works" for three leases
            out = run_qdo("status", "Bricks", check=True).stdout
            assert "Running" in out
            statuses += 1
    finally:
        stop.touch()
        poller.wait(timeout=60)
    assert poller.returncode == 0
    assert got.read_text() == "", "another client was handed the task the holder kept"
    assert statuses >= 2 and beat.renewals >= renewals + 3

    task.set_state(qdo.Task.SUCCEEDED)  # no LeaseLost: it was never lost
    done = q.tasks(id=brick, history=True)
    assert done.state is qdo.Task.SUCCEEDED and done.attempts == 1 and done.lost == 0
    assert [a.state for a in done.history] == ["Succeeded"]
    assert not beat.holds(q.store, brick)


def test_sigkilled_holder_loses_its_task_within_a_lease() -> None:
    """A holder that dies renews nothing: the next ``get()`` after a lease has passed
    is handed the task, without anyone running ``recover``."""
    q = qdo.create("Dead")
    t = q.add("work")
    assert die_holding("Dead", lease=LEASE) == t
    assert q.get() is None  # still leased to the dead process
    time.sleep(LEASE + 0.5)
    again = q.get()
    assert again is not None and again.id == t and again.attempts == 2
    assert "lost (lease expired)" in (q.tasks(id=t, history=True).history[0].message or "")
    again.set_state(qdo.Task.SUCCEEDED)


def test_a_forked_child_does_not_renew_its_parents_tasks() -> None:
    """After fork the child holds nothing; the parent goes on renewing its own."""
    q = qdo.create("Fork")
    t = q.add("work")
    task = q.get(lease=LEASE)
    assert task is not None
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its heartbeat is a new, empty one
        os.close(r)
        os.write(w, str(len(heartbeat())).encode())
        os._exit(0)
    os.close(w)
    held_in_child = os.read(r, 100).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert held_in_child == "0" and heartbeat().holds(q.store, t)
    task.set_state(qdo.Task.SUCCEEDED)


def test_heartbeat_drops_a_task_taken_away(tmp_path: Path) -> None:
    """farm.py: input threads ``get()`` bricks; an output process records each with
    ``q.set_task_state(taskid, qdo.Task.SUCCEEDED)``.  The getter's heartbeat then
    finds the lease gone and stops renewing it; a late report by the getter is refused."""
    q = qdo.create("Farm")
    ids = q.add_multiple([f"brick {i}" for i in range(4)])
    got: list[qdo.Task] = []
    lock = threading.Lock()

    def input_thread() -> None:
        while (t := q.get(timeout=0, lease=LEASE)) is not None:
            with lock:
                got.append(t)

    threads = [threading.Thread(target=input_thread) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(t.id for t in got) == ids
    # the output process: another process, told only the ids
    code = ("import sys, qdo\n"
            "q = qdo.connect('Farm')\n"
            "for taskid in sys.argv[1:]:\n"
            "    q.set_task_state(int(taskid), qdo.Task.SUCCEEDED)\n")  # fmt: skip
    subprocess.run([sys.executable, "-c", code, *map(str, ids)], check=True, timeout=120)
    assert all(t.state is qdo.Task.SUCCEEDED for t in q.tasks())
    beat = heartbeat()
    deadline = time.monotonic() + 30 * LEASE
    while any(beat.holds(q.store, i) for i in ids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(beat.holds(q.store, i) for i in ids)
    with pytest.raises(LeaseLost):
        got[0].set_state(qdo.Task.FAILED, err=1)
    assert q.tasks(id=got[0].id).state is qdo.Task.SUCCEEDED
