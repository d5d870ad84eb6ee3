"""Schema versions: a database of every version a qdo release left behind is migrated
in place, its data kept, to exactly what a fresh database has, on both backends.

An old database is made as that release made it: the dialect's first schema, then its
migrations up to that version (migration files never change once released).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from qdo.models import State
from qdo.store import sql
from qdo.store.base import NewTask, Outcome, Store
from qdo.store.dialect import SCHEMA_VERSION

from ..conftest import drop_schema, postgres_or_skip

#: The versions releases left behind: SQLite from 1, PostgreSQL from 3 (its first).
# (5 and 6: made by the unreleased work since 0.2.0, which some databases are at)
RELEASED = {"sqlite": [1, 2, 3, 4, 5, 6], "postgres": [3, 4, 5, 6]}


def test_one_version_for_both_backends() -> None:
    for dialect in ("sqlite", "postgres"):
        assert max(sql.migrations(dialect)) == SCHEMA_VERSION, dialect


def use(store: Store) -> None:
    """What the old data must still do: be read, run, and take new tasks after it."""
    (task,) = store.tasks("q")
    assert (task.id, task.task, task.state, task.failures, task.lost) == (
        7, "echo kept", State.PENDING, 0, 0)  # fmt: skip
    assert store.get_queue("q").max_lost == 3
    assert list(store.add_many("q", [NewTask("new")])) == [8]
    (claimed,) = store.claim("q", "w", 1, lease=60)
    assert claimed.id == 7
    assert store.finish("w", [Outcome(7, claimed._token, State.SUCCEEDED)]) == []
    assert store.attempts([7])[7][0].state == "Succeeded"
    assert store.check() == []


# -- SQLite ---------------------------------------------------------------------------
def sqlite_at(path: Path, version: int) -> None:
    from qdo.store.sqlite import SCHEMA, _statements

    with sqlite3.connect(path) as db:
        for statement in _statements(SCHEMA):
            db.execute(statement)
        for v, script in sorted(sql.migrations("sqlite").items()):
            if v <= version:
                for statement in _statements(script):
                    db.execute(statement, {"user": "me"})
        owner = ("owner", "'me', ") if version >= 3 else ("", "")
        db.execute(f"INSERT INTO queues ({owner[0]}{', ' if owner[0] else ''}name, state, "
                   f"created) VALUES ({owner[1]}'q', 'Active', 0)")  # fmt: skip
        db.execute("INSERT INTO tasks (id, queue_id, payload, state, created) "
                   "VALUES (7, 1, 'echo kept', 'Pending', 0)")  # fmt: skip
        assert db.execute("SELECT version FROM qdo_schema").fetchone()[0] == version


def sqlite_schema(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"
        ).fetchall()


@pytest.mark.parametrize("version", RELEASED["sqlite"])
def test_sqlite_is_migrated_like_a_fresh_database(tmp_path: Path, version: int) -> None:
    from qdo.store.sqlite import SQLiteStore

    old = tmp_path / "old.sqlite"
    sqlite_at(old, version)
    store = SQLiteStore(old, user="me")
    use(store)
    store.close()
    fresh = tmp_path / "fresh.sqlite"
    made = SQLiteStore(fresh, user="me")
    made.create_queue("q")  # the first write makes the file
    made.close()
    assert sqlite_schema(old) == sqlite_schema(fresh)
    with sqlite3.connect(old) as db:
        assert db.execute("SELECT version FROM qdo_schema").fetchone()[0] == SCHEMA_VERSION


# -- PostgreSQL -------------------------------------------------------------------------
CATALOG = {
    "columns": "SELECT table_name, column_name, data_type, is_nullable, column_default "
               "FROM information_schema.columns WHERE table_schema = %(s)s",
    "indexes": "SELECT indexname, replace(indexdef, %(s)s, '') FROM pg_indexes "
               "WHERE schemaname = %(s)s",
    "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
                   "FROM pg_constraint WHERE connamespace = %(s)s::regnamespace",
    "policies": "SELECT tablename, policyname, cmd, qual, with_check FROM pg_policies "
                "WHERE schemaname = %(s)s",
    "functions": "SELECT proname, prosrc FROM pg_proc WHERE pronamespace = %(s)s::regnamespace",
    "security": "SELECT relname, relrowsecurity FROM pg_class "
                "WHERE relnamespace = %(s)s::regnamespace AND relkind = 'r'",
}  # fmt: skip


def pg_schema(url: str, schema: str) -> dict[str, list[Any]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return {
            name: sorted(
                tuple(str(v).replace(f"{schema}.", "") for v in row)
                for row in conn.execute(query, {"s": schema})
            )
            for name, query in CATALOG.items()
        }


def pg_at(url: str, schema: str, version: int) -> None:
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'SET search_path TO "{schema}", pg_catalog')
        conn.execute(sql.load("postgres", "schema.sql")["create_schema"])
        for v, script in sorted(sql.migrations("postgres").items()):
            if v <= version:
                conn.execute(script)
        conn.execute("INSERT INTO queues (owner, name, state, created) "
                     "VALUES ('me', 'q', 'Active', 0)")  # fmt: skip
        conn.execute("INSERT INTO tasks (id, queue_id, payload, state, created) "
                     "SELECT 7, id, 'echo kept', 'Pending', 0 FROM queues")  # fmt: skip
        conn.execute("UPDATE qdo_schema SET last_task_id = 7")
        found = conn.execute("SELECT version FROM qdo_schema").fetchone()
        assert found is not None and found[0] == version


@pytest.mark.parametrize("version", RELEASED["postgres"])
def test_postgres_is_migrated_like_a_fresh_database(version: int) -> None:
    from qdo.store.postgres import PostgresStore

    url = postgres_or_skip()
    tag = os.urandom(4).hex()
    old, fresh = f"t_old_{tag}", f"t_fresh_{tag}"
    try:
        pg_at(url, old, version)
        store = PostgresStore(url, schema=old, user="me")
        use(store)
        store.close()
        made = PostgresStore(url, schema=fresh, user="me")
        made.create_queue("q")  # the first write makes the schema
        made.close()
        assert pg_schema(url, old) == pg_schema(url, fresh)
    finally:
        drop_schema(url, old)
        drop_schema(url, fresh)


def _failed_task(conn: Any) -> None:
    """A task that failed before version 10: counted, and grouped, once migrated."""
    conn.execute("INSERT INTO tasks (id, queue_id, payload, state, created, exitcode, message, "
                 "finished) SELECT 9, id, 'false', 'Failed', 0, 1, 'exit code 1', 0 "
                 "FROM queues")  # fmt: skip
    conn.execute("UPDATE qdo_schema SET last_task_id = 9")


def _counted_and_grouped(store: Store) -> None:
    assert store.check() == []
    counts = store.counts("q").by_state
    assert (counts[State.PENDING], counts[State.FAILED]) == (1, 1)
    (group,) = store.failure_groups("q")
    assert (group.signature, group.count, group.examples) == ("Failed exit 1: exit code 1", 1, [9])


def test_sqlite_counts_and_groups_what_was_there_before(tmp_path: Path) -> None:
    from qdo.store.sqlite import SQLiteStore

    old = tmp_path / "old.sqlite"
    sqlite_at(old, 9)
    with sqlite3.connect(old) as db:
        _failed_task(db)
    store = SQLiteStore(old, user="me")
    _counted_and_grouped(store)
    store.close()


def test_postgres_counts_and_groups_what_was_there_before() -> None:
    import psycopg

    from qdo.store.postgres import PostgresStore

    url = postgres_or_skip()
    old = f"t_old_{os.urandom(4).hex()}"
    try:
        pg_at(url, old, 9)
        with psycopg.connect(url) as conn:
            conn.execute(f'SET search_path TO "{old}", pg_catalog')
            _failed_task(conn)
        store = PostgresStore(url, schema=old, user="me")
        _counted_and_grouped(store)
        store.close()
    finally:
        drop_schema(url, old)
