"""The SQLite store: one file, WAL mode, no server.  Safe for many processes on one machine.

Every write is a ``BEGIN IMMEDIATE`` transaction, so writers queue on SQLite's
single write lock (with a busy timeout) instead of failing half-way; readers
never block in WAL mode.  Connections are per thread and per process: a store
object survives ``fork`` and may be shared by threads.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from ..errors import (
    DatabaseError,
    DependencyCycle,
    DiskFull,
    NotQdoDatabase,
    QdoWarning,
    QueueExists,
    SchemaTooNew,
    TaskNotEditable,
    UnknownQueue,
    UnknownTask,
)
from ..models import Attempt, QueueInfo, QueueState, State, Task
from . import sql
from .base import (
    Begun,
    Counts,
    Job,
    NewTask,
    Outcome,
    Store,
    admin_change,
    attempts_by_task,
    counts_by_queue,
    grouped,
    id_offset,
    login_name,
    outage_credit,
    queue_info,
    task_from_row,
)

SCHEMA_VERSION = 4

#: Seconds a writer waits for SQLite's write lock before giving up.
BUSY_TIMEOUT = 120.0
#: A write transaction that holds the (only) write lock longer than this, in seconds,
#: moves every lease on by twice as long before it commits: the time the holders could
#: not renew, and as long again for its commit and for their renewals to get through.
LONG_WRITE = 0.25

#: Filesystems on which SQLite's locking is not reliable.
NETWORK_FILESYSTEMS = {
    "nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "beegfs", "ceph",
    "fuse.sshfs", "9p", "afs", "panfs", "fuse.glusterfs",
}  # fmt: skip

Q = sql.load("sqlite", "queries.sql")
SCHEMA = sql.load("sqlite", "schema.sql")["create_schema"]


class SQLiteStore(Store):
    def __init__(self, path: str | os.PathLike[str], user: str | None = None) -> None:
        self.path = Path(path).expanduser().absolute()
        self.location = str(self.path)
        self.user = user or login_name()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        # when a write last went through (monotonic), and whether one failed since for
        # want of room: the next to go through gives the leases the time back first
        self._last_ok = time.monotonic()
        self._failed = False
        # yours alone: the folder 0700 when qdo makes it, the file 0600 (SQLite gives its
        # -wal and -shm files the file's own permissions)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            with suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as e:
            raise DatabaseError(f"cannot create the qdo database {self.path}: {e.strerror}") from e
        fstype = filesystem_type(self.path.parent)
        if fstype in NETWORK_FILESYSTEMS:
            warnings.warn(
                f"the qdo database {self.path} is on a {fstype} filesystem, where SQLite's "
                "locking is unreliable and can corrupt it under concurrent workers: use the "
                "PostgreSQL backend for work spread over nodes (QDO_BACKEND=postgres), or put "
                "QDO_DIR on a local disk",
                QdoWarning,
                stacklevel=3,
            )
        self._initialize()

    # -- connections and transactions ---------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if os.getpid() != self._pid:
            # after fork: the parent's connections must not be used (or closed) here
            self._local = threading.local()
            self._connections = []
            self._pid = os.getpid()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            # NORMAL in WAL mode: a crash of the process loses nothing committed; only
            # a power loss may drop the last transactions (never corrupts the file).
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as e:
            raise NotQdoDatabase(str(self.path), str(e)) from e
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: takes the write lock at once, all or nothing.  A full
        disk (while writing, or at the commit) rolls it back and raises DiskFull."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        began = time.monotonic()
        try:
            if self._failed:
                # no write went through since the last one (a full disk), renewals
                # neither: the leases get that time back before this one may judge any
                # of them expired
                conn.execute(Q["extend_leases"], {"by": outage_credit(self._last_ok)})
            yield conn
            held = time.monotonic() - began
            if held > LONG_WRITE:
                # every holder's renewal waited behind this one: it must not cost them
                # their leases (the next writer in line may be one who looks for expiry)
                conn.execute(Q["extend_leases"], {"by": 2 * held})
            conn.execute("COMMIT")
            self._last_ok, self._failed = time.monotonic(), False
        except BaseException as e:
            if conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                conn.execute("ROLLBACK")
            if _disk_full(e):
                self._failed = True
                raise DiskFull(str(self.path), str(e)) from e
            raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for several statements."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def _initialize(self) -> None:
        try:
            # Look first, without a lock: the usual case (a current qdo database) then
            # never waits behind a writer, and a foreign file is never written to.
            if self._schema_version(self._conn()) == SCHEMA_VERSION:
                return
            conn = self._conn()
            conn.execute("PRAGMA journal_mode = WAL")  # persistent, once per file
            # a migration may rebuild a table: dropping the old one must not cascade
            # (the pragma is a no-op inside a transaction, so it goes around it)
            conn.execute("PRAGMA foreign_keys = OFF")
            try:
                with self._write() as conn:
                    version = self._schema_version(conn)  # again, now that we hold the lock
                    if version is None:
                        for statement in _statements(SCHEMA):
                            conn.execute(statement)
                        version = 1
                    for target, script in sorted(sql.migrations("sqlite").items()):
                        if version < target <= SCHEMA_VERSION:
                            for statement in _statements(script):
                                conn.execute(statement, {"user": self.user})
                    broken = conn.execute(Q["foreign_key_check"]).fetchall()
                    if broken:
                        raise DatabaseError(f"migration left broken references: {broken[:5]}")
            finally:
                conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as e:
            raise NotQdoDatabase(str(self.path), str(e)) from e

    def _schema_version(self, conn: sqlite3.Connection) -> int | None:
        """The qdo schema version of the file, None if it is empty; raises if the file
        belongs to something else or to a newer qdo."""
        tables = {row[0] for row in conn.execute(Q["user_tables"])}
        if not tables:
            return None
        if "qdo_schema" not in tables:
            raise NotQdoDatabase(str(self.path), f"it has tables {', '.join(sorted(tables))}")
        _application, version = conn.execute(Q["schema_version"]).fetchone()
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(str(self.path), version, SCHEMA_VERSION)
        return int(version)

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        if os.getpid() == self._pid:
            for conn in connections:
                conn.close()
        self._local = threading.local()

    # -- queues ---------------------------------------------------------------------------
    def _queue_id(self, conn: sqlite3.Connection, name: str) -> int:
        row = conn.execute(Q["queue_get"], {"name": name, "owner": self.user}).fetchone()
        if row is None:
            raise UnknownQueue(name)
        return int(row[0])

    def create_queue(self, name: str) -> QueueInfo:
        with self._write() as conn:
            return self._insert_queue(conn, name)

    def _insert_queue(self, conn: sqlite3.Connection, name: str) -> QueueInfo:
        try:
            params = {"name": name, "now": time.time(), "owner": self.user}
            row = conn.execute(Q["queue_insert"], params).fetchone()
        except sqlite3.IntegrityError as e:
            raise QueueExists(name) from e
        return queue_info(row)

    def get_queue(self, name: str) -> QueueInfo:
        row = self._conn().execute(Q["queue_get"], {"name": name, "owner": self.user}).fetchone()
        if row is None:
            raise UnknownQueue(name)
        return queue_info(row)

    def list_queues(self, all_users: bool = False) -> list[QueueInfo]:
        params = {"owner": None if all_users else self.user}
        return [queue_info(row) for row in self._conn().execute(Q["queue_list"], params)]

    def set_queue_state(self, name: str, state: QueueState) -> None:
        params = {"name": name, "state": state.value, "owner": self.user}
        with self._write() as conn:
            if conn.execute(Q["queue_set_state"], params).rowcount:
                return
        raise UnknownQueue(name)

    def set_queue_options(
        self, name: str, *, max_retries: int | None = None, max_lost: int | None = None
    ) -> QueueInfo:
        with self._write() as conn:
            params = {"name": name, "max_retries": max_retries, "max_lost": max_lost,
                      "owner": self.user}  # fmt: skip
            if not conn.execute(Q["queue_set_options"], params).rowcount:
                raise UnknownQueue(name)
            return queue_info(conn.execute(Q["queue_get"], params).fetchone())

    def delete_queue(self, name: str) -> int:
        with self._write() as conn:
            queue_id = self._queue_id(conn, name)
            n = conn.execute(Q["queue_task_count"], {"queue_id": queue_id}).fetchone()[0]
            conn.execute(Q["queue_delete"], {"queue_id": queue_id})
            return int(n)

    # -- adding ---------------------------------------------------------------------------
    def add_many(
        self, queue: str, tasks: Iterable[NewTask], *, create_queue: bool = False
    ) -> range:
        with self._write() as conn:
            row = conn.execute(Q["queue_get"], {"name": queue, "owner": self.user}).fetchone()
            if row is not None:
                queue_id = int(row[0])
            elif create_queue:
                queue_id = self._insert_queue(conn, queue).id
            else:
                raise UnknownQueue(queue)
            # We hold the write lock, so ids are ours to assign: consecutive from here.
            first = int(conn.execute(Q["last_task_id"]).fetchone()[0]) + 1
            now = time.time()
            requires: list[tuple[int, int]] = []
            next_id = first

            def rows() -> Iterator[tuple[Any, ...]]:
                nonlocal next_id
                for t in tasks:
                    for r in t.requires:
                        requires.append((next_id, r))
                    yield (next_id, queue_id, t.payload, t.is_json, t.priority, now, t.timeout,
                           t.max_retries)  # fmt: skip
                    next_id += 1

            conn.executemany(Q["task_insert"], rows())
            conn.execute(Q["set_last_task_id"], {"last": next_id - 1})
            if requires:
                self._check_exist(conn, {r for _, r in requires}, before=first)
                conn.executemany(Q["requires_insert"], requires)
                dependents = sorted({t for t, _ in requires})
                conn.execute(Q["block_unmet"], {"ids": json.dumps(dependents)})
            return range(first, next_id)

    def _check_exist(self, conn: sqlite3.Connection, ids: set[int], before: int) -> None:
        # ids at or after `before` are being added right now: nobody can know them yet
        unknown = {i for i in ids if i >= before}
        older = sorted(ids - unknown)
        unknown.update(r[0] for r in conn.execute(Q["ids_missing"], {"ids": json.dumps(older)}))
        if unknown:
            raise UnknownTask(unknown, "required task")

    def add_requires(self, queue: str, task_id: int, requires: Sequence[int]) -> None:
        with self._write() as conn:
            params = {"task_id": task_id, "queue": queue, "owner": self.user}
            row = conn.execute(Q["task_state"], params).fetchone()
            if row is None:
                raise UnknownTask([task_id], f"task of queue {queue!r}")
            if row[0] not in (State.WAITING.value, State.PENDING.value):
                raise TaskNotEditable(
                    f"task {task_id} is {row[0]}: only Waiting or Pending tasks can get new "
                    "requirements (rerun it first)"
                )
            self._check_exist(conn, set(requires), before=2**63)
            ids = json.dumps(sorted(set(requires)))
            if conn.execute(Q["reaches"], {"ids": ids, "task_id": task_id}).fetchone():
                raise DependencyCycle(task_id, requires)
            conn.executemany(Q["requires_insert"], [(task_id, r) for r in set(requires)])
            conn.execute(Q["block_unmet"], {"ids": json.dumps([task_id])})

    # -- working --------------------------------------------------------------------------
    def claim(
        self, queue: str, worker: str, n: int, lease: float, jobid: str | None = None,
        max_seconds: float | None = None, reserve: bool = False,
    ) -> list[Task]:  # fmt: skip
        params = {
            "queue": queue, "owner": self.user, "worker": worker, "jobid": jobid, "n": n,
            "lease": lease, "max_seconds": max_seconds, "reserve": reserve,
            "token": int.from_bytes(os.urandom(8), "big") >> 2 | 1,
        }  # fmt: skip
        with self._write() as conn:
            # the clock is read once the write lock is ours: a lease dated from before a
            # wait behind another writer would be short by that wait
            params["now"] = time.time()
            rows = conn.execute(Q["claim"], params).fetchall()
            if not rows:
                return []
            requires = self._requires_of(conn, [r[0] for r in rows])
        rows.sort(key=lambda r: (-r[5], r[0]))  # RETURNING order is not defined
        return [task_from_row(r, queue, requires.get(r[0], ())) for r in rows]

    @staticmethod
    def _begin(conn: sqlite3.Connection, worker: str, begun: Sequence[Begun]) -> None:
        conn.execute(Q["begin"], {"worker": worker, "begun": json.dumps(
            [[b.task_id, b.token, b.started] for b in begun])})  # fmt: skip

    def _requires_of(self, conn: sqlite3.Connection, ids: list[int]) -> dict[int, list[int]]:
        return grouped(conn.execute(Q["requires_of"], {"ids": json.dumps(ids)}))

    def renew(self, worker: str, tokens: Sequence[tuple[int, int]], lease: float) -> list[int]:
        lost = []
        with self._write() as conn:
            now = time.time()  # after any wait for the lock (see claim)
            for task_id, token in tokens:
                params = {"task_id": task_id, "token": token, "worker": worker}
                if not conn.execute(Q["renew"], {**params, "now": now, "lease": lease}).rowcount:
                    lost.append(task_id)
        return lost

    def finish(
        self, worker: str, outcomes: Sequence[Outcome], begun: Sequence[Begun] = ()
    ) -> list[int]:
        refused: list[int] = []
        succeeded: list[int] = []
        history: list[tuple[Any, ...]] = []
        with self._write() as conn:
            now = time.time()
            if begun:
                self._begin(conn, worker, begun)
            for o in outcomes:
                params = {"task_id": o.task_id, "token": o.token, "worker": worker,
                          "message": o.message, "now": now}  # fmt: skip
                if o.state is State.PENDING:
                    row = conn.execute(Q["give_back"], params).fetchone()
                else:
                    params.update(state=o.state.value, exitcode=o.exitcode, log=o.log,
                                  started=o.started)  # fmt: skip
                    row = conn.execute(Q["finish"], params).fetchone()
                if row is None:
                    refused.append(o.task_id)
                    continue
                task_id, attempt, held_by, jobid, started, finished, _ = row
                state = "Returned" if o.state is State.PENDING else o.state.value
                history.append((task_id, attempt, state, held_by, jobid, started, finished,
                                o.exitcode, o.message))  # fmt: skip
                if o.state is State.SUCCEEDED:
                    succeeded.append(o.task_id)
            conn.executemany(Q["attempt_insert"], history)
            if succeeded:
                conn.execute(Q["release_dependents"], {"ids": json.dumps(succeeded)})
        return refused

    def requeue_expired(self, queue: str | None = None) -> list[int]:
        queue_id = None if queue is None else self._queue_id(self._conn(), queue)
        look = {"queue_id": queue_id, "now": time.time()}
        if self._conn().execute(Q["any_expired"], look).fetchone() is None:
            return []  # the usual case, answered without the write lock
        return self._requeue(queue_id, None, "lease expired")

    def requeue_workers(
        self, queue: str, workers: Sequence[str] | None = None,
        jobids: Sequence[str] | None = None, why: str = "process gone",
    ) -> list[int]:  # fmt: skip
        if not workers and not jobids:
            return []
        queue_id = self._queue_id(self._conn(), queue)
        return self._requeue(queue_id, workers or [], why, jobids or [])

    def _requeue(
        self, queue_id: int | None, workers: Sequence[str] | None, why: str,
        jobids: Sequence[str] | None = None,
    ) -> list[int]:  # fmt: skip
        params = {"queue_id": queue_id, "now": time.time(), "why": why,
                  "workers": None if workers is None else json.dumps(list(workers)),
                  "jobids": None if jobids is None else json.dumps(list(jobids))}  # fmt: skip
        with self._write() as conn:
            rows = conn.execute(Q["requeue_expired"], params).fetchall()
            conn.executemany(Q["attempt_insert"], rows)
        return [r[0] for r in rows]

    # -- reading --------------------------------------------------------------------------
    def counts(self, queue: str) -> Counts:
        with self._read() as conn:
            queue_id = self._queue_id(conn, queue)
            rows = conn.execute(Q["counts"], {"queue_id": queue_id})
            return counts_by_queue([queue_id], ((queue_id, *r) for r in rows),
                                   lambda i: self._blocked(conn, i))[queue_id]  # fmt: skip

    @staticmethod
    def _blocked(conn: sqlite3.Connection, queue_id: int) -> int:
        return int(conn.execute(Q["blocked"], {"queue_id": queue_id}).fetchone()[0])

    def all_counts(self, all_users: bool = False) -> dict[int, Counts]:
        owner = {"owner": None if all_users else self.user}
        with self._read() as conn:
            ids = [row[0] for row in conn.execute(Q["queue_list"], owner)]
            rows = conn.execute(Q["all_counts"], owner).fetchall()
            return counts_by_queue(ids, rows, lambda i: self._blocked(conn, i))

    def tasks(
        self,
        queue: str,
        state: State | None = None,
        task_id: int | None = None,
        after: int = 0,
        limit: int | None = None,
        exitcode: int | None = None,
    ) -> list[Task]:
        with self._read() as conn:
            params: dict[str, Any] = {
                "queue_id": self._queue_id(conn, queue), "after": after,
                "limit": -1 if limit is None else limit, "exitcode": exitcode,
            }  # fmt: skip
            if task_id is not None:
                rows = conn.execute(Q["task_by_id"], {**params, "task_id": task_id}).fetchall()
                rows = [r for r in rows if (state is None or r[4] == state.value)
                        and (exitcode is None or r[6] == exitcode)]  # fmt: skip
            elif state is not None:
                rows = conn.execute(
                    Q["tasks_in_state"], {**params, "state": state.value}
                ).fetchall()
            else:
                rows = conn.execute(Q["tasks_all"], params).fetchall()
            requires = self._requires_of(conn, [r[0] for r in rows]) if rows else {}
        return [task_from_row(r, queue, requires.get(r[0], ())) for r in rows]

    def attempts(self, task_ids: Sequence[int]) -> dict[int, list[Attempt]]:
        ids = json.dumps(list(task_ids))
        return attempts_by_task(self._conn().execute(Q["attempts_of"], {"ids": ids}))

    def running_workers(self, queue: str) -> list[str]:
        return self._running(queue, "running_workers")

    def running_jobs(self, queue: str) -> list[str]:
        return self._running(queue, "running_jobs")

    def _running(self, queue: str, query: str) -> list[str]:
        with self._read() as conn:
            params = {"queue_id": self._queue_id(conn, queue)}
            return [r[0] for r in conn.execute(Q[query], params)]

    # -- changing by hand -----------------------------------------------------------------
    def set_state(
        self, queue: str, task_id: int, state: State, exitcode: int | None,
        message: str | None, who: str,
    ) -> State:  # fmt: skip
        with self._write() as conn:
            now = time.time()
            params = {"task_id": task_id, "queue": queue, "owner": self.user}
            row = conn.execute(Q["task_for_change"], params).fetchone()
            if row is None:
                raise UnknownTask([task_id], f"task of queue {queue!r}")
            change = admin_change(row, state, exitcode, message, who, now)
            new = conn.execute(Q["set_state"], {
                "task_id": task_id, "state": state.value, "exitcode": exitcode,
                "message": change.message, "attempts": change.attempts, "now": now,
            }).fetchone()[0]  # fmt: skip
            conn.execute(Q["attempt_insert"], (task_id, *change.history))
            ids = json.dumps([task_id])
            if state is State.SUCCEEDED:
                conn.execute(Q["release_dependents"], {"ids": ids})
            elif row[0] == State.SUCCEEDED.value:
                conn.execute(Q["block_dependents"], {"ids": ids})
        return State(new)

    # -- resetting ------------------------------------------------------------------------
    def retry(
        self, queue: str, states: Sequence[State] = (State.FAILED, State.KILLED),
        priority: int | None = None,
    ) -> int:  # fmt: skip
        with self._write() as conn:
            params = {"queue_id": self._queue_id(conn, queue), "priority": priority,
                      "states": json.dumps([s.value for s in states])}  # fmt: skip
            return conn.execute(Q["retry"], params).rowcount

    def rerun(self, queue: str) -> int:
        with self._write() as conn:
            params = {"queue_id": self._queue_id(conn, queue)}
            conn.execute(Q["rerun_forget"], params)
            n = conn.execute(Q["rerun_reset"], params).rowcount
            conn.execute(Q["rerun_block"], params)
            return n

    # -- batch jobs -----------------------------------------------------------------------
    def add_job(self, queue: str, jobid: str, profile: str, workers: int) -> None:
        with self._write() as conn:
            conn.execute(Q["job_insert"], {"queue_id": self._queue_id(conn, queue),
                                           "jobid": jobid, "profile": profile,
                                           "workers": workers, "now": time.time()})  # fmt: skip

    def jobs(self, queue: str) -> list[Job]:
        with self._read() as conn:
            rows = conn.execute(Q["jobs_of"], {"queue_id": self._queue_id(conn, queue)})
            return [Job(*row) for row in rows]

    def pending_fits(self, queue: str, max_seconds: float) -> bool:
        with self._read() as conn:
            params = {"queue_id": self._queue_id(conn, queue), "max_seconds": max_seconds}
            return bool(conn.execute(Q["pending_fits"], params).fetchone()[0])

    # -- archives -------------------------------------------------------------------------
    def export_queue(self, queue: str) -> Iterator[tuple[str, tuple[Any, ...]]]:
        with self._read() as conn:
            row = conn.execute(Q["queue_get"], {"name": queue, "owner": self.user}).fetchone()
            if row is None:
                raise UnknownQueue(queue)
            info = queue_info(row)
            params = {"queue_id": info.id}
            low, high, n = conn.execute(Q["export_span"], params).fetchone()
            yield "queue", (info.name, info.state.value, row[3], info.max_retries,
                            info.max_lost, info.owner)  # fmt: skip
            yield "span", (low or 0, high or 0, n)
            for r in conn.execute(Q["export_tasks"], params):
                yield "task", (*r[:2], bool(r[2]), *r[3:])
            for r in conn.execute(Q["export_requires"], params):
                yield "requires", (r[0], r[1], bool(r[2]))
            for r in conn.execute(Q["export_attempts"], params):
                yield "attempt", tuple(r)

    def import_queue(
        self, name: str, info: QueueInfo, span: tuple[int, int], records: Iterable[Any]
    ) -> int:
        with self._write() as conn:
            created = info.created.timestamp() if info.created else time.time()
            if conn.execute(Q["queue_get"], {"name": name, "owner": self.user}).fetchone():
                raise QueueExists(name)
            conn.execute(Q["import_queue"], {
                "owner": self.user, "name": name, "state": info.state.value,
                "created": created, "max_retries": info.max_retries, "max_lost": info.max_lost,
            })  # fmt: skip
            queue_id = self._queue_id(conn, name)
            offset = id_offset(span, int(conn.execute(Q["last_task_id"]).fetchone()[0]))
            high = 0
            tasks: list[tuple[Any, ...]] = []
            rest: list[tuple[str, tuple[Any, ...]]] = []

            def flush() -> None:
                conn.executemany(Q["import_task"], tasks)
                tasks.clear()

            for kind, row in records:
                if kind == "task":
                    high = max(high, row[0] + offset)
                    tasks.append((row[0] + offset, queue_id, *row[1:]))
                    if len(tasks) >= 10_000:
                        flush()
                else:
                    rest.append((kind, row))
                    if len(rest) >= 10_000:
                        flush()
                        self._import_rest(conn, rest, offset)
            flush()
            self._import_rest(conn, rest, offset)
            conn.execute(Q["set_last_task_id"], {"last": high})
        return offset

    @staticmethod
    def _import_rest(
        conn: sqlite3.Connection, rows: list[tuple[str, tuple[Any, ...]]], offset: int
    ) -> None:
        requires = [(row[0] + offset, row[1] + offset if row[2] else row[1])
                    for kind, row in rows if kind == "requires"]  # fmt: skip
        attempts = [(row[0] + offset, *row[1:]) for kind, row in rows if kind == "attempt"]
        conn.executemany(Q["requires_insert"], requires)
        conn.executemany(Q["attempt_insert"], attempts)
        rows.clear()

    # -- housekeeping ---------------------------------------------------------------------
    def check(self) -> list[str]:
        conn = self._conn()
        problems = [r[0] for r in conn.execute(Q["integrity_check"]) if r[0] != "ok"]
        problems += [f"foreign key: {tuple(r)}" for r in conn.execute(Q["foreign_key_check"])]
        return problems


SQLITE_FULL = 13  # "database or disk is full" (sqlite3.h)


def _disk_full(error: BaseException) -> bool:
    """Did SQLite (or the file system under it) run out of space?"""
    if isinstance(error, sqlite3.Error):
        return getattr(error, "sqlite_errorcode", None) == SQLITE_FULL
    return isinstance(error, OSError) and error.errno == errno.ENOSPC


def _statements(script: str) -> Iterator[str]:
    """Split a script into complete statements (executescript would commit midway)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                yield buffer.strip()
            buffer = ""
    if buffer.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in buffer.splitlines()
    ):
        raise DatabaseError(f"incomplete SQL statement in schema: {buffer.strip()[:80]}")


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding ``path`` (Linux /proc/mounts), or None."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best, best_type = "", None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, fields[2]
    return best_type
