"""The PostgreSQL store: one server shared by workers on many nodes (psycopg 3).

Install with ``pip install 'qdo-queue[postgres]'``.  The tables live in their own
schema (``db_schema``, default ``qdo``), made by the first write (until then a read
sees it empty and changes nothing).  Every verb is one transaction at READ COMMITTED;
claims are one ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)``, so
claimers never wait for each other.  Leases are measured by the server's clock.
Connections are per thread and per process; a connection that drops (server restart,
``pg_terminate_backend``) is replaced and the verb runs again when that cannot apply it
twice.  Waiting workers LISTEN for new Pending tasks instead of polling.  The verbs
are ``sqlstore.SQLStore``'s; this module is the transport, and what only a shared
server has (roles to share queues with).
"""

from __future__ import annotations

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
    DiskFull,
    InvalidInput,
    NotAllowed,
    NotQdoDatabase,
    UnknownQueue,
)
from ..runtime import Log
from . import sql
from .base import login_name
from .dialect import SCHEMA_VERSION, Dialect, Repeat, Row, Tx, pending_migrations
from .sqlstore import SQLStore

try:
    import psycopg
    from psycopg import sql as pgsql
    from psycopg.rows import dict_row, tuple_row
except ImportError as e:  # pragma: no cover - depends on the install
    raise ConfigError(
        "the PostgreSQL backend needs psycopg 3: pip install 'qdo-queue[postgres]'"
    ) from e

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

SCHEMA = sql.load("postgres", "schema.sql")["create_schema"]
GRANTS = sql.load("postgres", "schema.sql")["grant_to_users"]

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,39}")
#: How often a verb is tried when its connection keeps dropping.
ATTEMPTS = 3
#: Seconds one connection attempt may take (a host that drops packets says nothing).
CONNECT_TIMEOUT = 5
log = Log("qdo.postgres")

T = TypeVar("T")


class _Spelling:
    """How PostgreSQL spells the hooks of the shared SQL (see sql/queries.sql)."""

    def escape(self, text: str) -> str:
        return text.replace("%", "%%")

    def param(self, name: str) -> str:
        return f"%({name})s"

    def now(self) -> str:
        return "qdo_now()"

    def in_list(self, name: str, sql_type: str) -> str:
        return f"= ANY(CAST(%({name})s AS {sql_type}[]))"

    def rows(self, name: str, columns: list[tuple[str, str]]) -> str:
        arrays = ", ".join(f"CAST(%({name}__{column})s AS {sql_type}[])"
                           for column, sql_type in columns)  # fmt: skip
        return f"unnest({arrays}) AS {name} ({', '.join(c for c, _ in columns)})"

    def rowlock(self, clause: str) -> str:
        return clause

    def id_list(self, expr: str) -> str:
        return f"string_agg(CAST({expr} AS text), ',')"

    def among(self, name: str, sql_type: str) -> str:
        return self.in_list(name, sql_type)


Q = sql.compile_queries("postgres", _Spelling())


class _Unsure(Exception):
    """The connection dropped while a COMMIT was under way: it may have happened."""


