"""What only the PostgreSQL store has to get right: sessions killed under a working agent
or client, LISTEN/NOTIFY wake-ups, concurrent transactions on the server, schemas that
are not (or not yet) qdo's, and passwords in its settings."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import qdo
from qdo.errors import DatabaseError, NotQdoDatabase, SchemaTooNew
from qdo.models import QueueState, State
from qdo.store.base import NewCall, NewTask, Outcome, Store
from tests.conftest import make_store, postgres_or_skip, run_qdo


@pytest.fixture
def backend() -> str:
    """Every test here runs on PostgreSQL (the autouse ``qdo_dir`` gives it a schema)."""
    return "postgres"


@pytest.fixture
def url() -> str:
    return postgres_or_skip()


@pytest.fixture
def store(qdo_dir: Path) -> Iterator[Store]:
    s = make_store("postgres", qdo_dir)
    yield s
    s.close()


def wait_until(predicate: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def sql(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement on a connection of its own (not qdo's)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, application_name="qdo-test") as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def tcp_ports(pid: int) -> list[int]:
    """Local ports of the TCP connections of process ``pid`` (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = []
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def qdo_sessions(url: str, pid: int) -> int:
    """How many server sessions qdo holds open from process ``pid``."""
    rows = sql(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'qdo' "
               "AND datname = current_database() AND client_port = ANY(%s)",
               (tcp_ports(pid),))  # fmt: skip
    return int(rows[0][0])


def terminate(url: str, pid: int) -> int:
    """Kill the server sessions of qdo in process ``pid`` (only those: other test runs
    may share the server); return how many."""
    rows = sql(
        url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = 'qdo' AND pid <> pg_backend_pid() "
        "AND datname = current_database() AND client_port = ANY(%s)",
        (tcp_ports(pid),),
    )
    return int(rows[0][0])


def lines_of(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


# -- sessions killed under a worker ----------------------------------------------------------
def test_agent_carries_on_when_its_sessions_are_killed(url: str, tmp_path: Path) -> None:
    ran = tmp_path / "ran.txt"
    q = qdo.create("K")
    ids = q.add_multiple([f"sleep 0.5; echo t{i} >> {ran}" for i in range(40)])
    agent = subprocess.Popen(
        [sys.executable, "-m", "qdo", "do", "K", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )  # fmt: skip
    killed = []
    try:
        for done in (4, 10, 16, 22, 28, 34):
            wait_until(lambda d=done: len(lines_of(ran)) >= d or agent.poll() is not None,
                       f"{done} tasks done")  # fmt: skip
            if agent.poll() is not None:
                break
            killed.append(terminate(url, agent.pid))
        out, err = agent.communicate(timeout=120)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert agent.returncode == 0, err
    assert "Traceback" not in err, err
    assert sum(killed) >= 4, f"the test killed too few sessions to mean anything: {killed}"
    assert "ran 40 tasks" in out, out

    tasks = q.tasks(history=True)
    assert [t.id for t in tasks] == ids
    for t in tasks:
        assert t.state is State.SUCCEEDED and t.attempts == 1, t
        assert [a.state for a in t.history] == ["Succeeded"], t.history
    assert sorted(lines_of(ran)) == sorted(f"t{i}" for i in range(40)), "a task ran twice"


def test_client_keeps_its_task_when_its_session_is_killed(url: str) -> None:
    q = qdo.create("C")
    first, second = q.add_multiple(["one", "two"])
    me = os.getpid()
    q.status()
    assert terminate(url, me) >= 1
    task = q.get()
    assert task is not None and task.id == first
    assert terminate(url, me) >= 1
    task.renew(600)
    assert terminate(url, me) >= 1
    task.set_state(qdo.Task.SUCCEEDED)
    other = q.get()
    assert other is not None and other.id == second
    assert terminate(url, me) >= 1
    other.set_state(qdo.Task.FAILED, err=4, message="after a kill")
    done = {t.id: t for t in q.tasks(history=True)}
    assert (done[first].state, done[first].attempts) == (State.SUCCEEDED, 1)
    assert (done[second].state, done[second].exitcode, done[second].message) == (
        State.FAILED, 4, "after a kill",
    )  # fmt: skip
    assert [[a.state for a in t.history] for t in done.values()] == [["Succeeded"], ["Failed"]]


# -- wake-ups ----------------------------------------------------------------------------------
def listeners(url: str, store: Store, queue: str) -> set[int]:
    """The sessions (pids) that listen for tasks of ``queue`` (their last statement a
    LISTEN)."""
    schema = os.environ["QDO_DB_SCHEMA"]
    [(channel,)] = sql(url, f'SELECT channel FROM "{schema}".queues WHERE id = %s',
                       (store.get_queue(queue).id,))  # fmt: skip
    rows = sql(url, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
               "AND state = 'idle' AND query = %s", (f'LISTEN "{channel}"',))  # fmt: skip
    return {int(r[0]) for r in rows}


def in_thread(func: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = func()
        except BaseException as e:  # reported by the test, not lost in the thread
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def test_blocked_get_wakes_when_another_connection_adds(url: str, store: Store) -> None:
    q = qdo.create("W")
    thread, box = in_thread(lambda: q.get(timeout=30))
    wait_until(lambda: listeners(url, q.store, "W"), "the waiting client to LISTEN")
    assert thread.is_alive()
    (added,) = store.add_many("W", [NewTask("late arrival")])  # another store: other sessions
    thread.join(10)
    assert not thread.is_alive(), "get() slept on although a task came"
    assert "error" not in box, box
    assert box["result"] is not None and box["result"].id == added


def test_wait_for_tasks_wakes_on_every_way_a_task_becomes_pending(url: str, store: Store) -> None:
    for name in ("W", "Up"):
        store.create_queue(name)

    def wake(action: Callable[[], object]) -> None:
        # each thread waits on a LISTEN session of its own: act once it listens
        before = listeners(url, store, "W")
        thread, box = in_thread(lambda: store.wait_for_tasks("W", 30))
        # (a new session: the one of the thread before is closed when this one opens)
        wait_until(lambda: listeners(url, store, "W") - before, "wait_for_tasks to LISTEN")
        adder, done = in_thread(action)  # from another thread: its own session
        adder.join(30)
        assert "error" not in done, done
        thread.join(10)
        assert not thread.is_alive() and box == {"result": True}, box

    (up,) = store.add_many("Up", [NewTask("upstream")])
    wake(lambda: store.add_many("W", [NewTask("new")]))
    (waiting,) = store.add_many("W", [NewTask("needs upstream", requires=[up])])
    assert store.tasks("W", task_id=waiting)[0].state is State.WAITING
    (held,) = store.claim("Up", "w", 1, lease=60)
    # its requirement in another queue Succeeds: the dependent became Pending
    wake(lambda: store.finish("w", [Outcome(held.id, held._token, State.SUCCEEDED)]))
    assert store.tasks("W", task_id=waiting)[0].state is State.PENDING
    store.set_queue_state("W", QueueState.PAUSED)
    wake(lambda: store.set_queue_state("W", QueueState.ACTIVE))
    for t in store.claim("W", "w", 10, lease=60):
        store.finish("w", [Outcome(t.id, t._token, State.FAILED)])
    wake(lambda: store.retry("W"))
    wake(lambda: store.rerun("W"))
    # nothing comes: it returns False when its time is up, or at once when told to stop
    assert store.wait_for_tasks("W", 0.2) is False
    stop = threading.Event()
    thread, box = in_thread(lambda: store.wait_for_tasks("W", 30, stop=stop.is_set))
    stop.set()
    thread.join(10)
    assert not thread.is_alive() and box == {"result": False}, box


def test_get_wakes_for_a_task_added_while_it_begins_to_listen(store: Store) -> None:
    go = threading.Semaphore(0)
    results: list[Any] = []
    names: list[str] = []

    def waiter() -> None:  # one thread, so one session and one LISTEN session in all
        while True:
            go.acquire()
            if not names:
                return
            try:
                results.append(qdo.connect(names[-1]).get(timeout=60))
            except BaseException as e:
                results.append(e)

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    try:
        for trial in range(40):
            name = f"R{trial}"
            qdo.create(name)  # a new queue: a new channel to LISTEN to
            names.append(name)
            go.release()
            time.sleep(trial % 8 / 2000)  # land the add at different points of get()
            store.add_many(name, [NewTask("x")])
            what = f"get() of trial {trial}"
            wait_until(lambda n=trial: len(results) > n or None, what, timeout=5)
            assert getattr(results[trial], "task", None) == "x", results[trial]
    except AssertionError:
        store.add_many(names[-1], [NewTask("wake")])  # it listens now: this wakes it
        raise
    finally:
        names.clear()
        go.release()
        thread.join(60)


def test_threads_that_ended_leave_no_sessions_behind(url: str) -> None:
    q = qdo.create("T")
    q.status()
    before = qdo_sessions(url, os.getpid())
    for _ in range(10):
        thread, box = in_thread(lambda: q.get(timeout=0.01))
        thread.join(30)
        assert box == {"result": None}, box
    assert qdo_sessions(url, os.getpid()) <= before + 2


# -- concurrent transactions -------------------------------------------------------------------
def run_pairs(first: Callable[[int], object], second: Callable[[int], object], n: int) -> None:
    """first(i) and second(i) at the same moment, for i in range(n), in two threads."""
    barrier = threading.Barrier(2, timeout=60)
    errors: list[BaseException] = []

    def loop(func: Callable[[int], object]) -> None:
        try:
            for i in range(n):
                barrier.wait()
                func(i)
        except BaseException as e:
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=loop, args=(f,)) for f in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors


def test_two_requirements_finished_at_once_release_the_dependent(store: Store) -> None:
    n = 80
    for name in ("A", "B", "C"):
        store.create_queue(name)
    a = store.add_many("A", [NewTask(f"a{i}") for i in range(n)])
    b = store.add_many("B", [NewTask(f"b{i}") for i in range(n)])
    c = store.add_many("C", [NewTask(f"c{i}", requires=[a[i], b[i]]) for i in range(n)])
    held_a = sorted(store.claim("A", "wa", n, lease=600), key=lambda t: t.id)
    held_b = sorted(store.claim("B", "wb", n, lease=600), key=lambda t: t.id)

    def finisher(worker: str, held: list[Any]) -> Callable[[int], None]:
        def finish(i: int) -> None:
            t = held[i]
            assert store.finish(worker, [Outcome(t.id, t._token, State.SUCCEEDED)]) == []

        return finish

    run_pairs(finisher("wa", held_a), finisher("wb", held_b), n)
    states = {t.id: t.state for t in store.tasks("C")}
    stuck = [i for i in c if states[i] is not State.PENDING]
    assert not stuck, f"dependents left Waiting although both requirements Succeeded: {stuck}"


def test_task_added_while_its_requirement_finishes_is_not_left_waiting(store: Store) -> None:
    n = 80
    store.create_queue("Up")
    store.create_queue("Down")
    store.add_many("Up", [NewTask(f"u{i}") for i in range(n)])
    held = sorted(store.claim("Up", "w", n, lease=600), key=lambda t: t.id)
    added: dict[int, int] = {}

    def finish(i: int) -> None:
        t = held[i]
        assert store.finish("w", [Outcome(t.id, t._token, State.SUCCEEDED)]) == []

    def add(i: int) -> None:
        (added[i],) = store.add_many("Down", [NewTask(f"d{i}", requires=[held[i].id])])

    run_pairs(finish, add, n)
    states = {t.id: t.state for t in store.tasks("Down")}
    stuck = [i for i, task_id in added.items() if states[task_id] is not State.PENDING]
    assert not stuck, f"tasks left Waiting on a requirement that Succeeded: {stuck}"


def _claimer(env: dict[str, str], barrier: Any, out: Any) -> None:
    os.environ.update(env)
    q = qdo.connect("P")
    got = []
    barrier.wait()
    while (task := q.get()) is not None:
        got.append(task.id)
    out.put(got)


def test_processes_claiming_at_once_never_share_a_task(qdo_dir: Path) -> None:
    q = qdo.create("P")
    ids = q.add_multiple([f"echo {i}" for i in range(3000)])
    env = {k: v for k, v in os.environ.items() if k.startswith("QDO_")}
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    out = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(env, barrier, out)) for _ in range(4)]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * 4
    claimed = [i for got in results for i in got]
    assert len(claimed) == len(set(claimed)), "a task was handed out twice"
    assert sorted(claimed) == ids
    assert sum(1 for got in results if got) >= 2, "no concurrency happened"
    assert all(t.state is State.RUNNING and t.attempts == 1 for t in q.tasks())


# -- schemas that are not qdo's, or newer ------------------------------------------------------
def one_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stdout == "", proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("qdo: error: "), line
    return line


def schema_contents(url: str, schema: str) -> list[Any]:
    return sql(url, "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n "
               "ON n.oid = c.relnamespace WHERE n.nspname = %s ORDER BY 1", (schema,)) + sql(
        url, "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %s ORDER BY 1", (schema,))  # fmt: skip


def refused(make: Callable[[], object], error: type[Exception]) -> Exception:
    """The ``error`` that ``make()`` raises.  The session that the refused store opened
    (and leaks: see test_refused_store_leaves_no_session_open) is collected here, so
    that its ResourceWarning does not land in some later test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            make()
        except error as e:
            caught = e
        else:
            raise AssertionError(f"no {error.__name__}")
        caught.__traceback__ = None  # it held the half-made store
        gc.collect()
    return caught


def foreign_schema(url: str) -> str:
    schema = os.environ["QDO_DB_SCHEMA"]  # the test's own: dropped afterwards
    sql(url, f'CREATE SCHEMA "{schema}"')
    sql(url, f'CREATE TABLE "{schema}".stuff (id int PRIMARY KEY, note text)')
    sql(url, f"INSERT INTO \"{schema}\".stuff VALUES (1, 'mine'), (2, 'also mine')")
    return schema


def test_schema_of_other_tables_is_refused_and_left_alone(url: str) -> None:
    from qdo.store.postgres import PostgresStore

    schema = foreign_schema(url)
    before = schema_contents(url, schema)
    err = refused(lambda: PostgresStore(url, schema=schema), NotQdoDatabase)
    assert "not qdo's" in str(err)
    refused(qdo.qlist, NotQdoDatabase)
    assert "not a qdo database" in one_error(run_qdo("create", "Q"))
    assert schema_contents(url, schema) == before
    rows = sql(url, f'SELECT * FROM "{schema}".stuff ORDER BY id')
    assert rows == [(1, "mine"), (2, "also mine")]


def test_newer_schema_version_is_refused(url: str, store: Store) -> None:
    from qdo.store.postgres import SCHEMA_VERSION, PostgresStore

    schema = os.environ["QDO_DB_SCHEMA"]
    store.create_queue("Q")
    store.close()
    sql(url, f'UPDATE "{schema}".qdo_schema SET version = %s', (SCHEMA_VERSION + 1,))
    err = refused(lambda: PostgresStore(url, schema=schema), SchemaTooNew)
    assert isinstance(err, SchemaTooNew)
    assert (err.found, err.supported) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
    refused(qdo.qlist, SchemaTooNew)
    assert "upgrade qdo" in one_error(run_qdo("list"))
    assert sql(url, f'SELECT version FROM "{schema}".qdo_schema') == [(SCHEMA_VERSION + 1,)]
    assert sql(url, f'SELECT name FROM "{schema}".queues') == [("Q",)]


def test_a_table_gone_under_a_store_is_a_database_error(url: str, store: Store) -> None:
    """Any failure of the server is a qdo error, as the callers (a watcher, an agent)
    expect: not psycopg's own."""
    schema = os.environ["QDO_DB_SCHEMA"]
    store.create_queue("Q")
    sql(url, f'DROP TABLE "{schema}".agents')
    with pytest.raises(DatabaseError, match='relation "agents" does not exist'):
        store.agents("Q")
    assert [q.name for q in store.list_queues()] == ["Q"]  # and the store goes on


def test_refused_store_leaves_no_session_open(url: str) -> None:
    from qdo.store.postgres import PostgresStore

    schema = foreign_schema(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        before = qdo_sessions(url, os.getpid())
        try:
            PostgresStore(url, schema=schema)
        except NotQdoDatabase as e:
            err: Exception | None = e  # as a caller that logs it and goes on would
        after = qdo_sessions(url, os.getpid())
        err = None
        gc.collect()
    assert err is None and after == before, f"{after - before} session(s) left open"


# -- passwords ---------------------------------------------------------------------------------
PASSWORD = "Sw0rdf1sh-x7Q"


def test_config_never_prints_the_password(url: str, qdo_dir: Path) -> None:
    from psycopg.conninfo import conninfo_to_dict

    real = conninfo_to_dict(url)
    host, port, db = real.get("host", "localhost"), real.get("port", "5432"), real["dbname"]
    urls = [
        f"postgresql://qdo:{PASSWORD}@{host}:{port}/{db}",
        f"postgres://qdo:{PASSWORD}@{host}/{db}?sslmode=disable",
        f"postgresql://{host}:{port}/{db}?user=qdo&password={PASSWORD}",
        f"postgresql://qdo:{PASSWORD}@[::1]:{port}/{db}",
    ]
    for value in urls:
        proc = run_qdo("config", env={"QDO_DB_URL": value})
        assert proc.returncode == 0, proc.stderr
        assert PASSWORD not in proc.stdout + proc.stderr, proc.stdout
        assert "********" in proc.stdout, proc.stdout
    proc = run_qdo("config", env={"QDO_DB_URL": "", "QDO_DB_PASS": PASSWORD})
    assert proc.returncode == 0 and PASSWORD not in proc.stdout + proc.stderr, proc.stdout
    (qdo_dir / "qdorc").write_text(f"db_url = {urls[0]}\ndb_pass = {PASSWORD}\n")
    proc = run_qdo("config", env={"QDO_DB_URL": ""})
    assert proc.returncode == 0 and PASSWORD not in proc.stdout + proc.stderr, proc.stdout
    # a wrong password: refused by the server, and not shown either (not even with -v)
    for args in (("list",), ("-v", "list")):
        proc = run_qdo(*args, env={"QDO_DB_URL": urls[0]})
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "password authentication failed" in proc.stderr, proc.stderr
        assert PASSWORD not in proc.stdout + proc.stderr, proc.stderr


def test_reads_of_a_schema_not_made_yet_leave_no_trace(url: str, qdo_dir: Path) -> None:
    """Opening a store, and every read, see a schema not made yet as an empty one and
    leave the database as it was; the first write makes it, and writes the sample
    qdorc (SPEC 1.7), once."""
    from qdo.errors import UnknownQueue
    from qdo.store.postgres import PostgresStore

    schema = os.environ["QDO_DB_SCHEMA"]
    made: list[bool] = []
    s = PostgresStore(url, schema=schema, on_create=lambda: made.append(True))
    try:
        assert s.list_queues() == [] and s.all_counts() == {} and s.check() == []
        with pytest.raises(UnknownQueue):
            s.counts("Q")
        with pytest.raises(UnknownQueue):
            list(s.export_queue("Q"))
        assert schema_contents(url, schema) == [] and made == []
        assert sql(url, "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)) == []

        s.create_queue("Q")
        assert made == [True]
        assert sum(s.counts("Q").by_state.values()) == 0
        other = PostgresStore(url, schema=schema)
        assert [q.name for q in other.list_queues()] == ["Q"]
        other.close()
        s.create_queue("R")
        assert made == [True]  # told once
    finally:
        s.close()


def test_cli_reads_of_a_fresh_schema_write_nothing(url: str, qdo_dir: Path) -> None:
    """`qdo list` and `qdo status` make no schema and write no qdorc; `qdo create`
    makes both."""
    schema = os.environ["QDO_DB_SCHEMA"]
    for args in [("list",), ("status",)]:
        proc = run_qdo(*args)
        assert proc.returncode == 0, proc.stderr
    assert sql(url, "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)) == []
    assert not (qdo_dir / "qdorc").exists()
    proc = run_qdo("create", "Q")
    assert proc.returncode == 0, proc.stderr
    assert sql(url, "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)) == [(1,)]
    assert (qdo_dir / "qdorc").exists()


def _claim_plan(url: str, schema: str, owner: str, kind: str) -> str:
    """What PostgreSQL plans for a claim of 4 tasks of queue "big" now."""
    import psycopg

    from qdo.store.postgres import Q

    params = {"queue": "big", "owner": owner, "worker": "w", "jobid": None, "n": 4,
              "lease": 60.0, "max_seconds": None, "reserve": False, "kind": kind,
              "token": 1}  # fmt: skip
    with psycopg.connect(url) as conn:
        conn.execute(f'SET search_path TO "{schema}", pg_catalog')
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + Q["claim"].text, params))
        conn.rollback()
    return plan


@pytest.mark.parametrize("how", ["add_many", "import_queue", "submit_calls"])
def test_a_first_big_load_is_planned_for_at_once(url: str, store: Store, how: str) -> None:
    """Until autovacuum comes by, PostgreSQL plans a claim on a table it has never
    analyzed as a sort of every Pending task (0.15 s a claim at 600,000, for a fleet
    started right after a load): a big add or restore brings the statistics up to date."""
    from qdo.models import QueueInfo

    n = 20_000
    if how == "add_many":
        store.add_many("big", [NewTask(f"echo {i}") for i in range(n)], create_queue=True)
    elif how == "submit_calls":
        store.create_queue("big")
        store.make_call_queue("big")
        store.submit_calls("big", [NewCall(f"k{i}", f"f({i})", b"call") for i in range(n)])
    else:
        info = QueueInfo(0, "big", QueueState.ACTIVE, None, 0, 3, store.user)
        records = (("task", (i, f"echo {i}", False, "Pending", 0, 0, None, 0, 1.7e9, None,
                             None, None, None, None, None, None, None, None, 0, 0))
                   for i in range(1, n + 1))  # fmt: skip
        store.import_queue("big", info, (1, n), records)
    schema = os.environ["QDO_DB_SCHEMA"]
    (known,) = sql(url, "SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)",
                   (f'"{schema}".tasks',))[0]  # fmt: skip
    assert known >= n / 2
    calls = how == "submit_calls"
    plan = _claim_plan(url, schema, store.user, "calls" if calls else "shell")
    assert "Sort" not in plan and "tasks_by_state" in plan, plan
    assert len(store.claim("big", "w", 4, 60.0, calls=calls)) == 4


def test_leases_move_on_after_an_outage_without_waiting_for_a_held_row(
    url: str, store: Store
) -> None:
    """Back from an outage, a store moves every lease on before its next write; a row
    another session holds is left to it.  (Waiting for it, the agents back from a server
    restart updated every Running row at once, in no common order, and deadlocked; each
    deadlock counted as an outage that extended again: 17 tasks/s for 500 agents.)"""
    import psycopg

    store.add_many("q", [NewTask("a"), NewTask("b")], create_queue=True)
    held, free = store.claim("q", "w", 2, 0.5)  # leases that run out within the outage
    schema = os.environ["QDO_DB_SCHEMA"]

    def leases() -> dict[int, float]:
        rows = sql(url, f'SELECT id, lease_expires FROM "{schema}".tasks')
        return {int(i): float(e) for i, e in rows}

    before = leases()
    time.sleep(0.4)  # the outage: at least this long since the store's last write
    store.d.broke()  # type: ignore[attr-defined]
    with psycopg.connect(url) as other:
        other.execute(f'SELECT id FROM "{schema}".tasks WHERE id = %s FOR UPDATE', (held.id,))
        thread, out = in_thread(lambda: store.create_queue("after"))
        try:
            thread.join(timeout=60)
            assert not thread.is_alive(), "the write waited for the row another session holds"
        finally:
            other.rollback()
            thread.join()
    assert "error" not in out, out
    after = leases()
    assert after[held.id] == before[held.id]
    assert after[free.id] >= before[free.id] + 0.25  # (now + 0.4 s or more: 0.8 s or more)
