"""What a SQL backend provides to the one store implementation (``sqlstore.SQLStore``).

A dialect is transport only: connections, transactions and what to do when they
fail, the clock, bulk inserts, notifications, how it spells the hooks of the shared
SQL (``sql/queries.sql``) and its migrations.  It decides nothing about tasks.
"""

from __future__ import annotations

import enum
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from ..errors import DatabaseError, SchemaTooNew
from . import sql
from .base import outage_credit

#: The version of the tables, the same on every backend.  A new version adds a
#: ``migrations/NNNN_*.sql`` for each dialect (one that only moves the number where that
#: backend has nothing to change); a fresh database runs them too, so it never differs
#: from a migrated one.
SCHEMA_VERSION = 12

#: The columns of a new task's row, in the order ``Dialect.insert_tasks`` takes them.
NEW_TASK_COLUMNS = ("id", "queue_id", "payload", "is_json", "state", "priority", "created",
                    "timeout", "max_retries")  # fmt: skip
#: A row of a result: indexed by column name (sqlite3.Row, or a dict on PostgreSQL).
Row = Any
T = TypeVar("T")


class Repeat(enum.Enum):
    """May a verb run again on a new connection after its connection dropped?"""

    #: yes: run twice, it finds its work done and does nothing more
    SAFE = "safe"
    #: only if the drop came before its COMMIT was sent (else: an error, outcome unknown)
    NOT_IF_UNSURE = "not if unsure"
    #: never: it reads a stream that cannot be read again
    NEVER = "never"


#: Adds of fewer rows than this never look at the planner's statistics.
GREW_ROWS = 1000


