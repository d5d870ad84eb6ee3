"""Durable futures (issue 14): a concurrent.futures.Executor over a queue of calls, run
by real ``qdo do`` agents, on both backends; drivers and agents SIGKILLed midway."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import qdo
from qdo.calls import MAX_RESULT_BYTES, RemoteError, ResultTooLarge
from qdo.errors import CallFailed, InvalidInput, RemoteTraceback
from qdo.executor import DurableExecutor
from qdo.models import State
from qdo.sched import Queue as SchedQueue
from qdo.sched import Scheduler
from tests import calls_helpers as h
from tests.conftest import run_qdo

pytestmark = pytest.mark.backends

ROOT = Path(__file__).resolve().parents[2]


class Agents:
    """``qdo do QUEUE --wait`` agents, in subprocesses that outlive the test's calls."""

    def __init__(self, queue: str, log_dir: Path) -> None:
        self.queue, self.log_dir = queue, log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, n: int = 1, *options: str) -> list[subprocess.Popen[bytes]]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        new = []
        for _ in range(n):
            out = open(self.log_dir / f"agent-{len(self.procs)}.out", "wb")  # noqa: SIM115
            new.append(subprocess.Popen(
                [sys.executable, "-m", "qdo", "do", self.queue, "--wait", *options],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT))  # fmt: skip
            out.close()
            self.procs.append(new[-1])
        return new

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.out")))

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[[str], Agents]]:
    made: list[Agents] = []

    def make(queue: str) -> Agents:
        made.append(Agents(queue, tmp_path / f"agents-{queue}"))
        return made[-1]

    yield make
    for a in made:
        a.stop()


def attempts_of(queue: str) -> dict[int, list[str]]:
    q = qdo.connect(queue)
    return {t.id: [a.state for a in t.history] for t in q.tasks(history=True)}


# -- results, errors, the queue ----------------------------------------------------------
def test_calls_run_on_agents_and_come_back(agents: Callable[[str], Agents]) -> None:
    ex = qdo.connect("Calls", create_ok=True).executor()
    agents("Calls").start(2)
    futures = [ex.submit(h.square, i) for i in range(200)]
    assert [f.result(timeout=60) for f in futures] == [i * i for i in range(200)]
    assert len(set(ex.map(lambda _: h.pid(), range(1)))) == 1  # a lambda: by value
    assert ex.submit(h.pid).result(timeout=60) != os.getpid()  # it ran elsewhere
    ex.shutdown()
    q = qdo.connect("Calls")
    status = q.status()
    assert status["ntasks"]["Succeeded"] == 202 and "square(3)" in [t.task for t in q.tasks()][3]


def test_exceptions_come_back_with_their_remote_traceback(
    agents: Callable[[str], Agents], qdo_dir: Path
) -> None:
    ex = qdo.connect("Errors", create_ok=True).executor()
    agents("Errors").start(1)
    error = ex.submit(h.fail, "bad input 7").exception(timeout=60)
    assert isinstance(error, ValueError) and str(error) == "bad input 7"
    assert isinstance(error.__cause__, RemoteTraceback)
    assert "in fail" in error.__cause__.text and "ValueError: bad input 7" in error.__cause__.text
    unpicklable = ex.submit(h.raise_unpicklable).exception(timeout=60)
    assert isinstance(unpicklable, RemoteError) and "Unpicklable: cannot travel" in str(unpicklable)
    too_big = ex.submit(h.big, MAX_RESULT_BYTES + 1).exception(timeout=120)
    assert isinstance(too_big, ResultTooLarge) and "more than the" in str(too_big)
    ex.shutdown()
    q = qdo.connect("Errors")
    failed = q.tasks(state=qdo.Task.FAILED)
    assert len(failed) == 3 and failed[0].message == "ValueError: bad input 7"
    log = run_qdo("log", "Errors", str(failed[0].id))
    assert "Traceback" in log.stdout and "bad input 7" in log.stdout, log


