"""The Python API exactly as SPEC §1.1 shows it, on a real SQLite file."""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import qdo
import qdo.store.factory
from qdo.errors import (
    DependencyCycle,
    InvalidInput,
    InvalidPayload,
    InvalidPriority,
    InvalidQueueName,
    InvalidState,
    LeaseLost,
    NotQdoDatabase,
    QdoError,
    QueueExists,
    SchemaTooNew,
    UnknownQueue,
    UnknownTask,
)
from qdo.store.sqlite import SCHEMA_VERSION
from tests.conftest import die_holding

pytestmark = pytest.mark.backends


def test_spec_example(qdo_dir: Path) -> None:
    q = qdo.create("EchoChamber")
    for i in range(100):
        assert isinstance(q.add("echo Hello " + str(i)), int)
    ids = q.add_multiple(["echo Wow " + str(i) for i in range(10000)])
    assert len(ids) == 10000 and ids == list(range(ids[0], ids[0] + 10000))
    important = q.add("echo very important", priority=100)
    t = q.add("combine.sh", requires=[ids[0], ids[1]])
    p = q.add(dict(imgdir="/data", infile="a.tif", outfile="a.tif.out"))
    status = q.status()
    assert status["name"] == "EchoChamber" and status["state"] == "Active"
    assert status["ntasks"] == {
        "Waiting": 1, "Pending": 10102, "Running": 0, "Succeeded": 0, "Failed": 0, "Killed": 0,
    }  # fmt: skip
    assert q.tasks(id=t).requires == (ids[0], ids[1])
    assert q.tasks(id=p).task == {"imgdir": "/data", "infile": "a.tif", "outfile": "a.tif.out"}
    assert len(q.tasks(state=qdo.Task.WAITING)) == 1
    first = q.get()
    assert first is not None and first.id == important and first.state is qdo.Task.RUNNING
    q.pause()
    assert q.status()["state"] == "Paused" and q.get() is None
    first.set_state(qdo.Task.SUCCEEDED)  # a running task still reports while paused
    q.resume()
    assert q.tasks(state=qdo.Task.SUCCEEDED)[0].id == important
    assert [x.name for x in qdo.qlist()] == ["EchoChamber"]
    with pytest.raises(UnknownQueue):
        qdo.connect("ImgQueue")
    assert qdo.connect("EchoChamber").status() == q.status()
    q.delete()
    assert qdo.qlist() == []


def test_client_loop_from_the_seed() -> None:
    q = qdo.create("ImgQueue")
    q.add_multiple([{"n": i} for i in range(20)] + [{"n": -1}])
    seen = []

    def process_image(n: int) -> None:
        if n < 0:
            raise ValueError("negative image")
        seen.append(n)

    q = qdo.connect("ImgQueue")
    while True:
        task = q.get(timeout=0.2)
        if task is None:
            break
        try:
            process_image(**task.task)
            task.set_state(qdo.Task.SUCCEEDED)
        except Exception as e:
            task.set_state(qdo.Task.FAILED, err=1, message=str(e))
    assert seen == list(range(20))
    (failed,) = q.tasks(state=qdo.Task.FAILED)
    assert failed.task == {"n": -1} and failed.exitcode == 1 and failed.message == "negative image"
    assert q.retry() == 1 and q.status()["ntasks"]["Pending"] == 1
    assert q.rerun() == 21 and q.status()["ntasks"]["Pending"] == 21


def test_task_constants_and_states() -> None:
    names = [qdo.Task.WAITING, qdo.Task.PENDING, qdo.Task.RUNNING, qdo.Task.SUCCEEDED,
             qdo.Task.FAILED, qdo.Task.KILLED]  # fmt: skip
    assert [str(s) for s in names] == ["Waiting", "Pending", "Running", "Succeeded", "Failed",
                                       "Killed"]  # fmt: skip
    assert qdo.Task.FAILED == "Failed"
    q = qdo.create("s")
    q.add("x")
    assert len(q.tasks(state="pending")) == 1
    with pytest.raises(InvalidState):
        q.tasks(state="Done")


