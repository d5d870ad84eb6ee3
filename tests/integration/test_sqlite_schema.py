"""SQLite schema versions: a version-1 file is migrated in place, data kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from qdo.models import State
from qdo.store import sql
from qdo.store.base import NewTask
from qdo.store.sqlite import SCHEMA, SCHEMA_VERSION, SQLiteStore, _statements


def schema_of(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"
        ).fetchall()


def test_version_one_is_migrated_like_a_fresh_database(tmp_path: Path) -> None:
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:  # a database as qdo 0.1 (schema 1) left it
        for statement in _statements(SCHEMA):
            db.execute(statement)
        db.execute("INSERT INTO queues (name, state, created) VALUES ('q', 'Active', 0)")
        db.execute("INSERT INTO tasks (id, queue_id, payload, state, created) "
                   "VALUES (7, 1, 'echo kept', 'Pending', 0)")  # fmt: skip
    store = SQLiteStore(old)
    (task,) = store.tasks("q")
    assert (task.id, task.task, task.state, task.failures, task.lost) == (
        7, "echo kept", State.PENDING, 0, 0)  # fmt: skip
    assert store.get_queue("q").max_lost == 3
    assert list(store.add_many("q", [NewTask("new")])) == [8]
    store.close()
    fresh = tmp_path / "fresh.sqlite"
    SQLiteStore(fresh).close()
    assert schema_of(old) == schema_of(fresh)
    with sqlite3.connect(old) as db:
        assert db.execute("SELECT version FROM qdo_schema").fetchone()[0] == SCHEMA_VERSION
    assert max(sql.migrations("sqlite")) == SCHEMA_VERSION
