"""A queue's attempts as a Chrome trace (``qdo trace QUEUE FILE``; open it in
https://ui.perfetto.dev): one process per agent (``host:pid``), one track per slot of
it, one slice per attempt from its real start to its end, named by task id and state,
with its payload, exit code and message; times from the first start.  As
``qdo.sched``'s ``timeline().to_chrome()`` does for the scheduler.

The database keeps no slot number: an agent's attempts are laid on the fewest tracks
on which none overlap (the first free one, by start), which is how many slots it had
busy at once.
"""

from __future__ import annotations

import heapq
import json
import os
from typing import Any

from .queue import Queue

__all__ = ["write_trace"]


def write_trace(q: Queue, path: str | os.PathLike[str]) -> int:
    """Write the trace of queue ``q``'s finished attempts to ``path``; how many."""
    by_worker: dict[str, list[tuple[float, float, Any, Any]]] = {}
    for task in q.iter_tasks(history=True):
        for a in task.history:
            if a.started is None or a.finished is None:
                continue
            by_worker.setdefault(a.worker or "?", []).append(
                (a.started.timestamp(), a.finished.timestamp(), task, a))  # fmt: skip
    t0 = min((s for rows in by_worker.values() for s, *_ in rows), default=0.0)
    events: list[dict[str, Any]] = []
    for pid, (worker, rows) in enumerate(sorted(by_worker.items()), 1):
        events.append({"name": "process_name", "ph": "M", "pid": pid,
                       "args": {"name": f"agent {worker}"}})  # fmt: skip
        free: list[int] = []  # tracks free again, the lowest first
        busy: list[tuple[float, int]] = []  # (ends, track)
        tracks = 0
        for start, end, task, a in sorted(rows, key=lambda r: (r[0], r[1])):
            while busy and busy[0][0] <= start:
                heapq.heappush(free, heapq.heappop(busy)[1])
            if free:
                track = heapq.heappop(free)
            else:
                track = tracks
                tracks += 1
                events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": track,
                               "args": {"name": f"slot {track}"}})  # fmt: skip
            heapq.heappush(busy, (end, track))
            events.append({
                "name": f"{task.id} {a.state}", "cat": a.state, "ph": "X", "pid": pid,
                "tid": track, "ts": (start - t0) * 1e6, "dur": max(0.0, end - start) * 1e6,
                "args": {"task": str(task.task)[:200], "attempt": a.attempt,
                         "exitcode": a.exitcode, "message": a.message, "jobid": a.jobid,
                         "cpu": a.cpu, "rss": a.rss},
            })  # fmt: skip
    tmp = f"{os.fspath(path)}.part{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, f)
    os.replace(tmp, path)
    return sum(1 for e in events if e["ph"] == "X")
