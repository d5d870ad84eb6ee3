"""Queue archives (qdo dump / qdo restore): every field survives, on and across backends;
ids move together when taken; damaged archives are refused and change nothing."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import qdo
from qdo import archive
from qdo.errors import BadArchive, InvalidInput, QdoError, QueueExists
from qdo.models import PRIORITY_MAX, PRIORITY_MIN, QueueState, State, Task, encode_payload
from qdo.queue import Queue
from qdo.store.base import NewTask, Outcome, Store
from tests.conftest import drop_schema, make_store, postgres_or_skip, run_qdo

ODD = [
    "printf 'a\\tb\\n' \"$HOME\" `id` ; echo \\\\ | cat",
    "tab\there\nnew line\r\nand a '\\.' alone:\n\\.\n",
    "x'); DROP TABLE tasks; --",
    "'; DROP TABLE tasks; --",
    '" OR 1=1 -- %s %(name)s $1 ? \\N',
    "unicode: é 漢字 😀 e\u0301 \u202eRTL\u202c \u2028 \ufeff \x01\x1b\x7f",
]


# -- a queue with every kind of content ------------------------------------------------------
def claim_one(
    store: Store, queue: str, worker: str, lease: float = 3600, jobid: str | None = None
) -> Task:
    (task,) = store.claim(queue, worker, 1, lease=lease, jobid=jobid)
    return task


def report(store: Store, worker: str, task: Any, state: State, **kw: Any) -> None:
    assert store.finish(worker, [Outcome(task.id, task._token, state, **kw)]) == []


def build_rich_queue(store: Store, name: str = "Q") -> dict[str, int]:
    """Queue ``name`` with tasks in every state, odd payloads, requirements inside the
    queue and to a task of queue ``other``, per-task limits, attempt history, queue
    settings and the Paused state.  Returns the ids by role."""
    ids: dict[str, int] = {}
    store.create_queue("other")
    (ids["external"],) = store.add_many("other", [NewTask("upstream elsewhere")])
    store.create_queue(name)

    def add(role: str, task: Any, **kw: Any) -> int:
        payload, is_json = encode_payload(task)
        (ids[role],) = store.add_many(name, [NewTask(payload, is_json, **kw)])
        return ids[role]

    # each claim below finds only the task just added Pending (the others are not yet)
    add("succeeded", ODD[0], priority=PRIORITY_MAX)
    t = claim_one(store, name, "host-a:1", jobid="job.1")
    report(store, "host-a:1", t, State.SUCCEEDED, exitcode=0, message=ODD[5], log="/l/1.log")

    add("failed", {"cmd": ODD[1], "args": [ODD[2], 1.5, None, True, {"k": ODD[4]}]},
        max_retries=0)  # fmt: skip
    t = claim_one(store, name, "host-b:2")
    report(store, "host-b:2", t, State.FAILED, exitcode=3, message="boom\n\tline 2 ' \" \\")

    add("killed", ODD[3], priority=PRIORITY_MIN, timeout=1.5)
    t = claim_one(store, name, "host-c:3", jobid=ODD[2])
    report(store, "host-c:3", t, State.KILLED, exitcode=-9, message="timed out after 1.5 s")

    add("retried", ODD[4], max_retries=1)  # failed once, then succeeded
    t = claim_one(store, name, "host-d:4")
    report(store, "host-d:4", t, State.FAILED, exitcode=1, message="first try")
    t = claim_one(store, name, "host-d:4")
    report(store, "host-d:4", t, State.SUCCEEDED, exitcode=0)

    add("running", ODD[5], priority=-7)
    claim_one(store, name, "host-e:5", lease=7200, jobid="12345.batch")

    add("pending", [ODD[5], ODD[2]], priority=7, timeout=2.5, max_retries=4)
    claim_one(store, name, "dead:6")
    assert store.requeue_workers(name, ["dead:6"]) == [ids["pending"]]  # a Lost attempt
    t = claim_one(store, name, "host-f:7")
    report(store, "host-f:7", t, State.PENDING, message="handed back")  # a Returned one

    add("waiting_inside", "needs two", requires=[ids["succeeded"], ids["failed"]])
    add("waiting_outside", "needs upstream", requires=[ids["external"]])
    add("waiting_mixed", "needs both", requires=[ids["pending"], ids["external"]])
    add("ready", {"after": "succeeded"}, requires=[ids["succeeded"]])
    add("plain", "echo plain", priority=-1)
    store.set_queue_options(name, max_retries=2, max_lost=5)
    store.set_queue_state(name, QueueState.PAUSED)

    states = {t.id: t.state for t in store.tasks(name)}
    assert states == {
        ids["succeeded"]: State.SUCCEEDED, ids["failed"]: State.FAILED,
        ids["killed"]: State.KILLED, ids["retried"]: State.SUCCEEDED,
        ids["running"]: State.RUNNING, ids["pending"]: State.PENDING,
        ids["waiting_inside"]: State.WAITING, ids["waiting_outside"]: State.WAITING,
        ids["waiting_mixed"]: State.WAITING, ids["ready"]: State.PENDING,
        ids["plain"]: State.PENDING,
    }  # fmt: skip
    return ids


def queue_snapshot(store: Store, name: str) -> dict[str, Any]:
    """Everything one can read about a queue: its record, its status, every field of
    every task with its history."""
    q = Queue(name, store=store)
    info = store.get_queue(name)
    status = q.status()
    del status["name"]
    tasks = [t.to_dict() for t in q.tasks(history=True)]
    for t in tasks:
        t["requires"] = sorted(t["requires"])
    return {
        "queue": (info.state, info.created, info.max_retries, info.max_lost, info.owner),
        "status": status,
        "tasks": tasks,
    }


def moved(snap: dict[str, Any], offset: int, name: str, inside: set[int]) -> dict[str, Any]:
    """What ``snap`` becomes when restored as ``name`` with ids moved by ``offset``
    (requirements inside the queue move too, others stay)."""
    out = json.loads(json.dumps(snap, default=str))
    for t in out["tasks"]:
        t["id"] += offset
        t["queue"] = name
        t["requires"] = sorted(r + offset if r in inside else r for r in t["requires"])
    return out


def comparable(snap: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(snap, default=str))  # type: ignore[no-any-return]


def whole_store(store: Store) -> list[Any]:
    """Every queue of every user in the store, with every task and attempt."""
    out: list[Any] = []
    for info in store.list_queues(all_users=True):
        assert info.owner == store.user  # these tests make all queues with this store
        tasks = store.tasks(info.name)
        attempts = store.attempts([t.id for t in tasks])
        out.append((info, [t.to_dict() for t in tasks], sorted(attempts.items())))
    return out


def last_id(store: Store) -> int:
    return max(t.id for info in store.list_queues(all_users=True) for t in store.tasks(info.name))


# -- round trips -----------------------------------------------------------------------------
@pytest.mark.backends
def test_round_trip_keeps_every_field(backend: str, qdo_dir: Path, tmp_path: Path) -> None:
    source = make_store(backend, qdo_dir, user="me")
    ids = build_rich_queue(source)
    before = queue_snapshot(source, "Q")
    path = tmp_path / "q.qdo"
    counts = Queue("Q", store=source).dump(path)
    assert counts == {"tasks": 11, "requires": 6, "attempts": 7}
    assert queue_snapshot(source, "Q") == before  # dumping changes nothing
    header = archive.read_header(path)
    assert header["queue"]["name"] == "Q" and header["span"] == [ids["succeeded"],
                                                                 ids["plain"], 11]  # fmt: skip

    # into the same database: the ids are taken, so everything moves by one offset
    q, n, offset = qdo.restore(path, "R", store=source)
    assert (q.name, n) == ("R", 11)
    assert offset == ids["plain"] + 1 - ids["succeeded"]
    inside = set(ids.values()) - {ids["external"]}
    assert comparable(queue_snapshot(source, "R")) == moved(before, offset, "R", inside)
    assert queue_snapshot(source, "Q") == before
    assert source.check() == []

    # the source queue deleted, the archive restored under its own name: ids move again
    # (ids are never reused), the queue is otherwise the same
    source.delete_queue("Q")
    q, n, offset2 = qdo.restore(path, store=source)
    assert q.name == "Q" and offset2 > offset
    assert comparable(queue_snapshot(source, "Q")) == moved(before, offset2, "Q", inside)
    source.close()


@pytest.mark.backends
def test_taken_ids_move_together_and_requirements_follow(
    backend: str, qdo_dir: Path, tmp_path: Path
) -> None:
    store = make_store(backend, qdo_dir)
    ids = build_rich_queue(store)
    path = tmp_path / "q.qdo"
    archive.dump(store, "Q", path)
    name, n, offset = archive.restore(store, path, as_name="Copy")
    assert (name, n) == ("Copy", 11) and offset > 0
    old = {t.id: t for t in store.tasks("Q")}
    new = {t.id: t for t in store.tasks("Copy")}
    assert sorted(new) == [i + offset for i in sorted(old)]
    for i, t in old.items():
        inside = [r + offset for r in t.requires if r in old]
        outside = [r for r in t.requires if r not in old]
        assert sorted(new[i + offset].requires) == sorted(inside + outside)
    assert new[ids["waiting_outside"] + offset].requires == (ids["external"],)
    history_old = store.attempts(sorted(old))
    history_new = store.attempts(sorted(new))
    assert {i + offset: a for i, a in history_old.items()} == history_new

    # the copy's requirements are the copy's tasks: finishing one there releases its
    # dependent there, and the original's stays Waiting
    store.set_queue_state("Copy", QueueState.ACTIVE)
    (running_old,) = store.tasks("Q", State.RUNNING)
    store.requeue_workers("Copy", [running_old.worker or ""])  # the copy's lease is a copy
    got = store.claim("Copy", "w", 10, lease=60)
    pending = next(t for t in got if t.id == ids["pending"] + offset)
    assert store.finish("w", [Outcome(pending.id, pending._token, State.SUCCEEDED)]) == []
    (mixed_new,) = store.tasks("Copy", task_id=ids["waiting_mixed"] + offset)
    (mixed_old,) = store.tasks("Q", task_id=ids["waiting_mixed"])
    assert mixed_new.state is State.WAITING and mixed_old.state is State.WAITING  # upstream
    assert store.counts("Copy").blocked == store.counts("Q").blocked == 1  # waiting_inside
    (ext,) = store.claim("other", "w", 1, lease=60)
    assert store.finish("w", [Outcome(ext.id, ext._token, State.SUCCEEDED)]) == []
    assert store.tasks("Copy", task_id=ids["waiting_mixed"] + offset)[0].state is State.PENDING
    assert store.tasks("Q", task_id=ids["waiting_mixed"])[0].state is State.WAITING
    assert store.tasks("Q", task_id=ids["waiting_outside"])[0].state is State.PENDING
    assert store.tasks("Copy", task_id=ids["waiting_outside"] + offset)[0].state is State.PENDING

    # later ids come after the restored ones, and the database is consistent
    (after,) = store.add_many("other", [NewTask("later")])
    assert after == max(new) + 1
    assert store.check() == []
    store.close()


@pytest.mark.backends
def test_ids_kept_only_where_never_used(backend: str, qdo_dir: Path, tmp_path: Path) -> None:
    source = make_store(backend, qdo_dir, user="me")
    ids = build_rich_queue(source)
    path = tmp_path / "q.qdo"
    archive.dump(source, "Q", path)
    low = ids["succeeded"]
    assert low == 2

    schemas: list[str] = []

    def target(label: str) -> Store:
        if backend == "sqlite":
            from qdo.store.sqlite import SQLiteStore

            return SQLiteStore(tmp_path / f"{label}.sqlite", user="me")
        from qdo.store.postgres import PostgresStore

        schemas.append(f"t_{uuid.uuid4().hex[:16]}")
        return PostgresStore(postgres_or_skip(), schema=schemas[-1], user="me")

    try:
        # ids below the archive's lowest were used: kept
        t1 = target("below")
        t1.create_queue("x")
        t1.add_many("x", [NewTask("one")])  # id 1 = low - 1
        assert archive.restore(t1, path)[2] == 0
        assert [t.id for t in t1.tasks("Q")] == [t.id for t in source.tasks("Q")]

        # the lowest id was used: all move by one
        t2 = target("at")
        t2.create_queue("x")
        t2.add_many("x", [NewTask("one"), NewTask("two")])  # ids 1, 2
        assert archive.restore(t2, path)[2] == 1
        assert [t.id for t in t2.tasks("Q")] == [t.id + 1 for t in source.tasks("Q")]

        # used once and deleted since: still used (ids are never reused)
        t3 = target("deleted")
        t3.create_queue("x")
        t3.add_many("x", [NewTask(str(i)) for i in range(5)])
        t3.delete_queue("x")
        assert archive.restore(t3, path)[2] == 5 + 1 - low
        for t in (t1, t2, t3):
            assert t.check() == []
            t.close()
    finally:
        for schema in schemas:
            drop_schema(postgres_or_skip(), schema)
    source.close()


def test_sqlite_to_postgres_to_sqlite(qdo_dir: Path, tmp_path: Path) -> None:
    from qdo.store.postgres import PostgresStore
    from qdo.store.sqlite import SQLiteStore

    url = postgres_or_skip()
    first = SQLiteStore(tmp_path / "first.sqlite", user="me")
    build_rich_queue(first)
    before = {name: queue_snapshot(first, name) for name in ("other", "Q")}
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        middle = PostgresStore(url, schema=schema, user="me")
        for name in ("other", "Q"):  # the required task's queue first: its ids are lower
            archive.dump(first, name, tmp_path / f"{name}.1.qdo")
            _, _, offset = qdo.restore(tmp_path / f"{name}.1.qdo", store=middle)
            assert offset == 0
        for name in ("other", "Q"):
            assert queue_snapshot(middle, name) == before[name]
            Queue(name, store=middle).dump(tmp_path / f"{name}.2.qdo")
        assert middle.check() == []
        middle.close()
    finally:
        drop_schema(url, schema)
    last = SQLiteStore(tmp_path / "last.sqlite", user="me")
    for name in ("other", "Q"):
        assert qdo.restore(tmp_path / f"{name}.2.qdo", store=last)[2] == 0
    for name in ("other", "Q"):
        assert queue_snapshot(last, name) == before[name]
    assert last.check() == []
    # the two archives of a queue hold the same records
    for name in ("other", "Q"):
        assert records(tmp_path / f"{name}.1.qdo") == records(tmp_path / f"{name}.2.qdo")
    first.close()
    last.close()


def records(path: Path) -> list[Any]:
    """An archive's lines, but for when it was written (and so its checksum); the queue's
    creation time to the microsecond (what QueueInfo holds: a restore rounds it)."""
    lines = gzip.decompress(path.read_bytes()).decode().split("\n")[:-1]
    header = json.loads(lines[0])
    del header["written"]
    header["queue"]["created"] = round(header["queue"]["created"], 6)
    end = json.loads(lines[-1])
    del end["end"]["sha256"]
    return [header, *(json.loads(line) for line in lines[1:-1]), end]


@pytest.mark.backends
def test_empty_queue_round_trip(backend: str, qdo_dir: Path, tmp_path: Path) -> None:
    store = make_store(backend, qdo_dir)
    store.create_queue("E")
    store.set_queue_options("E", max_retries=9)
    assert archive.dump(store, "E", tmp_path / "e.qdo") == {"tasks": 0, "requires": 0,
                                                              "attempts": 0}  # fmt: skip
    name, n, _ = archive.restore(store, tmp_path / "e.qdo", as_name="E2")
    assert (name, n) == ("E2", 0)
    assert store.tasks("E2") == [] and store.get_queue("E2").max_retries == 9
    store.close()


@pytest.mark.backends
def test_import_streams_kind_after_kind_and_refuses_a_record_out_of_place(
    backend: str, qdo_dir: Path
) -> None:
    from qdo.models import QueueInfo

    store = make_store(backend, qdo_dir)
    info = QueueInfo(0, "S", QueueState.ACTIVE, None, 0, 3, store.user)
    task = (1, "true", False, "Succeeded", 0, 0, None, 1, 0.0, 1.0, 2.0, "w", None, None,
            None, None, None, None, 0, 0)  # fmt: skip
    attempt = (1, 1, "Succeeded", "w", None, 1.0, 2.0, 0, None, 0.1, 1000, None)

    def records(out_of_place: bool) -> Any:
        yield "task", task
        yield "attempt", attempt
        if out_of_place:
            yield "task", (2, *task[1:])

    with pytest.raises(InvalidInput, match="'task' record is out of place"):
        store.import_queue("S", info, (1, 2), records(True))
    assert [q.name for q in store.list_queues()] == []  # nothing written
    store.import_queue("S", info, (1, 1), records(False))
    (t,) = store.tasks("S")
    assert t.state is State.SUCCEEDED and store.attempts([t.id])[t.id][0].cpu == 0.1
    assert store.check() == []
    store.close()


@pytest.mark.backends
def test_restore_over_existing_queue_writes_nothing(
    backend: str, qdo_dir: Path, tmp_path: Path
) -> None:
    store = make_store(backend, qdo_dir)
    build_rich_queue(store)
    path = tmp_path / "q.qdo"
    archive.dump(store, "Q", path)
    before = whole_store(store)
    last = last_id(store)
    with pytest.raises(QueueExists):
        qdo.restore(path, store=store)
    with pytest.raises(InvalidInput):
        qdo.restore(path, as_name="no such/name", store=store)
    assert whole_store(store) == before
    (probe,) = store.add_many("other", [NewTask("probe")])
    assert probe == last + 1, "a refused restore used up ids"
    store.close()


# -- damaged archives ------------------------------------------------------------------------
def _gzip_lines(lines: list[bytes]) -> bytes:
    return gzip.compress(b"".join(lines))


def _damaged(data: bytes) -> dict[str, bytes]:
    """Ways to damage a good archive (``data``)."""
    lines = gzip.decompress(data).splitlines(keepends=True)
    middle = len(data) // 2
    rng = random.Random(7)
    out: dict[str, bytes] = {}
    for where in (len(data) // 3, middle, 2 * len(data) // 3):
        flipped = bytearray(data)
        flipped[where] ^= 0xFF
        out[f"flipped byte at {where}"] = bytes(flipped)
    smeared = bytearray(data)
    smeared[middle : middle + 16] = bytes(16)
    out["16 zero bytes in the middle"] = bytes(smeared)
    for cut in (1, 9, 10, 30, len(data) // 4, middle, len(data) - 9, len(data) - 4,
                len(data) - 1):  # fmt: skip
        out[f"cut at {cut} of {len(data)}"] = data[:cut]
    out["empty file"] = b""
    out["empty gzip"] = gzip.compress(b"")
    out["not gzip: text"] = b"this is not a qdo archive\n" * 20
    out["not gzip: random bytes"] = bytes(rng.randrange(256) for _ in range(2000))
    words = ["lorem", "ipsum", "dolor", "sit", "amet", "{", "[", '"', "\\", "\n"]
    out["gzip of random text"] = gzip.compress(
        " ".join(rng.choice(words) for _ in range(5000)).encode()
    )
    out["gzip of random bytes"] = gzip.compress(bytes(rng.randrange(256) for _ in range(5000)))
    out["gzip of other JSON lines"] = _gzip_lines([b'{"hello": "world"}\n', b"[1, 2, 3]\n"])
    rewritten = json.loads(lines[1])
    assert rewritten[0] == "t"
    rewritten[1][1] = "echo rewritten"  # the payload of the first task
    out["a record rewritten"] = _gzip_lines(
        [lines[0], json.dumps(rewritten, separators=(",", ":")).encode() + b"\n", *lines[2:]]
    )
    out["a record removed"] = _gzip_lines([lines[0], *lines[2:]])
    out["a record doubled"] = _gzip_lines([lines[0], lines[1], *lines[1:]])
    end = json.loads(lines[-1])
    end["end"]["tasks"] += 1
    out["counts at the end changed"] = _gzip_lines([*lines[:-1], json.dumps(end).encode() + b"\n"])
    end = json.loads(lines[-1])
    end["end"]["sha256"] = hashlib.sha256(b"something else").hexdigest()
    out["checksum changed"] = _gzip_lines([*lines[:-1], json.dumps(end).encode() + b"\n"])
    out["no end record"] = _gzip_lines(lines[:-1])
    out["a record after the end"] = _gzip_lines([*lines, lines[1]])
    out["two archives in one file"] = data + data
    out["a newer format version"] = _gzip_lines(
        [lines[0].replace(b'"version":1', b'"version":2'), *lines[1:]]
    )
    out["a record of an unknown kind"] = _gzip_lines(
        [lines[0], lines[1].replace(b'["t",', b'["x",', 1), *lines[2:]]
    )
    return out


def _good_archive(store: Store, tmp_path: Path) -> bytes:
    build_rich_queue(store)
    path = tmp_path / "good.qdo"
    archive.dump(store, "Q", path)
    return path.read_bytes()


@pytest.mark.backends
def test_damaged_archives_are_refused_and_change_nothing(
    backend: str, qdo_dir: Path, tmp_path: Path
) -> None:
    store = make_store(backend, qdo_dir)
    data = _good_archive(store, tmp_path)
    before = whole_store(store)
    last = last_id(store)
    cases = _damaged(data)
    assert len(cases) >= 25
    for label, blob in cases.items():
        path = tmp_path / "damaged.qdo"
        path.write_bytes(blob)
        with pytest.raises(BadArchive) as err:
            qdo.restore(path, "Fresh", store=store)
        message = str(err.value)
        assert "\n" not in message and str(path) in message, (label, message)
        assert "nothing was restored" in message, (label, message)
        with pytest.raises(BadArchive):
            archive.read_header(path)
    missing = tmp_path / "missing.qdo"
    with pytest.raises(BadArchive):
        qdo.restore(missing, "Fresh", store=store)
    assert whole_store(store) == before
    (probe,) = store.add_many("other", [NewTask("probe")])
    assert probe == last + 1, "a refused restore used up ids"
    # the good archive still restores, as a check that the damage was what was refused
    (tmp_path / "good.qdo").write_bytes(data)
    assert qdo.restore(tmp_path / "good.qdo", "Fresh", store=store)[1] == 11
    store.close()


@pytest.mark.parametrize(
    "label",
    ["empty file", "gzip of random text", "a record rewritten", "a record removed",
     "checksum changed", "a record after the end", "a newer format version"],
)  # fmt: skip
def test_bad_archive_message_says_it_once(label: str, qdo_dir: Path, tmp_path: Path) -> None:
    store = make_store("sqlite", qdo_dir)
    path = tmp_path / "damaged.qdo"
    path.write_bytes(_damaged(_good_archive(store, tmp_path))[label])
    with pytest.raises(BadArchive) as err:
        archive.restore(store, path, "Fresh")
    message = str(err.value)
    assert message.count("nothing was restored") == 1, message
    assert message.count(str(path)) == 1, message
    assert "BadArchive" not in message, message
    store.close()


def _rewrite(data: bytes, change: Any) -> bytes:
    """The archive with ``change(header, records)`` applied and its end record (counts,
    checksum) recomputed: well-formed, but with values no qdo writes."""
    lines = gzip.decompress(data).splitlines()
    header = json.loads(lines[0])
    recs = [json.loads(line) for line in lines[1:-1]]
    change(header, recs)
    digest = hashlib.sha256()
    out = []
    counts = {"t": 0, "r": 0, "a": 0}
    for obj in [header, *recs]:
        line = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        digest.update(line)
        out.append(line)
        if isinstance(obj, list):
            counts[obj[0]] += 1
    end = {"tasks": counts["t"], "requires": counts["r"], "attempts": counts["a"],
           "sha256": digest.hexdigest()}  # fmt: skip
    out.append(json.dumps({"end": end}).encode() + b"\n")
    return gzip.compress(b"".join(out))


def _task_state(header: dict[str, Any], recs: list[Any]) -> None:
    recs[0][1][3] = "Exploded"


def _bad_json(header: dict[str, Any], recs: list[Any]) -> None:
    task = next(r for r in recs if r[0] == "t" and not r[1][2])
    task[1][2] = True  # a shell command marked as a JSON payload


def _max_lost(header: dict[str, Any], recs: list[Any]) -> None:
    header["queue"]["max_lost"] = 0


@pytest.mark.backends
@pytest.mark.parametrize("change", [_task_state, _bad_json, _max_lost], ids=lambda f: f.__name__)
def test_archive_with_impossible_values_is_refused(
    backend: str, qdo_dir: Path, tmp_path: Path, change: Any
) -> None:
    store = make_store(backend, qdo_dir)
    path = tmp_path / "forged.qdo"
    path.write_bytes(_rewrite(_good_archive(store, tmp_path), change))
    before = whole_store(store)
    try:
        with pytest.raises(BadArchive):
            qdo.restore(path, "Fresh", store=store)
    finally:
        try:
            after: Any = whole_store(store)
        except Exception as e:  # the restored queue cannot even be read
            after = repr(e)
        store.close()
    assert after == before


# -- the command line ------------------------------------------------------------------------
def one_error(proc: Any) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == "" and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("qdo: error: "), proc.stderr
    return lines[0]


@pytest.mark.backends
def test_cli_dump_and_restore(backend: str, qdo_dir: Path, tmp_path: Path) -> None:
    store = qdo.create("Q").store  # the store the command line also opens
    ids = build_rich_queue(store, "Q2")
    before = queue_snapshot(store, "Q2")
    path = tmp_path / "archive.qdo.gz"
    proc = run_qdo("dump", "Q2", str(path))
    assert proc.returncode == 0, proc.stderr
    wrote = f"wrote Q2 to {path}: 11 tasks, 6 requirements, 7 attempts"
    assert proc.stdout.strip() == wrote, proc.stdout
    assert not list(tmp_path.glob(".*part*")), "a temporary file was left behind"

    proc = run_qdo("restore", str(path), "--as", "R")
    assert proc.returncode == 0, proc.stderr
    offset = ids["plain"] + 1 - ids["succeeded"]
    assert proc.stdout.startswith(f"restored queue R with 11 tasks from {path} into "), proc.stdout
    assert f"(ids moved up by {offset}" in proc.stdout, proc.stdout
    inside = set(ids.values()) - {ids["external"]}
    assert comparable(queue_snapshot(store, "R")) == moved(before, offset, "R", inside)

    assert "already exists" in one_error(run_qdo("restore", str(path), "--as", "R"))
    names = sorted(x.name for x in qdo.qlist())
    data = path.read_bytes()
    for blob in data[: len(data) // 2], b"not an archive\n":
        path.write_bytes(blob)
        line = one_error(run_qdo("restore", str(path), "--as", "Fresh"))
        assert "is not a usable qdo archive" in line and "nothing was restored" in line, line
    assert sorted(x.name for x in qdo.qlist()) == names


def test_dump_writes_through_a_pipe_a_link_and_standard_output(
    backend: str, qdo_dir: Path, tmp_path: Path
) -> None:  # fmt: skip
    # a FIFO, the file a link points to, standard output: each gets the archive, and
    # stays what it was (a dump replaced each with a file of its own, and said "wrote")
    q = qdo.create("Q")
    q.add_multiple(["echo a", "echo b"])
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert q.dump(fifo)["tasks"] == 2
    reader.join(timeout=60)
    assert stat.S_ISFIFO(fifo.stat().st_mode) and not list(tmp_path.glob(".*part*"))
    (tmp_path / "real.qdo").write_text("an older archive")
    link = tmp_path / "latest.qdo"
    link.symlink_to("real.qdo")
    q.dump(link)
    assert link.is_symlink() and os.readlink(link) == "real.qdo"
    proc = subprocess.run([sys.executable, "-m", "qdo", "dump", "Q", "-"], capture_output=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0 and b"wrote Q to standard output: 2 tasks" in proc.stderr
    (tmp_path / "stdout.qdo").write_bytes(proc.stdout)
    for path in (tmp_path / "real.qdo", tmp_path / "stdout.qdo"):
        assert archive.read_header(path)["queue"]["name"] == "Q"
    (tmp_path / "fifo.qdo").write_bytes(got[0])
    restored, n, _ = qdo.restore(tmp_path / "fifo.qdo", as_name="R")
    assert n == 2 and sorted(t.task for t in restored.tasks()) == ["echo a", "echo b"]
    # where it cannot write, the archive is named, not its temporary file
    with pytest.raises(InvalidInput, match="cannot write the archive /proc/x.qdo"):
        q.dump("/proc/x.qdo")
    with pytest.raises(InvalidInput, match="needs a file name"):
        q.dump("")


def test_restore_reads_standard_input_and_a_pipe(
    backend: str, qdo_dir: Path, tmp_path: Path
) -> None:
    # (a restore reads its archive twice: from a pipe the second read found it empty, and
    # `qdo restore -` looked for a file named "-")
    q = qdo.create("Q")
    q.add_multiple(["echo a", "echo b"])
    qdo_cmd = [sys.executable, "-m", "qdo"]
    with subprocess.Popen([*qdo_cmd, "dump", "Q", "-"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL) as dump:  # fmt: skip
        proc = subprocess.run([*qdo_cmd, "restore", "-", "--as", "R"], stdin=dump.stdout,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert dump.returncode == 0
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("restored queue R with 2 tasks from standard input"), proc.stdout
    assert sorted(t.task for t in qdo.connect("R").tasks()) == ["echo a", "echo b"]

    path = tmp_path / "a.qdo"
    q.dump(path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for blob, name in (path.read_bytes(), "S"), (path.read_bytes()[:100], "T"):
        writer = threading.Thread(target=fifo.write_bytes, args=(blob,), daemon=True)
        writer.start()
        if name == "S":
            assert qdo.restore(fifo, as_name=name)[1] == 2
        else:  # a damaged one is named as given, not as its temporary copy
            with pytest.raises(InvalidInput, match=f"{fifo} is not a usable qdo archive"):
                qdo.restore(fifo, as_name=name)
        writer.join(timeout=60)
    assert sorted(x.name for x in qdo.qlist()) == ["Q", "R", "S"]


def test_cli_restore_into_another_database_keeps_ids(qdo_dir: Path, tmp_path: Path) -> None:
    store = qdo.create("Q").store
    build_rich_queue(store, "Q2")
    before = {name: queue_snapshot(store, name) for name in ("other", "Q2")}
    for name in ("other", "Q2"):
        assert run_qdo("dump", name, str(tmp_path / name)).returncode == 0
    elsewhere = {"QDO_DIR": str(tmp_path / "elsewhere")}
    for name in ("other", "Q2"):
        proc = run_qdo("restore", str(tmp_path / name), env=elsewhere)
        assert proc.returncode == 0 and "moved" not in proc.stdout, proc.stdout + proc.stderr
    from qdo.store.sqlite import SQLiteStore

    other = SQLiteStore(tmp_path / "elsewhere" / "qdo.sqlite", user=store.user)
    for name in ("other", "Q2"):
        assert queue_snapshot(other, name) == before[name]
    other.close()


def test_bad_archive_is_a_qdo_error() -> None:
    assert issubclass(BadArchive, QdoError) and issubclass(BadArchive, InvalidInput)


def _resealed(lines: list[bytes], change: Callable[[list[Any]], list[Any]]) -> bytes:
    """An archive whose header and records ``change`` rewrote, with counts and checksum
    made right again: what someone crafting an archive would write."""
    objs = [json.loads(line) for line in lines]
    header, *recs, end = objs
    header, *recs = change([header, *recs])
    body = [json.dumps(o, separators=(",", ":")).encode() + b"\n" for o in (header, *recs)]
    digest = hashlib.sha256()
    for line in body:
        digest.update(line)
    kinds = {"t": "tasks", "r": "requires", "a": "attempts"}
    counts = {k: sum(1 for r in recs if r[0] == tag) for tag, k in kinds.items()}
    end["end"].update(counts, sha256=digest.hexdigest())
    return _gzip_lines([*body, json.dumps(end).encode() + b"\n"])


def _first_task(objs: list[Any]) -> list[Any]:
    return next(r for r in objs[1:] if r[0] == "t")[1]


@pytest.mark.backends
def test_crafted_archives_are_refused(backend: str, qdo_dir: Path, tmp_path: Path) -> None:
    """Issue 12 item 5: an archive is untrusted input.  Ids near 2**63 (every later add
    in the database failed), a lease far in the future (Running for ever), a task id
    twice or a requirement of a task not in it (tracebacks), a decompression bomb (4 GB
    of memory before refusing), requirements in a cycle (restored, its tasks waited for
    each other for ever): each is refused in one line, and nothing changes."""
    store = make_store(backend, qdo_dir)
    lines = gzip.decompress(_good_archive(store, tmp_path)).splitlines(keepends=True)
    before = whole_store(store)

    def huge_ids(objs: list[Any]) -> list[Any]:
        objs[0]["span"][1] = 2**63 - 2
        _first_task(objs)[0] = 2**63 - 2
        return objs

    def lease_for_ever(objs: list[Any]) -> list[Any]:
        t = _first_task(objs)
        t[3], t[11], t[14], t[15] = "Running", "w:1", 1e10, 7  # (in the year 2286)
        return objs

    def twice(objs: list[Any]) -> list[Any]:
        first = next(i for i, r in enumerate(objs) if i and r[0] == "t")
        return [*objs[: first + 1], objs[first], *objs[first + 1 :]]

    def foreign(objs: list[Any]) -> list[Any]:
        return [*objs, ["r", [objs[0]["span"][1] + 1000, objs[0]["span"][0], True]]]

    def inside(objs: list[Any]) -> list[list[Any]]:  # (requirements between its tasks)
        return [r[1] for r in objs[1:] if r[0] == "r" and r[1][2]]

    def requiring(objs: list[Any], task: int, req: int) -> list[Any]:  # (after the others)
        at = max(i for i, r in enumerate(objs) if i and r[0] == "r") + 1
        return [*objs[:at], ["r", [task, req, True]], *objs[at:]]

    def cycle(objs: list[Any]) -> list[Any]:
        task, req, _ = inside(objs)[0]
        return requiring(objs, req, task)

    def itself(objs: list[Any]) -> list[Any]:
        first = _first_task(objs)[0]
        return requiring(objs, first, first)

    crafted = {
        "a cycle of requirements": (_resealed(lines, cycle), "a cycle of requirements"),
        "a task that requires itself": (_resealed(lines, itself), "a cycle of requirements"),
        "ids near 2**63": (_resealed(lines, huge_ids), "span"),
        "a lease for ever": (_resealed(lines, lease_for_ever), "far future"),
        "a task twice": (_resealed(lines, twice), "out of order"),
        "a requirement of a task not in it": (_resealed(lines, foreign), "not in the archive"),
        "a decompression bomb": (gzip.compress(lines[0] + b" " * (64 << 20)), "longer than"),
    }
    for label, (blob, why) in crafted.items():
        path = tmp_path / "crafted.qdo"
        path.write_bytes(blob)
        with pytest.raises(BadArchive, match=why) as err:
            qdo.restore(path, "Fresh", store=store)
        assert "\n" not in str(err.value), label
    assert whole_store(store) == before
    store.close()


@pytest.mark.backends
def test_a_task_run_while_its_requirement_was_set_back_restores(
    backend: str, qdo_dir: Path, tmp_path: Path
) -> None:  # fmt: skip
    # (a state a real queue reaches: the restore's check of requirements refuses cycles,
    # not states)
    q = qdo.create("Q")
    b = q.add("echo b")
    a = q.add("echo a", requires=[b])
    q.get().set_state(State.SUCCEEDED)  # type: ignore[union-attr]
    assert q.get().id == a  # type: ignore[union-attr]
    q.set_task_state(b, State.FAILED, err=1)
    q.dump(tmp_path / "odd.qdo")
    restored, n, _ = qdo.restore(tmp_path / "odd.qdo", as_name="R")
    assert n == 2 and [t.state for t in restored.tasks()] == [State.FAILED, State.RUNNING]


def test_qdo_log_reads_no_file_outside_the_log_folder(qdo_dir: Path, tmp_path: Path) -> None:
    """A restored task's log may be recorded as any path: `qdo log` read it (say
    /etc/passwd).  It reads only files in the log folder."""
    store = make_store("sqlite", qdo_dir)
    lines = gzip.decompress(_good_archive(store, tmp_path)).splitlines(keepends=True)
    secret = tmp_path / "not-a-log.txt"
    secret.write_text("private\n")

    def elsewhere(objs: list[Any]) -> list[Any]:
        _first_task(objs)[13] = str(secret)
        return objs

    path = tmp_path / "crafted.qdo"
    path.write_bytes(_resealed(lines, elsewhere))
    q, _n, _offset = qdo.restore(path, "Fresh")
    first = q.tasks()[0]
    proc = run_qdo("log", "Fresh", str(first.id))
    assert proc.returncode == 1 and "outside the log folder" in proc.stderr
    assert "private" not in proc.stdout
    store.close()


def _set(**fields: Any) -> Callable[[list[Any]], list[Any]]:
    """A change that sets fields of the archive's first task."""
    from qdo.store.base import TASK_COLUMNS

    def change(objs: list[Any]) -> list[Any]:
        task = _first_task(objs)
        for name, value in fields.items():
            task[TASK_COLUMNS.index(name)] = value
        return objs

    return change