def test_connect_create_ok_and_create_twice() -> None:
    q = qdo.connect("new", create_ok=True)
    assert q.status()["ntasks"]["Pending"] == 0
    assert qdo.connect("new", create_ok=True).name == "new"
    with pytest.raises(QueueExists):
        qdo.create("new")


def test_get_waits_for_a_task() -> None:
    q = qdo.create("w")
    start = time.monotonic()
    assert q.get(timeout=0.3) is None
    assert time.monotonic() - start >= 0.3
    threading.Timer(0.2, lambda: qdo.connect("w").add("late")).start()
    task = q.get(timeout=10)
    assert task is not None and task.task == "late"


def test_get_on_deleted_queue_raises() -> None:
    q = qdo.create("gone")
    qdo.connect("gone").delete()
    with pytest.raises(UnknownQueue):
        q.get(timeout=0)


def test_lease_lost_after_rerun_and_renew() -> None:
    q = qdo.create("l")
    q.add("x")
    task = q.get()
    assert task is not None
    task.renew(1000)
    q.rerun()
    with pytest.raises(LeaseLost):
        task.set_state(qdo.Task.SUCCEEDED)
    with pytest.raises(LeaseLost):
        task.renew()
    assert q.status()["ntasks"]["Pending"] == 1


def test_give_back_with_pending() -> None:
    q = qdo.create("g")
    q.add("x")
    task = q.get()
    assert task is not None
    task.set_state(qdo.Task.PENDING)
    again = q.get()
    assert again is not None and again.id == task.id and again.attempts == 2
    with pytest.raises(InvalidState):
        again.set_state(qdo.Task.RUNNING)
    with pytest.raises(InvalidInput):
        again.set_state(qdo.Task.FAILED, err="bad")  # type: ignore[arg-type]
    with pytest.raises(InvalidState):
        q.tasks()[0].set_state(qdo.Task.RUNNING)  # a record is set, never to Running


def test_recover_dead_local_worker() -> None:
    q = qdo.create("r")
    q.add_multiple(["a", "b"])
    # a real process claims a task and dies without reporting
    code = "import qdo; t = qdo.connect('r').get(); print(t.id)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lost_id = int(out.stdout)
    assert q.status()["ntasks"]["Running"] == 1
    mine = q.get()  # held by this (live) process: must not be recovered
    assert mine is not None
    assert q.recover() == 1
    counts = q.status()["ntasks"]
    assert counts["Running"] == 1 and counts["Pending"] == 1
    back = q.tasks(id=lost_id)
    assert back.state is qdo.Task.PENDING and "process gone" in (back.message or "")
    mine.set_state(qdo.Task.SUCCEEDED)


def test_recover_expired_lease() -> None:
    q = qdo.create("e")
    q.add("a")
    die_holding("e", lease=0.05)
    time.sleep(0.1)
    assert q.recover() == 1


@pytest.mark.parametrize("name", ["", "a b", "a/b", "x" * 101, "é", "q;drop", None, 5])
def test_bad_queue_names(name: object) -> None:
    with pytest.raises(InvalidQueueName):
        qdo.create(name)  # type: ignore[arg-type]
    with pytest.raises(InvalidQueueName):
        qdo.connect(name, create_ok=True)  # type: ignore[arg-type]
    assert qdo.qlist() == []


def test_good_queue_names() -> None:
    for name in ["a", "A-b_c.9", "x" * 100]:
        qdo.create(name)
    assert len(qdo.qlist()) == 3


@pytest.mark.parametrize("priority", ["1", 1.5, True, None, 2**63, [1]])
def test_bad_priorities(priority: object) -> None:
    q = qdo.create("p")
    with pytest.raises(InvalidPriority):
        q.add("x", priority=priority)  # type: ignore[arg-type]
    with pytest.raises(InvalidPriority):
        q.add_multiple(["x", "y"], priorities=[0, priority])  # type: ignore[list-item]
    assert q.tasks() == []


