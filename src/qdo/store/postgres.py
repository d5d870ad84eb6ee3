"""The PostgreSQL store: one server shared by workers on many nodes (psycopg 3).

Install with ``pip install 'qdo-queue[postgres]'``.  The tables live in their own
schema (``db_schema``, default ``qdo``), created on first use.  Every verb is one
transaction at READ COMMITTED; claims are one ``UPDATE … WHERE id IN (SELECT … FOR
UPDATE SKIP LOCKED)``, so claimers never wait for each other.  Leases are measured by
the server's clock.  Connections are per thread and per process; a connection that
drops (server restart, ``pg_terminate_backend``) is replaced and the verb runs again
when that cannot apply it twice.  Waiting workers LISTEN for new Pending tasks
instead of polling.
"""

from __future__ import annotations

import logging
import os
import re
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from ..config import mask_url
from ..errors import (
    ConfigError,
    DatabaseError,
    DependencyCycle,
    DiskFull,
    InvalidInput,
    NotAllowed,
    NotQdoDatabase,
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

try:
    import psycopg
    from psycopg import sql as pgsql
except ImportError as e:  # pragma: no cover - depends on the install
    raise ConfigError(
        "the PostgreSQL backend needs psycopg 3: pip install 'qdo-queue[postgres]'"
    ) from e

SCHEMA_VERSION = 6

Q = sql.load("postgres", "queries.sql")
SCHEMA = sql.load("postgres", "schema.sql")["create_schema"]
GRANTS = sql.load("postgres", "schema.sql")["grant_to_users"]

_COPY = re.compile(r"COPY (\w+) \(([\w, ]+)\)\s+FROM STDIN;?")
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,39}")
#: How often a verb is tried when its connection keeps dropping.
ATTEMPTS = 3
#: How long a lost connection is tried again (a server restart) before an error.
RECONNECT_SECONDS = float(os.environ.get("QDO_PG_RECONNECT_SECONDS", "60"))
#: Seconds one connection attempt may take (a host that drops packets says nothing).
CONNECT_TIMEOUT = 5
log = logging.getLogger("qdo.postgres")

T = TypeVar("T")


class _Unsure(Exception):
    """The connection dropped while a COMMIT was under way: it may have happened."""


