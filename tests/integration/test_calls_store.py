"""The store's verbs of durable futures (issue 14), on every backend: queues of calls,
submitting by key, results in the order written."""

from __future__ import annotations

import pytest

from qdo.errors import InvalidInput
from qdo.models import State
from qdo.store.base import Item, NewCall, NewTask, Outcome, Store

pytestmark = pytest.mark.backends


def call(key: str, data: bytes = b"call") -> NewCall:
    return NewCall(key, f"f({key})", data + key.encode())


@pytest.fixture
def q(store: Store) -> str:
    store.create_queue("calls")
    store.make_call_queue("calls")
    return "calls"


def test_a_queue_of_calls_is_made_empty_and_keeps_to_calls(store: Store, q: str) -> None:
    assert store.get_queue(q).kind == "calls"
    store.make_call_queue(q)  # again: nothing
    with pytest.raises(InvalidInput, match="holds Python calls"):
        store.add_many(q, [NewTask("echo hi")])
    store.create_queue("shell")
    store.add_many("shell", [NewTask("echo hi")])
    with pytest.raises(InvalidInput, match="holds shell tasks"):
        store.make_call_queue("shell")
    with pytest.raises(InvalidInput, match="holds shell tasks"):
        store.submit_calls("shell", [call("a")])
    assert store.get_queue("shell").kind == "shell"
    # a claimer of the wrong kind gets nothing: a call never runs as a command
    store.submit_calls(q, [call("a")])
    assert store.claim(q, "w", 10, lease=60) == []
    assert store.claim("shell", "w", 10, lease=60, calls=True) == []
    (t,) = store.claim(q, "w", 10, lease=60, calls=True)
    assert t.task == "f(a)" and store.call_data([t.id]) == {t.id: b"calla"}


def test_calls_are_found_again_by_key(store: Store, q: str) -> None:
    first = store.submit_calls(q, [call("a"), call("b"), call("a")])
    assert [s.new for s in first] == [True, True, True]  # all three made now (one task)
    assert first[0].task_id == first[2].task_id != first[1].task_id
    again = store.submit_calls(q, [call("b"), call("c")])
    assert again[0][:3] == (first[1].task_id, State.PENDING, False) and again[1].new
    assert len(store.tasks(q)) == 3


def finish(store: Store, q: str, state: State, value: bytes | None) -> int:
    (t,) = store.claim(q, "w", 1, lease=60, calls=True)
    assert store.finish("w", [Outcome(t.id, t._token, state, value=value)]) == []
    return t.id


def test_results_are_kept_once_final_in_the_order_written(store: Store, q: str) -> None:
    assert store.last_result(q) == 0
    store.submit_calls(q, [call("ok"), call("bad"), call("retried")])
    ok = finish(store, q, State.SUCCEEDED, b"value")
    bad = finish(store, q, State.FAILED, b"error")
    rows = store.results_since(q, 0, 100)
    assert [(r.task_id, r.item, r.ok, r.data) for r in rows] == [
        (ok, -1, True, b"value"), (bad, -1, False, b"error")]  # fmt: skip
    assert rows[0].seq < rows[1].seq == store.last_result(q)
    assert store.results_since(q, rows[0].seq, 100) == rows[1:]
    assert store.results_since(q, 0, 1) == rows[:1]
    assert store.results_of([bad, ok]) == rows
    # a Failed call that runs again keeps no result: its future waits for the last try
    store.set_queue_options(q, max_retries=1)
    retried = finish(store, q, State.FAILED, b"first")
    assert store.results_of([retried]) == []
    assert store.task_states([retried, ok]) == {retried: (State.PENDING, None),
                                                ok: (State.SUCCEEDED, None)}  # fmt: skip