def test_a_queue_of_calls_takes_no_shell_tasks_and_back(agents: Callable[[str], Agents]) -> None:
    shell = qdo.create("Shell")
    shell.add("echo hi")
    with pytest.raises(InvalidInput, match="holds shell tasks"):
        shell.executor()
    calls = qdo.connect("Mixed", create_ok=True)
    calls.executor().shutdown()
    with pytest.raises(InvalidInput, match="holds Python calls"):
        calls.add("echo hi")
    proc = run_qdo("do", "Mixed", "--func", "tests.calls_helpers:square")
    assert proc.returncode != 0 and "holds Python calls" in proc.stderr


def test_cancel_takes_a_pending_call_off_the_queue() -> None:
    ex = qdo.connect("Cancel", create_ok=True).executor()
    f, g = ex.submit(h.square, 1), ex.submit(h.square, 2)
    while g.task_id is None:  # submitted by the watcher
        time.sleep(0.01)
    assert g.cancel() and g.cancelled()
    assert [t.id for t in qdo.connect("Cancel").tasks()] == [f.task_id]
    assert f.cancel()
    ex.shutdown()
    assert qdo.connect("Cancel").tasks() == []


def test_a_killed_call_fails_its_future() -> None:
    ex = qdo.connect("Killed", create_ok=True).executor()
    f = ex.submit(h.square, 3)
    while f.task_id is None:
        time.sleep(0.01)
    q = qdo.connect("Killed")  # no agent: an administrator kills it while it waits
    q.store.set_state("Killed", f.task_id, State.KILLED, None, "not wanted", "the test")
    error = f.exception(timeout=30)
    assert isinstance(error, CallFailed) and error.state == "Killed" and "not wanted" in str(error)
    ex.shutdown()


# -- futures as arguments: results by reference ---------------------------------------------
def test_a_future_as_an_argument_takes_the_result_from_the_database(
    agents: Callable[[str], Agents],
) -> None:
    numpy = pytest.importorskip("numpy")
    ex = qdo.connect("Refs", create_ok=True).executor()
    a = ex.submit(h.matrix, 1, 50)  # no agent yet: b is submitted while a waits
    b = ex.submit(numpy.linalg.inv, a)
    both = ex.submit(numpy.matmul, a, b)
    while both.task_id is None:
        time.sleep(0.01)
    q = qdo.connect("Refs")
    tasks = {t.id: t for t in q.tasks()}
    assert tasks[b.task_id].state == State.WAITING
    assert list(tasks[b.task_id].requires) == [a.task_id]
    assert sorted(tasks[both.task_id].requires) == sorted([a.task_id, b.task_id])
    agents("Refs").start(2)
    assert numpy.allclose(both.result(timeout=60), numpy.eye(50))
    assert numpy.allclose(b.result(), numpy.linalg.inv(h.matrix(1, 50)))
    ex.shutdown()
    # the calls went by reference: each pickle is far smaller than the 20 kB array
    data = q.store.call_data([b.task_id, both.task_id])
    assert max(len(d) for d in data.values()) < 300, {k: len(d) for k, d in data.items()}


def test_keys_of_calls_on_futures_are_made_of_their_keys() -> None:
    """A call's key holds the keys of the futures it takes, not their values: the same
    driver run again (a new executor) makes the same keys before anything ran."""
    keys = []
    for _ in range(2):
        ex = qdo.connect("Keys", create_ok=True).executor()
        a = ex.submit(h.square, 3)
        b = ex.submit(h.square, a)
        c = ex.submit(h.square, 4)
        keys.append((a.key, b.key, c.key))
        ex.shutdown(wait=False, cancel_futures=True)
        ex.shutdown()
    assert keys[0] == keys[1] and len(set(keys[0])) == 3


def test_a_call_on_a_failed_future_fails_without_running(agents: Callable[[str], Agents]) -> None:
    ex = qdo.connect("RefFail", create_ok=True).executor()
    a = ex.submit(h.fail, "upstream broke")
    b = ex.submit(h.square, a)
    agents("RefFail").start(1)
    assert isinstance(a.exception(timeout=60), ValueError)
    error = b.exception(timeout=60)
    assert isinstance(error, CallFailed) and "upstream broke" in str(error), error
    ex.shutdown()
    assert [t.id for t in qdo.connect("RefFail").tasks()] == [a.task_id]  # b is off the queue
    again = qdo.connect("RefFail").executor()
    c = again.submit(h.square, a)  # on a future that failed already: at once
    assert isinstance(c.exception(timeout=30), CallFailed)
    again.shutdown()


