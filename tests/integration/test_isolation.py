"""A shared PostgreSQL database keeps its users apart by itself (row-level security):
two real roles on one database, set up with `qdo admin init-db`, each trying to reach
the other's queues through qdo and through plain SQL."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from qdo.errors import ConfigError
from qdo.store.factory import close_all
from tests.conftest import postgres_or_skip, run_qdo


@pytest.fixture
def backend() -> str:
    return "postgres"


@dataclass
class Role:
    name: str
    url: str

    def qdo(self, *args: str, env: dict[str, str] | None = None) -> Any:
        """The qdo command line, connected as this role."""
        return run_qdo(*args, env={"QDO_DB_URL": self.url, **(env or {})})

    def ok(self, *args: str) -> str:
        proc = self.qdo(*args)
        assert proc.returncode == 0, (args, proc.stderr)
        return str(proc.stdout)

    def refused(self, *args: str) -> str:
        proc = self.qdo(*args)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        return str(proc.stderr)

    def sql(self) -> psycopg.Connection[Any]:
        """A plain connection of this role's, in the test's schema."""
        conn = psycopg.connect(self.url, autocommit=True)
        conn.execute(f'SET search_path TO "{os.environ["QDO_DB_SCHEMA"]}"')
        return conn


def as_role(url: str, name: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{name}:{password}@{rest.rsplit('@', 1)[1]}"


@pytest.fixture
def roles(qdo_dir: Path) -> Iterator[tuple[Role, Role, str]]:
    """Two login roles (alice, bob) and the group init-db lets in; dropped afterwards.
    The test server's own role owns the database (and is no superuser)."""
    owner = postgres_or_skip()
    tag = uuid.uuid4().hex[:8]
    names = (f"alice_{tag}", f"bob_{tag}")
    group = f"users_{tag}"
    with psycopg.connect(owner, autocommit=True) as conn:
        for name in names:
            conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'pw-{tag}'")
    try:
        yield (
            Role(names[0], as_role(owner, names[0], f"pw-{tag}")),
            Role(names[1], as_role(owner, names[1], f"pw-{tag}")),
            group,
        )
    finally:
        close_all()
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s)",
                (list(names),),
            )
            # the schema first: with it go the privileges the roles hold (the server's
            # role may drop roles, not what they own or were granted elsewhere)
            conn.execute(f'DROP SCHEMA IF EXISTS "{os.environ["QDO_DB_SCHEMA"]}" CASCADE')
            for name in (*names, group):
                conn.execute(f"DROP ROLE IF EXISTS {name}")


def init_db(group: str, *users: Role) -> str:
    proc = run_qdo("admin", "init-db", "--group", group, "--users",
                   ",".join(u.name for u in users))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return str(proc.stdout)


def alice_queue_id(name: str = "aq") -> int:
    with psycopg.connect(postgres_or_skip()) as conn:  # the owner: sees every row
        schema = os.environ["QDO_DB_SCHEMA"]
        row = conn.execute(f'SELECT id FROM "{schema}".queues WHERE name = %s', (name,)).fetchone()
        assert row is not None
        return int(row[0])


