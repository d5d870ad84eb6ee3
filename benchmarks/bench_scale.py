"""Flat costs as a campaign grows (issue 16), SQLite: one queue of 100,000,000 tasks.

The queue is built once (one run: it takes minutes), by the fastest paths a user has:

- half of it Succeeded, each task with its attempt (run time, CPU, memory), through
  ``Store.import_queue``, what ``qdo restore`` runs (an archive's records streamed in);
- the other half Pending, through ``q.add_multiple`` (a generator, one transaction).

Both are timed; the database's size is reported per task.  On that queue:

- ``q.status()`` (median of repeated calls) and ``qdo status big`` as a command
  (median of repeated runs): target 0.2 s;
- claim(100) + finish of 20,000 tasks through the store, one process, against the same
  on a fresh queue of 20,000 tasks in a fresh database (target: within 10 %);
- ``qdo do big --workers 2 --runtime 10`` on shell tasks ``echo Wow N``: tasks done per second
  of the command's wall time, against the same on a fresh queue of 100,000 tasks
  (target: within 10 %).  The claim and agent figures alternate, big and fresh, as many
  times as ``--runs``.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

from _common import (
    Config,
    Ratio,
    Report,
    Row,
    clean_env,
    in_child,
    progress,
    qdo_command,
    qdo_state_counts,
    run_child,
    scratch_dir,
    shell_tasks,
    use_env,
)

TARGET = 0.2  # seconds, qdo status
CALLS = 20  # q.status() calls
COMMANDS = 5  # runs of qdo status
CLAIMS = 20_000
BATCH = 100
AGENT_SECONDS = 10
FRESH_TASKS = 100_000
CHUNK = 1_000_000  # tasks a progress line


def build(env: dict[str, str], n: int) -> tuple[float, float]:
    """Import n/2 Succeeded tasks with their attempts, then add n/2 Pending ones; the
    seconds of each."""
    use_env(env)
    import qdo
    from qdo.models import QueueInfo, QueueState
    from qdo.store.factory import open_store

    half = n // 2
    store = open_store()
    info = QueueInfo(0, "big", QueueState.ACTIVE, None, 0, 3, store.user)
    t0 = 1.7e9

    def records():  # type: ignore[no-untyped-def]
        for i in range(1, half + 1):
            if i % CHUNK == 0:
                progress(f"scale: {i:,} finished tasks streamed")
            yield (
                "task",
                (
                    i,
                    f"echo {i}",
                    False,
                    "Succeeded",
                    0,
                    0,
                    None,
                    1,
                    t0,
                    t0 + 1.0,
                    t0 + 2.0,
                    "node1:1",
                    "job1",
                    None,
                    None,
                    None,
                    None,
                    None,
                    0,
                    0,
                ),
            )
        for i in range(1, half + 1):
            yield "attempt", (i, 1, "Succeeded", "node1:1", "job1", t0 + 1.0, t0 + 2.0, 0,
                              None, 0.9, 50_000_000, None)  # fmt: skip

    start = time.perf_counter()
    store.import_queue("big", info, (1, half), records())
    imported = time.perf_counter() - start
    q = qdo.connect("big")

    def pending():  # type: ignore[no-untyped-def]
        for i in range(n - half):  # (shell_tasks' commands, not held in a list)
            if i and i % CHUNK == 0:
                progress(f"scale: {i:,} Pending tasks added")
            yield f"echo Wow {i}"

    start = time.perf_counter()
    q.add_multiple(pending())
    added = time.perf_counter() - start
    store.close()
    return imported, added


def fresh(env: dict[str, str], n: int) -> None:
    use_env(env)
    import qdo

    qdo.create("big").add_multiple(shell_tasks(n))


def time_status(env: dict[str, str]) -> float:
    use_env(env)
    import qdo

    q = qdo.connect("big")
    q.status()
    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        q.status()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def claim_rate(env: dict[str, str]) -> float:
    """Claims and finishes of CLAIMS tasks, BATCH at a time, a second."""
    use_env(env)
    from qdo.models import State
    from qdo.store.base import Outcome
    from qdo.store.factory import open_store

    store = open_store()
    done = 0
    start = time.perf_counter()
    while done < CLAIMS:
        held = store.claim("big", "bench:1", BATCH, lease=600)
        assert held, "the queue ran out"
        store.finish("bench:1", [Outcome(t.id, t._token or 0, State.SUCCEEDED) for t in held])
        done += len(held)
    rate = done / (time.perf_counter() - start)
    store.close()
    return rate


def agent_rate(env: dict[str, str]) -> float:
    """Tasks ``qdo do --runtime`` finishes a second of its wall time."""
    before = qdo_state_counts("big", env)["Succeeded"]
    run = run_child([*qdo_command(), "do", "big", "--workers", "2", "--runtime",
                     str(AGENT_SECONDS)], env)  # fmt: skip
    return (qdo_state_counts("big", env)["Succeeded"] - before) / run.seconds


class Place(NamedTuple):
    """Where the big and the fresh queue are kept: their environments, how to start
    the fresh one over, and the big one's size in bytes."""

    backend: str
    big: dict[str, str]
    fresh: dict[str, str]
    wipe_fresh: Callable[[], None]
    size: Callable[[], int]


