"""The SQLite store: one file, WAL mode, no server.  Safe for many processes on one machine.

Every write is a ``BEGIN IMMEDIATE`` transaction, so writers queue on SQLite's
single write lock (with a busy timeout) instead of failing half-way; readers
never block in WAL mode.  Connections are per thread and per process: a store
object survives ``fork`` and may be shared by threads.  The verbs are
``sqlstore.SQLStore``'s; this module is the transport.
"""

from __future__ import annotations

import errno
import functools
import itertools
import json
import operator
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

from ..errors import DatabaseError, DiskFull, NotQdoDatabase, QdoWarning
from ..runtime import Log
from . import sql
from .base import login_name
from .dialect import NEW_TASK_COLUMNS, SCHEMA_VERSION, Dialect, Repeat, Tx, pending_migrations
from .sqlstore import SQLStore

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

#: Seconds a writer waits for SQLite's write lock before giving up.
BUSY_TIMEOUT = 120.0
#: A write transaction that holds the (only) write lock longer than this, in seconds,
#: gives every lease that ran out meanwhile, or would soon, twice as long before it
#: commits (``extend_leases``): the time the holders could not renew, and as long again
#: for its commit and for their renewals to get through.
LONG_WRITE = 0.25

#: Filesystems on which SQLite's locking is not reliable.
NETWORK_FILESYSTEMS = {
    "nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "beegfs", "ceph",
    "fuse.sshfs", "9p", "afs", "panfs", "fuse.glusterfs",
}  # fmt: skip

SCHEMA = sql.load("sqlite", "schema.sql")["create_schema"]
T = TypeVar("T")
log = Log("qdo.sqlite")


class _Spelling:
    """How SQLite spells the hooks of the shared SQL (see sql/queries.sql)."""

    def escape(self, text: str) -> str:
        return text

    def param(self, name: str) -> str:
        return f":{name}"

    def now(self) -> str:
        return ":now"  # read by the transaction once it holds the write lock

    # lists and tables of rows are spelled when the statement runs, for their size
    # (SQLiteDialect.encode): these mark where
    def in_list(self, name: str, sql_type: str) -> str:
        return f"\0in {name}\0"

    def rows(self, name: str, columns: list[tuple[str, str]]) -> str:
        return f"\0rows {name}\0"

    def rowlock(self, clause: str) -> str:
        return ""  # a write transaction holds the whole database

    def id_list(self, expr: str) -> str:
        return f"group_concat({expr})"

    def among(self, name: str, sql_type: str) -> None:
        return None


Q = sql.compile_queries("sqlite", _Spelling())


class SQLiteStore(SQLStore):
    """The store of one SQLite file, acting for ``user`` (default: the login name)."""

    def __init__(
        self, path: str | os.PathLike[str], user: str | None = None,
        on_create: Callable[[], object] | None = None,
    ) -> None:  # fmt: skip
        self.dialect = SQLiteDialect(path, user or login_name(), on_create)
        self.path = self.dialect.path
        super().__init__(self.dialect, self.dialect.user)
        self._looked: dict[str, int] = {}  # data_version at the last look, by queue

    def wait_for_tasks(
        self, queue: str, timeout: float, stop: Callable[[], bool] | None = None
    ) -> bool:
        """Poll, cheaply: ``PRAGMA data_version`` says, from the WAL's shared memory and
        without reading the file, whether another connection has committed since it
        was last asked; only then is the queue looked at (a read: no lock a writer
        would wait for).  A few milliseconds after a task is added, a waiting agent
        has it."""
        d = self.dialect
        deadline = time.monotonic() + timeout
        pause = 0.001
        while (left := deadline - time.monotonic()) > 0 and not (stop and stop()):
            if d._ready():
                version = d._conn().execute("PRAGMA data_version").fetchone()[0]
                # (what it saw at its last look, also in an earlier call: Pending tasks
                # that this agent may not take, near its job's end, say, wake it once)
                if version != self._looked.get(queue):
                    self._looked[queue], pause = version, 0.001
                    if self._run(lambda tx: tx.row("pending_any", queue=queue,
                                                   owner=self.user), write=False):  # fmt: skip
                        return True
            time.sleep(min(left, pause))
            pause = min(pause * 2, 0.02)
        return False


