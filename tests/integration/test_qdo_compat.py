"""Code written for LBNL's original QDO runs unchanged on qdo.

Each test is one usage pattern of a public script that ran QDO in production, written
the way that script writes it; its docstring names the file.  Every test runs on both
backends.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import threading
import warnings
from typing import Any

import numpy as np
import pytest

import qdo
from qdo.errors import InvalidState, LeaseLost, UnknownQueue, UnknownTask

pytestmark = pytest.mark.backends


def _run(q: qdo.Queue, fail: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """A QDO client loop (depth-cut.py, farm.py): get until nothing comes."""
    while True:
        task = q.get(timeout=0)
        if task is None:
            break
        if task.task in fail:
            task.set_state(qdo.Task.FAILED, err=1)
        else:
            task.set_state(qdo.Task.SUCCEEDED)


def test_depth_cut_client_loop() -> None:
    """legacypipe py/legacyanalysis/depth-cut.py: ``task = q.get(timeout=10)``, ``if
    task is None: break``, then ``task.set_state(qdo.Task.SUCCEEDED)`` or
    ``task.set_state(qdo.Task.FAILED, err=1)``."""
    q = qdo.create("depthcut")
    q.add_multiple(["0001p000", "0002p000", "0003p000"])
    while True:
        task = q.get(timeout=10)
        if task is None:
            break
        brick = task.task
        assert brick[:4] in ("0001", "0002", "0003")
        if brick == "0002p000":
            task.set_state(qdo.Task.FAILED, err=1)
        else:
            task.set_state(qdo.Task.SUCCEEDED)
    failed = q.tasks(state=qdo.Task.FAILED)
    assert [t.task for t in failed] == ["0002p000"] and failed[0].err == 1


def _output_process(ids: list[int]) -> None:
    q = qdo.connect("farm")
    for taskid in ids:
        q.set_task_state(taskid, qdo.Task.SUCCEEDED)


def test_farm_input_threads_and_output_process() -> None:
    """legacypipe py/legacypipe/farm.py: input threads ``q.get(timeout=...)`` bricks,
    another process records each result with ``q.set_task_state(taskid,
    qdo.Task.SUCCEEDED)`` on ids it was sent."""
    q = qdo.create("farm")
    ids = q.add_multiple([f"brick{i}" for i in range(6)])
    taken: list[int] = []
    lock = threading.Lock()

    def input_thread() -> None:
        while (task := q.get(timeout=0)) is not None:
            with lock:
                taken.append(task.id)

    threads = [threading.Thread(target=input_thread) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == ids  # nobody was handed a brick twice
    output = multiprocessing.get_context("spawn").Process(target=_output_process, args=(taken,))
    output.start()
    output.join(timeout=120)
    assert output.exitcode == 0
    done = q.tasks(state=qdo.Task.SUCCEEDED)
    assert sorted(t.id for t in done) == ids
    history = q.tasks(id=ids[0], history=True).history
    # the admin change ended the attempt the input thread held, and says who made it
    assert [a.state for a in history] == ["Succeeded"]
    assert history[0].worker == f"{socket.gethostname()}:{os.getpid()}"  # the input thread
    assert "set to Succeeded by" in (history[0].message or "")
    assert "revoking the lease" in (history[0].message or "")


def test_runstatus_counts_every_valid_state() -> None:
    """legacypipe py/legacyanalysis/runstatus.py: ``qdo.connect(qname,
    create_ok=False)``, then ``for state in qdo.Task.VALID_STATES: q.tasks(state=state)``,
    stacked with numpy and indexed."""
    qdo.create("runstatus").add_multiple(["a", "b", "c"])
    q = qdo.connect("runstatus", create_ok=False)
    _run(q, fail={"b"})
    by_state = {}
    for state in qdo.Task.VALID_STATES:
        by_state[state] = q.tasks(state=state)
    assert {str(s) for s in qdo.Task.VALID_STATES} == {
        "Waiting", "Pending", "Running", "Succeeded", "Failed", "Killed",
    }  # fmt: skip
    assert len(by_state[qdo.Task.SUCCEEDED]) == 2 and len(by_state["Failed"]) == 1
    tasks = np.hstack([by_state[s] for s in qdo.Task.VALID_STATES if by_state[s]])
    assert tasks.shape == (3,)  # a Task is one object to numpy, not a sequence
    picked = tasks[np.array([t.state == qdo.Task.FAILED for t in tasks])]
    assert [t.task for t in picked] == ["b"]


def test_obiwan_status_by_id_and_state_names() -> None:
    """obiwan py/obiwan/runmanager/status.py: ``getattr(qdo.Task, res.upper())`` for
    'running', 'succeeded', 'failed'; ``np.array(q.tasks(state=...))``;
    ``q.tasks(id=int(x))`` is one Task, with ``.task`` and ``.set_state(qdo.Task.PENDING)``;
    an unknown id raises ValueError."""
    q = qdo.create("obiwan")
    ids = q.add_multiple(["elg 1 2 3", "elg 4 5 6"])
    _run(q, fail={"elg 4 5 6"})
    for res in ("running", "succeeded", "failed"):
        state = getattr(qdo.Task, res.upper())
        a = np.array(q.tasks(state=state))
        assert a.shape == ((1,) if res != "running" else (0,))
    task_obj = q.tasks(id=int(str(ids[1])))
    assert task_obj.task.split(" ")[1:] == ["4", "5", "6"]
    task_obj.set_state(qdo.Task.PENDING)  # rerun that one
    assert q.tasks(id=ids[1]).state is qdo.Task.PENDING
    again = q.get()
    assert again is not None and again.id == ids[1]
    again.set_state(qdo.Task.SUCCEEDED)
    try:
        q.tasks(id=10**9)
        raise AssertionError("an unknown id must raise")
    except ValueError as e:
        assert isinstance(e, LookupError) and isinstance(e, UnknownTask)


def test_sdo_connect_or_create_and_status_counts() -> None:
    """sdo stages.py / load_queue.py: ``try: q = qdo.connect(name) except ValueError:
    q = qdo.create(name)``; ``q.status()['ntasks']['Pending']``; the dashboard pops
    'Waiting' with no default."""
    for _ in range(2):  # the first time creates it, the second connects
        try:
            q = qdo.connect("sdo-stage")
        except ValueError:
            q = qdo.create("sdo-stage")
    q.add_multiple(set())  # transfer_queue may hand over an empty set
    q.add_multiple({"x", "y"})
    counts = q.status()["ntasks"]
    assert counts["Pending"] == 2 and counts["Running"] == 0 and counts["Killed"] == 0
    assert counts.pop("Waiting") == 0
    with pytest.raises(UnknownQueue):
        qdo.connect("sdo-missing")


def test_sdo_revive_and_killed_state_strings() -> None:
    """sdo qdo_util.py (from Dustin Lang's fork of QDO): ``t.state == 'Killed'``,
    ``t.set_state('Failed')``, ``q.revive()`` and ``q.revive(priority=2)``."""
    q = qdo.create("sdo-revive")
    a, b, c = q.add_multiple(["a", "b", "c"])
    for task_id in (a, b):
        q.set_task_state(task_id, qdo.Task.KILLED)
    killed = [t for t in q.tasks() if t.state == "Killed"]
    assert [t.id for t in killed] == [a, b]
    killed[0].set_state("Failed")
    assert q.tasks(id=a).state == "Failed"
    assert q.revive(priority=2) == 1  # only Killed ones
    revived = q.tasks(id=b)
    assert revived.state is qdo.Task.PENDING and revived.priority == 2
    assert q.tasks(id=a).state is qdo.Task.FAILED
    assert q.revive() == 0
    first = q.get()
    assert first is not None and first.id == b  # priority 2 goes first
    first.set_state(qdo.Task.SUCCEEDED)


def test_queue_calibs_add_multiple_numpy_with_requires() -> None:
    """legacypipe queue-calibs.py: ``q.add_multiple(np.array([...]), requires=...)``,
    one list of ids (or None) per task, and ``len(taskids) == len(I)``."""
    q = qdo.create("calibs")
    first = q.add_multiple(np.array(["calib 1", "calib 2"]))
    requires = [None, list(np.array(first))]
    taskids = q.add_multiple(np.array(["combine a", "combine b"]), requires=requires)
    assert len(taskids) == 2
    assert q.tasks(id=taskids[1]).requires == tuple(first)
    assert q.tasks(id=taskids[1]).state is qdo.Task.WAITING


def test_webserver_rest_calls_as_json() -> None:
    """qdo_webserver (api.py and its README's table): ``qdo.tojson(qdo.qlist(user=))``
    and ``qdo.queues()``, ``tojson(qdo.connect(q, user=))``, ``tojson(q.tasks())``,
    ``tojson(q.tasks(state=, exitcode=))``, ``tojson(q.tasks(id))`` with the id as the
    URL gives it (a string), ``q.tasks(id=).set_state(state=, err=, message=)``,
    ``tojson(q.get())`` (None: null)."""
    user = qdo.create("web").store.user
    q = qdo.connect("web", user=user)
    ids = q.add_multiple(["one", "two", "three"])
    listed = json.loads(qdo.tojson(qdo.qlist(user=user)))
    assert [x["name"] for x in listed] == ["web"] and listed[0]["ntasks"]["Pending"] == 3
    assert json.loads(qdo.tojson(qdo.queues(user=user))) == listed
    one = json.loads(qdo.tojson(qdo.connect("web", user=user)))
    assert one["name"] == "web" and one["user"] == user and one["ntasks"]["Pending"] == 3
    popped = json.loads(qdo.tojson(q.get()))
    assert popped["id"] == ids[0] and popped["state"] == "Running"
    # PUT .../tasks/{id}: the id as the URL has it
    q.tasks(str(ids[1])).set_state(state="Failed", err=3, message="bad input")
    q.tasks(id=str(ids[2])).set_state(state="Failed", err=4, message="worse")
    failed = json.loads(qdo.tojson(q.tasks(state="Failed", exitcode=3)))
    assert [(t["id"], t["err"], t["message"]) for t in failed] == [(ids[1], 3, "bad input")]
    assert [t["id"] for t in json.loads(qdo.tojson(q.tasks()))] == ids
    assert json.loads(qdo.tojson(q.tasks(ids[2])))["exitcode"] == 4
    assert qdo.tojson(q.get()) == "null"  # nothing Pending: None
    assert json.loads(qdo.tojson({"queue": q, "n": 1, "none": None}))["n"] == 1


def test_set_task_state_is_an_administrative_change() -> None:
    """SPEC §1.10: ``q.set_task_state(id, state, err=None, message=None)`` sets any task,
    whoever holds it: the holder's lease is revoked and its report refused; Succeeded
    releases dependents, and a task no longer Succeeded holds them back again."""
    q = qdo.create("admin")
    a = q.add("a")
    b = q.add("b", requires=[a])
    held = q.get()
    assert held is not None and held.id == a
    assert q.set_task_state(a, qdo.Task.SUCCEEDED, message="done by hand") is qdo.Task.SUCCEEDED
    assert q.tasks(id=b).state is qdo.Task.PENDING  # released
    with pytest.raises(LeaseLost):
        held.set_state(qdo.Task.FAILED, err=2)  # too late: the result stands
    assert q.tasks(id=a).state is qdo.Task.SUCCEEDED and q.tasks(id=a).exitcode == 0
    assert q.tasks(id=a).message == "done by hand"

    assert q.set_task_state(a, "Failed", err=5) is qdo.Task.FAILED
    assert q.tasks(id=b).state is qdo.Task.WAITING  # its requirement no longer Succeeded
    assert q.set_task_state(b, qdo.Task.PENDING) is qdo.Task.WAITING  # still waits for a
    assert q.set_task_state(a, qdo.Task.PENDING) is qdo.Task.PENDING
    history = q.tasks(id=a, history=True).history
    assert [h.state for h in history] == ["Succeeded", "Failed", "Returned"]
    assert [h.attempt for h in history] == [1, 2, 3]
    assert all("by " in (h.message or "") for h in history)

    with pytest.raises(InvalidState):
        q.set_task_state(a, qdo.Task.RUNNING)
    with pytest.raises(ValueError):
        q.set_task_state(10**9, qdo.Task.SUCCEEDED)
    other = qdo.create("other")
    with pytest.raises(UnknownTask):
        other.set_task_state(a, qdo.Task.SUCCEEDED)  # a task of another queue


def test_set_pending_gives_fresh_budgets() -> None:
    """A Killed task set back to Pending by hand may lose its worker again as often
    as a new one (like ``retry``)."""
    q = qdo.create("budget", max_lost=1)
    t = q.add("x")
    q.set_task_state(t, qdo.Task.KILLED)
    q.set_task_state(t, qdo.Task.PENDING)
    task = q.tasks(id=t)
    assert task.state is qdo.Task.PENDING and task.lost == 0 and task.failures == 0


def test_tasks_signature_and_filters() -> None:
    """SPEC §1.10: ``q.tasks(id=None, state=None, exitcode=None)``: the id comes first;
    ``exitcode=`` filters; qdo 0.1's ``q.tasks(STATE)`` still works, with a warning."""
    q = qdo.create("sig")
    ids = q.add_multiple(["a", "b", "c"])
    for i, code in zip(ids, (0, 2, 2), strict=True):
        q.set_task_state(i, qdo.Task.FAILED if code else qdo.Task.SUCCEEDED, err=code)
    assert q.tasks(ids[0]).id == ids[0]
    assert [t.id for t in q.tasks(exitcode=2)] == ids[1:]
    assert [t.id for t in q.tasks(None, "Failed", 2)] == ids[1:]
    assert q.tasks(exitcode=7) == []
    with pytest.raises(UnknownTask):
        q.tasks(ids[0], state="Failed")  # it is there, but not in that state
    with pytest.warns(DeprecationWarning, match="state="):
        old: Any = q.tasks("Succeeded")
    assert [t.id for t in old] == ids[:1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert q.tasks(str(ids[2])).id == ids[2]  # an id as text is no state: no warning
    with pytest.raises(ValueError):
        q.tasks("nonsense")


def test_qlist_items_and_summary() -> None:
    """The web server's ``[q.summary() for q in qdo.qlist()]``; qlist() items have
    ``.name``; qdo 0.1's dict items still read, with a warning."""
    qdo.create("s1").add("x")
    qdo.create("s2")
    listed = qdo.qlist()
    assert [q.name for q in listed] == ["s1", "s2"]
    summaries = [q.summary() for q in listed]
    assert summaries[0]["ntasks"]["Pending"] == 1 and summaries[1]["name"] == "s2"
    assert repr(listed[0]).startswith("<qdo.Queue 's1'")
    with pytest.warns(DeprecationWarning):
        assert listed[0]["ntasks"]["Pending"] == 1