def run(cfg: Config) -> Report:
    with scratch_dir(cfg, "scale") as d, scratch_dir(cfg, "scale-fresh") as f:

        def wipe_fresh() -> None:
            for suffix in ("", "-wal", "-shm"):
                (f / f"qdo.sqlite{suffix}").unlink(missing_ok=True)

        place = Place("SQLite", clean_env(d), clean_env(f), wipe_fresh,
                      lambda: (d / "qdo.sqlite").stat().st_size)  # fmt: skip
        return measure(cfg, place)


def measure(cfg: Config, place: Place) -> Report:
    """The benchmark, on either backend."""
    n = cfg.size(100_000_000, 1_000_000)
    build_add = Row("qdo  build: q.add_multiple, the Pending half", "/s")
    build_import = Row("qdo  build: import (qdo restore), the finished half", "/s")
    size = Row("qdo  database size per task (half with an attempt)", "B", higher_is_better=False)
    status = Row("qdo  q.status(), repeated", "s", target=TARGET, higher_is_better=False)
    cli = Row("qdo  `qdo status big` wall time", "s", target=TARGET, higher_is_better=False)
    claims_big = Row(f"qdo  claim({BATCH}) + finish, the big queue", "/s")
    claims_fresh = Row(f"base claim({BATCH}) + finish, a fresh queue", "/s")
    agent_big = Row("qdo  qdo do --workers 2, the big queue", "/s")
    agent_fresh = Row("base qdo do --workers 2, a fresh queue", "/s")
    progress(f"scale: building a queue of {n:,} tasks ({place.backend})")
    imported, added = in_child(build, place.big, n)
    build_import.values.append(n // 2 / imported)
    build_add.values.append((n - n // 2) / added)
    size.values.append(place.size() / n)
    progress(f"scale: built in {imported + added:.0f} s; status")
    status.values.append(in_child(time_status, place.big))
    argv = [*qdo_command(), "status", "big"]
    run_child(argv, place.big)  # (untimed: the first after the build warms the caches)
    cli.values.append(statistics.median(run_child(argv, place.big).seconds
                                        for _ in range(COMMANDS)))  # fmt: skip
    for i in range(cfg.runs):
        progress(f"scale: run {i + 1}/{cfg.runs}, claims and agents, big and fresh")
        in_child(fresh, place.fresh, CLAIMS + FRESH_TASKS)
        for env, claims, agent in (
            (place.big, claims_big, agent_big),
            (place.fresh, claims_fresh, agent_fresh),
        ):
            claims.values.append(in_child(claim_rate, env))
            agent.values.append(agent_rate(env))
        place.wipe_fresh()
    return Report(
        f"scale: one queue of {n:,} tasks (half Succeeded, half Pending), {place.backend}",
        [build_import, build_add, size, status, cli, claims_big, claims_fresh, agent_big,
         agent_fresh],
        [Ratio("ratio claims, big / fresh queue", claims_big, claims_fresh, target=0.9),
         Ratio("ratio qdo do, big / fresh queue", agent_big, agent_fresh, target=0.9)],
        [f"the queue is built once; claims: {CLAIMS:,} tasks, {BATCH} a claim, one process; "
         f"qdo do: --runtime {AGENT_SECONDS}, shell tasks 'echo Wow N'",
         f"python {sys.version.split()[0]}"],
    )  # fmt: skip