class SQLiteDialect(Dialect):
    name = "sqlite"
    clock_param = True
    queries = Q

    def __init__(
        self, path: str | os.PathLike[str], user: str,
        on_create: Callable[[], object] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.path = Path(path).expanduser().absolute()
        self.location = str(self.path)
        self.user = user
        self.on_create = on_create  # told when this makes the file
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        self._texts: dict[tuple[Any, ...], _Spelled] = {}  # statements spelled for their sizes
        # Reading makes nothing: until the first write, a file that does not exist
        # reads as an empty database (nor is its folder made).
        self._made = self.path.exists()
        if self._made:
            self._open()

    def _ready(self) -> bool:
        """Whether the file is there (made by this store, or by another since)."""
        if not self._made and self.path.exists():
            self._open()
            self._made = True
        return self._made

    def _make(self) -> None:
        """The first write: make the folder and the file."""
        self._open()
        self._made = True
        if self.on_create is not None:
            self.on_create()

    def _open(self) -> None:
        """Make (if missing) and check the file; migrate it to this qdo's schema."""
        # yours alone: the folder 0700 when qdo makes it, the file 0600 (SQLite gives its
        # -wal and -shm files the file's own permissions)
        made = False
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                made = True
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
                stacklevel=5,
            )
        try:
            self._initialize()
        except BaseException:
            if made:  # a file this made and could not set up is no database: no trace
                self.close()
                for suffix in ("", "-wal", "-shm", "-journal"):
                    with suppress(OSError):
                        os.unlink(f"{self.path}{suffix}")
            raise

    def _empty(self) -> sqlite3.Connection:
        """This thread's empty database in memory, of the current schema: what a file
        not made yet reads as."""
        conn: sqlite3.Connection | None = getattr(self._local, "empty", None)
        if conn is None:
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            for statement in _statements(SCHEMA):
                conn.execute(statement)
            for _target, script in pending_migrations("sqlite", 1, self.location):
                for statement in _statements(script):
                    conn.execute(statement, {"user": self.user})
            self._local.empty = conn
        return conn

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
            conn.row_factory = sqlite3.Row  # rows by column name
            # NORMAL in WAL mode: a crash of the process loses nothing committed; only
            # a power loss may drop the last transactions (never corrupts the file).
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA temp_store = MEMORY")  # (big batches pass through TEMP tables)
        except sqlite3.DatabaseError as e:
            raise NotQdoDatabase(str(self.path), str(e)) from e
        return conn

    def run(
        self, verb: Callable[[Tx], T], *, write: bool = True, repeat: Repeat = Repeat.SAFE
    ) -> T:
        del repeat  # a local file does not drop its connection
        if not write:
            with self._read() as conn:
                return verb(Tx(self, conn, time.time()))
        if not self._made and not self._ready():
            self._make()
        return self._write(verb)

    def _write(self, verb: Callable[[Tx], T]) -> T:
        """Run ``verb`` in a write transaction: it takes the write lock at once, all or
        nothing.  A full disk (while writing, or at the commit) rolls it back and raises
        DiskFull.  (A plain call, not a context manager: it runs at every claim and
        report, and a generator's frames cost there.)"""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        began = time.monotonic()
        try:
            # the clock is read once the write lock is ours: a lease dated from before a
            # wait behind another writer would be short by that wait
            out = verb(self.begin(conn, write=True, now=time.time()))
            held = time.monotonic() - began
            if held > LONG_WRITE:
                # every holder's renewal waited behind this one: it must not cost them
                # their leases (the next writer in line may be one who looks for expiry)
                Tx(self, conn).count("extend_leases", by=2 * held)
            conn.execute("COMMIT")
        except BaseException as e:
            if conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                conn.execute("ROLLBACK")
            if _disk_full(e):
                self.broke()
                raise DiskFull(str(self.path), str(e)) from e
            raise
        self.went_through()
        return out

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for several statements."""
        conn = self._conn() if self._ready() else self._empty()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[Tx]:
        with self._read() as conn:
            yield Tx(self, conn, time.time())

    def clock(self, cur: Any) -> float:
        return time.time()

    def tuple_cursor(self, cur: Any) -> Any:
        plain = cur.cursor()
        plain.row_factory = None
        return plain

    @staticmethod
    def column_names(cur: Any) -> tuple[str, ...]:
        return tuple(c[0] for c in cur.description)

    def encode(self, cur: Any, name: str, st: sql.Statement, params: dict[str, Any]) -> str:
        """A few values go as parameters of their own (``IN (:ids_0, :ids_1)``, a
        ``VALUES`` list of rows), which SQLite reads fastest; more, since a statement
        takes at most 32,766 parameters, go as one JSON array (``json_each``) for a
        list, and for a table into a TEMP table of this connection (``executemany``):
        half the cost of picking each row's values out of JSON (and exact, where JSON
        text cuts at a NUL)."""
        sizes = [len(params[n]) for n in st.sized]
        key = (name, *sizes)
        spelled = self._texts.get(key)
        if spelled is None:
            spelled = self._texts[key] = _Spelled(name, st, sizes)
        for param, names, table in spelled.parts:
            values = params.pop(param)
            if names is None:
                if table:
                    make, empty, fill = spelled.temps[param]
                    cur.execute(make)
                    cur.execute(empty)
                    cur.executemany(fill, values)
                else:
                    params[param] = _json(values)
            elif table:
                params.update(zip(names, chain.from_iterable(values), strict=True))
            else:
                params.update(zip(names, values, strict=True))
        return spelled.text

    def insert(
        self, cur: Any, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> None:
        cur.executemany(insert_statement(table, tuple(columns)), rows)

    def insert_tasks(self, cur: Any, rows: Iterable[tuple[Any, ...]]) -> None:
        """A run of tasks that differ only in their ids and payloads (a load of shell
        commands, most often) goes by ``insert_same``; short runs by ``executemany``."""
        plain = insert_statement("tasks", NEW_TASK_COLUMNS)
        for _, run in itertools.groupby(rows, key=_SAME_BUT_PAYLOAD):
            while chunk := list(itertools.islice(run, RUN_CHUNK)):
                if len(chunk) < SHORT_RUN:
                    cur.executemany(plain, chunk)
                else:
                    first = chunk[0]
                    same = dict(zip(NEW_TASK_COLUMNS[3:], first[3:], strict=True))
                    same["queue_id"] = first[1]
                    self.insert_same(cur, first[0], same, [r[2] for r in chunk])

    def insert_same(
        self, cur: Any, first: int, same: dict[str, Any], payloads: Sequence[str]
    ) -> None:
        """One JSON array of payloads a statement, which SQLite unpacks itself: three
        times the rows a second of ``executemany``, which binds nine parameters a row."""
        for start in range(0, len(payloads), RUN_CHUNK):
            # (not ASCII-escaped: smaller, and a lone surrogate is refused by the driver
            # as it is by executemany)
            text = _PAYLOADS.encode(payloads[start : start + RUN_CHUNK])
            cur.execute(_INSERT_RUN, {**same, "first": first + start, "payload": text})

    def stream(self, tx: Tx, name: str, params: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
        cur = tx.cur.cursor()
        cur.row_factory = None  # plain tuples
        yield from cur.execute(self.queries[name].text, params)

    def check(self, tx: Tx) -> list[str]:
        problems = [r[0] for r in tx.rows("integrity_check") if r[0] != "ok"]
        return problems + [f"foreign key: {tuple(r)}" for r in tx.rows("foreign_key_check")]

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
                self._write(self._lay_out)
            finally:
                conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as e:
            raise NotQdoDatabase(str(self.path), str(e)) from e

    def _lay_out(self, tx: Tx) -> None:
        """Make qdo's tables in an empty file, or migrate them to this qdo's version."""
        conn = tx.cur
        version = self._schema_version(conn)  # again, now that we hold the lock
        if version is None:
            log.info("qdo: making the database %s", self.path)
            for statement in _statements(SCHEMA):
                conn.execute(statement)
            version = 1
        elif version < SCHEMA_VERSION:
            log.info("qdo: migrating %s from schema version %d to %d", self.path,
                     version, SCHEMA_VERSION)  # fmt: skip
        for _target, script in pending_migrations("sqlite", version, self.location):
            for statement in _statements(script):
                conn.execute(statement, {"user": self.user})
        broken = conn.execute(Q["foreign_key_check"].text).fetchall()
        if broken:
            raise DatabaseError("migration left broken references: "
                                f"{[tuple(r) for r in broken[:5]]}")  # fmt: skip

    def _schema_version(self, conn: sqlite3.Connection) -> int | None:
        """The qdo schema version of the file, None if it is empty; raises if the file
        belongs to something else or to a newer qdo."""
        tables = {row[0] for row in conn.execute(Q["user_tables"].text)}
        if not tables:
            return None
        if "qdo_schema" not in tables:
            raise NotQdoDatabase(str(self.path), f"it has tables {', '.join(sorted(tables))}")
        version = int(conn.execute(Q["schema_version"].text).fetchone()["version"])
        pending_migrations("sqlite", version, self.location)  # raises if too new
        return version

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        if os.getpid() == self._pid:
            for conn in connections:
                conn.close()
        self._local = threading.local()


_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)
_PAYLOADS = json.JSONEncoder(separators=(",", ":"), check_circular=False, ensure_ascii=False)
#: Consecutive new tasks alike in all but id and payload: one statement (insert_tasks)
#: for up to RUN_CHUNK of them, if there are SHORT_RUN or more.
_SAME_BUT_PAYLOAD = operator.itemgetter(1, 3, 4, 5, 6, 7, 8)
RUN_CHUNK = 20_000
SHORT_RUN = 16
_INSERT_RUN = f"""INSERT INTO tasks ({", ".join(NEW_TASK_COLUMNS)})
SELECT :first + key, :queue_id, value, :is_json, :state, :priority, :created, :timeout,
       :max_retries