# -- the scheduler plans, the cluster runs -------------------------------------------------
def grid(n: int, k: int, executor: object) -> list[object]:
    import numpy

    sch = Scheduler()
    Q = SchedQueue(sch, executor=executor)  # type: ignore[arg-type]
    A = [Q.submit(h.matrix, i, k) for i in range(n)]
    B = [Q.submit(numpy.linalg.inv, a) for a in A]
    C = [Q.submit(numpy.matmul, B[i], B[j]) for i in range(n) for j in range(n)]
    sch.start()
    try:
        return [c.result(timeout=300) for c in C]
    finally:
        sch.shutdown()


def test_seed_grid_through_the_cluster_matches_threads(agents: Callable[[str], Agents]) -> None:
    numpy = pytest.importorskip("numpy")
    n, k = 30, 8
    ex = qdo.connect("Grid", create_ok=True).executor()
    agents("Grid").start(2)
    remote = grid(n, k, ex)
    local = grid(n, k, None)
    assert len(remote) == n * n
    assert all(numpy.allclose(r, t) for r, t in zip(remote, local, strict=True))
    ex.shutdown()
    q = qdo.connect("Grid")
    assert q.status()["ntasks"]["Succeeded"] == n + n + n * n
    # the scheduler handed the upstream futures over, not their values: a C call is a
    # function's name and two references, smaller than either array it takes
    tasks = q.tasks()
    calls = q.store.call_data([t.id for t in tasks])
    array = len(__import__("pickle").dumps(local[0]))
    c_calls = [calls[t.id] for t in tasks if "matmul" in t.task]
    assert len(c_calls) == n * n and max(map(len, c_calls)) < array / 2


def test_the_width_follows_the_agents_slots(
    agents: Callable[[str], Agents], tmp_path: Path
) -> None:
    ex = qdo.connect("Width", create_ok=True).executor()
    assert ex.max_workers == 1  # no agents yet: one call goes ahead, to be found
    sch = Scheduler()
    Q = SchedQueue(sch, executor=ex)
    gates = [tmp_path / "gate0", tmp_path / "gate1"]
    futures = [Q.submit(h.gated_square, i, str(gates[0])) for i in range(100)]
    sch.start()
    pool = agents("Width")
    first, _ = pool.start(2, "--workers", "3")
    # two calls per call the agents keep in hand: their slots (no call has ended yet, so
    # they know nothing of how long calls take, and claim nothing ahead)
    wait_until(lambda: Q.max_workers == 2 * 6, f"width {Q.max_workers}: {pool.output()}")
    live = qdo.connect("Width").store.agents("Width")
    assert sorted((a.slots, a.hand) for a in live) == [(3, 3), (3, 3)]
    assert all(a.host for a in live)

    # what is in the durable queue at once (none can end before the gate): the width
    def queued() -> int:
        counts = qdo.connect("Width").status()["ntasks"]
        return int(counts["Pending"] + counts["Running"])

    wait_until(lambda: queued() == 12, "12 calls in the queue")
    wait_until(lambda: len(qdo.connect("Width").tasks(state=qdo.Task.RUNNING)) >= 6, "6 run")
    assert queued() == 12
    gates[0].touch()
    assert [f.result(timeout=120) for f in futures] == [i * i for i in range(100)]
    first.send_signal(signal.SIGTERM)  # an agent that ends says so: the width shrinks
    first.wait(timeout=60)
    more = [Q.submit(h.gated_square, i, str(gates[1])) for i in range(100, 150)]

    def hands() -> int:  # (the one left has learnt that calls are short: it keeps more)
        (agent,) = qdo.connect("Width").store.agents("Width")
        return 2 * max(agent.slots, agent.hand)

    wait_until(lambda: Q.max_workers == hands(), f"width {Q.max_workers}, not {hands()}")
    gates[1].touch()
    assert [f.result(timeout=120) for f in more] == [i * i for i in range(100, 150)]
    sch.stop()
    ex.shutdown()
    fixed = qdo.connect("Width").executor(max_workers=5)
    assert fixed.max_workers == 5  # given: it stays
    fixed.shutdown()


