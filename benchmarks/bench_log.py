"""``qdo log`` on a queue of 1,000,000 tasks whose output went to log segments.

The queue: 20,000 tasks that print, run by ``qdo do --workers 2`` (their output is
records of the two slots' segment files), then 980,000 more Pending ones.  Measured:

- ``q.output(id)`` for random tasks that printed: the median of repeated calls in one
  process (the task's row, its attempts, one read of its record);
- ``qdo log bench ID`` as a command: the median wall time of repeated runs, and that
  minus ``python -c pass``;
- the files the 20,000 tasks' output takes: segments here, against a file per task
  with ``qdo do --log-files`` on the same tasks in the same run.

Peer (the floor): reading one task's log file of the ``--log-files`` run with Python's
``open().read()``.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

from _common import (
    Config,
    Ratio,
    Report,
    Row,
    clean_env,
    in_child,
    median_wall,
    progress,
    qdo_command,
    scratch_dir,
    use_qdo_dir,
)

TARGET = 50.0  # ms
CALLS = 200  # q.output() calls per run
COMMANDS = 10  # subprocess runs per run


def build(qdo_dir: str, printing: int, total: int, files: bool) -> list[int]:
    use_qdo_dir(qdo_dir)
    import qdo

    q = qdo.create("bench")
    ids = q.add_multiple([f"echo task {i} says hello; echo and more >&2" for i in range(printing)])
    summary = q.do(workers=2, log_files=files)
    assert summary.by_state == {"Succeeded": printing}, summary
    if total > printing:
        q.add_multiple([f"echo later {i}" for i in range(total - printing)])
    return ids


def time_output(qdo_dir: str, ids: list[int]) -> float:
    use_qdo_dir(qdo_dir)
    import qdo

    q = qdo.connect("bench")
    picks = random.Random(1).sample(ids, CALLS)
    q.output(picks[0])
    times = []
    for task_id in picks:
        start = time.perf_counter()
        data = q.output(task_id)
        times.append((time.perf_counter() - start) * 1000)
        assert data is not None and data.startswith(b"task "), data
    return statistics.median(times)


def time_file_read(log_dir: str, ids: list[int]) -> float:
    from qdo.logs import log_path

    picks = random.Random(1).sample(ids, CALLS)
    times = []
    for task_id in picks:
        start = time.perf_counter()
        with open(log_path(Path(log_dir), "bench", task_id), "rb") as f:
            f.read()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


def run(cfg: Config) -> Report:
    total = cfg.size(1_000_000, 100_000)
    printing = cfg.size(20_000, 2_000)
    call = Row("qdo  q.output(id), repeated", "ms", target=TARGET, higher_is_better=False)
    peer = Row("peer open().read() of its --log-files file", "ms", higher_is_better=False)
    cli = Row("qdo  `qdo log bench ID` wall time", "ms", higher_is_better=False)
    net = Row("qdo  `qdo log` - `python -c pass`", "ms", target=TARGET, higher_is_better=False)
    segs = Row(f"qdo  files for {printing:,} tasks' logs", "files", higher_is_better=False)
    files = Row("peer files with --log-files", "files", higher_is_better=False)
    for i in range(cfg.runs):
        progress(f"log: run {i + 1}/{cfg.runs}, {total:,} tasks, {printing:,} printing")
        with scratch_dir(cfg, "log") as d, scratch_dir(cfg, "logfiles") as f:
            ids = in_child(build, str(d), printing, total, False)
            in_child(build, str(f), printing, printing, True)
            call.values.append(in_child(time_output, str(d), ids))
            peer.values.append(in_child(time_file_read, str(f / "logs"), ids))
            segs.values.append(count_files(d / "logs"))
            files.values.append(count_files(f / "logs"))
            env = clean_env(d)
            pick = str(random.Random(2).choice(ids))
            cli_s = median_wall([*qdo_command(), "log", "bench", pick], env, COMMANDS) * 1000
            cli.values.append(cli_s)
            net.values.append(
                cli_s - median_wall([sys.executable, "-c", "pass"], env, COMMANDS) * 1000
            )
    return Report(
        f"log: qdo log on a queue of {total:,} tasks, {printing:,} of which printed",
        [call, peer, cli, net, segs, files],
        [Ratio("ratio q.output() / peer file read", call, peer)],
        [f"each run: {CALLS} q.output() calls, {COMMANDS} runs of the command, medians"],
    )
