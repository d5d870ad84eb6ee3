"""Queues belong to users: the same name for two users is two queues, each user sees and
changes only their own unless they name another; names and payloads full of SQL are
data, never SQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import qdo
from qdo.errors import InvalidInput, UnknownQueue
from qdo.models import QueueState, State
from qdo.queue import Queue
from qdo.store.base import NewTask, Outcome, Store
from tests.conftest import make_store, run_qdo

pytestmark = pytest.mark.backends

SQL = [
    "x'); DROP TABLE tasks; --",
    "'; DROP TABLE queues; --",
    '" OR 1=1 --',
    "' OR '1'='1",
    "%s",
    "%(name)s",
    "%(owner)s",
    "$1",
    "?",
    ":name",
    "back\\slash\\",
    "\\'",
    "%",
    "_",
    "*",
    "a%b_c",
    "日本語 😀 e\u0301 \u202eRTL",
    "tab\tnew\nline",
]


def counts(store: Store, queue: str) -> dict[str, int]:
    return {s.value: n for s, n in store.counts(queue).by_state.items() if n}


def test_same_queue_name_for_two_users(backend: str, qdo_dir: Path) -> None:
    alice = make_store(backend, qdo_dir, user="alice")
    bob = make_store(backend, qdo_dir, user="bob")
    alice.create_queue("Q")
    bob.create_queue("Q")  # not a QueueExists: bob's own
    alice.create_queue("OnlyAlice")
    a_ids = list(alice.add_many("Q", [NewTask(f"alice {i}") for i in range(3)]))
    b_ids = list(bob.add_many("Q", [NewTask(f"bob {i}") for i in range(2)]))
    assert [q.name for q in alice.list_queues()] == ["OnlyAlice", "Q"]
    assert [q.name for q in bob.list_queues()] == ["Q"]
    assert {q.owner for q in alice.list_queues()} == {"alice"}
    assert [t.task for t in bob.tasks("Q")] == ["bob 0", "bob 1"]
    assert counts(alice, "Q") == {"Pending": 3}

    # bob's claims only ever get bob's tasks
    got = bob.claim("Q", "w", 10, lease=60)
    assert sorted(t.id for t in got) == b_ids
    assert bob.finish("w", [Outcome(t.id, t._token, State.SUCCEEDED) for t in got]) == []
    assert bob.claim("Q", "w", 10, lease=60) == []
    assert counts(alice, "Q") == {"Pending": 3}

    # alice's queue is out of bob's reach unless he names her
    assert bob.claim("OnlyAlice", "w", 10, lease=60) == []
    for verb in (
        lambda: bob.get_queue("OnlyAlice"),
        lambda: bob.counts("OnlyAlice"),
        lambda: bob.tasks("OnlyAlice"),
        lambda: bob.delete_queue("OnlyAlice"),
        lambda: bob.set_queue_state("OnlyAlice", QueueState.PAUSED),
        lambda: bob.set_queue_options("OnlyAlice", max_retries=5),
        lambda: bob.add_many("OnlyAlice", [NewTask("intruder")]),
        lambda: bob.retry("OnlyAlice"),
        lambda: bob.rerun("OnlyAlice"),
    ):
        with pytest.raises(UnknownQueue):
            verb()
    assert alice.get_queue("OnlyAlice").state is QueueState.ACTIVE

    # everybody's queues, each with its owner
    everyone = [(q.name, q.owner) for q in alice.list_queues(all_users=True)]
    assert everyone == [("OnlyAlice", "alice"), ("Q", "alice"), ("Q", "bob")]
    assert len(bob.all_counts(all_users=True)) == 3 and len(bob.all_counts()) == 1

    # deleting bob's Q leaves alice's
    assert bob.delete_queue("Q") == 2
    assert [t.id for t in alice.tasks("Q")] == a_ids
    assert [q.owner for q in alice.list_queues(all_users=True) if q.name == "Q"] == ["alice"]
    alice.close()
    bob.close()


def test_python_api_per_user() -> None:
    qa = qdo.create("Shared", user="alice")
    qb = qdo.create("Shared", user="bob")
    qdo.create("Private", user="alice").add("echo secret")
    qa.add_multiple(["a1", "a2"])
    qb.add("b1")
    assert qa.store.user == "alice" and qb.store.user == "bob"

    alice = qdo.qlist(user="alice")
    assert [(x.name, x.listed["user"], x.listed["ntasks"]["Pending"]) for x in alice] == [
        ("Private", "alice", 1), ("Shared", "alice", 2),
    ]  # fmt: skip
    bob = qdo.qlist(user="bob")
    assert [(x.name, x.listed["user"], x.listed["ntasks"]["Pending"]) for x in bob] == [
        ("Shared", "bob", 1)
    ]
    both = qdo.qlist(user="bob", all_users=True)
    assert [(x.name, x.listed["user"]) for x in both] == [
        ("Private", "alice"), ("Shared", "alice"), ("Shared", "bob"),
    ]  # fmt: skip
    assert qdo.qlist() == []  # the login user has none

    with pytest.raises(UnknownQueue):
        qdo.connect("Private", user="bob")
    with pytest.raises(UnknownQueue):
        Queue("Private", store=qb.store).get()  # bob claiming from alice's queue
    with pytest.raises(UnknownQueue):
        Queue("Private", store=qb.store).delete()
    with pytest.raises(UnknownQueue):
        qdo.connect("Private")  # nor the login user
    task = qdo.connect("Shared", user="bob").get()
    assert task is not None and task.task == "b1"
    task.set_state(qdo.Task.SUCCEEDED)
    assert qa.status()["ntasks"]["Pending"] == 2 and qa.status()["ntasks"]["Succeeded"] == 0
    # naming her reaches her queue
    private = qdo.connect("Private", user="alice")
    assert [t.task for t in private.tasks()] == ["echo secret"]

    with pytest.raises(UnknownQueue):
        qdo.connect("Nobody", user="carol")
    qdo.connect("Nobody", create_ok=True, user="carol")
    assert [x.listed["user"] for x in qdo.qlist(all_users=True) if x.name == "Nobody"] == ["carol"]


BAD_USERS: list[Any] = ["a b", "x'); DROP TABLE tasks; --", "%s", "$1", "é", "a/b", "x" * 101,
                        "a\nb", 5]  # fmt: skip
BAD_QUEUES: list[Any] = [n for n in SQL if n != "_"] + ["", ".", "..", "x" * 101, "a/b", 7]


def test_invalid_user_and_queue_names_are_refused(tmp_path: Path) -> None:
    q = qdo.create("Mine")
    q.add("echo hi")
    path = tmp_path / "mine.qdo"
    q.dump(path)
    for user in BAD_USERS:
        with pytest.raises(InvalidInput):
            qdo.create("Q", user=user)
        with pytest.raises(InvalidInput):
            qdo.connect("Mine", create_ok=True, user=user)
        with pytest.raises(InvalidInput):
            qdo.qlist(user=user)
        with pytest.raises(InvalidInput):
            qdo.restore(path, "Copy", user=user)
    for name in BAD_QUEUES:
        with pytest.raises(InvalidInput):
            qdo.create(name)
        with pytest.raises(InvalidInput):
            qdo.create(name, user="alice")
        with pytest.raises(InvalidInput):
            qdo.connect(name, create_ok=True)
        with pytest.raises(InvalidInput):
            qdo.load(name, ["echo x"])
        with pytest.raises(InvalidInput):
            qdo.restore(path, name)
    login = q.store.user
    assert [(x.name, x.listed["user"]) for x in qdo.qlist(all_users=True)] == [("Mine", login)]
    assert [t.task for t in q.tasks()] == ["echo hi"]


def test_user_and_queue_names_and_payloads_are_data_not_sql(backend: str, qdo_dir: Path) -> None:
    """Names the API would refuse still reach the store layer (other programs, old
    databases): each is stored and read back as it is, and nothing else changes."""
    bystander = make_store(backend, qdo_dir, user="carol")
    bystander.create_queue("safe")
    bystander.add_many("safe", [NewTask("echo safe"), NewTask('{"k": 1}', is_json=True)])
    (held,) = bystander.claim("safe", "w", 1, lease=600)
    safe_before = [t.to_dict() for t in bystander.tasks("safe")]

    stores = {user: make_store(backend, qdo_dir, user=user) for user in SQL}
    for user, store in stores.items():
        for name in SQL:
            store.create_queue(name)
            payloads = [NewTask(f"{user}|{name}|{p}") for p in SQL]
            payloads.append(NewTask(json.dumps({"user": user, "name": name, "sql": SQL}), True))
            store.add_many(name, payloads)
    for user, store in stores.items():
        assert sorted(q.name for q in store.list_queues()) == sorted(SQL)
        assert {q.owner for q in store.list_queues()} == {user}
        for name in SQL:
            tasks = store.tasks(name)
            assert [t.task for t in tasks[:-1]] == [f"{user}|{name}|{p}" for p in SQL]
            assert tasks[-1].task == {"user": user, "name": name, "sql": SQL}
            assert all(t.queue == name and t.state is State.PENDING for t in tasks)
    # every user's "%" and "_" queue holds only its own tasks (no LIKE, no wildcards)
    for user in ("%", "_", "a%b_c", "*"):
        (claimed,) = stores[user].claim("%", "w", 1, lease=60)
        assert claimed.task == f"{user}|%|{SQL[0]}"
    everyone = stores["%s"].list_queues(all_users=True)
    assert len(everyone) == len(SQL) ** 2 + 1
    assert sorted({q.owner for q in everyone}) == sorted([*SQL, "carol"])
    assert len(stores["$1"].all_counts(all_users=True)) == len(SQL) ** 2 + 1

    # a user whose name is a pattern matching the others sees nothing of theirs
    for pattern in ("a_b%c", "%%", "' OR '1'='1' --"):
        outsider = make_store(backend, qdo_dir, user=pattern)
        assert outsider.list_queues() == [] and outsider.all_counts() == {}
        outsider.close()
    # deleting the queues of one user removes exactly those
    victim = stores["x'); DROP TABLE tasks; --"]
    for name in SQL:
        assert victim.delete_queue(name) == len(SQL) + 1
    assert len(stores["%s"].list_queues(all_users=True)) == (len(SQL) - 1) * len(SQL) + 1
    assert [t.to_dict() for t in bystander.tasks("safe")] == safe_before
    assert bystander.finish("w", [Outcome(held.id, held._token, State.SUCCEEDED)]) == []
    assert bystander.check() == []
    for store in [bystander, *stores.values()]:
        store.close()


def test_cli_list_all_users_and_global_user(qdo_dir: Path) -> None:
    qdo.create("Q", user="alice").add_multiple(["echo 1", "echo 2"])
    qdo.create("Q", user="bob").add("echo 3")
    qdo.create("AliceOnly", user="alice")

    proc = run_qdo("list", "--all-users")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["USER", "QUEUE", "STATE"], proc.stdout
    rows = [line.split() for line in lines[1:]]
    assert [row[:4] for row in rows] == [
        ["alice", "AliceOnly", "Active", "0"], ["alice", "Q", "Active", "0"],
        ["bob", "Q", "Active", "0"],
    ], proc.stdout  # fmt: skip
    pending = lines[0].split().index("PENDING")
    assert [row[pending] for row in rows] == ["0", "2", "1"], proc.stdout

    proc = run_qdo("list", "--all-users", "--json")
    assert proc.returncode == 0, proc.stderr
    listed = [(x["user"], x["name"], x["ntasks"]["Pending"]) for x in json.loads(proc.stdout)]
    assert listed == [("alice", "AliceOnly", 0), ("alice", "Q", 2), ("bob", "Q", 1)]

    proc = run_qdo("--user", "alice", "status", "Q", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ntasks"]["Pending"] == 2
    assert qdo.connect("Q", user="bob").status()["ntasks"]["Pending"] == 1

    for args in (("--user", "bob", "delete", "AliceOnly", "--force"),
                 ("--user", "x'; DROP TABLE queues; --", "list")):  # fmt: skip
        proc = run_qdo(*args)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.startswith("qdo: error: "), proc.stderr
    assert [(x.listed["user"], x.name) for x in qdo.qlist(all_users=True)] == [
        ("alice", "AliceOnly"), ("alice", "Q"), ("bob", "Q"),
    ]  # fmt: skip