def test_stop_submits_nothing_new_and_cancel_takes_a_pending_call_back(
    agents: Callable[[str], Agents], tmp_path: Path
) -> None:
    from qdo.sched import DependencyError

    ex = qdo.connect("Stop", create_ok=True).executor()
    sch = Scheduler()
    Q = SchedQueue(sch, 4, executor=ex)
    gate = str(tmp_path / "gate")
    firsts = [Q.submit(h.gated_square, i, gate) for i in range(12)]
    after = [Q.submit(h.square, f) for f in firsts]
    sch.start()

    def in_queue() -> int:
        return len(qdo.connect("Stop").tasks())

    wait_until(lambda: in_queue() == 4, "4 calls in the durable queue")
    # no agent yet: those four are Pending there, and cancel takes one back
    (sent,) = [f for f in firsts if f.remote is not None][:1]
    assert sent.cancel() and sent.cancelled()
    with pytest.raises(DependencyError):
        after[firsts.index(sent)].result(timeout=30)
    unsent = next(f for f in firsts if f.remote is None)
    assert unsent.cancel() and unsent.cancelled()  # not sent yet: the plan's own
    wait_until(lambda: in_queue() == 4, "the freed slot taken")  # (3 + 1 call, the first gone)
    assert sent.remote is not None and sent.remote.task_id not in {
        t.id for t in qdo.connect("Stop").tasks()}  # fmt: skip
    sch.stop()  # nothing new goes to the durable queue; what is there runs
    agents("Stop").start(1, "--workers", "4")
    Path(gate).touch()
    wait_until(lambda: qdo.connect("Stop").status()["ntasks"]["Succeeded"] >= 4, "4 ran")
    time.sleep(0.3)  # (a stopped scheduler sends nothing meanwhile: nothing to wait for)
    assert in_queue() == 4
    sch.start()  # resumed: the rest
    left = [i for i in range(12) if firsts[i] not in (sent, unsent)]
    assert [after[i].result(timeout=60) for i in left] == [(i * i) ** 2 for i in left]
    sch.stop()
    ex.shutdown()
    assert qdo.connect("Stop").status()["ntasks"]["Succeeded"] == 2 * 10


def test_the_cli_shows_the_agents_and_forgets_the_calls(agents: Callable[[str], Agents]) -> None:
    import json

    ex = qdo.connect("Cli", create_ok=True).executor()
    none = run_qdo("agents", "Cli")
    assert none.returncode == 0 and "no live agents of Cli" in none.stdout
    (agent,) = agents("Cli").start(1, "--workers", "2")
    assert ex.submit(h.square, 3).result(timeout=60) == 9
    listed = json.loads(run_qdo("agents", "Cli", "--json", check=True).stdout)
    assert [(a["slots"], a["jobid"]) for a in listed] == [(2, None)] and listed[0]["hand"] >= 2
    assert listed[0]["worker"].endswith(f":{agent.pid}") and listed[0]["seen_seconds_ago"] >= 0
    text = run_qdo("agents", "Cli", check=True).stdout
    assert "WORKER" in text and "1 agents, 2 slots" in text
    ex.shutdown()
    # forget: not without --force, nothing changed; then every call and result goes
    refused = run_qdo("forget", "Cli")
    assert refused.returncode == 1 and "add --force" in refused.stderr
    assert len(qdo.connect("Cli").tasks()) == 1
    gone = run_qdo("forget", "Cli", "--force", check=True)
    assert "1 calls of Cli and their results are gone" in gone.stdout
    assert qdo.connect("Cli").tasks() == []
    qdo.create("Shell")
    shell = run_qdo("forget", "Shell", "--force")
    assert shell.returncode == 1 and "holds shell tasks" in shell.stderr
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=60)
    assert "no live agents" in run_qdo("agents", "Cli", check=True).stdout