class Tx:
    """One transaction of a verb: runs the dialect's named statements.

    Parameters are Python values; a dialect encodes lists and tables of rows its own
    way.  ``time()`` is the store's clock as this transaction sees it."""

    __slots__ = ("cur", "d", "_now")

    def __init__(self, dialect: Dialect, cur: Any, now: float | None = None) -> None:
        self.d = dialect
        self.cur = cur
        self._now = now

    def time(self) -> float:
        if self._now is None:
            self._now = self.d.clock(self.cur)
        return self._now

    def execute(self, name: str, params: dict[str, Any], cur: Any = None) -> Any:
        d = self.d
        st = d.queries[name]
        if st.clock and d.clock_param:
            params["now"] = self.time()
        cur = self.cur if cur is None else cur
        return cur.execute(d.encode(cur, name, st, params) if st.sized else st.text, params)

    def tuples(self, name: str, columns: tuple[str, ...], /, **params: Any) -> list[Row]:
        """The rows of a statement as plain tuples, read by position: their first
        values are ``columns``, in that order (checked at the statement's first run by
        this dialect).  For the rows of every task claimed and reported: a lookup by name
        in a sqlite3.Row costs about 0.2 µs a column, more than the rest of a task's
        record takes to build."""
        d = self.d
        cur = d.tuple_cursor(self.cur)
        try:
            rows: list[Row] = self.execute(name, params, cur).fetchall()
            if (name, columns) not in d.shapes:
                got = d.column_names(cur)
                if got[: len(columns)] != columns:
                    raise DatabaseError(f"statement {name!r} returns {got}, not {columns} first")
                d.shapes.add((name, columns))
        finally:
            cur.close()
        return rows

    def rows(self, name: str, /, **params: Any) -> list[Row]:
        return self.execute(name, params).fetchall()  # type: ignore[no-any-return]

    def row(self, name: str, /, **params: Any) -> Row | None:
        return self.execute(name, params).fetchone()

    def one(self, name: str, /, **params: Any) -> Row:
        """The row a statement always returns."""
        row = self.execute(name, params).fetchone()
        if row is None:
            raise DatabaseError(f"no row from statement {name!r}")
        return row

    def count(self, name: str, /, **params: Any) -> int:
        """Run a statement; how many rows it changed."""
        return int(self.execute(name, params).rowcount)

    def insert(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Add many rows to ``table`` (a stream: read once, as they come)."""
        self.d.insert(self.cur, table, columns, rows)

    def insert_tasks(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Add new tasks, rows of NEW_TASK_COLUMNS in the order of their ids (a stream)."""
        self.d.insert_tasks(self.cur, rows)

    def insert_same(self, first: int, same: dict[str, Any], payloads: Sequence[str]) -> None:
        """Add new tasks of ids ``first`` on, alike in the columns ``same`` (all of
        NEW_TASK_COLUMNS but id and payload), with these payloads."""
        self.d.insert_same(self.cur, first, same, payloads)

    def stream(self, name: str, /, **params: Any) -> Iterator[tuple[Any, ...]]:
        """The rows of a long result as plain tuples, as they come."""
        return self.d.stream(self, name, params)

    def grew(self, table: str, rows: int) -> None:
        """``rows`` were just added to ``table``: where the planner's statistics lag far
        behind, bring them up to date (see ``Dialect.grew``)."""
        if rows >= GREW_ROWS:
            self.d.grew(self, table, rows)

    def notify(self, queue_ids: Iterable[int]) -> None:
        """Wake the workers waiting for these queues (at COMMIT), where they listen."""
        if self.d.notifies:
            ids = sorted(set(queue_ids))
            if ids:
                self.d.notify(self, ids)


class Dialect(ABC):
    """Transport of one SQL backend (see the module's docstring)."""

    name: str
    #: where the data lives, for messages (a path, or a URL without password)
    location: str
    #: its statements, rendered (sql.compile_queries)
    queries: dict[str, sql.Statement]
    #: whether {now} is a parameter the transaction fills in (else the server's clock)
    clock_param = False
    #: whether waiting workers are told of new tasks (``notify``)
    notifies = False
    #: whether this connection can wait to be told (not through a pooler that shares
    #: server sessions between clients: those workers look again now and then)
    listens = False
    #: whether row-level security applies to this connection (a shared database)
    row_security = False
    #: the database role the connection acts as, where there are roles
    role = ""

    def __init__(self) -> None:
        #: the statements whose columns Tx.tuples has checked, with the columns
        self.shapes: set[tuple[str, tuple[str, ...]]] = set()
        # when a write last went through (monotonic), and whether one failed since (a
        # full disk, a server away): the next to go through gives the leases that time
        # back first: their holders could not renew meanwhile, and it may be the one
        # that judges them expired
        self._last_ok = time.monotonic()
        self._failed = False

    def begin(self, cur: Any, *, write: bool, now: float | None = None) -> Tx:
        """A transaction on ``cur``, which a dialect's ``run`` has just opened."""
        tx = Tx(self, cur, now)
        if write and self._failed:
            tx.count("extend_leases", by=outage_credit(self._last_ok))
        return tx

    def went_through(self) -> None:
        self._last_ok, self._failed = time.monotonic(), False

    def broke(self) -> None:
        self._failed = True

    @abstractmethod
    def run(
        self, verb: Callable[[Tx], T], *, write: bool = True, repeat: Repeat = Repeat.SAFE
    ) -> T:
        """Run ``verb`` in one transaction (``write``: one that may change something),
        all or nothing; after ``begin`` and, when it returns, ``went_through``."""

    @abstractmethod
    def snapshot(self) -> AbstractContextManager[Tx]:
        """A read-only transaction that sees one snapshot, for long reads (``stream``)."""

    @abstractmethod
    def clock(self, cur: Any) -> float:
        """The store's clock now, epoch seconds."""

    @abstractmethod
    def tuple_cursor(self, cur: Any) -> Any:
        """A cursor in the transaction of ``cur`` whose rows are plain tuples."""

    @staticmethod
    @abstractmethod
    def column_names(cur: Any) -> tuple[str, ...]:
        """The names of the columns of the rows ``cur`` returns."""

    @abstractmethod
    def encode(self, cur: Any, name: str, st: sql.Statement, params: dict[str, Any]) -> str:
        """Turn the list and table parameters of statement ``name`` (``st``) into what
        the driver sends; return the text to run with them."""

    @abstractmethod
    def insert(
        self, cur: Any, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> None: ...

    def insert_tasks(self, cur: Any, rows: Iterable[tuple[Any, ...]]) -> None:
        self.insert(cur, "tasks", NEW_TASK_COLUMNS, rows)

    def insert_same(
        self, cur: Any, first: int, same: dict[str, Any], payloads: Sequence[str]
    ) -> None:
        rest = tuple(same[c] for c in NEW_TASK_COLUMNS[3:])
        self.insert_tasks(cur, ((first + i, same["queue_id"], p, *rest)
                                for i, p in enumerate(payloads)))  # fmt: skip

    @abstractmethod
    def stream(self, tx: Tx, name: str, params: dict[str, Any]) -> Iterator[tuple[Any, ...]]: ...

    def notify(self, tx: Tx, queue_ids: list[int]) -> None:
        del tx, queue_ids

    def grew(self, tx: Tx, table: str, rows: int) -> None:
        """A planner that plans by statistics, and plans a claim badly on statistics of a
        table far smaller than it is, refreshes them here.  (SQLite's does not: its
        plans come from the indexes, not from statistics, unless ANALYZE was run.)"""
        del tx, table, rows

    @abstractmethod
    def check(self, tx: Tx) -> list[str]:
        """Problems the database finds in itself."""

    @abstractmethod
    def close(self) -> None: ...


def pending_migrations(dialect: str, version: int, location: str) -> list[tuple[int, str]]:
    """The migrations that bring a database of ``version`` to SCHEMA_VERSION, in order;
    raises SchemaTooNew for a database of a newer qdo."""
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(location, version, SCHEMA_VERSION)
    return [(v, script) for v, script in sorted(sql.migrations(dialect).items())
            if version < v <= SCHEMA_VERSION]  # fmt: skip
