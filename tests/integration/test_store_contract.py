"""The storage contract (qdo/store/base.py), run against every real backend."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from qdo.errors import (
    DatabaseError,
    DependencyCycle,
    QueueExists,
    TaskNotEditable,
    UnknownQueue,
    UnknownTask,
)
from qdo.models import QueueState, State
from qdo.store.base import TASK_ROW, Begun, NewCall, NewTask, Outcome, SameTasks, Store
from tests.conftest import make_store

pytestmark = pytest.mark.backends


def add(store: Store, queue: str, *payloads: str, **kw: object) -> list[int]:
    return list(store.add_many(queue, [NewTask(p, **kw) for p in payloads]))  # type: ignore[arg-type]


def finish(store: Store, worker: str, tasks: list, state: State = State.SUCCEEDED) -> list[int]:
    return store.finish(worker, [Outcome(t.id, t._token, state) for t in tasks])


@pytest.fixture
def q(store: Store) -> str:
    store.create_queue("q")
    return "q"


def test_queue_lifecycle(store: Store) -> None:
    info = store.create_queue("alpha")
    assert info.name == "alpha" and info.state is QueueState.ACTIVE
    with pytest.raises(QueueExists):
        store.create_queue("alpha")
    store.create_queue("beta")
    assert [x.name for x in store.list_queues()] == ["alpha", "beta"]
    store.set_queue_state("alpha", QueueState.PAUSED)
    assert store.get_queue("alpha").state is QueueState.PAUSED
    add(store, "alpha", "true", "false")
    assert store.delete_queue("alpha") == 2
    with pytest.raises(UnknownQueue):
        store.get_queue("alpha")
    with pytest.raises(UnknownQueue):
        store.set_queue_state("alpha", QueueState.ACTIVE)
    with pytest.raises(UnknownQueue):
        store.counts("alpha")


def test_ids_are_consecutive_and_never_reused(store: Store, q: str) -> None:
    first = add(store, q, "a", "b", "c")
    assert first == [first[0], first[0] + 1, first[0] + 2]
    store.delete_queue(q)
    store.create_queue(q)
    again = add(store, q, "d")
    assert again[0] > first[-1]


def test_add_many_streams_a_generator(store: Store, q: str) -> None:
    ids = store.add_many(q, (NewTask(f"echo {i}") for i in range(25_000)))
    assert len(ids) == 25_000
    assert store.counts(q).by_state[State.PENDING] == 25_000


def test_add_many_to_missing_queue(store: Store) -> None:
    with pytest.raises(UnknownQueue):
        add(store, "nope", "true")
    ids = store.add_many("made", [NewTask("true")], create_queue=True)
    assert len(ids) == 1 and store.get_queue("made").name == "made"


def test_add_many_is_all_or_nothing(store: Store, q: str) -> None:
    def tasks():
        yield NewTask("one")
        yield NewTask("two")
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError):
        store.add_many(q, tasks())
    with pytest.raises(UnknownTask):
        store.add_many(q, [NewTask("ok"), NewTask("bad", requires=[999_999])])
    assert sum(store.counts(q).by_state.values()) == 0

    def tasks_new_queue():
        yield NewTask("one")
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError):
        store.add_many("fresh", tasks_new_queue(), create_queue=True)
    with pytest.raises(UnknownQueue):
        store.get_queue("fresh")


def test_claim_order_priority_then_fifo(store: Store, q: str) -> None:
    low = add(store, q, "l1", "l2")
    high = add(store, q, "h1", "h2", priority=5)
    neg = add(store, q, "n1", priority=-3)
    got = store.claim(q, "w", 10, lease=60)
    assert [t.id for t in got] == high + low + neg
    assert all(t.state is State.RUNNING and t.attempts == 1 and t.worker == "w" for t in got)
    assert store.claim(q, "w", 10, lease=60) == []


def test_claim_within_a_time_budget(store: Store, q: str) -> None:
    """A worker whose batch job ends soon takes only tasks that fit, in the usual order,
    and tasks that declare no run time always."""
    (long,) = add(store, q, "long", timeout=600, priority=9)
    (edge,) = add(store, q, "edge", timeout=60, priority=5)
    (free,) = add(store, q, "free", priority=1)
    (short,) = add(store, q, "short", timeout=0.5)
    got = store.claim(q, "w", 10, lease=60, max_seconds=60)
    assert [t.id for t in got] == [edge, free, short]
    assert store.claim(q, "w", 10, lease=60, max_seconds=599.9) == []
    (t,) = store.claim(q, "w", 10, lease=60)  # no budget: anything
    assert t.id == long and t.attempts == 1


def test_pending_fits(store: Store, q: str) -> None:
    assert not store.pending_fits(q, 60)  # nothing pending
    (long,) = add(store, q, "long", timeout=600)
    assert not store.pending_fits(q, 599) and store.pending_fits(q, 600)
    add(store, q, "free")  # declares no run time: fits any job
    assert store.pending_fits(q, 0)


def test_claimed_tasks_carry_their_requirements(store: Store, q: str) -> None:
    """A claimed task says what it required, in order, whether it had none, one or
    many (claim reads them with the task, in the same statement)."""
    ups = add(store, q, *[f"up {i}" for i in range(12)])
    finish(store, "w", store.claim(q, "w", 12, lease=60))
    many = list(reversed(ups))
    (none, one, all_) = store.add_many(q, [NewTask("none"), NewTask("one", requires=[ups[3]]),
                                           NewTask("all", requires=many)])  # fmt: skip
    got = {t.id: t.requires for t in store.claim(q, "w", 3, lease=60)}
    assert got == {none: (), one: (ups[3],), all_: tuple(ups)}


def test_rows_read_by_position_are_checked_against_their_statement(store: Store, q: str) -> None:
    """Claims, reports and task listings read their rows by position (``Tx.tuples``):
    a statement whose first columns are not the ones its reader names, in that order,
    is an error at its first run, not a task built from the wrong columns."""
    add(store, q, "a")
    d = store.d  # type: ignore[attr-defined]
    queue_id = d.run(lambda tx: store._queue(tx, q)["id"], write=False)  # type: ignore[attr-defined]

    def read(columns: tuple[str, ...]) -> list:
        return d.run(lambda tx: tx.tuples("tasks", columns, queue_id=queue_id, after=0,
                                          exitcode=None, limit=10), write=False)  # fmt: skip

    (row,) = read(TASK_ROW)
    assert row[TASK_ROW.index("payload")] == "a" and row[TASK_ROW.index("state")] == "Pending"
    assert read(TASK_ROW[:3]) == [row]  # (the first columns: a reader may take fewer)
    for wrong in [("id", "payload"), (*TASK_ROW, "signature"), ("queue_id", "id")]:
        with pytest.raises(DatabaseError, match="statement 'tasks' returns"):
            read(wrong)


def test_claim_records_lease_and_job(store: Store, q: str) -> None:
    add(store, q, "x")
    before = time.time()
    (t,) = store.claim(q, "host:1", 1, lease=100, jobid="42")
    assert t.jobid == "42" and t.worker == "host:1"
    assert t.lease_expires is not None and t.started is not None
    assert before + 99 <= t.lease_expires.timestamp() <= time.time() + 101


def _back_from_outage(store: Store, seconds: float, name: str) -> None:
    """``store`` saw ``seconds`` of failed writes; then one (``create_queue``) goes through."""
    store.d._last_ok = time.monotonic() - seconds  # type: ignore[attr-defined]
    store.d.broke()  # type: ignore[attr-defined]
    store.create_queue(name)


def _leases(store: Store, q: str) -> dict[int, float]:
    return {t.id: t.lease_expires.timestamp()
            for t in store.tasks(q, state=State.RUNNING) if t.lease_expires}  # fmt: skip


def test_leases_moved_on_after_an_outage_are_moved_once_by_every_store_back(
    store: Store, q: str, backend: str, qdo_dir: Path
) -> None:
    """The stores back from one outage (a server restart: every agent's) give the
    leases that would run out in it the outage's length from now, once: not as much
    again for each store, which kept a dead holder's task away for an outage per agent.
    A lease that runs out later than that is left as it is."""
    add(store, q, "soon", "later")
    (soon,) = store.claim(q, "w", 1, lease=5)
    (later,) = store.claim(q, "w", 1, lease=600)
    others = [make_store(backend, qdo_dir) for _ in range(2)]
    try:
        back = time.time()
        for i, s in enumerate((store, *others)):
            _back_from_outage(s, 40, f"after-{i}")
    finally:
        for s in others:
            s.close()
    leases = _leases(store, q)
    assert back + 39 <= leases[soon.id] <= time.time() + 41
    assert later.lease_expires is not None
    assert leases[later.id] == pytest.approx(later.lease_expires.timestamp(), abs=0.01)


def test_a_lease_that_ran_out_before_an_outage_stays_run_out(store: Store, q: str) -> None:
    add(store, q, "gone")
    (gone,) = store.claim(q, "w", 1, lease=0.001)
    time.sleep(0.3)
    _back_from_outage(store, 0.1, "after")
    assert gone.lease_expires is not None
    assert _leases(store, q)[gone.id] == pytest.approx(gone.lease_expires.timestamp(), abs=0.01)


def test_paused_queue_hands_out_nothing(store: Store, q: str) -> None:
    add(store, q, "a", "b")
    (running,) = store.claim(q, "w", 1, lease=60)
    store.set_queue_state(q, QueueState.PAUSED)
    assert store.claim(q, "w", 5, lease=60) == []
    assert finish(store, "w", [running]) == []  # running tasks still report
    store.set_queue_state(q, QueueState.ACTIVE)
    assert len(store.claim(q, "w", 5, lease=60)) == 1


def test_finish_requires_the_current_lease(store: Store, q: str) -> None:
    add(store, q, "a")
    (t,) = store.claim(q, "w1", 1, lease=60)
    assert store.finish("someone-else", [Outcome(t.id, t._token, State.SUCCEEDED)]) == [t.id]
    assert store.finish("w1", [Outcome(t.id, t._token + 1, State.SUCCEEDED)]) == [t.id]
    assert store.counts(q).by_state[State.RUNNING] == 1
    out = Outcome(t.id, t._token, State.FAILED, exitcode=3, message="boom", log="/x.log")
    assert store.finish("w1", [out]) == []
    (done,) = store.tasks(q, task_id=t.id)
    assert (done.state, done.exitcode, done.message, done.log) == (
        State.FAILED,
        3,
        "boom",
        "/x.log",
    )
    assert done.finished is not None and done.lease_expires is None
    # a second report of the same attempt is refused
    assert finish(store, "w1", [t]) == [t.id]


def test_give_back_makes_the_task_pending(store: Store, q: str) -> None:
    add(store, q, "a")
    (t,) = store.claim(q, "w", 1, lease=60)
    assert store.finish("w", [Outcome(t.id, t._token, State.PENDING)]) == []
    (again,) = store.claim(q, "w2", 1, lease=60)
    assert again.id == t.id and again.attempts == 2


def test_late_report_after_rerun_is_refused(store: Store, q: str) -> None:
    add(store, q, "a")
    (old,) = store.claim(q, "w", 1, lease=60)
    store.rerun(q)
    (new,) = store.claim(q, "w", 1, lease=60)  # same worker name, new lease
    assert finish(store, "w", [old]) == [old.id]
    assert finish(store, "w", [new]) == []


def test_renew_extends_only_held_leases(store: Store, q: str) -> None:
    add(store, q, "a", "b")
    a, b = store.claim(q, "w", 2, lease=1)
    finish(store, "w", [b])
    lost = store.renew("w", [(a.id, a._token), (b.id, b._token)], lease=1000)
    assert lost == [b.id]
    (a2,) = store.tasks(q, task_id=a.id)
    assert a2.lease_expires is not None and a2.lease_expires.timestamp() > time.time() + 900


def test_requeue_expired(store: Store, q: str) -> None:
    add(store, q, "a", "b")
    a, b = store.claim(q, "w", 2, lease=0.05)
    store.renew("w", [(b.id, b._token)], lease=60)
    time.sleep(0.1)
    assert store.requeue_expired(q) == [a.id]
    (a2,) = store.tasks(q, task_id=a.id)
    assert a2.state is State.PENDING and "lease expired" in a2.message
    assert a2.lost == 1 and a2.worker == "w"  # the last holder stays on record
    assert finish(store, "w", [a]) == [a.id]  # the lost holder can't report any more
    (a3,) = store.claim(q, "w2", 1, lease=60)
    assert a3.id == a.id and a3.attempts == 2


def test_queue_status_puts_expired_leases_back_first(store: Store, q: str) -> None:
    add(store, q, "a", "b", "c")
    store.set_queue_options(q, max_retries=4)
    a, b = store.claim(q, "w", 2, lease=0.05)
    store.renew("w", [(b.id, b._token)], lease=60)
    time.sleep(0.1)
    info, counts = store.queue_status(q)
    assert info.name == q and info.max_retries == 4
    assert counts.by_state_names() == store.counts(q).by_state_names()
    assert counts.by_state_names()["Pending"] == 2 and counts.by_state_names()["Running"] == 1
    (a2,) = store.tasks(q, task_id=a.id)
    assert a2.state is State.PENDING and a2.lost == 1
    assert store.queue_status(q)[1] == counts  # nothing more expired: the same read
    with pytest.raises(UnknownQueue):
        store.queue_status("nope")


def test_requeue_workers(store: Store, q: str) -> None:
    add(store, q, "a", "b", "c")
    store.claim(q, "dead:1", 2, lease=60)
    store.claim(q, "alive:2", 1, lease=60)
    assert sorted(store.running_workers(q)) == ["alive:2", "dead:1"]
    assert len(store.requeue_workers(q, ["dead:1"])) == 2
    assert store.running_workers(q) == ["alive:2"]


def test_requeue_by_batch_job(store: Store, q: str) -> None:
    add(store, q, "a", "b", "c")
    store.claim(q, "node1:7", 2, lease=60, jobid="101")
    store.claim(q, "node2:7", 1, lease=60, jobid="102")
    assert sorted(store.running_jobs(q)) == ["101", "102"]
    back = store.requeue_workers(q, jobids=["101"], why="batch job ended")
    assert len(back) == 2 and store.running_jobs(q) == ["102"]
    (t,) = store.tasks(q, task_id=back[0])
    assert t.state is State.PENDING and "batch job ended" in (t.message or "")
    assert store.requeue_workers(q) == []  # nobody named: nothing happens


def test_only_a_started_task_counts_as_lost(store: Store, q: str) -> None:
    """A reserved task (claimed, not started) whose holder vanished lost nothing: it
    comes back without using one of its ``max_lost`` lives; a started one uses one."""
    store.set_queue_options(q, max_lost=1)
    add(store, q, "ran", "waited")
    ran, waited = store.claim(q, "w", 2, lease=0.05, reserve=True)
    assert ran.started is None and waited.started is None
    assert store.finish("w", [], begun=[Begun(ran.id, ran._token, time.time())]) == []
    (marked,) = store.tasks(q, task_id=ran.id)
    assert marked.started is not None and marked.state is State.RUNNING
    time.sleep(0.1)
    assert sorted(store.requeue_expired(q)) == sorted([ran.id, waited.id])
    (r,) = store.tasks(q, task_id=ran.id)
    (w,) = store.tasks(q, task_id=waited.id)
    assert r.state is State.KILLED and r.lost == 1  # max_lost=1: its one life is gone
    assert w.state is State.PENDING and w.lost == 0 and "before it started" in (w.message or "")
    history = store.attempts([ran.id, waited.id])
    assert [a.state for a in history[ran.id]] == ["Lost"]
    assert [a.state for a in history[waited.id]] == ["Returned"]
    # a mark for a task no longer held changes nothing
    (again,) = store.claim(q, "w2", 1, lease=60)
    assert store.finish("w", [], begun=[Begun(again.id, waited._token, time.time())]) == []


def test_dependencies_release_when_all_succeed(store: Store, q: str) -> None:
    a, b = add(store, q, "a", "b")
    (c,) = store.add_many(q, [NewTask("c", requires=[a, b])])
    (c_task,) = store.tasks(q, task_id=c)
    assert c_task.state is State.WAITING and sorted(c_task.requires) == [a, b]
    ta, tb = store.claim(q, "w", 2, lease=60)
    finish(store, "w", [ta])
    assert store.tasks(q, task_id=c)[0].state is State.WAITING
    finish(store, "w", [tb], State.FAILED)
    assert store.tasks(q, task_id=c)[0].state is State.WAITING
    counts = store.counts(q)
    assert counts.blocked == 1
    store.retry(q)
    (tb2,) = store.claim(q, "w", 1, lease=60)
    finish(store, "w", [tb2])
    assert store.tasks(q, task_id=c)[0].state is State.PENDING
    assert store.counts(q).blocked == 0


def test_requirement_already_succeeded_means_pending(store: Store, q: str) -> None:
    (a,) = add(store, q, "a")
    finish(store, "w", store.claim(q, "w", 1, lease=60))
    (b,) = store.add_many(q, [NewTask("b", requires=[a])])
    assert store.tasks(q, task_id=b)[0].state is State.PENDING


def test_dependencies_cross_queues(store: Store, q: str) -> None:
    store.create_queue("other")
    (a,) = add(store, "other", "upstream")
    (b,) = store.add_many(q, [NewTask("downstream", requires=[a])])
    assert store.claim(q, "w", 1, lease=60) == []
    finish(store, "w", store.claim("other", "w", 1, lease=60))
    (got,) = store.claim(q, "w", 1, lease=60)
    assert got.id == b and got.requires == (a,)
    # rerunning the upstream queue makes pending dependents elsewhere wait again
    (c,) = store.add_many(q, [NewTask("second", requires=[a])])
    assert store.tasks(q, task_id=c)[0].state is State.PENDING
    store.rerun("other")
    assert store.tasks(q, task_id=c)[0].state is State.WAITING


def test_deleted_requirement_blocks(store: Store, q: str) -> None:
    store.create_queue("other")
    (a,) = add(store, "other", "upstream")
    (b,) = store.add_many(q, [NewTask("downstream", requires=[a])])
    store.delete_queue("other")
    assert store.tasks(q, task_id=b)[0].state is State.WAITING
    assert store.counts(q).blocked == 1


def test_unknown_requirement_refused(store: Store, q: str) -> None:
    (a,) = add(store, q, "a")
    with pytest.raises(UnknownTask) as err:
        store.add_many(q, [NewTask("b", requires=[a, a + 1000])])
    assert err.value.task_ids == [a + 1000]
    # an id that the same call is about to create is unknown too: nobody can know it
    with pytest.raises(UnknownTask):
        store.add_many(q, [NewTask("c"), NewTask("d", requires=[a + 1])])
    assert sum(store.counts(q).by_state.values()) == 1


def test_add_requires_and_cycles(store: Store, q: str) -> None:
    a, b, c = add(store, q, "a", "b", "c")
    store.add_requires(q, b, [a])
    store.add_requires(q, c, [b])
    assert store.tasks(q, task_id=c)[0].state is State.WAITING
    with pytest.raises(DependencyCycle):
        store.add_requires(q, a, [c])  # a <- b <- c <- a
    with pytest.raises(DependencyCycle):
        store.add_requires(q, a, [a])
    with pytest.raises(UnknownTask):
        store.add_requires(q, a, [c + 100])
    with pytest.raises(UnknownTask):
        store.add_requires(q, c + 100, [a])
    store.create_queue("other")
    with pytest.raises(UnknownTask):
        store.add_requires("other", a, [b])  # a is not a task of "other"
    assert store.tasks(q, task_id=a)[0].requires == ()
    assert store.tasks(q, task_id=a)[0].state is State.PENDING
    (ta,) = store.claim(q, "w", 1, lease=60)
    with pytest.raises(TaskNotEditable):
        store.add_requires(q, ta.id, [c])


def test_retry_and_rerun(store: Store, q: str) -> None:
    add(store, q, "ok", "bad", "killed")
    ok, bad, killed = store.claim(q, "w", 3, lease=60)
    finish(store, "w", [ok])
    finish(store, "w", [bad], State.FAILED)
    finish(store, "w", [killed], State.KILLED)
    assert store.retry(q) == 2
    counts = store.counts(q).by_state
    assert counts[State.PENDING] == 2 and counts[State.SUCCEEDED] == 1
    assert store.rerun(q) == 3
    tasks = store.tasks(q)
    assert all(t.state is State.PENDING and t.attempts == 0 and t.exitcode is None for t in tasks)


def test_rerun_restores_waiting(store: Store, q: str) -> None:
    (a,) = add(store, q, "a")
    (b,) = store.add_many(q, [NewTask("b", requires=[a])])
    finish(store, "w", store.claim(q, "w", 1, lease=60))
    finish(store, "w", store.claim(q, "w", 1, lease=60))
    store.rerun(q)
    states = {t.id: t.state for t in store.tasks(q)}
    assert states == {a: State.PENDING, b: State.WAITING}


def test_counts_and_tasks_filters(store: Store, q: str) -> None:
    ids = add(store, q, *[f"t{i}" for i in range(10)])
    running = store.claim(q, "w", 4, lease=60)
    finish(store, "w", running[:1], State.FAILED)
    counts = store.counts(q).by_state
    assert counts == {
        State.WAITING: 0, State.PENDING: 6, State.RUNNING: 3,
        State.SUCCEEDED: 0, State.FAILED: 1, State.KILLED: 0,
    }  # fmt: skip
    assert [t.id for t in store.tasks(q, State.FAILED)] == [running[0].id]
    assert [t.id for t in store.tasks(q, after=ids[7])] == ids[8:]
    assert [t.id for t in store.tasks(q, limit=2)] == ids[:2]
    assert store.tasks(q, task_id=ids[3], state=State.FAILED) == []
    assert set(store.all_counts()) == {store.get_queue(q).id}


def test_payloads_round_trip(store: Store, q: str) -> None:
    text = "echo \"héllo wörld\" 'quoted' $HOME `x` ; | & \\ 漢字 \U0001f600"
    (a,) = store.add_many(q, [NewTask(text)])
    (b,) = store.add_many(q, [NewTask('{"x": [1, 2.5, null, true]}', is_json=True)])
    assert store.tasks(q, task_id=a)[0].task == text
    assert store.tasks(q, task_id=b)[0].task == {"x": [1, 2.5, None, True]}


def test_long_and_short_runs_of_like_tasks_keep_every_column(store: Store, q: str) -> None:
    # a load goes in runs of tasks alike in all but their payloads (one statement a run
    # on SQLite) and in single rows where they differ: each task must come back whole
    texts = [f"echo {i} \"é\" \\ '$x' \n 漢 \U0001f600" for i in range(300)]
    tasks = [NewTask(t) for t in texts[:100]]  # a long run
    tasks += [NewTask(t, priority=i % 3) for i, t in enumerate(texts[100:140])]  # short runs
    tasks += [NewTask(f'{{"i": {i}}}', is_json=True, timeout=5.0) for i in range(50)]
    tasks += [NewTask(t, priority=7, max_retries=2) for t in texts[140:300]]
    ids = list(store.add_many(q, tasks))
    assert ids == list(range(ids[0], ids[0] + len(tasks)))
    got = store.tasks(q)
    assert [t.id for t in got] == ids
    for new, t in zip(tasks, got, strict=True):
        want = {"i": int(new.payload[6:-1])} if new.is_json else new.payload
        assert (t.task, t.priority, t.timeout, t.max_retries) == (
            want,
            new.priority,
            new.timeout,
            new.max_retries,
        )
    (more,) = [list(store.add_many(q, SameTasks(texts[:30], False, 4)))]
    assert more == list(range(ids[-1] + 1, ids[-1] + 31))
    assert [(t.task, t.priority) for t in store.tasks(q, after=ids[-1])] == [
        (text, 4) for text in texts[:30]
    ]
    assert store.counts(q).by_state[State.PENDING] == len(tasks) + 30


def test_concurrent_claims_in_threads_never_overlap(store: Store, q: str) -> None:
    store.add_many(q, (NewTask(f"t{i}") for i in range(2000)))
    nthreads = 8
    barrier = threading.Barrier(nthreads)
    got: list[list[int]] = [[] for _ in range(nthreads)]

    def claimer(k: int) -> None:
        barrier.wait()
        while batch := store.claim(q, f"w{k}", 7, lease=60):
            got[k].extend(t.id for t in batch)
            assert finish(store, f"w{k}", batch) == []

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for ids in got for i in ids]
    assert len(everything) == len(set(everything)) == 2000
    assert store.counts(q).by_state[State.SUCCEEDED] == 2000


def _by_state_of_tasks(store: Store, queue: str) -> dict[State, int]:
    """The counts by state that the tasks themselves give (one row each)."""
    out = dict.fromkeys(State, 0)
    for t in store.tasks(queue):
        out[t.state] += 1
    return out


def test_kept_counts_follow_every_kind_of_change(store: Store, q: str) -> None:
    store.create_queue("other")
    (up,) = add(store, "other", "up")
    first = add(store, q, *[f"t{i}" for i in range(8)])
    add(store, q, "w1", "w2", requires=[up])  # Waiting, on another queue's task
    seen = []

    def look() -> None:
        for name in (q, "other"):
            assert store.counts(name).by_state == _by_state_of_tasks(store, name)
        seen.append(store.counts(q).by_state)

    look()
    held = store.claim(q, "w", 4, lease=0.01)
    look()
    finish(store, "w", held[:1], State.FAILED)
    finish(store, "w", held[1:2], State.SUCCEEDED)
    look()
    time.sleep(0.05)
    store.requeue_expired(q)  # the other two come back
    look()
    (u,) = store.claim("other", "w", 1, lease=60)
    finish(store, "w", [u])  # releases w1, w2
    look()
    store.set_state(q, first[7], State.KILLED, None, "by hand", "me")
    store.retry(q)
    look()
    store.rerun(q)
    look()
    store.delete_queue("other")
    assert store.counts(q).by_state == _by_state_of_tasks(store, q)
    store.create_queue("calls")
    store.make_call_queue("calls")
    store.submit_calls("calls", [NewCall(str(i), f"f({i})", b"x") for i in range(3)])
    store.claim("calls", "w", 1, lease=60, calls=True)
    assert store.counts("calls").by_state == _by_state_of_tasks(store, "calls")
    store.forget_calls("calls")  # deletes its tasks
    assert sum(store.counts("calls").by_state.values()) == 0
    assert len({tuple(s.values()) for s in seen}) > 3  # the counts did move
    assert store.check() == []


def test_a_count_that_is_off_is_found_and_repaired(store: Store, q: str) -> None:
    add(store, q, "a", "b", "c")
    store.claim(q, "w", 1, lease=60)
    assert store.check() == []
    _set_kept_count(store, q, State.PENDING, 7)
    assert store.counts(q).by_state[State.PENDING] == 7
    problems = store.check()
    assert len(problems) == 1 and "2 Pending tasks, counted as 7" in problems[0], problems
    store.repair_counts()
    assert store.check() == []
    assert store.counts(q).by_state == _by_state_of_tasks(store, q)


def _set_kept_count(store: Store, queue: str, state: State, n: int) -> None:
    """Spoil a queue's kept count the way a bug would: behind the store's back."""
    queue_id = store.get_queue(queue).id
    if store.location.endswith(".sqlite"):
        import sqlite3

        with sqlite3.connect(store.location) as conn:
            conn.execute("UPDATE queue_counts SET n = ? WHERE queue_id = ? AND state = ?",
                         (n, queue_id, state.value))  # fmt: skip
        return
    import os

    import psycopg

    from tests.conftest import postgres_or_skip

    with psycopg.connect(postgres_or_skip(), autocommit=True) as conn:
        conn.execute(f"SET search_path TO {os.environ['QDO_DB_SCHEMA']}")
        conn.execute("SELECT qdo_fold_counts(%s)", (queue_id,))
        conn.execute("UPDATE queue_counts SET n = %s WHERE queue_id = %s AND state = %s",
                     (n, queue_id, state.value))  # fmt: skip


def test_failures_are_grouped_by_signature_in_the_store(store: Store, q: str) -> None:
    ids = add(store, q, *[f"t{i}" for i in range(7)])
    held = store.claim(q, "w", 7, lease=60)
    store.finish("w", [
        Outcome(t.id, t._token, State.FAILED, 1, f"ValueError: bad input {t.id}")
        for t in held[:3]] + [
        Outcome(t.id, t._token, State.FAILED, 1, "exit code 1", tail=f"no file x-{t.id}.fits")
        for t in held[3:5]] + [Outcome(held[5].id, held[5]._token, State.SUCCEEDED)])  # fmt: skip
    store.set_state(q, ids[6], State.KILLED, None, "cancelled", "me")
    groups = store.failure_groups(q)
    assert [(g.signature, g.state, g.exitcode, g.count, g.examples) for g in groups] == [
        ("Failed exit 1: ValueError: bad input N", State.FAILED, 1, 3, ids[:3]),
        ("Failed exit 1: no file x-N.fits", State.FAILED, 1, 2, ids[3:5]),
        ("Killed exit -: cancelled", State.KILLED, None, 1, [ids[6]]),
    ]  # fmt: skip
    assert [g.examples for g in store.failure_groups(q, limit=1, examples=2)] == [ids[:2]]
    assert store.retry(q, signatures=[groups[1].signature]) == 2
    assert [g.count for g in store.failure_groups(q)] == [3, 1]
    # a retried task that fails again the same way is back in its group
    again = store.claim(q, "w", 5, lease=60)
    assert sorted(t.id for t in again) == ids[3:5]
    store.finish("w", [Outcome(t.id, t._token, State.FAILED, 1, "exit code 1", tail="other")
                       for t in again])  # fmt: skip
    assert [(g.signature, g.count) for g in store.failure_groups(q)][1] == (
        "Failed exit 1: other", 2)  # fmt: skip
    store.rerun(q)
    assert store.failure_groups(q) == []


def test_a_task_killed_for_its_lost_workers_has_the_signature_of_its_message(
    store: Store, q: str
) -> None:
    from qdo.failures import signature

    store.set_queue_options(q, max_lost=1)
    (task_id,) = add(store, q, "t")
    (t,) = store.claim(q, "w", 1, lease=60)
    assert store.requeue_workers(q, ["w"]) == [task_id]
    (killed,) = store.tasks(q, task_id=task_id)
    assert killed.state is State.KILLED
    (group,) = store.failure_groups(q)
    assert group.signature == signature(State.KILLED, None, killed.message, None)


@pytest.mark.parametrize("size", [3, 100])  # (SQLite spells a batch of over 64 apart)
def test_a_batch_of_reports_keeps_every_value_whole(store: Store, q: str, size: int) -> None:
    # a failure's message is whatever the task said: a NUL or a lone surrogate in it
    # (which the text of neither backend can hold) is kept as U+FFFD on every backend,
    # and the rest exactly as given
    ids = add(store, q, *(f"t{i}" for i in range(size)))
    t0 = 1765051207.123456
    outcomes = [Outcome(t.id, t._token, State.FAILED, exitcode=-(2**31),
                        message=f"bad\x00input \udce9 é漢 \U0001f600 {i}", log=f"/logs/{i}.log",
                        started=t0 + i / 7, ended=t0 + i / 3, cpu=1e-300 * (i + 1),
                        rss=2**62 + i)
                for i, t in enumerate(store.claim(q, "w", size, lease=60))]  # fmt: skip
    assert store.finish("w", outcomes) == []
    tasks = {t.id: t for t in store.tasks(q)}
    attempts = store.attempts(ids)
    for o in outcomes:
        said = o.message.replace("\x00", "\ufffd").replace("\udce9", "\ufffd")  # type: ignore[union-attr]
        t = tasks[o.task_id]
        assert (t.message, t.exitcode, t.log) == (said, o.exitcode, o.log)
        (a,) = attempts[o.task_id]
        assert (a.message, a.exitcode, a.cpu, a.rss, a.log) == (said, o.exitcode, o.cpu, o.rss,
                                                                 o.log)  # fmt: skip
        assert a.started and abs(a.started.timestamp() - o.started) < 1e-6  # type: ignore[operator]
        assert a.finished and abs(a.finished.timestamp() - o.ended) < 1e-6  # type: ignore[operator]
    (group,) = store.failure_groups(q)
    assert group.signature == "Failed exit -2147483648: bad\ufffdinput \ufffd é漢 \U0001f600 N"
    assert group.count == size
    # and so is an administrative change's
    assert store.set_state(q, ids[0], State.KILLED, None, "stop\x00ped\ud800", "me") is State.KILLED
    assert store.tasks(q, task_id=ids[0])[0].message == "stop\ufffdped\ufffd"


def test_the_end_of_a_long_message_is_cut(store: Store, q: str) -> None:
    # (a task's output is for its log; a dump's line must stay one that restore reads)
    from qdo.store.base import LONGEST_MESSAGE

    ids = add(store, q, "a", "b")
    a, b = store.claim(q, "w", 2, lease=60)
    long = "\x01" * (LONGEST_MESSAGE + 10)
    outcomes = [Outcome(a.id, a._token, State.FAILED, 1, long),
                Outcome(b.id, b._token, State.FAILED, 1, long[:-10])]  # fmt: skip
    assert store.finish("w", outcomes) == []
    cut, whole = (t.message for t in store.tasks(q))
    assert cut == long[:LONGEST_MESSAGE] + " ... (10 characters cut)" and whole == long[:-10]
    assert [a.message for a in store.attempts(ids)[a.id]] == [cut]