class PostgresStore(Store):
    def __init__(self, conninfo: str, *, schema: str = "qdo", user: str | None = None) -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigError(
                f"db_schema {schema!r}: use 1 to 40 characters from a-z 0-9 _, not starting "
                "with a digit"
            )
        self.conninfo = conninfo
        self.schema = schema
        self.user = user or login_name()
        #: whether the tables' row-level security applies to this role (a shared
        #: database, ``qdo admin init-db``); then the role's own name is its user
        self.row_security = False
        self.role = ""  # the role this store connects as
        self.location = _describe(conninfo, schema)
        self._local = threading.local()
        self._lock = threading.Lock()
        # every connection this process opened, and the thread it belongs to
        self._connections: dict[psycopg.Connection[Any], threading.Thread] = {}
        self._pid = os.getpid()
        # when a verb last went through (monotonic), and whether one failed since (the
        # server away, its disk full): the next to go through gives the leases the
        # time back first (see _after_outage)
        self._last_ok = time.monotonic()
        self._failed = False
        try:
            self._initialize()
            role, self.row_security = _one(self._conn(), Q["session"])
            self._conn().commit()
            self.role = str(role)
            if self.row_security and user is None:
                self.user = self.role
        except BaseException:
            self.close()  # a refused database keeps no session open
            raise

    # -- connections and transactions ---------------------------------------------------
    def _connect(self, autocommit: bool = False) -> psycopg.Connection[Any]:
        """A new connection; while the server is away (a restart), keep trying for
        ``RECONNECT_SECONDS`` before giving up."""
        deadline = time.monotonic() + RECONNECT_SECONDS
        delay = 0.1
        said = False
        while True:
            try:
                conn = psycopg.connect(self.conninfo, autocommit=autocommit,
                                       connect_timeout=CONNECT_TIMEOUT,
                                       application_name="qdo")  # fmt: skip
                break
            except psycopg.OperationalError as e:
                if time.monotonic() + delay > deadline or not _transient(e):
                    raise DatabaseError(
                        f"cannot connect to PostgreSQL at {self.location}: {_text(e)}"
                    ) from e
                if not said:  # no silent minute: say at once that it waits, and how long
                    said = True
                    left = max(0.0, deadline - time.monotonic())
                    log.warning("qdo: cannot reach PostgreSQL at %s (%s): trying again for "
                                "up to %.0f s (QDO_PG_RECONNECT_SECONDS)", self.location,
                                _text(e), left)  # fmt: skip
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        if said:
            log.warning("qdo: reached PostgreSQL at %s again", self.location)
        with conn.transaction() if not autocommit else _nothing():
            conn.execute(
                pgsql.SQL("SET search_path TO {}, pg_catalog").format(pgsql.Identifier(self.schema))
            )
        me = threading.current_thread()
        with self._lock:
            # a thread that ended leaves its connections behind: close them now
            gone = [c for c, t in self._connections.items() if not t.is_alive()]
            for c in gone:
                del self._connections[c]
            self._connections[conn] = me
        for c in gone:
            _close(c)
        return conn

    def _conn(self) -> psycopg.Connection[Any]:
        if os.getpid() != self._pid:
            # after fork: the parent's connections belong to the parent
            self._local = threading.local()
            self._connections = {}
            self._pid = os.getpid()
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._local.conn = self._connect()
        return conn

    def _drop(self) -> None:
        """Forget this thread's connection (it broke)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                self._connections.pop(conn, None)
            _close(conn)

    def _run(self, verb: Callable[[psycopg.Cursor[Any]], T], *, unsure_ok: bool = True) -> T:
        """Run ``verb`` in one transaction, on a new connection if the old one dropped.

        A verb that failed before its COMMIT did nothing and runs again.  One whose
        COMMIT was cut off runs again only if ``unsure_ok`` (a second run then finds
        its work done and does nothing more), else the error says the outcome is unknown.
        """
        for attempt in range(1, ATTEMPTS + 1):
            try:
                conn = self._conn()
            except DatabaseError:
                self._failed = True
                raise
            try:
                out = _in_transaction(conn, self._after_outage(verb))
                try:
                    conn.commit()
                except psycopg.OperationalError as e:
                    raise _Unsure() from e
                self._last_ok, self._failed = time.monotonic(), False
                return out
            except _Unsure as e:
                self._failed = True
                self._drop()
                if not unsure_ok or attempt == ATTEMPTS:
                    raise DatabaseError(
                        f"the connection to {self.location} dropped during a commit: "
                        "whether it took effect is unknown (look before doing it again)"
                    ) from e
            except psycopg.errors.InsufficientPrivilege as e:
                # the policies of a shared database, or a privilege the role lacks
                raise NotAllowed(self.location, _text(e)) from e
            except psycopg.errors.DiskFull as e:  # rolled back whole: nothing was written
                self._failed = True
                raise DiskFull(self.location, _text(e)) from e
            except psycopg.errors.TransactionRollback as e:
                # chosen as a deadlock's victim: rolled back whole, so it runs again
                if attempt == ATTEMPTS:
                    raise DatabaseError(f"PostgreSQL at {self.location}: {_text(e)}") from e
                time.sleep(0.01 * attempt)
            except psycopg.OperationalError as e:
                broken = conn.closed or conn.broken
                self._failed = True
                self._drop()
                if not broken or attempt == ATTEMPTS:
                    raise DatabaseError(f"PostgreSQL at {self.location}: {_text(e)}") from e
        raise AssertionError("unreachable")

    def _after_outage(
        self, verb: Callable[[psycopg.Cursor[Any]], T]
    ) -> Callable[[psycopg.Cursor[Any]], T]:
        """``verb``, after (if one failed here since the last went through) moving every
        lease on by the time since then: their holders could not renew meanwhile, and
        this verb may be the one that judges them expired (the server's clock went on)."""
        if not self._failed:
            return verb
        credit = outage_credit(self._last_ok)

        def first(cur: psycopg.Cursor[Any]) -> T:
            cur.execute(Q["extend_leases"], {"by": credit})
            return verb(cur)

        return first

    def _initialize(self) -> None:
        def init(cur: psycopg.Cursor[Any]) -> None:
            # one initializer at a time (a lock for this database, held to the commit)
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (0x71646F,))
            has_schema, has_table, ntables = _one(cur, Q["schema_exists"], {"schema": self.schema})
            if has_schema and ntables and not has_table:
                raise NotQdoDatabase(self.location, "its schema holds tables that are not qdo's")
            if not has_schema:
                cur.execute(pgsql.SQL("CREATE SCHEMA {}").format(pgsql.Identifier(self.schema)))
            if not has_table:
                cur.execute(SCHEMA)
            _application, version = _one(cur, Q["schema_version"])
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(self.location, version, SCHEMA_VERSION)
            for _target, script in _pending_migrations(version):
                cur.execute(script)

        try:
            conn = self._conn()
            # the usual case, a current schema, is answered without the lock
            row = _one(conn, Q["schema_exists"], {"schema": self.schema})
            if row[1]:
                version = _one(conn, Q["schema_version"])[1]
                conn.commit()
                if version == SCHEMA_VERSION:
                    return
            else:
                conn.commit()
            self._run(init)
        except psycopg.Error as e:
            raise DatabaseError(f"PostgreSQL at {self.location}: {_text(e)}") from e

    def close(self) -> None:
        with self._lock:
            connections, self._connections = list(self._connections), {}
        if os.getpid() == self._pid:
            for conn in connections:
                _close(conn)
        self._local = threading.local()

    def _notify(self, cur: psycopg.Cursor[Any], queue_ids: Iterable[int]) -> None:
        """Wake the workers waiting for these queues (delivered at COMMIT)."""
        ids = sorted(set(queue_ids))
        if ids:
            cur.execute(Q["notify"], {"ids": ids})

    @contextmanager
    def _copy(self, cur: psycopg.Cursor[Any], statement: str) -> Iterator[psycopg.Copy]:
        """``COPY table (columns) FROM STDIN``; PostgreSQL refuses COPY FROM into a table
        whose row-level security applies, so for such a role the rows go to a temporary
        table first, then in with one INSERT that the policies check."""
        if not self.row_security:
            with cur.copy(statement) as copy:
                yield copy
            return
        m = _COPY.fullmatch(statement.strip())
        assert m is not None, statement
        table, columns = m.group(1), m.group(2)
        staged = pgsql.Identifier(f"qdo_new_{table}")
        cur.execute(pgsql.SQL("CREATE TEMPORARY TABLE IF NOT EXISTS {} (LIKE {} INCLUDING "
                              "DEFAULTS) ON COMMIT DELETE ROWS").format(
                                  staged, pgsql.Identifier(table)))  # fmt: skip
        cols = pgsql.SQL(columns)
        with cur.copy(pgsql.SQL("COPY pg_temp.{} ({}) FROM STDIN").format(staged, cols)) as copy:
            yield copy
        cur.execute(pgsql.SQL("INSERT INTO {} ({}) SELECT {} FROM pg_temp.{}").format(
            pgsql.Identifier(table), cols, cols, staged))  # fmt: skip

    # -- queues ---------------------------------------------------------------------------
    def _queue_row(self, cur: psycopg.Cursor[Any], name: str) -> tuple[Any, ...]:
        row = cur.execute(Q["queue_get"], {"name": name, "owner": self.user}).fetchone()
        if row is None:
            raise UnknownQueue(name)
        return tuple(row)

    def _queue_id(self, cur: psycopg.Cursor[Any], name: str, change: bool = False) -> int:
        """The id of queue ``name``; with ``change``, for a verb that changes it: a role
        it is shared with to read gets NotAllowed, not a change of nothing (the policies
        would skip its rows without a word)."""
        row = self._queue_row(cur, name)
        if change:
            self._may_change(cur, row)
        return int(row[0])

    def _may_change(self, cur: psycopg.Cursor[Any], row: Sequence[Any]) -> None:
        """Raise NotAllowed if this role may read the queue of ``row`` but not change it."""
        if self.row_security and cur.execute(Q["queue_writable"], row[:1]).fetchone() is None:
            raise NotAllowed(self.location, f"queue {row[1]!r} of {row[6]} is shared with "
                             "you to read, not to change")  # fmt: skip

    def create_queue(self, name: str) -> QueueInfo:
        return self._run(lambda cur: self._insert_queue(cur, name))

    def _insert_queue(self, cur: psycopg.Cursor[Any], name: str) -> QueueInfo:
        row = cur.execute(Q["queue_insert"], {"name": name, "owner": self.user}).fetchone()
        if row is None:
            raise QueueExists(name)
        return queue_info(row)

    def get_queue(self, name: str) -> QueueInfo:
        return self._run(lambda cur: queue_info(self._queue_row(cur, name)))

    def list_queues(self, all_users: bool = False) -> list[QueueInfo]:
        params = {"owner": None if all_users else self.user}
        return self._run(lambda cur: [queue_info(r) for r in cur.execute(Q["queue_list"], params)])

    def set_queue_state(self, name: str, state: QueueState) -> None:
        def verb(cur: psycopg.Cursor[Any]) -> None:
            self._queue_id(cur, name, change=True)
            params = {"name": name, "state": state.value, "owner": self.user}
            row = cur.execute(Q["queue_set_state"], params).fetchone()
            if row is None:
                raise UnknownQueue(name)
            if state is QueueState.ACTIVE:
                self._notify(cur, [row[0]])

        self._run(verb)

    def set_queue_options(
        self, name: str, *, max_retries: int | None = None, max_lost: int | None = None
    ) -> QueueInfo:
        def verb(cur: psycopg.Cursor[Any]) -> QueueInfo:
            self._queue_id(cur, name, change=True)
            params = {"name": name, "owner": self.user, "max_retries": max_retries,
                      "max_lost": max_lost}  # fmt: skip
            row = cur.execute(Q["queue_set_options"], params).fetchone()
            if row is None:
                raise UnknownQueue(name)
            return queue_info(row)

        return self._run(verb)

    def delete_queue(self, name: str) -> int:
        def verb(cur: psycopg.Cursor[Any]) -> int:
            if self.row_security and self._queue_row(cur, name)[6] != self.role:
                raise NotAllowed(self.location, f"queue {name!r} is {self.user}'s: only its "
                                 "owner may delete it")  # fmt: skip
            queue_id, n = _one(cur, Q["queue_delete"], {"name": name, "owner": self.user})
            if queue_id is None:
                raise UnknownQueue(name)
            return int(n)

        return self._run(verb, unsure_ok=False)

    # -- adding ---------------------------------------------------------------------------
    def add_many(
        self, queue: str, tasks: Iterable[NewTask], *, create_queue: bool = False
    ) -> range:
        # a list can be sent again if the connection drops before the commit; a stream
        # can't (it is half read): then the error says so and nothing was written
        replayable = isinstance(tasks, Sequence)

        def verb(cur: psycopg.Cursor[Any]) -> range:
            row = cur.execute(Q["queue_get"], {"name": queue, "owner": self.user}).fetchone()
            if row is not None:
                self._may_change(cur, row)
                queue_id = int(row[0])
            elif create_queue:
                queue_id = self._insert_queue(cur, queue).id
            else:
                raise UnknownQueue(queue)
            # the row lock orders concurrent adds: the ids from here on are ours
            first = int(_one(cur, Q["lock_last_task_id"])[0]) + 1
            now = _one(cur, Q["now"])[0]
            next_id = first
            requires: list[tuple[int, int]] = []
            with self._copy(cur, Q["copy_tasks"]) as copy:
                for t in tasks:
                    for r in t.requires:
                        requires.append((next_id, r))
                    copy.write_row((next_id, queue_id, t.payload, t.is_json, "Pending",
                                    t.priority, now, t.timeout, t.max_retries))  # fmt: skip
                    next_id += 1
            cur.execute(Q["set_last_task_id"], {"last": next_id - 1})
            if requires:
                self._check_exist(cur, {r for _, r in requires}, before=first)
                with self._copy(cur, Q["copy_requires"]) as copy:
                    for pair in sorted(set(requires)):
                        copy.write_row(pair)
                dependents = sorted({t for t, _ in requires})
                cur.execute(Q["block_unmet"], {"ids": dependents})
            if next_id > first:
                self._notify(cur, [queue_id])
            return range(first, next_id)

        return self._run(verb, unsure_ok=False) if replayable else self._once(verb)

    def _once(self, verb: Callable[[psycopg.Cursor[Any]], T]) -> T:
        """Run a verb that can't be repeated: a dropped connection is an error."""
        conn = self._conn()
        try:
            out = _in_transaction(conn, verb)
            conn.commit()
            return out
        except psycopg.errors.InsufficientPrivilege as e:
            raise NotAllowed(self.location, _text(e)) from e
        except psycopg.errors.DiskFull as e:
            raise DiskFull(self.location, _text(e)) from e
        except psycopg.OperationalError as e:
            self._drop()
            raise DatabaseError(
                f"the connection to {self.location} dropped while adding tasks: {_text(e)} "
                "(nothing was added unless the error came at the very end: look with "
                "`qdo status` before loading again)"
            ) from e

    def _check_exist(self, cur: psycopg.Cursor[Any], ids: set[int], before: int) -> None:
        unknown = {i for i in ids if i >= before}
        older = sorted(ids - unknown)
        if older:
            # the required tasks stay as they are until this transaction ends
            cur.execute(Q["lock_required"], {"ids": older})
            unknown.update(r[0] for r in cur.execute(Q["ids_missing"], {"ids": older}))
        if unknown:
            raise UnknownTask(unknown, "required task")

    def add_requires(self, queue: str, task_id: int, requires: Sequence[int]) -> None:
        def verb(cur: psycopg.Cursor[Any]) -> None:
            self._queue_id(cur, queue, change=True)
            params = {"task_id": task_id, "queue": queue, "owner": self.user}
            row = cur.execute(Q["task_state"], params).fetchone()
            if row is None:
                raise UnknownTask([task_id], f"task of queue {queue!r}")
            if row[0] not in (State.WAITING.value, State.PENDING.value):
                raise TaskNotEditable(
                    f"task {task_id} is {row[0]}: only Waiting or Pending tasks can get new "
                    "requirements (rerun it first)"
                )
            wanted = sorted(set(requires))
            self._check_exist(cur, set(wanted), before=2**63)
            if cur.execute(Q["reaches"], {"ids": wanted, "task_id": task_id}).fetchone():
                raise DependencyCycle(task_id, requires)
            cur.execute(Q["requires_insert"], {"tasks": [task_id] * len(wanted), "reqs": wanted})
            cur.execute(Q["block_unmet"], {"ids": [task_id]})

        self._run(verb)

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

        def verb(cur: psycopg.Cursor[Any]) -> tuple[list[Any], dict[int, list[int]]]:
            if self.row_security:
                self._queue_id(cur, queue, change=True)
            rows = cur.execute(Q["claim"], params).fetchall()
            return rows, (self._requires_of(cur, [r[0] for r in rows]) if rows else {})

        # a claim cut off at its commit may have happened: the tasks it took then run
        # again when their lease expires, as for a worker that died
        rows, requires = self._run(verb)
        rows.sort(key=lambda r: (-r[5], r[0]))
        return [task_from_row(r, queue, requires.get(r[0], ())) for r in rows]

    @staticmethod
    def _begin(cur: psycopg.Cursor[Any], worker: str, begun: Sequence[Begun]) -> None:
        cur.execute(Q["begin"], {"worker": worker, "ids": [b.task_id for b in begun],
                                 "tokens": [b.token for b in begun],
                                 "started": [b.started for b in begun]})  # fmt: skip

    def _requires_of(self, cur: psycopg.Cursor[Any], ids: list[int]) -> dict[int, list[int]]:
        return grouped(cur.execute(Q["requires_of"], {"ids": ids}))

    def renew(self, worker: str, tokens: Sequence[tuple[int, int]], lease: float) -> list[int]:
        if not tokens:
            return []
        params = {"worker": worker, "lease": lease, "ids": [t for t, _ in tokens],
                  "tokens": [k for _, k in tokens]}  # fmt: skip
        kept = self._run(lambda cur: {r[0] for r in cur.execute(Q["renew"], params)})
        return [t for t, _ in tokens if t not in kept]

    def finish(
        self, worker: str, outcomes: Sequence[Outcome], begun: Sequence[Begun] = ()
    ) -> list[int]:
        if not outcomes and not begun:
            return []
        params = {
            "worker": worker,
            "ids": [o.task_id for o in outcomes],
            "tokens": [o.token for o in outcomes],
            "states": [o.state.value for o in outcomes],
            "exitcodes": [o.exitcode for o in outcomes],
            "messages": [o.message for o in outcomes],
            "logs": [o.log for o in outcomes],
            "started": [o.started for o in outcomes],
        }

        def verb(cur: psycopg.Cursor[Any]) -> set[int]:
            if begun:
                self._begin(cur, worker, begun)
            if not outcomes:
                return set()
            rows = cur.execute(Q["finish"], params).fetchall()
            self._history(cur, [r[:9] for r in rows])
            succeeded = [r[0] for r in rows if r[2] == State.SUCCEEDED.value]
            woke = [r[9] for r in rows if r[10] == State.PENDING.value]
            if succeeded:
                woke += self._release(cur, succeeded)
            self._notify(cur, woke)
            return {r[0] for r in rows}

        # cut off at its commit and run again, an accepted report is refused the second
        # time (the task is no longer Running): the result stands either way
        accepted = self._run(verb)
        return [o.task_id for o in outcomes if o.task_id not in accepted]

    def _history(self, cur: psycopg.Cursor[Any], rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            names = ("task_id", "attempt", "state", "worker", "jobid", "started", "finished",
                     "exitcode", "message")  # fmt: skip
            cur.execute(Q["attempt_insert"], {n: [r[i] for r in rows] for i, n in enumerate(names)})

    def _release(self, cur: psycopg.Cursor[Any], succeeded: list[int]) -> list[int]:
        """Make Pending the dependents of ``succeeded`` that wait for nothing else;
        return their queue ids."""
        waiting = [r[0] for r in cur.execute(Q["lock_dependents"], {"ids": succeeded})]
        if not waiting:
            return []
        return [r[0] for r in cur.execute(Q["release_dependents"], {"ids": waiting})]

    def requeue_expired(self, queue: str | None = None) -> list[int]:
        def look(cur: psycopg.Cursor[Any]) -> tuple[int | None, bool]:
            queue_id = None if queue is None else self._queue_id(cur, queue)
            if queue_id is None:
                found = cur.execute(Q["any_expired_anywhere"]).fetchone()
            else:
                found = cur.execute(Q["any_expired"], {"queue_id": queue_id}).fetchone()
            return queue_id, found is not None

        queue_id, expired = self._run(look)
        if not expired:
            return []
        return self._requeue(queue_id, None, "lease expired")

    def requeue_workers(
        self, queue: str, workers: Sequence[str] | None = None,
        jobids: Sequence[str] | None = None, why: str = "process gone",
    ) -> list[int]:  # fmt: skip
        if not workers and not jobids:
            return []
        queue_id = self._run(lambda cur: self._queue_id(cur, queue, change=True))
        return self._requeue(queue_id, list(workers or ()), why, list(jobids or ()))

    def _requeue(
        self, queue_id: int | None, workers: list[str] | None, why: str,
        jobids: list[str] | None = None,
    ) -> list[int]:  # fmt: skip
        params = {"queue_id": queue_id, "workers": workers, "why": why, "jobids": jobids}

        def verb(cur: psycopg.Cursor[Any]) -> list[int]:
            rows = cur.execute(Q["requeue_expired"], params).fetchall()
            self._history(cur, [r[:9] for r in rows])
            self._notify(cur, [r[9] for r in rows if r[10] == State.PENDING.value])
            return [r[0] for r in rows]

        return self._run(verb)

    notifies = True

    def listen(self, queue: str) -> None:
        self._listener(queue)

    def _listener(self, queue: str) -> psycopg.Connection[Any]:
        """This thread's LISTEN connection, listening to ``queue``'s channel."""
        local = self._local
        listener: psycopg.Connection[Any] | None = getattr(local, "listener", None)
        if listener is None or listener.closed or listener.broken:
            listener = local.listener = self._connect(autocommit=True)
            local.channels = {}
        channels: dict[str, str] = local.channels
        if queue not in channels:

            def channel_of(cur: psycopg.Cursor[Any]) -> str:
                return str(
                    _one(cur, Q["queue_channel"], {"queue_id": self._queue_id(cur, queue)})[0]
                )

            channel = self._run(channel_of)
            listener.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel)))
            channels[queue] = channel
        return listener

    def wait_for_tasks(
        self, queue: str, timeout: float, stop: Callable[[], bool] | None = None
    ) -> bool:
        """Sleep on LISTEN until a task of ``queue`` may have become Pending: no query
        reaches the server while it waits."""
        try:
            listener = self._listener(queue)
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0 and not (stop and stop()):
                for _ in listener.notifies(timeout=min(left, 1.0), stop_after=1):
                    return True
            return False
        except psycopg.OperationalError:
            self._local.listener = None  # a new one next time; sleep this time out
            select.select([], [], [], min(timeout, 1.0))
            return False

    # -- reading --------------------------------------------------------------------------
    def counts(self, queue: str) -> Counts:
        def verb(cur: psycopg.Cursor[Any]) -> Counts:
            queue_id = self._queue_id(cur, queue)
            rows = cur.execute(Q["counts"], {"queue_id": queue_id}).fetchall()
            return counts_by_queue([queue_id], ((queue_id, *r) for r in rows),
                                   lambda i: _blocked(cur, i))[queue_id]  # fmt: skip

        return self._run(verb)

    def all_counts(self, all_users: bool = False) -> dict[int, Counts]:
        owner = {"owner": None if all_users else self.user}

        def verb(cur: psycopg.Cursor[Any]) -> dict[int, Counts]:
            ids = [r[0] for r in cur.execute(Q["queue_list"], owner)]
            rows = cur.execute(Q["all_counts"], owner).fetchall()
            return counts_by_queue(ids, rows, lambda i: _blocked(cur, i))

        return self._run(verb)

    def tasks(
        self,
        queue: str,
        state: State | None = None,
        task_id: int | None = None,
        after: int = 0,
        limit: int | None = None,
        exitcode: int | None = None,
    ) -> list[Task]:
        def verb(cur: psycopg.Cursor[Any]) -> tuple[list[Any], dict[int, list[int]]]:
            params: dict[str, Any] = {"queue_id": self._queue_id(cur, queue), "after": after,
                                      "limit": limit, "exitcode": exitcode}  # fmt: skip
            if task_id is not None:
                rows = cur.execute(Q["task_by_id"], {**params, "task_id": task_id}).fetchall()
                rows = [r for r in rows if (state is None or r[4] == state.value)
                        and (exitcode is None or r[6] == exitcode)]  # fmt: skip
            elif state is not None:
                rows = cur.execute(Q["tasks_in_state"], {**params, "state": state.value}).fetchall()
            else:
                rows = cur.execute(Q["tasks_all"], params).fetchall()
            return rows, (self._requires_of(cur, [r[0] for r in rows]) if rows else {})

        rows, requires = self._run(verb)
        return [task_from_row(r, queue, requires.get(r[0], ())) for r in rows]

    def attempts(self, task_ids: Sequence[int]) -> dict[int, list[Attempt]]:
        params = {"ids": list(task_ids)}
        return self._run(lambda cur: attempts_by_task(cur.execute(Q["attempts_of"], params)))

    def running_workers(self, queue: str) -> list[str]:
        return self._running(queue, "running_workers")

    def running_jobs(self, queue: str) -> list[str]:
        return self._running(queue, "running_jobs")

    def _running(self, queue: str, query: str) -> list[str]:
        def verb(cur: psycopg.Cursor[Any]) -> list[str]:
            params = {"queue_id": self._queue_id(cur, queue)}
            return [r[0] for r in cur.execute(Q[query], params)]

        return self._run(verb)

    # -- changing by hand -----------------------------------------------------------------
    def set_state(
        self, queue: str, task_id: int, state: State, exitcode: int | None,
        message: str | None, who: str,
    ) -> State:  # fmt: skip
        def verb(cur: psycopg.Cursor[Any]) -> State:
            self._queue_id(cur, queue, change=True)
            params = {"task_id": task_id, "queue": queue, "owner": self.user}
            row = cur.execute(Q["task_for_change"], params).fetchone()
            if row is None:
                raise UnknownTask([task_id], f"task of queue {queue!r}")
            now = _one(cur, Q["now"])[0]
            change = admin_change(row, state, exitcode, message, who, now)
            new, queue_id = _one(cur, Q["set_state"], {
                "task_id": task_id, "state": state.value, "exitcode": exitcode,
                "message": change.message, "attempts": change.attempts, "now": now,
            })  # fmt: skip
            self._history(cur, [(task_id, *change.history)])
            woke = [queue_id] if new == State.PENDING.value else []
            if state is State.SUCCEEDED:
                woke += self._release(cur, [task_id])
            elif row[0] == State.SUCCEEDED.value:
                cur.execute(Q["block_dependents"], {"ids": [task_id]})
            self._notify(cur, woke)
            return State(new)

        # run again after a commit that was cut off, it records the change twice: harmless
        return self._run(verb)

    # -- resetting ------------------------------------------------------------------------
    def retry(
        self, queue: str, states: Sequence[State] = (State.FAILED, State.KILLED),
        priority: int | None = None,
    ) -> int:  # fmt: skip
        def verb(cur: psycopg.Cursor[Any]) -> int:
            queue_id = self._queue_id(cur, queue, change=True)
            params = {"queue_id": queue_id, "priority": priority,
                      "states": [s.value for s in states]}  # fmt: skip
            n = cur.execute(Q["retry"], params).rowcount
            self._notify(cur, [queue_id])
            return n

        return self._run(verb)

    def rerun(self, queue: str) -> int:
        def verb(cur: psycopg.Cursor[Any]) -> int:
            params = {"queue_id": self._queue_id(cur, queue, change=True)}
            cur.execute(Q["rerun_forget"], params)
            n = cur.execute(Q["rerun_reset"], params).rowcount
            cur.execute(Q["rerun_block"], params)
            self._notify(cur, [params["queue_id"]])
            return n

        return self._run(verb)

    # -- batch jobs -----------------------------------------------------------------------
    def add_job(self, queue: str, jobid: str, profile: str, workers: int) -> None:
        def verb(cur: psycopg.Cursor[Any]) -> None:
            cur.execute(Q["job_insert"], {"queue_id": self._queue_id(cur, queue, change=True),
                                          "jobid": jobid, "profile": profile,
                                          "workers": workers})  # fmt: skip

        self._run(verb)

    def jobs(self, queue: str) -> list[Job]:
        def verb(cur: psycopg.Cursor[Any]) -> list[Job]:
            rows = cur.execute(Q["jobs_of"], {"queue_id": self._queue_id(cur, queue)})
            return [Job(*row) for row in rows]

        return self._run(verb)

    def pending_fits(self, queue: str, max_seconds: float) -> bool:
        def verb(cur: psycopg.Cursor[Any]) -> bool:
            params = {"queue_id": self._queue_id(cur, queue), "max_seconds": max_seconds}
            return bool(_one(cur, Q["pending_fits"], params)[0])

        return self._run(verb)

    # -- sharing --------------------------------------------------------------------------
    def share(self, queue: str, role: str, mode: str | None) -> None:
        def verb(cur: psycopg.Cursor[Any]) -> None:
            params = {"name": queue, "owner": self.user, "grantee": role, "mode": mode}
            if mode is None:
                self._queue_id(cur, queue)
                cur.execute(Q["share_drop"], params)
                return
            if not _one(cur, Q["role_exists"], {"role": role})[0]:
                raise InvalidInput(f"no role {role!r} in this PostgreSQL cluster: share with "
                                   "the role another user connects as")  # fmt: skip
            if cur.execute(Q["share_set"], params).fetchone() is None:
                raise UnknownQueue(queue)

        self._run(verb)

    def shares(self, queue: str) -> list[tuple[str, str]]:
        def verb(cur: psycopg.Cursor[Any]) -> list[tuple[str, str]]:
            params = {"queue_id": self._queue_id(cur, queue)}
            return [(r[0], r[1]) for r in cur.execute(Q["shares_of"], params)]

        return self._run(verb)

    def open_to(self, group: str, members: Sequence[str] = ()) -> bool:
        """Make this schema a shared database (``qdo admin init-db``): the members of
        role ``group`` (created if missing, NOLOGIN) may use its tables, each under the
        row-level security policies, so each sees only its own queues and those shared
        with it.  Run by the role that owns the tables.  True if ``group`` was created."""

        def verb(cur: psycopg.Cursor[Any]) -> bool:
            created = not _one(cur, Q["role_exists"], {"role": group})[0]
            if created:
                cur.execute(pgsql.SQL("CREATE ROLE {} NOLOGIN").format(pgsql.Identifier(group)))
            names = {"schema": pgsql.Identifier(self.schema), "group": pgsql.Identifier(group)}
            cur.execute(pgsql.SQL(GRANTS).format(**names))
            for member in members:
                if not _one(cur, Q["role_exists"], {"role": member})[0]:
                    raise InvalidInput(
                        f"no role {member!r} in this PostgreSQL cluster: create "
                        f"it first (CREATE ROLE {member} LOGIN PASSWORD ...)"
                    )
                cur.execute(pgsql.SQL("GRANT {} TO {}").format(
                    pgsql.Identifier(group), pgsql.Identifier(member)))  # fmt: skip
            return created

        return self._run(verb)

    # -- archives -------------------------------------------------------------------------
    def export_queue(self, queue: str) -> Iterator[tuple[str, tuple[Any, ...]]]:
        # one snapshot for the whole export, read through a server-side cursor
        conn = self._connect()
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                row = conn.execute(Q["queue_get"], {"name": queue, "owner": self.user}).fetchone()
                if row is None:
                    raise UnknownQueue(queue)
                info = queue_info(row)
                params = {"queue_id": info.id}
                low, high, n = _one(conn, Q["export_span"], params)
                yield "queue", (info.name, info.state.value, row[3], info.max_retries,
                                info.max_lost, info.owner)  # fmt: skip
                yield "span", (low or 0, high or 0, n)
                for kind, name in (("task", "export_tasks"), ("requires", "export_requires"),
                                   ("attempt", "export_attempts")):  # fmt: skip
                    with conn.cursor(name=f"qdo_{kind}") as cur:
                        cur.itersize = 5000
                        for r in cur.execute(Q[name], params):
                            yield kind, tuple(r)
        finally:
            self._forget(conn)

    def _forget(self, conn: psycopg.Connection[Any]) -> None:
        with self._lock:
            self._connections.pop(conn, None)
        _close(conn)

    def import_queue(
        self, name: str, info: QueueInfo, span: tuple[int, int], records: Iterable[Any]
    ) -> int:
        def verb(cur: psycopg.Cursor[Any]) -> int:
            created = info.created.timestamp() if info.created else None
            row = cur.execute(Q["import_queue"], {
                "owner": self.user, "name": name, "state": info.state.value,
                "created": created if created is not None else _one(cur, Q["now"])[0],
                "max_retries": info.max_retries, "max_lost": info.max_lost,
            }).fetchone()  # fmt: skip
            if row is None:
                raise QueueExists(name)
            queue_id = row[0]
            offset = id_offset(span, int(_one(cur, Q["lock_last_task_id"])[0]))
            high = 0
            requires: list[tuple[int, int]] = []
            attempts: list[tuple[Any, ...]] = []
            with self._copy(cur, Q["copy_import_tasks"]) as copy:
                for kind, r in records:
                    if kind == "task":
                        high = max(high, r[0] + offset)
                        copy.write_row((r[0] + offset, queue_id, *r[1:]))
                    elif kind == "requires":
                        requires.append((r[0] + offset, r[1] + offset if r[2] else r[1]))
                    elif kind == "attempt":
                        attempts.append((r[0] + offset, *r[1:]))
            if requires:
                with self._copy(cur, Q["copy_requires"]) as copy:
                    for pair in requires:
                        copy.write_row(pair)
            if attempts:
                with self._copy(cur, Q["copy_import_attempts"]) as copy:
                    for a in attempts:
                        copy.write_row(a)
            cur.execute(Q["set_last_task_id"], {"last": high})
            self._notify(cur, [queue_id])
            return offset

        return self._once(verb)

    # -- housekeeping ---------------------------------------------------------------------
    def check(self) -> list[str]:
        return self._run(lambda cur: [r[0] for r in cur.execute(Q["check"])])

    def drop_schema(self) -> None:
        """Delete the schema and everything in it (tests use one schema each)."""
        self._run(
            lambda cur: cur.execute(
                pgsql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(pgsql.Identifier(self.schema))
            )
        )


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _pending_migrations(version: int) -> list[tuple[int, str]]:
    return [(v, s) for v, s in sorted(sql.migrations("postgres").items())
            if version < v <= SCHEMA_VERSION]  # fmt: skip