def test_failed_and_killed_calls_run_again_when_submitted_again(store: Store, q: str) -> None:
    store.submit_calls(q, [call("a"), call("b")])
    a = finish(store, q, State.FAILED, b"err")
    b = finish(store, q, State.SUCCEEDED, b"val")
    again = store.submit_calls(q, [call("a"), call("b")])
    assert [s[:3] for s in again] == [(a, State.PENDING, False), (b, State.SUCCEEDED, False)]
    assert again[0].result is None  # it runs again
    result = again[1].result  # it Succeeded: its result, in the same transaction
    assert result is not None and (result.task_id, result.ok, result.data) == (b, True, b"val")
    (t,) = store.claim(q, "w", 5, lease=60, calls=True)
    assert t.id == a
    assert store.finish("w", [Outcome(a, t._token, State.SUCCEEDED, value=b"fixed")]) == []
    (row,) = [r for r in store.results_of([a]) if r.item == -1]
    assert (row.ok, row.data) == (True, b"fixed")  # the new result, under a new seq
    assert row.seq == store.last_result(q)


def test_cancel_takes_only_waiting_calls_and_forget_takes_all(store: Store, q: str) -> None:
    subs = store.submit_calls(q, [call(k) for k in "abc"])
    (running,) = store.claim(q, "w", 1, lease=60, calls=True)
    ids = [s.task_id for s in subs]
    assert store.cancel_calls(q, ids) == [i for i in ids if i != running.id]
    assert [t.id for t in store.tasks(q)] == [running.id]
    assert store.call_data(ids) == {running.id: b"calla"}
    assert store.forget_calls(q) == 1
    assert store.tasks(q) == [] and store.call_data(ids) == {} and store.results_of(ids) == []
    assert store.get_queue(q).kind == "calls"


def test_items_are_kept_while_held_and_the_first_attempts_stand(store: Store, q: str) -> None:
    store.set_queue_options(q, max_retries=1)
    store.submit_calls(q, [call("gen")])
    (t,) = store.claim(q, "w", 1, lease=60, calls=True)
    assert (
        store.add_items("w", [Item(t.id, t._token, 0, b"a"), Item(t.id, t._token, 1, b"b")]) == []
    )
    # not its holder, or not its lease: refused, nothing kept
    assert store.add_items("other", [Item(t.id, t._token, 2, b"x")]) == [t.id]
    assert store.add_items("w", [Item(t.id, t._token + 1, 2, b"x")]) == [t.id]
    rows = store.results_of([t.id])
    assert [(r.item, r.data) for r in rows] == [(0, b"a"), (1, b"b")]
    assert store.results_since(q, 0, 10) == rows  # followed like results
    # the attempt fails and the call runs again: what the first yielded stands
    assert store.finish("w", [Outcome(t.id, t._token, State.FAILED, value=b"e")]) == []
    (again,) = store.claim(q, "w2", 1, lease=60, calls=True)
    assert again.id == t.id
    assert store.add_items("w2", [Item(t.id, again._token, 1, b"B"),
                                  Item(t.id, again._token, 2, b"c")]) == []  # fmt: skip
    assert store.finish("w2", [Outcome(t.id, again._token, State.SUCCEEDED, value=b"n")]) == []
    assert [(r.item, r.data) for r in store.results_of([t.id])] == [
        (0, b"a"), (1, b"b"), (2, b"c"), (-1, b"n")]  # fmt: skip
    assert store.add_items("w2", [Item(t.id, again._token, 3, b"late")]) == [t.id]


def test_agents_say_they_are_alive_and_gone(store: Store, q: str) -> None:
    assert store.agents(q) == []
    store.agent_seen(q, "h1:1", "h1", 4, 4, None)
    store.agent_seen(q, "h2:7", "h2", 2, 2, "123")
    store.agent_seen(q, "h1:1", "h1", 4, 40, None)  # its heartbeat: still one row
    live = store.agents(q)
    assert [(a.worker, a.host, a.slots, a.hand, a.jobid) for a in live] == [
        ("h1:1", "h1", 4, 40, None), ("h2:7", "h2", 2, 2, "123")]  # fmt: skip
    assert live[0].started <= live[0].seen
    store.agent_gone(q, "h1:1")
    assert [a.worker for a in store.agents(q)] == ["h2:7"]
    store.create_queue("other")
    assert store.agents("other") == []  # by queue