def test_two_roles_cannot_read_change_or_run_each_others_tasks(
    roles: tuple[Role, Role, str], tmp_path: Path
) -> None:
    alice, bob, group = roles
    out = init_db(group, alice, bob)
    assert f"members of role {group} (created)" in out, out
    ran, pwned = tmp_path / "alice-ran", tmp_path / "pwned"
    alice.ok("create", "aq")
    alice.ok("add", "aq", f"touch {ran}")
    bob.ok("create", "bq")
    bob.ok("add", "bq", "true")
    queue_id = alice_queue_id()

    # through qdo: alice's queue does not exist for bob, whatever he tries
    for args in (("tasks", "aq"), ("status", "aq"), ("add", "aq", f"touch {pwned}"),
                 ("rerun", "aq", "--force"), ("delete", "aq", "--force"), ("retry", "aq"),
                 ("pause", "aq"), ("do", "aq"), ("log", "aq", "1"),
                 ("dump", "aq", str(tmp_path / "aq.qdo"))):  # fmt: skip
        err = bob.refused("--user", alice.name, *args)
        assert "no queue" in err, (args, err)
    listed = bob.ok("list", "--all-users")
    assert "bq" in listed and "aq" not in listed, listed

    # plain SQL, with every grant qdo needs: nothing of alice's is there to read or change
    with bob.sql() as conn:
        for table in (
            "queues",
            "tasks",
            "requires",
            "attempts",
            "jobs",
            "shares",
            "calls",
            "results",
            "agents",
        ):
            rows = conn.execute(f"SELECT * FROM {table}").fetchall()
            assert all(alice.name not in map(str, r) for r in rows), (table, rows)
        assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (1,)  # his own
        assert conn.execute(
            "SELECT count(*) FROM queues WHERE id = %s", (queue_id,)
        ).fetchone() == (0,)
        assert conn.execute("UPDATE tasks SET state = 'Killed' WHERE queue_id = %s",
                            (queue_id,)).rowcount == 0  # fmt: skip
        assert conn.execute("DELETE FROM queues WHERE id = %s", (queue_id,)).rowcount == 0
        assert conn.execute("DELETE FROM tasks WHERE queue_id = %s", (queue_id,)).rowcount == 0
        last = conn.execute("SELECT last_task_id FROM qdo_schema").fetchone()[0]
        attacks = [
            # rewrite payloads (no one but the owner may), or move a task
            "UPDATE tasks SET payload = 'touch /tmp/pwned'",
            f"UPDATE tasks SET queue_id = {queue_id}",
            # slip a task into her queue
            f"INSERT INTO tasks (id, queue_id, payload, state, created) "
            f"VALUES ({last + 1}, {queue_id}, 'touch {pwned}', 'Pending', 0)",
            # pose as an agent of her queue (to steer her drivers' widths)
            f"INSERT INTO agents VALUES ('x:1', {queue_id}, 'x', 1000, NULL, 0, 1e12)",
            # share her queue with himself, under her name or his
            f"INSERT INTO shares VALUES ({queue_id}, '{alice.name}', '{bob.name}', 'write')",
            f"INSERT INTO shares VALUES ({queue_id}, '{bob.name}', '{bob.name}', 'write')",
            # take her queue, or spoil everyone's ids
            f"UPDATE queues SET owner = '{bob.name}'",
            "UPDATE qdo_schema SET last_task_id = 4611686018427387904",
            # tasks far ahead of the ids handed out, in his own queue
            "INSERT INTO tasks (id, queue_id, payload, state, created) SELECT "
            "4611686018427387904, id, 'true', 'Pending', 0 FROM queues WHERE name = 'bq'",
        ]
        for attack in attacks:
            with pytest.raises(psycopg.Error):
                conn.execute(attack)
        # the channel its workers wait on is a secret of the queue's readers
        assert (
            conn.execute("SELECT channel FROM queues WHERE id = %s", (queue_id,)).fetchall() == []
        )

    # alice's queue is as she left it, and her worker runs her task only
    tasks = alice.ok("tasks", "aq")
    assert f"touch {ran}" in tasks and "pwned" not in tasks, tasks
    done = alice.qdo("do", "aq")
    assert done.returncode == 0 and "could not say it is alive" not in done.stderr, done.stderr
    assert ran.exists() and not pwned.exists()
    assert "Succeeded" in alice.ok("tasks", "aq")
    bob.ok("do", "bq")  # his own work is his to do
    assert json.loads(bob.ok("status", "bq", "--json"))["ntasks"]["Succeeded"] == 1