@pytest.mark.parametrize(
    "payload",
    [object(), b"bytes", {1, 2}, None, "", "   ", "a\0b", math.nan, {"x": math.inf},
     "x" * 1_000_001, {"k": "é" * 600_000}],
)  # fmt: skip
def test_bad_payloads(payload: object) -> None:
    q = qdo.create("b")
    with pytest.raises(InvalidPayload):
        q.add(payload)
    with pytest.raises(InvalidPayload):
        q.add_multiple(["fine", payload])
    assert q.tasks() == []


def test_add_multiple_arguments() -> None:
    q = qdo.create("m")
    a, b = q.add_multiple(["a", "b"], priorities=[1, 2])
    c, d = q.add_multiple(["c", {"d": 1}], priorities=5, requires=[[a], None])
    assert [t.priority for t in q.tasks()] == [1, 2, 5, 5]
    assert q.tasks(id=c).state is qdo.Task.WAITING
    with pytest.raises(InvalidInput):
        q.add_multiple(["x", "y"], priorities=[1])
    with pytest.raises(InvalidInput):
        q.add_multiple(["x"], requires=[[a], [b]])
    with pytest.raises(InvalidInput):
        q.add_multiple("not a list")
    with pytest.raises(InvalidInput):
        q.add("x", requires=["1"])  # type: ignore[list-item]
    assert len(q.tasks()) == 4
    assert q.add_multiple([]) == []


def test_task_ids_and_lists_of_them_are_checked() -> None:
    q = qdo.create("ids")
    ids = q.add_multiple([f"echo {i}" for i in range(15)])
    for i in ids:
        q.set_task_state(i, qdo.Task.FAILED, err=1)
    # a string is no list of ids: retry("12") retried tasks 1 and 2
    for bad in ("12", b"12", 5, ["5"], [6.0], [True], [0], [-1], [2**63], [2**70]):
        with pytest.raises(InvalidInput):
            q.retry(bad)  # type: ignore[arg-type]
    assert {t.state for t in q.tasks()} == {qdo.Task.FAILED}
    assert q.retry([ids[11], ids[11]]) == 1 and q.tasks(id=ids[11]).state is qdo.Task.PENDING
    assert q.retry(i for i in ids[:2]) == 2 and q.retry([999_999]) == 0
    # an id beyond what the column holds is no id (OverflowError from the driver before)
    for call in (lambda: q.tasks(id=2**63), lambda: q.set_task_state(2**63, "Failed"),
                 lambda: q.add_requires(2**63, [ids[0]]), lambda: q.output(2**70),
                 lambda: list(q.iter_tasks(id=2**63))):  # fmt: skip
        with pytest.raises(InvalidInput, match="positive 64-bit integers"):
            call()
    with pytest.raises(InvalidInput, match="requires must be a list"):
        q.add("x", requires={ids[0]: ids[1]})  # type: ignore[arg-type]  # (taken as [1])
    # lists of tasks and of their priorities: one clear error, nothing added
    for tasks, priorities in ((None, None), (5, None), (["a"], 1.5), (["a", "b"], [1])):
        with pytest.raises(InvalidInput):
            q.add_multiple(tasks, priorities=priorities)  # type: ignore[arg-type]
    added = q.add_multiple(iter(["x", "y"]), priorities=(p for p in (3, 4)))
    assert added == [ids[-1] + 1, ids[-1] + 2]
    assert [t.priority for t in q.tasks()[-2:]] == [3, 4]


def test_add_multiple_of_plain_commands_keeps_each_as_given() -> None:
    q = qdo.create("plain")
    commands = [f"echo {i} \"q\" \\ \t 'é' 漢字 \U0001f600 {{}} [] ," for i in range(1000)]
    ids = q.add_multiple(commands, priorities=3)
    assert [(t.id, t.task, t.priority) for t in q.tasks()] == [
        (i, c, 3) for i, c in zip(ids, commands, strict=True)
    ]
    # what cannot be stored as UTF-8 is refused whole, with the task it is in
    with pytest.raises(InvalidPayload, match=r"task #100: .*lone surrogate"):
        q.add_multiple(["fine"] * 100 + ["lone \ud800 surrogate"])
    assert len(q.tasks()) == 1000


