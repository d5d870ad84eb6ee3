"""``qdo do Q --workers 2 --func noop_tasks:noop``: 50,000 no-op parameter tasks through
two function worker processes, as a real subprocess, against a bare process pool.

Each run loads a fresh queue from a file of 50,000 JSON lines ``{"i": 0}`` ...
``{"i": 49999}`` with ``qdo load bench FILE --json`` (untimed), then times
``.venv/bin/qdo do bench --workers 2 --func noop_tasks:noop`` from start to exit
(interpreter start-up and the start of the 2 worker processes included), with
``PYTHONPATH`` holding the benchmarks directory so that ``noop_tasks`` imports, then
checks with ``qdo status bench --json`` that all 50,000 tasks are Succeeded.

Peer, no database: a ``python -c`` subprocess (same interpreter, same ``PYTHONPATH``)
that reads the same file, ``json.loads`` each line, and runs
``ProcessPoolExecutor(2, mp_context=spawn).map(noop_payload, dicts, chunksize=250)``
(``noop_payload(d)`` calls ``noop(**d)``; spawn and chunks of up to 250 are what qdo's
function runner uses: ``MAX_BATCH // workers``).

A base row times ``qdo do`` again on the finished queue (nothing to run): the fixed
cost of a run with ``--func``, which is inside qdo's wall time.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from _common import (
    Config,
    Ratio,
    Report,
    Row,
    check_all_succeeded,
    clean_env,
    progress,
    qdo_command,
    run_child,
    scratch_dir,
)

WORKERS = 2
QUEUE = "bench"
FUNC = "noop_tasks:noop"
TARGET = 10_000  # tasks/s
CHUNK = 250  # qdo's largest chunk per worker process: worker.MAX_BATCH // WORKERS
HERE = Path(__file__).resolve().parent

PEER = """
import json, sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from noop_tasks import noop_payload
path, workers, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path) as f:
    payloads = [json.loads(line) for line in f]
with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
    done = sum(1 for _ in pool.map(noop_payload, payloads, chunksize=chunk))
if done != len(payloads):
    sys.exit(f"ran {done} of {len(payloads)}")
"""


def func_env(qdo_dir: Path) -> dict[str, str]:
    """A clean environment in which ``noop_tasks`` imports."""
    env = clean_env(qdo_dir)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
    return env


def run(cfg: Config) -> Report:
    n = cfg.size(50_000, 5_000)
    f = str(WORKERS)
    qdo = Row(f"qdo  `qdo do bench --workers {f} --func {FUNC}`", "/s", target=TARGET)
    peer = Row(f"peer ProcessPoolExecutor({f}).map, chunksize {CHUNK}", "/s")
    base = Row("base `qdo do --func` with nothing to run", "s", higher_is_better=False)
    with scratch_dir(cfg, "func-file") as files:
        task_file = files / "tasks.jsonl"
        with open(task_file, "w") as out:
            for i in range(n):
                out.write(json.dumps({"i": i}) + "\n")
        for i in range(cfg.runs):
            steps = ["qdo", "peer"] if i % 2 == 0 else ["peer", "qdo"]
            for step in steps:
                progress(f"func: run {i + 1}/{cfg.runs}, {n:,} tasks, {step}")
                with scratch_dir(cfg, f"func-{step}") as d:
                    env = func_env(d)
                    if step == "peer":
                        argv = [sys.executable, "-c", PEER, str(task_file), f, str(CHUNK)]
                        peer.values.append(n / run_child(argv, env).seconds)
                        continue
                    load = [*qdo_command(), "load", QUEUE, str(task_file), "--json"]
                    got = run_child(load, env)
                    assert f"loaded {n:,} tasks" in got.stdout, got.stdout
                    argv = [*qdo_command(), "do", QUEUE, "--workers", f, "--func", FUNC]
                    got = run_child(argv, env)
                    assert f"ran {n:,} tasks" in got.stdout, got.stdout
                    qdo.values.append(n / got.seconds)
                    check_all_succeeded(QUEUE, env, n)
                    again = run_child(argv, env)
                    assert "ran 0 tasks" in again.stdout, again.stdout
                    base.values.append(again.seconds)
    return Report(
        f"qdo do --func: {n:,} no-op parameter tasks, {f} worker processes, as a subprocess",
        [qdo, peer, base],
        [Ratio("ratio qdo / process pool", qdo, peer)],
        [f"rates are tasks per second of wall time of the whole command (start-up included); "
         f"tasks {{\"i\": 0}} .. {{\"i\": {n - 1}}} loaded by `qdo load --json` (untimed), "
         f"all Succeeded after each run (qdo status --json); PYTHONPATH={HERE}; "
         f"the order of qdo and the peer alternates from run to run"],
    )  # fmt: skip