class PostgresStore(SQLStore):
    """The store of one schema of a PostgreSQL database, acting for ``user`` (default:
    the login name; on a shared database, the role it connects as)."""

    def __init__(
        self, conninfo: str, *, schema: str = "qdo", user: str | None = None,
        reconnect_seconds: float = 60.0, on_create: Callable[[], object] | None = None,
        pooled: bool = False,
    ) -> None:  # fmt: skip
        self.dialect = PostgresDialect(conninfo, schema, reconnect_seconds, on_create, pooled)
        self.conninfo, self.schema = conninfo, schema
        if self.dialect.row_security and user is None:
            user = self.dialect.role
        super().__init__(self.dialect, user or login_name())

    @property
    def row_security(self) -> bool:
        """Whether the tables' row-level security applies to this role (a shared
        database, ``qdo admin init-db``); then the role's own name is its user."""
        return self.dialect.row_security

    @property
    def role(self) -> str:
        return self.dialect.role

    # -- waiting --------------------------------------------------------------------------
    def listen(self, queue: str) -> None:
        self._listener(queue)

    def _listener(self, queue: str) -> psycopg.Connection[Any]:
        """This thread's LISTEN connection, listening to ``queue``'s channel."""
        d = self.dialect
        local = d.local
        listener: psycopg.Connection[Any] | None = getattr(local, "listener", None)
        if listener is None or listener.closed or listener.broken:
            listener = local.listener = d.connect(autocommit=True)
            local.channels = {}
        channels: dict[str, str] = local.channels
        if queue not in channels:

            def channel_of(tx: Tx) -> str:
                row = tx.one("queue_channel", queue_id=self._queue(tx, queue)["id"])
                return str(row["channel"])

            channel = d.run(channel_of, write=False)
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
            self.dialect.local.listener = None  # a new one next time; sleep this time out
            select.select([], [], [], min(timeout, 1.0))
            return False

    # -- sharing --------------------------------------------------------------------------
    def share(self, queue: str, role: str, mode: str | None) -> None:
        def verb(tx: Tx) -> None:
            params = {"name": queue, "owner": self.user, "grantee": role, "mode": mode}
            if mode is None:
                self._queue(tx, queue)
                tx.count("share_drop", **params)
                return
            if not tx.one("role_exists", role=role)["found"]:
                raise InvalidInput(f"no role {role!r} in this PostgreSQL cluster: share with "
                                   "the role another user connects as")  # fmt: skip
            if tx.row("share_set", **params) is None:
                raise UnknownQueue(queue)

        self._run(verb)

    def shares(self, queue: str) -> list[tuple[str, str]]:
        def verb(tx: Tx) -> list[tuple[str, str]]:
            rows = tx.rows("shares_of", queue_id=self._queue(tx, queue)["id"])
            return [(r["grantee"], r["mode"]) for r in rows]

        return self._run(verb, write=False)

    def open_to(self, group: str, members: Sequence[str] = ()) -> bool:
        """Make this schema a shared database (``qdo admin init-db``): the members of
        role ``group`` (created if missing, NOLOGIN) may use its tables, each under the
        row-level security policies, so each sees only its own queues and those shared
        with it.  Run by the role that owns the tables.  True if ``group`` was created."""

        def verb(tx: Tx) -> bool:
            cur = tx.cur
            created = not tx.one("role_exists", role=group)["found"]
            if created:
                cur.execute(pgsql.SQL("CREATE ROLE {} NOLOGIN").format(pgsql.Identifier(group)))
            names = {"schema": pgsql.Identifier(self.schema), "group": pgsql.Identifier(group)}
            cur.execute(pgsql.SQL(GRANTS).format(**names))
            for member in members:
                if not tx.one("role_exists", role=member)["found"]:
                    raise InvalidInput(
                        f"no role {member!r} in this PostgreSQL cluster: create "
                        f"it first (CREATE ROLE {member} LOGIN PASSWORD ...)"
                    )
                cur.execute(pgsql.SQL("GRANT {} TO {}").format(
                    pgsql.Identifier(group), pgsql.Identifier(member)))  # fmt: skip
            return created

        return self._run(verb)

    # -- housekeeping ---------------------------------------------------------------------
    def drop_schema(self) -> None:
        """Delete the schema and everything in it (tests use one schema each)."""
        drop = pgsql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(pgsql.Identifier(self.schema))
        self._run(lambda tx: tx.cur.execute(drop))
        self.dialect._made = False