@pytest.mark.parametrize(
    "task", ["ls \udcff.fits", {"file": "a\udc80b"}, ["x", "\ud800"]], ids=["shell", "dict", "list"]
)
def test_a_task_with_a_lone_surrogate_is_refused_and_nothing_added(task: object) -> None:
    """A file name whose bytes are not UTF-8, as ``os.listdir`` decodes it, cannot be
    stored: one clear error (not the driver's UnicodeEncodeError), nothing written."""
    q = qdo.create("surrogates")
    with pytest.raises(InvalidPayload, match="not valid Unicode text"):
        q.add(task)
    with pytest.raises(InvalidPayload, match="task #1: "):
        q.add_multiple(["fine", task])
    assert q.tasks() == []


def test_requirements_errors_write_nothing() -> None:
    q = qdo.create("d")
    a = q.add("a")
    with pytest.raises(UnknownTask):
        q.add("b", requires=[a, 12345])
    with pytest.raises(UnknownTask):
        q.add_multiple(["c", "d"], requires=[[a], [999]])
    b = q.add("b", requires=[a])
    with pytest.raises(DependencyCycle):
        q.add_requires(a, [b])
    assert [t.id for t in q.tasks()] == [a, b]
    assert q.tasks(id=a).requires == ()


def test_errors_are_qdo_errors_with_lookup() -> None:
    with pytest.raises(LookupError):
        qdo.connect("missing")
    assert issubclass(UnknownTask, QdoError) and issubclass(InvalidInput, ValueError)


def test_not_a_qdo_database(
    qdo_dir: Path, monkeypatch: pytest.MonkeyPatch, sqlite_only: None
) -> None:
    garbage = qdo_dir / "garbage.db"
    garbage.parent.mkdir(parents=True, exist_ok=True)
    garbage.write_bytes(os.urandom(4096))
    monkeypatch.setenv("QDO_DB_NAME", str(garbage))
    with pytest.raises(NotQdoDatabase):
        qdo.qlist()
    other = qdo_dir / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE stuff (x)")
    monkeypatch.setenv("QDO_DB_NAME", str(other))
    with pytest.raises(NotQdoDatabase, match="stuff"):
        qdo.qlist()


def test_newer_schema_refused(qdo_dir: Path, sqlite_only: None) -> None:
    qdo.create("x")
    db = qdo_dir / "qdo.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE qdo_schema SET version = 99")
    qdo.store.factory._stores.clear()
    with pytest.raises(SchemaTooNew, match="99"):
        qdo.qlist()


def test_database_is_wal_and_versioned(qdo_dir: Path, sqlite_only: None) -> None:
    qdo.create("x")
    with sqlite3.connect(qdo_dir / "qdo.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM qdo_schema").fetchone()[0] == SCHEMA_VERSION == 12


def test_bad_api_values_are_qdo_errors() -> None:
    """Issue 12 item 6: raw OverflowError / TypeError / a wrong "lease expired"."""
    q = qdo.create("bad")
    q.add_multiple(["a", "b"])
    task = q.get()
    assert task is not None
    with pytest.raises(InvalidInput, match="32 bits"):
        task.set_state(qdo.Task.FAILED, err=2**70)
    with pytest.raises(InvalidInput, match="message must be a str"):
        task.set_state(qdo.Task.FAILED, message=object())  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="timeout must be a number"):
        q.get(timeout="10")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="lease must be a number"):
        q.get(lease=0)
    with pytest.raises(InvalidInput, match="max_lost must be an integer from 1"):
        qdo.create("huge", max_lost=10**30)
    with pytest.raises(UnknownQueue):
        qdo.connect("huge")  # refused before anything was created
    task.set_state(qdo.Task.SUCCEEDED)
    with pytest.raises(QdoError, match="reported already") as e:
        task.set_state(qdo.Task.FAILED)  # twice: not a lost lease
    assert not isinstance(e.value, LeaseLost)
    assert q.tasks(id=task.id).state is qdo.Task.SUCCEEDED
