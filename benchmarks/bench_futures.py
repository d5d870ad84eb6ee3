"""Durable futures (issue 14): N no-op calls through ``qdo.connect(Q).executor()`` with
two local ``qdo do`` agents on SQLite, against dask.distributed futures on a
LocalCluster of two worker processes, in the same run.

qdo: a fresh ``QDO_DIR``; the queue is made a queue of calls, then two agents start
(``qdo do bench --wait``, one slot each, subprocesses) and are given a second to come
up; the driver (a child process, PYTHONPATH holding this directory so that the agents
import ``noop_tasks``) times from its first ``submit`` to the last ``result()`` of N
calls ``noop_tasks.noop_value(i)``, then checks the results.  The agents are stopped
(SIGTERM) after each run.

Peer: ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` started
untimed, then ``client.map(noop_value, range(N))`` and ``client.gather`` timed the same
way (``pure=False``: every call runs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _common import Config, Ratio, Report, Row, clean_env, in_child, progress, scratch_dir, use_env

AGENTS = 2
TARGET = 3_000  # futures/s
QUEUE = "bench"
HERE = Path(__file__).resolve().parent


def futures_env(qdo_dir: Path | None, **extra: str) -> dict[str, str]:
    """A clean environment (``QDO_DIR``, if given) in which ``noop_tasks`` imports."""
    env = clean_env(qdo_dir)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
    return {**env, **extra}


def make_call_queue(queue: str, env: dict[str, str]) -> None:
    use_env(env)
    import qdo

    qdo.connect(queue, create_ok=True).executor().shutdown()


@contextmanager
def agents_on(queue: str, env: dict[str, str]) -> Iterator[None]:
    """``queue`` made a queue of calls, and AGENTS ``qdo do --wait`` agents of one slot
    each working it (given a second to come up, as dask's workers are up), stopped with
    SIGTERM afterwards."""
    in_child(make_call_queue, queue, env)
    agents = [subprocess.Popen([sys.executable, "-m", "qdo", "do", queue, "--wait"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
              for _ in range(AGENTS)]  # fmt: skip
    try:
        time.sleep(1.0)
        yield
    finally:
        for a in agents:
            a.send_signal(signal.SIGTERM)
        for a in agents:
            a.wait(timeout=60)


def qdo_driver(qdo_dir: str, n: int) -> float:
    use_env(futures_env(Path(qdo_dir)))
    from noop_tasks import noop_value

    import qdo

    ex = qdo.connect(QUEUE, create_ok=True).executor()
    start = time.perf_counter()
    futures = [ex.submit(noop_value, i) for i in range(n)]
    results = [f.result() for f in futures]
    seconds = time.perf_counter() - start
    ex.shutdown()
    assert results == list(range(n)), "wrong results"
    return seconds


def dask_driver(n: int) -> float:
    from dask.distributed import Client, LocalCluster
    from noop_tasks import noop_value

    with LocalCluster(n_workers=AGENTS, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:  # fmt: skip
        client.submit(noop_value, -1).result()  # the workers are up
        start = time.perf_counter()
        results = client.gather(client.map(noop_value, range(n), pure=False))
        seconds = time.perf_counter() - start
    assert results == list(range(n)), "wrong results"
    return seconds


def run(cfg: Config) -> Report:
    n = cfg.size(20_000, 2_000)
    qdo_row = Row(f"qdo  executor, {AGENTS} `qdo do --wait` agents, SQLite", "/s", target=TARGET)
    dask_row = Row(f"dask.distributed LocalCluster, {AGENTS} worker processes", "/s")
    sys.path.insert(0, str(HERE))
    for i in range(cfg.runs):
        steps = ["qdo", "dask"] if i % 2 == 0 else ["dask", "qdo"]
        for step in steps:
            progress(f"futures: run {i + 1}/{cfg.runs}, {n:,} no-op calls, {step}")
            if step == "dask":
                dask_row.values.append(n / in_child(dask_driver, n))
                continue
            with scratch_dir(cfg, "futures") as d, agents_on(QUEUE, futures_env(d)):
                qdo_row.values.append(n / in_child(qdo_driver, str(d), n))
    return Report(
        f"durable futures: {n:,} no-op calls, {AGENTS} workers on this machine",
        [qdo_row, dask_row],
        [Ratio("ratio qdo / dask.distributed", qdo_row, dask_row)],
        [
            "time from the first submit to the last result, in the driver; workers started "
            "before (untimed); each call returns its argument, checked; the order of qdo and "
            "dask alternates from run to run"
        ],
    )