@pytest.mark.backends
@pytest.mark.parametrize(
    ("change", "why"),
    [
        # (SQLite: a traceback; PostgreSQL: an error of its own, the backends disagreed)
        (_set(exitcode=2**70), "impossible exitcode"),
        (_set(attempts=2**31), "impossible attempts"),
        (_set(lease_token=2**63), "impossible lease_token"),
        # (tracebacks on both)
        (_set(message="caf\udce9.txt"), "impossible message"),
        (
            _set(worker="w\ud800", state="Running", lease_expires=1e9, lease_token=1),
            "impossible worker",
        ),
        (_set(payload="[" * 100_000 + "]" * 100_000, is_json=True), "not JSON that qdo writes"),
        # (restored, then qdo tasks and qdo do failed on them: year 33658, or before 1970)
        (_set(created=1e12), "impossible created"),
        (_set(started=-1e12), "impossible started"),
        (_set(timeout=1e308), "impossible timeout"),  # (every run of it failed)
        # (payloads add refuses, restored all the same)
        (_set(payload="NaN", is_json=True), "not JSON that qdo writes"),
        (_set(payload="[1e400]", is_json=True), "does not serialize"),
        (_set(payload='"a string"', is_json=True), "a JSON string"),
        (_set(payload="[" * 150 + "]" * 150, is_json=True), "nests"),
        (_set(payload="echo " + "x" * 1_000_000, is_json=False), "larger than"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_archives_with_what_no_backend_holds_are_refused(
    backend: str, qdo_dir: Path, tmp_path: Path, change: Any, why: str
) -> None:
    store = make_store(backend, qdo_dir)
    lines = gzip.decompress(_good_archive(store, tmp_path)).splitlines(keepends=True)
    before = whole_store(store)
    path = tmp_path / "crafted.qdo"
    path.write_bytes(_resealed(lines, change))
    try:
        with pytest.raises(BadArchive, match=why) as err:
            qdo.restore(path, "Fresh", store=store)
        assert "\n" not in str(err.value)
        assert whole_store(store) == before
    finally:
        store.close()


def test_a_message_longer_than_the_store_keeps_is_cut_by_dump(tmp_path: Path) -> None:
    # a database written before messages were cut may hold one of megabytes: its dump
    # had a line longer than restore reads ("no qdo writes such lines", and it had)
    import sqlite3
    from contextlib import closing

    from qdo.store.base import LONGEST_MESSAGE, kept_text
    from qdo.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "old.sqlite", user="me")
    store.create_queue("Old")
    (task_id,) = store.add_many("Old", [NewTask("true")])
    (t,) = store.claim("Old", "w", 1, lease=60)
    assert store.finish("w", [Outcome(t.id, t._token, State.FAILED, 1, "short")]) == []
    long = "\x01" * 2_000_000  # (12 MB as JSON)
    with closing(sqlite3.connect(tmp_path / "old.sqlite")) as db, db:
        db.execute("UPDATE tasks SET message = ?", (long,))
        db.execute("UPDATE attempts SET message = ?", (long,))
    archive.dump(store, "Old", tmp_path / "old.qdo")
    archive.restore(store, tmp_path / "old.qdo", "New")
    (task,) = store.tasks("New")
    (attempt,) = store.attempts([task.id])[task.id]
    cut = kept_text(long)
    assert task.message == attempt.message == cut and len(cut) < LONGEST_MESSAGE + 100
    store.close()
