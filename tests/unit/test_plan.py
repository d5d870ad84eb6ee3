"""The pure planner: output-first order, widths, resources, failures, sessions, items."""

from __future__ import annotations

import random

import pytest

from qdo.sched.plan import DONE, FAILED, READY, RUNNING, WAITING, Node, Planner


def drain(p: Planner, q, names: dict[Node, str]) -> list[str]:  # type: ignore[no-untyped-def]
    order = []
    while (x := p.next(q)) is not None:
        order.append(names[x])
        p.finish(x)
    return order


def test_seed_grid_order_with_one_slot() -> None:
    n = 5
    p = Planner()
    q = p.add_queue(1)
    names: dict[Node, str] = {}
    A = [p.submit(q) for _ in range(n)]
    B = [p.submit(q, [A[i]]) for i in range(n)]
    C = [p.submit(q, [B[i], B[k]]) for i in range(n) for k in range(n)]
    for group, nodes in (("A", A), ("B", B), ("C", C)):
        names.update({node: f"{group}{i}" for i, node in enumerate(nodes)})
    order = drain(p, q, names)
    expected = []
    for i in range(n - 1, -1, -1):  # A[n-1], B[n-1], C[n²-1], A[n-2], B[n-2], C[n²-2], ...
        expected += [f"A{i}", f"B{i}", f"C{n * n - n + i}"]
    expected += [f"C{j}" for j in range(n * n - n - 1, -1, -1)]
    assert order == expected


def brute_rank(nodes: list[Node], node: Node, deps: dict[Node, list[Node]]) -> int:
    """Newest submission that depends on ``node`` (itself included).  A dependent that
    failed since still counts: ranks never go down."""
    best = node.seq
    for other in nodes:
        if other.seq <= best:
            continue
        todo, seen = list(deps[other]), set()
        while todo:
            x = todo.pop()
            if x is node:
                best = other.seq
                break
            if x not in seen:
                seen.add(x)
                todo.extend(deps[x])
    return best


@pytest.mark.parametrize("seed", range(40))
def test_always_starts_a_ready_task_of_highest_rank(seed: int) -> None:
    rng = random.Random(seed)
    p = Planner()
    queues = [p.add_queue(rng.randint(1, 3)) for _ in range(rng.randint(1, 3))]
    nodes: list[Node] = []
    deps: dict[Node, list[Node]] = {}
    running: list[Node] = []
    for _step in range(250):
        action = rng.random()
        if action < 0.5 or not nodes:
            live = [n for n in nodes if n.state not in (DONE, FAILED)]
            pool = live if rng.random() < 0.8 else nodes
            chosen = rng.sample(pool, min(len(pool), rng.randint(0, 3)))
            if chosen and rng.random() < 0.2:
                chosen.append(chosen[0])  # the same requirement twice
            # a tuple may be kept as the node's ups: both kinds must rank the same
            given = tuple(chosen) if rng.random() < 0.5 else chosen
            node = p.submit(rng.choice(queues), given)
            nodes.append(node)
            if node.state != FAILED:
                assert list(node.ups) == list(dict.fromkeys(c for c in chosen if c.state != DONE))
            # a task refused at once (a requirement had failed) never ranks anything
            deps[node] = [] if node.state == FAILED else [c for c in chosen if c.state != DONE]
        elif action < 0.8:
            q = rng.choice(queues)
            node = p.next(q)
            ready = [n for n in nodes if n.state == READY and n.queue is q]
            if node is None:
                assert not ready or q.busy >= q.width, "a queue idled with a ready task"
                continue
            ranks = {n: brute_rank(nodes, n, deps) for n in [*ready, node]}
            top = max(ranks.values())
            assert ranks[node] == top, f"started rank {ranks[node]} while {top} was ready"
            running.append(node)
        elif running:
            node = running.pop(rng.randrange(len(running)))
            if rng.random() < 0.1:
                for f in p.fail(node):
                    assert f.state == FAILED
            else:
                p.finish(node)
        for q in queues:
            assert 0 <= q.busy <= q.width
            assert q.busy == sum(1 for n in running if n.queue is q)