class PostgresDialect(Dialect):
    """``pooled``: the connections go through a pooler in transaction mode (PgBouncer's
    ``pool_mode = transaction``), which hands each transaction to whichever server
    session is free.  Nothing may then rest on a session: every transaction sets the
    schema itself, statements are not prepared, and nobody LISTENs (workers look again
    now and then; NOTIFY still goes out, for those connected directly)."""

    name = "postgres"
    notifies = True
    queries = Q

    def __init__(
        self, conninfo: str, schema: str, reconnect_seconds: float = 60.0,
        on_create: Callable[[], object] | None = None, pooled: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.pooled = pooled
        self.listens = not pooled
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigError(
                f"db_schema {schema!r}: use 1 to 40 characters from a-z 0-9 _, not starting "
                "with a digit"
            )
        self.conninfo = conninfo
        self.schema = schema
        self.location = _describe(conninfo, schema)
        #: how long a lost connection is tried again (a server restart) before an error
        self.reconnect_seconds = reconnect_seconds
        self.on_create = on_create  # told when this makes the schema
        self.local = threading.local()
        self._lock = threading.Lock()
        # every connection this process opened, and the thread it belongs to
        self._connections: dict[psycopg.Connection[Any], threading.Thread] = {}
        self._pid = os.getpid()
        self._made = False  # whether the schema holds qdo's tables (see _stand_in)
        try:
            session = self._initialize()
            self.role, self.row_security = str(session["role"]), bool(session["row_security"])
        except BaseException:
            self.close()  # a refused database keeps no session open
            raise

    # -- connections and transactions ---------------------------------------------------
    def connect(self, autocommit: bool = False) -> psycopg.Connection[Any]:
        """A new connection; while the server is away (a restart), keep trying for
        ``reconnect_seconds`` before giving up."""
        deadline = time.monotonic() + self.reconnect_seconds
        delay = 0.1
        said = False
        while True:
            try:
                # (in autocommit for the SET below: one round trip, not BEGIN, SET, COMMIT)
                conn = psycopg.connect(self.conninfo, autocommit=True,
                                       connect_timeout=CONNECT_TIMEOUT, row_factory=dict_row,
                                       application_name="qdo",
                                       prepare_threshold=None if self.pooled else 5)  # fmt: skip
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
                                "up to %.0f s (setting pg_reconnect_seconds, "
                                "QDO_PG_RECONNECT_SECONDS)", self.location, _text(e),
                                left)  # fmt: skip
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        if said:
            log.warning("qdo: reached PostgreSQL at %s again", self.location)
        try:
            if not self.pooled:  # (pooled, each transaction sets it: see begin)
                conn.execute(pgsql.SQL("SET search_path TO {}, pg_catalog").format(
                    pgsql.Identifier(self.schema)))  # fmt: skip
            conn.autocommit = autocommit
        except BaseException:
            _close(conn)
            raise
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
            self.local = threading.local()
            self._connections = {}
            self._pid = os.getpid()
        conn: psycopg.Connection[Any] | None = getattr(self.local, "conn", None)
        if conn is None or conn.closed:
            conn = self.local.conn = self.connect()
        return conn

    def _drop(self) -> None:
        """Forget this thread's connection (it broke)."""
        conn = getattr(self.local, "conn", None)
        self.local.conn = None
        if conn is not None:
            self._forget(conn)

    def _forget(self, conn: psycopg.Connection[Any]) -> None:
        with self._lock:
            self._connections.pop(conn, None)
        _close(conn)

    def begin(self, cur: Any, *, write: bool, now: float | None = None) -> Tx:
        if self.pooled:
            cur.execute(self._path_here())
        return super().begin(cur, write=write, now=now)

    def _path_here(self) -> pgsql.Composed:
        """The schema for this transaction alone (a pooled session may be anyone's)."""
        return pgsql.SQL("SET LOCAL search_path TO {}, pg_catalog").format(
            pgsql.Identifier(self.schema))  # fmt: skip

    def run(
        self, verb: Callable[[Tx], T], *, write: bool = True, repeat: Repeat = Repeat.SAFE
    ) -> T:
        """Run ``verb`` in one transaction, on a new connection if the old one dropped.

        A verb that failed before its COMMIT did nothing and runs again (unless it
        reads a stream, ``Repeat.NEVER``).  One whose COMMIT was cut off runs again only
        if ``Repeat.SAFE`` (a second run then finds its work done and does nothing
        more), else the error says the outcome is unknown.
        """
        if write and not self._made:
            self._make()
        for attempt in range(1, ATTEMPTS + 1):
            try:
                conn = self._conn()
            except DatabaseError:
                self.broke()
                raise
            try:
                with conn.cursor() as cur:
                    try:
                        tx = self.begin(cur, write=write)
                        stood_in = not self._made and self._stand_in(tx)
                        out = verb(tx)
                        if stood_in:
                            conn.rollback()  # the stand-in goes, with all it held
                    except BaseException:
                        if not conn.closed and not conn.broken:
                            conn.rollback()
                        raise
                try:
                    conn.commit()
                except psycopg.OperationalError as e:
                    raise _Unsure() from e
                self.went_through()
                return out
            except _Unsure as e:
                self.broke()
                self._drop()
                if repeat is not Repeat.SAFE or attempt == ATTEMPTS:
                    raise DatabaseError(
                        f"the connection to {self.location} dropped during a commit: "
                        "whether it took effect is unknown (look before doing it again)"
                    ) from e
            except psycopg.errors.InsufficientPrivilege as e:
                # the policies of a shared database, or a privilege the role lacks
                raise NotAllowed(self.location, _text(e)) from e
            except psycopg.errors.DiskFull as e:  # rolled back whole: nothing was written
                self.broke()
                raise DiskFull(self.location, _text(e)) from e
            except psycopg.errors.TransactionRollback as e:
                # chosen as a deadlock's victim: rolled back whole, so it runs again
                if attempt == ATTEMPTS or repeat is Repeat.NEVER:
                    raise DatabaseError(f"PostgreSQL at {self.location}: {_text(e)}") from e
                time.sleep(0.01 * attempt)
            except psycopg.OperationalError as e:
                broken = conn.closed or conn.broken
                self.broke()
                self._drop()
                if repeat is Repeat.NEVER:
                    raise DatabaseError(
                        f"the connection to {self.location} dropped: {_text(e)} (nothing was "
                        "written unless the error came at the very end: look, with `qdo "
                        "status`, before doing it again)"
                    ) from e
                if not broken or attempt == ATTEMPTS:
                    raise DatabaseError(f"PostgreSQL at {self.location}: {_text(e)}") from e
            except psycopg.Error as e:  # any other: the schema dropped under it, say
                raise DatabaseError(f"PostgreSQL at {self.location}: {_text(e)}") from e
        raise AssertionError("unreachable")

    @contextmanager
    def snapshot(self) -> Iterator[Tx]:
        # a connection of its own, one snapshot for the whole read, server-side cursors
        conn = self.connect()
        try:
            with conn.transaction():
                made = self._made  # else not read-only: it may make a stand-in
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"
                             + (" READ ONLY" if made else ""))  # fmt: skip
                with conn.cursor() as cur:
                    if self.pooled:
                        cur.execute(self._path_here())
                    tx = Tx(self, cur)
                    stood_in = not made and self._stand_in(tx)
                    yield tx
                    if stood_in:
                        raise psycopg.Rollback()  # the stand-in goes, with all it held
        finally:
            self._forget(conn)

    def stream(self, tx: Tx, name: str, params: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
        with tx.cur.connection.cursor(name=f"qdo_{name}", row_factory=tuple_row) as cur:
            cur.itersize = 5000
            yield from cur.execute(self.queries[name].text, params)

    def clock(self, cur: Any) -> float:
        return float(cur.execute(Q["now"].text).fetchone()["now"])

    def tuple_cursor(self, cur: Any) -> Any:
        return cur.connection.cursor(row_factory=tuple_row)

    @staticmethod
    def column_names(cur: Any) -> tuple[str, ...]:
        return tuple(c.name for c in cur.description)

    def encode(self, cur: Any, name: str, st: sql.Statement, params: dict[str, Any]) -> str:
        for table, columns in st.tables:  # a table of rows: an array per column
            rows = params.pop(table)
            for i, column in enumerate(columns):
                params[f"{table}__{column}"] = [r[i] for r in rows]
        return st.text

    def insert(
        self, cur: Any, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> None:
        """COPY; PostgreSQL refuses COPY FROM into a table whose row-level security
        applies, so for such a role the rows go to a temporary table first, then in
        with one INSERT that the policies check."""
        cols = pgsql.SQL(", ").join(pgsql.Identifier(c) for c in columns)
        target = pgsql.Identifier(table)
        if self.row_security:
            staged = pgsql.Identifier(f"qdo_new_{table}")
            cur.execute(pgsql.SQL("CREATE TEMPORARY TABLE IF NOT EXISTS {} (LIKE {} INCLUDING "
                                  "DEFAULTS INCLUDING IDENTITY) ON COMMIT DELETE ROWS").format(
                                      staged, target))  # fmt: skip
            into: pgsql.Composable = pgsql.SQL("pg_temp.{}").format(staged)
        else:
            into = target
        with cur.copy(pgsql.SQL("COPY {} ({}) FROM STDIN").format(into, cols)) as copy:
            for row in rows:
                copy.write_row(row)
        if self.row_security:
            cur.execute(pgsql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
                target, cols, cols, into))  # fmt: skip

    def notify(self, tx: Tx, queue_ids: list[int]) -> None:
        tx.rows("notify", ids=queue_ids)

    def grew(self, tx: Tx, table: str, rows: int) -> None:
        """ANALYZE ``table`` if the planner believes it holds fewer than half the rows
        just added (a table never analyzed says -1).  Until autovacuum gets to a table
        that was empty, PostgreSQL plans each claim as a sort of every Pending task
        (0.15 s a claim at 600,000; the index's order once it knows).  Sampled: a
        fraction of a second at any size.  A role that does not own the table only
        gets a warning; autovacuum does it later."""
        known = tx.one("planned_rows", table=table)["n"]
        if known < rows / 2:
            tx.cur.execute(pgsql.SQL("ANALYZE {}").format(pgsql.Identifier(table)))

    def check(self, tx: Tx) -> list[str]:
        return [r["problem"] for r in tx.rows("check")]

    # -- the schema: made on the first write ----------------------------------------------
    # Until then, reads see it as an empty qdo schema: each read makes one in its own
    # transaction (DDL is transactional in PostgreSQL) and rolls it back, so that looking
    # (`qdo list`, a `connect()` that goes no further) leaves the database as it was.
    def _lay_out(self, tx: Tx) -> bool:
        """Make the schema and qdo's tables where missing, and migrate them to this qdo's
        version; True if it made the tables.  One at a time (a lock of this database,
        held to the end of the transaction)."""
        cur = tx.cur
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (0x71646F,))
        version = self._version(tx)  # again, now that we hold the lock
        if version is None:
            cur.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                pgsql.Identifier(self.schema)))  # fmt: skip
            cur.execute(SCHEMA)
        for _target, script in pending_migrations(
            "postgres", int(tx.one("schema_version")["version"]), self.location
        ):
            cur.execute(script)
        return version is None

    def _stand_in(self, tx: Tx) -> bool:
        """Before a read while the schema is not made: make it in this transaction, for
        the caller to roll back; False (nothing to roll back) if another process made it
        meanwhile."""
        if self._version(tx) is not None:
            self._made = True
            return False
        self._lay_out(tx)
        return True

    def _make(self) -> None:
        """The first write: make the schema and its tables, for good."""
        self._made = True  # (the run below writes)
        try:
            made = self.run(self._lay_out)
        except BaseException:
            self._made = False
            raise
        if made:
            log.info("qdo: made qdo's tables at %s", self.location)
            if self.on_create is not None:
                self.on_create()

    def _version(self, tx: Tx) -> int | None:
        """The schema's qdo version, None if not made yet; raises NotQdoDatabase for a
        schema that holds other tables (made or not, it is left alone)."""
        if tx.one("has_qdo_table", table=f"{self.schema}.qdo_schema")["has_table"]:
            return int(tx.one("schema_version")["version"])
        # (its has_table again: another process may have made the tables just now)
        found = tx.one("schema_exists", schema=self.schema)
        if found["has_schema"] and found["ntables"] and not found["has_table"]:
            raise NotQdoDatabase(self.location, "its schema holds tables that are not qdo's")
        if not found["has_table"]:
            return None
        return int(tx.one("schema_version")["version"])

    def _initialize(self) -> Row:
        """Check the schema, and migrate it if it is older than this qdo's; a schema
        not made yet stays so, until the first write.  Returns the ``session`` row."""

        def look(tx: Tx) -> tuple[int | None, Row | None]:
            version = self._version(tx)
            # a current schema: who this session is, in the same transaction
            return version, tx.one("session") if version == SCHEMA_VERSION else None

        try:
            # the usual case, a current schema, is answered without the lock
            self._made = True  # (so that this read looks at what is there)
            version, session = self.run(look, write=False)
            self._made = version is not None
            if self._made and version != SCHEMA_VERSION:
                if version < SCHEMA_VERSION:  # type: ignore[operator]
                    log.info("qdo: migrating %s from schema version %d to %d",
                             self.location, version, SCHEMA_VERSION)  # fmt: skip
                self.run(self._lay_out)
        except psycopg.Error as e:
            raise DatabaseError(f"PostgreSQL at {self.location}: {_text(e)}") from e
        if session is None:  # made or migrated since, or not made yet (a stand-in)
            session = self.run(lambda tx: tx.one("session"), write=False)
        return session

    def close(self) -> None:
        with self._lock:
            connections, self._connections = list(self._connections), {}
        if os.getpid() == self._pid:
            for conn in connections:
                _close(conn)
        self.local = threading.local()


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


def _close(conn: psycopg.Connection[Any]) -> None:
    with suppress(psycopg.Error):  # it was broken already: nothing to release
        conn.close()


def _text(error: BaseException) -> str:
    """An error of libpq on one line (its hints come on lines of their own), with any
    password it quotes masked."""
    return mask_url(" ".join(str(error).split()))