def test_sharing_is_explicit_and_enforced_by_the_database(
    roles: tuple[Role, Role, str], tmp_path: Path
) -> None:
    alice, bob, group = roles
    init_db(group, alice, bob)
    alice.ok("create", "aq")
    alice.ok("add", "aq", "true")
    assert bob.refused("--user", alice.name, "tasks", "aq")

    alice.ok("share", "aq", "--with", bob.name, "--read")
    assert alice.ok("share", "aq").split() == [bob.name, "read"]
    assert "true" in bob.ok("--user", alice.name, "tasks", "aq")
    assert "aq" in bob.ok("list", "--all-users")
    for args in (("add", "aq", "false"), ("retry", "aq"), ("pause", "aq")):
        err = bob.refused("--user", alice.name, *args)
        assert "refused" in err or "no queue" in err, (args, err)
    # a reader cannot share on, nor widen its own share
    assert bob.refused("--user", alice.name, "share", "aq", "--with", bob.name, "--write")
    with bob.sql() as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (1,)  # reads hers
        assert conn.execute("UPDATE tasks SET priority = 5").rowcount == 0  # changes none
        assert conn.execute("UPDATE shares SET mode = 'write'").rowcount == 0

    alice.ok("share", "aq", "--with", bob.name, "--write")
    bob.ok("--user", alice.name, "add", "aq", "true")
    bob.ok("--user", alice.name, "do", "aq")
    assert json.loads(alice.ok("status", "aq", "--json"))["ntasks"]["Succeeded"] == 2
    assert bob.refused("--user", alice.name, "delete", "aq", "--force")  # hers alone

    alice.ok("share", "aq", "--with", bob.name, "--revoke")
    assert "no queue" in bob.refused("--user", alice.name, "tasks", "aq")
    assert "shared with nobody" in alice.qdo("share", "aq").stderr
    assert "no role" in alice.refused("share", "aq", "--with", "nobody_at_all", "--read")


def test_notifications_carry_nothing_and_go_to_a_secret_channel(
    roles: tuple[Role, Role, str],
) -> None:
    alice, bob, group = roles
    init_db(group, alice, bob)
    alice.ok("create", "aq")
    alice.ok("create", "aq2")
    schema = os.environ["QDO_DB_SCHEMA"]
    with psycopg.connect(postgres_or_skip()) as owner:
        channels = dict(owner.execute(f'SELECT name, channel FROM "{schema}".queues').fetchall())
    # 128 random bits each, nothing derived from the schema or the queue
    assert all(re.fullmatch("qdo_[0-9a-f]{32}", c) for c in channels.values()), channels
    assert channels["aq"] != channels["aq2"]
    channel = channels["aq"]
    # even one who learnt the channel's name hears only that something happened
    with psycopg.connect(bob.url, autocommit=True) as conn:
        conn.execute(f'LISTEN "{channel}"')
        alice.ok("add", "aq", "echo secret-argument")
        notes = list(conn.notifies(timeout=10, stop_after=1))
        assert [n.payload for n in notes] == [""]


def test_init_db_needs_the_owner_and_postgres(roles: tuple[Role, Role, str]) -> None:
    alice, bob, group = roles
    init_db(group, alice)
    again = init_db(group, alice, bob)  # run again: the same, and one more member
    assert "(created)" not in again and bob.name in again
    err = alice.refused("admin", "init-db", "--group", group)
    assert "owns" in err, err
    err = bob.refused("admin", "init-db", "--users", "no_such_role_x")
    assert "owns" in err or "no role" in err, err


def test_sharing_on_sqlite_says_what_it_needs(tmp_path: Path) -> None:
    from qdo.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "local.sqlite")
    store.create_queue("local")
    with pytest.raises(ConfigError, match="shared PostgreSQL"):
        store.share("local", "bob", "read")
    env = {"QDO_BACKEND": "sqlite", "QDO_DB_URL": ""}
    assert run_qdo("create", "local", env=env).returncode == 0
    for args in (("share", "local", "--with", "bob", "--read"), ("admin", "init-db")):
        proc = run_qdo(*args, env=env)
        assert proc.returncode == 1 and "PostgreSQL" in proc.stderr, proc.stderr