# -- generators ---------------------------------------------------------------------------------
def wait_until(check: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_generators_items_resolve_one_by_one_while_it_runs(
    agents: Callable[[str], Agents], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    ex = qdo.connect("Items", create_ok=True).executor()
    agents("Items").start(2)
    gen = ex.submit(h.gated_items, 5, 3, str(gate))
    # the first three come while the generator waits at its gate: it has not ended
    assert [gen[i].result(timeout=60) for i in range(3)] == [0, 10, 20]
    assert not gen.done() and not gen[3].done()
    # a call on an item waits in the driver for it, and takes its value
    on_item = ex.submit(h.square, gen[1])
    assert on_item.result(timeout=60) == 100 and not gen.done()
    later = ex.submit(h.square, gen[4])  # not yielded yet: held
    seen: list[tuple[int, int]] = []
    gen.add_item_callback(lambda i, v: seen.append((i, v)))
    assert seen == [(0, 0), (1, 10), (2, 20)]  # those that came, at once
    gate.touch()
    assert gen.result(timeout=60) == [0, 10, 20, 30, 40]
    assert later.result(timeout=60) == 1600
    assert seen == [(i, 10 * i) for i in range(5)]
    with pytest.raises(IndexError, match="yielded 5 items: item 7 was never produced"):
        gen[7].result(timeout=10)
    # a generator that fails: its items so far stand, the others fail with it
    broken = ex.submit(h.items_then_fail, 2)
    assert isinstance(broken.exception(timeout=60), ValueError)
    assert broken[1].result(timeout=10) == 1
    with pytest.raises(CallFailed, match="its call failed: ValueError"):
        broken[2].result(timeout=10)
    # a call that returns a value (a list, even) has no items: said so, asked before or
    # after it ended (it said "yielded 0 items" before)
    plain = ex.submit(h.square, 3)
    early = plain[0]
    assert plain.result(timeout=60) == 9
    for item in (early, plain[1]):
        with pytest.raises(IndexError, match="returned a value, not a generator: it has no item"):
            item.result(timeout=10)
    ex.shutdown()
    rows = qdo.connect("Items").store.results_of([gen.task_id])
    assert sorted(r.item for r in rows) == [-1, 0, 1, 2, 3, 4]


def test_a_generator_task_of_the_scheduler_runs_on_the_cluster(
    agents: Callable[[str], Agents], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    ex = qdo.connect("SchedItems", create_ok=True).executor()
    agents("SchedItems").start(2)
    sch = Scheduler()
    Q = SchedQueue(sch, executor=ex)
    gen = Q.submit(h.gated_items, 6, 3, str(gate))
    squares = [Q.submit(h.square, gen[i]) for i in range(6)]
    total = Q.submit(sum, gen)  # the whole generator: the list of its items
    sch.start()
    # dependents of the first items ran while the generator waits at its gate
    assert [squares[i].result(timeout=60) for i in range(3)] == [0, 100, 400]
    assert not gen.done() and not squares[3].done()
    gate.touch()
    assert [s.result(timeout=60) for s in squares] == [(10 * i) ** 2 for i in range(6)]
    assert gen.result(timeout=60) == [10 * i for i in range(6)]
    assert total.result(timeout=60) == 150
    sch.stop()
    ex.shutdown()


def test_a_driver_run_again_gets_the_items_yielded_so_far(
    agents: Callable[[str], Agents], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    first = qdo.connect("ItemsAgain", create_ok=True).executor()
    agents("ItemsAgain").start(1)
    gen = first.submit(h.gated_items, 4, 2, str(gate))
    assert gen[1].result(timeout=60) == 10
    # the driver is gone (its executor with it); run again, it finds the call running
    # and the items it yielded before this executor began to follow the queue
    again = qdo.connect("ItemsAgain").executor()
    same = again.submit(h.gated_items, 4, 2, str(gate))
    assert [same[0].result(timeout=30), same[1].result(timeout=30)] == [0, 10]
    assert again.calls_found == 1 and not same.done()
    gate.touch()
    assert same.result(timeout=60) == [0, 10, 20, 30]
    # and once it Succeeded, a third run gets all of it back without running it
    third = qdo.connect("ItemsAgain").executor()
    done = third.submit(h.gated_items, 4, 2, str(gate))
    assert done.result(timeout=30) == [0, 10, 20, 30] and done[3].result(timeout=5) == 30
    for ex in (first, again, third):
        ex.shutdown()
    assert attempts_of("ItemsAgain")[same.task_id] == ["Succeeded"]


# -- drivers and agents that die ------------------------------------------------------------
DRIVER = textwrap.dedent("""
    import json, sys
    import qdo
    from tests import calls_helpers as h
    ex = qdo.connect("Driver", create_ok=True).executor()
    futures = [ex.submit(h.slow_square, i, 0.02) for i in range(int(sys.argv[1]))]
    results = [f.result() for f in futures]
    print(json.dumps({"results": results, "submitted": ex.calls_submitted,
                      "found": ex.calls_found}))
    ex.shutdown()
""")


def test_a_driver_killed_halfway_is_run_again(agents: Callable[[str], Agents]) -> None:
    import json

    n = 300
    script = [sys.executable, "-c", DRIVER, str(n)]
    qdo.connect("Driver", create_ok=True).executor().shutdown()  # a queue of calls
    agents("Driver").start(2)
    first = subprocess.Popen(script, cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:  # halfway: a third done, say
        done = qdo.connect("Driver", create_ok=True).status()["ntasks"]["Succeeded"]
        if done >= n // 3:
            break
        assert time.monotonic() < deadline, "the calls do not run"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = {t: s for t, s in attempts_of("Driver").items() if "Succeeded" in s}
    second = subprocess.run(script, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    out = json.loads(second.stdout)
    assert out["results"] == [i * i for i in range(n)]
    assert out["found"] >= len(before) and out["submitted"] + out["found"] == n
    after = attempts_of("Driver")
    assert len(after) == n  # each call is one task, made once
    for task_id, states in after.items():
        assert states.count("Succeeded") == 1, (task_id, states)  # none ran twice
    for task_id, states in before.items():
        assert after[task_id] == states  # what had Succeeded did not run again


def test_an_agent_killed_midway_loses_no_future(agents: Callable[[str], Agents]) -> None:
    ex = qdo.connect("Lost", create_ok=True).executor()
    pool = agents("Lost")
    victim, survivor = pool.start(2, "--lease", "1")
    futures = [ex.submit(h.slow_square, i, 0.1) for i in range(60)]
    deadline = time.monotonic() + 60
    while qdo.connect("Lost").status()["ntasks"]["Succeeded"] < 10:
        assert time.monotonic() < deadline, pool.output()
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    assert [f.result(timeout=120) for f in futures] == [i * i for i in range(60)]
    ex.shutdown()
    assert survivor.poll() is None


def test_a_rerun_costs_a_round_trip_per_thousand_finished_calls(
    agents: Callable[[str], Agents],
) -> None:
    """Issue 14: a driver run again over 2,500 finished calls asks the database 3 times
    for them (a batch of 1,000 submitted a transaction, results included), plus what
    opening the executor costs: counted, not timed."""
    n = 2500
    ex = qdo.connect("Rerun", create_ok=True).executor()
    agents("Rerun").start(2)
    assert [f.result(timeout=120) for f in [ex.submit(h.square, i) for i in range(n)]] == [
        i * i for i in range(n)]  # fmt: skip
    ex.shutdown()
    q = qdo.connect("Rerun")
    asked: Counter[str] = Counter()

    def counted(name: str) -> Callable[..., object]:
        verb = getattr(q.store, name)

        def call(*args: object, **kwargs: object) -> object:
            asked[name] += 1
            return verb(*args, **kwargs)

        return call

    for name in [n for n in dir(q.store) if not n.startswith("_")]:
        # (waiting is not asking: on PostgreSQL the idle watcher sleeps on LISTEN)
        if callable(getattr(q.store, name)) and name not in ("close", "wait_for_tasks"):
            setattr(q.store, name, counted(name))
    again = q.executor()  # (map: the calls reach the watcher at once, so 3 batches)
    assert list(again.map(h.square, range(n), timeout=60)) == [i * i for i in range(n)]
    again.shutdown()
    assert again.calls_found == n and again.calls_submitted == 0
    assert asked["submit_calls"] == 3, asked
    assert sum(asked.values()) <= 3 + 3, asked  # + make_call_queue, last_result, agents


# -- misuse and hostile values (a sweep of the API) ---------------------------------------
def test_a_result_the_driver_cannot_unpickle_is_raised_not_returned(
    agents: Callable[[str], Agents],
) -> None:
    ex = qdo.connect("NoLoad", create_ok=True).executor()
    agents("NoLoad").start(1)
    with pytest.raises(RemoteError, match="cannot unpickle the call's result here"):
        ex.submit(h.returns_noload).result(timeout=60)
    # a generator's item: the items before it come, the call fails at it
    g = ex.submit(h.yields_noload)
    assert g[0].result(timeout=60) == 1
    with pytest.raises(RemoteError, match="cannot unpickle the call's item 1 here"):
        g.result(timeout=60)
    with pytest.raises(CallFailed, match="its call failed"):
        g[2].result(timeout=60)
    ex.shutdown()


def test_one_key_names_one_call_of_an_executor() -> None:
    ex = qdo.connect("Keys", create_ok=True).executor()
    a = ex.submit(h.square, 2, key="job")
    again = ex.submit(h.square, 2, key="job")  # the same call: the same task
    with pytest.raises(InvalidInput, match="key 'job' names another call"):
        ex.submit(h.square, 3, key="job")
    with pytest.raises(InvalidInput, match="key 'job' names another call"):
        ex.submit(h.fail, "boom", key="job")
    for bad in ["k\udcff", "k\x00", ""]:  # (what the database cannot hold)
        with pytest.raises(InvalidInput, match="key must be a string"):
            ex.submit(h.square, 4, key=bad)
    ok = ex.submit(h.square, 5, key="other")  # the watcher goes on
    while ok.task_id is None or again.task_id is None:
        time.sleep(0.01)
    assert a.task_id == again.task_id
    assert sorted(t.id for t in qdo.connect("Keys").tasks()) == sorted([a.task_id, ok.task_id])
    ex.shutdown(cancel_futures=True)


def test_map_refuses_a_bad_timeout_before_it_queues_anything() -> None:
    ex = qdo.connect("MapTimeout", create_ok=True).executor()
    with pytest.raises(InvalidInput, match="timeout must be a number of seconds"):
        ex.map(h.square, [1, 2, 3], timeout="x")  # type: ignore[arg-type]
    ex.shutdown()
    assert qdo.connect("MapTimeout").tasks() == []


def test_a_script_that_ends_without_shutdown_stores_its_calls() -> None:
    script = textwrap.dedent("""
        import qdo
        from tests import calls_helpers as h
        ex = qdo.connect("AtExit", create_ok=True).executor()
        futures = [ex.submit(h.square, i) for i in range(3000)]
        print("submitted", len(futures))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0 and "submitted 3000" in proc.stdout, proc
    assert proc.stderr == "", proc.stderr  # (nothing to warn of)
    assert len(qdo.connect("AtExit").tasks()) == 3000


def test_a_deleted_queue_fails_the_futures_that_wait_for_it() -> None:
    ex = qdo.connect("Deleted", create_ok=True).executor()
    f = ex.submit(h.square, 2)
    while f.task_id is None:
        time.sleep(0.01)
    qdo.connect("Deleted").delete()
    with pytest.raises(qdo.errors.UnknownQueue):
        f.result(timeout=30)
    with pytest.raises(qdo.errors.UnknownQueue):  # and a submit after it
        ex.submit(h.square, 3).result(timeout=30)
    ex.shutdown()


def test_errors_whose_str_or_repr_raise_come_back_and_fail_their_dependents(
    agents: Callable[[str], Agents],
) -> None:
    ex = qdo.connect("BadText", create_ok=True).executor()
    agents("BadText").start(1)
    bad_str = ex.submit(h.raise_badstr).exception(timeout=60)
    assert isinstance(bad_str, h.BadStr)  # (its worker process went on: no crash)
    bad_repr = ex.submit(h.raise_badrepr)
    dependent = ex.submit(h.square, bad_repr)
    with pytest.raises(CallFailed, match="a call whose result it takes failed"):
        dependent.result(timeout=60)
    exited = ex.submit(h.exits, 3).exception(timeout=60)
    assert isinstance(exited, SystemExit) and exited.code == 3
    assert ex.submit(h.square, 7).result(timeout=60) == 49
    ex.shutdown()
    failed = qdo.connect("BadText").tasks(state=qdo.Task.FAILED)
    assert any("its message cannot be read" in (t.message or "") for t in failed), failed
    assert any(t.message == "SystemExit: 3" for t in failed), [t.message for t in failed]


def test_a_held_call_whose_arguments_no_longer_pickle_fails_alone(
    agents: Callable[[str], Agents], tmp_path: Path
) -> None:
    """A call that takes a generator's item waits for it, and is pickled again then: an
    argument that changed meanwhile and no longer pickles fails that call, not the
    executor."""
    ex = qdo.connect("Held", create_ok=True).executor()
    agents("Held").start(1)
    gate = str(tmp_path / "gate")
    g = ex.submit(h.gated_items, 2, 1, gate)
    assert g[0].result(timeout=60) == 0
    extra: list[object] = []
    held = ex.submit(h.ident, (g[1], extra))
    extra.append(__import__("threading").Lock())
    Path(gate).touch()
    assert g.result(timeout=60) == [0, 10]
    with pytest.raises(InvalidInput, match="cannot be pickled"):
        held.result(timeout=60)
    assert ex.submit(h.square, 6).result(timeout=60) == 36
    ex.shutdown()


def test_a_done_callback_that_waits_for_a_future_of_its_executor_is_told_not_stuck(
    agents: Callable[[str], Agents],
) -> None:
    """The watcher thread runs the done callbacks and settles the futures: a callback
    that waited there for another future of the same executor would wait for ever, and
    every future of the executor with it.  It gets a RuntimeError at once instead."""
    ex = qdo.connect("Callbacks", create_ok=True).executor()
    first, second = ex.submit(h.square, 1), ex.submit(h.slow_square, 2, 0.5)
    told: list[BaseException] = []

    def waits(_: object) -> None:
        try:
            second.result(timeout=60)
        except BaseException as e:  # noqa: BLE001 - what the callback was told
            told.append(e)

    first.add_done_callback(waits)  # (before any agent runs it: the watcher calls it)
    agents("Callbacks").start(1)
    assert second.result(timeout=60) == 4  # the executor went on
    assert first.result() == 1
    assert len(told) == 1 and isinstance(told[0], RuntimeError), told
    assert "a done callback waits for" in str(told[0])
    assert ex.submit(h.square, 3).result(timeout=60) == 9
    ex.shutdown()


def test_cancel_twice_a_tiny_poll_and_the_dependents_of_an_unsent_call() -> None:
    for poll in (1e-9, True, 0):
        with pytest.raises(InvalidInput, match="poll must be a number of seconds"):
            qdo.connect("Twice", create_ok=True).executor(poll=poll)
    ex = qdo.connect("Twice", create_ok=True).executor()
    f = ex.submit(h.square, 2)
    dependent = ex.submit(h.square, f)
    assert f.cancel() and f.cancel() and f.cancelled()
    error = dependent.exception(timeout=30)
    assert isinstance(error, CallFailed) and "call 0" not in str(error), error
    ex.shutdown()


def test_a_future_that_cannot_stand_for_its_result_is_refused_by_name(tmp_path: Path) -> None:
    ex = qdo.connect("Foreign", create_ok=True).executor()
    with cf.ThreadPoolExecutor(1) as pool:
        threaded = pool.submit(int, 3)
        threaded.result()
        with pytest.raises(InvalidInput, match="cannot be an argument of a call of queue"):
            ex.submit(h.ident, [threaded])
    with pytest.raises(InvalidInput, match="through a qdo queue"):
        DurableExecutor(None)  # type: ignore[arg-type]
    ex.shutdown()
    assert qdo.connect("Foreign").tasks() == []