def test_a_new_submission_takes_over() -> None:
    p = Planner()
    q = p.add_queue(1)
    old = [p.submit(q) for _ in range(3)]
    first = p.next(q)
    assert first is old[2]  # independent tasks: newest first
    new = p.submit(q, [old[0]])  # now old[0] leads to the newest result
    p.finish(first)
    assert p.next(q) is old[0]
    p.finish(old[0])
    assert p.next(q) is new


def test_widths_and_resources() -> None:
    p = Planner()
    q = p.add_queue(3, {"gpu": 10})
    big = [p.submit(q, needs={"gpu": 6}) for _ in range(2)]
    small = p.submit(q, needs={"gpu": 4})
    plain = p.submit(q)
    started = [p.next(q), p.next(q), p.next(q)]
    assert p.next(q) is None  # width 3 reached
    assert plain in started and small in started
    assert sum(1 for b in big if b in started) == 1, "only one 6-unit task fits beside 4"
    assert q.used["gpu"] == 10
    for node in started:
        p.finish(node)
    assert p.next(q) in big and q.used["gpu"] == 6
    with pytest.raises(ValueError):
        p.submit(q, needs={"gpu": 11})
    with pytest.raises(ValueError):
        p.submit(q, needs={"ram": 1})


def test_failure_fails_dependents_not_others() -> None:
    p = Planner()
    q = p.add_queue(2)
    a = p.submit(q)
    b = p.submit(q, [a])
    c = p.submit(q, [b])
    other = p.submit(q)
    assert p.next(q) is other
    assert p.next(q) is a
    assert set(p.fail(a)) == {b, c}
    assert b.state == c.state == FAILED and q.busy == 1
    late = p.submit(q, [b])
    assert late.state == FAILED
    p.finish(other)
    assert p.next(q) is None


def test_cancel() -> None:
    p = Planner()
    q = p.add_queue(1)
    a = p.submit(q)
    b = p.submit(q, [a])
    keep = p.submit(q)
    assert p.cancel(a) == [a, b]
    assert p.next(q) is keep
    assert p.cancel(keep) is None  # running: too late


def test_hold_keeps_the_slot_for_its_session() -> None:
    p = Planner()
    q = p.add_queue(1)
    other = p.submit(q)
    session = p.submit(q, hold=True)
    step = p.submit(q, [session])
    close = p.submit(q, [step], release=[session])
    assert p.next(q) is session  # the session's chain leads to the newest result
    p.finish(session)
    assert q.busy == 1 and session in q.held
    assert p.next(q) is step  # runs in the reserved slot
    p.finish(step)
    assert p.next(q) is close
    p.finish(close)
    p.release(session)
    assert q.busy == 0 and not q.held
    assert p.next(q) is other


def test_sessions_that_fail_or_lose_their_release_give_the_slot_back() -> None:
    p = Planner()
    q = p.add_queue(1)
    # the hold task itself fails: its slot comes back at once
    session = p.submit(q, hold=True)
    assert p.next(q) is session
    p.fail(session)
    assert q.busy == 0 and not q.held
    # the release comes before the hold task ends (its releaser will never run): the
    # hold task then keeps no slot when it ends
    session = p.submit(q, hold=True)
    p.release(session)
    assert p.next(q) is session
    p.finish(session)
    assert q.busy == 0 and not q.held
    assert p.next(q) is None


def test_generator_items_complete_from_outside() -> None:
    p = Planner()
    q = p.add_queue(1)
    gen = p.submit(q)
    item = p.submit(None, external_of=gen)
    use = p.submit(q, [item])
    assert item.state == WAITING and use.state == WAITING
    assert p.next(q) is gen  # ranks like an ancestor of `use`
    assert p.finish(item) == [use]  # produced while the generator still runs
    assert gen.state == RUNNING
    p.finish(gen)
    assert p.next(q) is use