def _describe(conninfo: str, schema: str) -> str:
    """Where the data lives, without the password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as e:
        raise ConfigError(f"bad PostgreSQL connection settings: {_text(e)}") from None
    if "://" in conninfo:
        # as written, masked: libpq reads a password holding an unquoted '/' as a host
        # and a database name, so rebuilding the URL from its reading could show it
        return f"{mask_url(conninfo)} (schema {schema})"
    host = info.get("host") or "localhost"
    port = info.get("port") or "5432"
    user = f"{info['user']}@" if info.get("user") else ""
    return f"postgresql://{user}{host}:{port}/{info.get('dbname') or ''} (schema {schema})"


def _transient(error: psycopg.OperationalError) -> bool:
    """Is this a server that is (re)starting or unreachable for now, rather than wrong
    settings (bad password, unknown database), which waiting won't fix?"""
    text = str(error).lower()
    fatal = ("password authentication failed", "does not exist", "no password supplied",
             "role", "pg_hba.conf", "invalid", "sslmode")  # fmt: skip
    return not any(word in text for word in fatal)


def _one(
    on: psycopg.Cursor[Any] | psycopg.Connection[Any], query: str, params: Any = None
) -> tuple[Any, ...]:
    """The row a query always returns."""
    row = on.execute(query, params).fetchone()
    if row is None:
        raise DatabaseError(f"no row from: {query.splitlines()[0]}")
    return tuple(row)


def _close(conn: psycopg.Connection[Any]) -> None:
    with suppress(psycopg.Error):  # it was broken already: nothing to release
        conn.close()


def _text(error: BaseException) -> str:
    """An error of libpq on one line (its hints come on lines of their own), with any
    password it quotes masked."""
    return mask_url(" ".join(str(error).split()))


def _in_transaction(conn: psycopg.Connection[Any], verb: Callable[[psycopg.Cursor[Any]], T]) -> T:
    """Run ``verb`` on a cursor of ``conn``, rolled back if it raises (unless the
    connection broke: then there is nothing to roll back); the caller commits."""
    with conn.cursor() as cur:
        try:
            return verb(cur)
        except BaseException:
            if not conn.closed and not conn.broken:
                conn.rollback()
            raise


def _blocked(cur: psycopg.Cursor[Any], queue_id: int) -> int:
    """How many Waiting tasks of the queue wait on a requirement that cannot succeed."""
    return int(_one(cur, Q["blocked"], {"queue_id": queue_id})[0])