FROM json_each(:payload) ORDER BY key"""
#: Lists and tables of rows up to this long go as parameters of their own, longer ones
#: as one JSON array.
INLINE = 64


class _Spelled:
    """A statement spelled for the sizes of its lists and tables: its text, and for
    each list or table, the names of the parameters that its values (a table's row by
    row) go to, None for one that goes as JSON (a list) or through a TEMP table (a
    table: ``temps`` holds the statements that make, empty and fill it), and whether
    it is a table."""

    __slots__ = ("parts", "temps", "text")

    def __init__(self, statement: str, st: sql.Statement, sizes: Sequence[int]) -> None:
        text = st.text
        self.parts: list[tuple[str, tuple[str, ...] | None, bool]] = []
        self.temps: dict[str, tuple[str, str, str]] = {}
        for name, size in zip(st.lists, sizes, strict=False):
            names = None if size > INLINE else tuple(f"{name}_{i}" for i in range(size))
            if names is None:
                spelled = f"IN (SELECT value FROM json_each(:{name}))"
            else:
                spelled = f"IN ({', '.join(':' + n for n in names)})"
            self.parts.append((name, names, False))
            text = text.replace(f"\0in {name}\0", spelled)
        for (name, columns), size in zip(st.tables, sizes[len(st.lists) :], strict=True):
            if size > INLINE:
                names = None
                temp = f"qdo_{statement}_{name}"
                self.temps[name] = (
                    f"CREATE TEMP TABLE IF NOT EXISTS {temp} ({', '.join(columns)})",
                    f"DELETE FROM temp.{temp}",
                    f"INSERT INTO temp.{temp} VALUES ({', '.join('?' * len(columns))})",
                )
                spelled = f"temp.{temp} AS {name}"
            elif size == 0:
                names = ()
                nothing = ", ".join(f"NULL AS {column}" for column in columns)
                spelled = f"(SELECT {nothing} WHERE 0) AS {name}"
            else:
                names = tuple(f"{name}_{i}_{j}" for i in range(size) for j in range(len(columns)))
                picked = ", ".join(f"column{j + 1} AS {c}" for j, c in enumerate(columns))
                width = len(columns)
                values = ", ".join("(" + ", ".join(":" + n for n in names[i : i + width]) + ")"
                                   for i in range(0, len(names), width))  # fmt: skip
                spelled = f"(SELECT {picked} FROM (VALUES {values})) AS {name}"
            self.parts.append((name, names, True))
            text = text.replace(f"\0rows {name}\0", spelled)
        self.text = text


def _json(values: Any) -> str:
    """A list parameter as the JSON text json_each reads (ids, the commonest, fast)."""
    if all(type(v) is int for v in values):
        return f"[{','.join(map(str, values))}]"
    return _ENCODER.encode(values)


@functools.cache  # (it is asked at every add; there are two tables and a few columns)
def insert_statement(table: str, columns: tuple[str, ...]) -> str:
    """The INSERT that bulk inserts run (``executemany``) for these columns."""
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


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
