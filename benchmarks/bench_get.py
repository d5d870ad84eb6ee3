"""The heartbeat's cost (issue 11): ``q.get()`` / ``task.set_state()`` from 8 processes,
before and after the client library renews leases, on SQLite and on PostgreSQL.

"before" is commit ``BEFORE`` (adddd73): ``get()`` claims a task under a lease
(600 s by default) and nothing renews it.  "after" is this checkout's ``src/``
(copied to the scratch directory when the benchmark starts, so that every run measures
the same code even if ``src/`` is edited meanwhile): every task got with ``get()`` is
registered with the process's heartbeat thread (``qdo/heartbeat.py``), which renews
its lease a third of a lease after each renewal until ``set_state`` reports it; the
default lease is 60 s.  "before" is extracted with ``git archive BEFORE src``.  Each
child process puts the chosen ``src/`` first on ``sys.path`` (a spawned process
gets its parent's ``sys.path``, so ``PYTHONPATH`` alone would not do) and checks which
qdo it imported: where ``qdo.__file__`` lies, and whether ``qdo.heartbeat`` exists.

Each run: a fresh queue (SQLite: a fresh ``QDO_DIR``; PostgreSQL: a fresh schema of
its own, dropped afterwards) loaded with N no-op shell tasks (``'true'``,
``q.add_multiple``) by the code measured; then 8 spawned processes, each
``qdo.connect("bench")``, released together by a barrier, each loop
``t = q.get(); if t is None: break; t.set_state(qdo.Task.SUCCEEDED)``.  Rate = N /
(last process's end - first process's start).  Checked: N tasks Succeeded.

Variants, interleaved (the order rotates from run to run):

- before, default lease (600 s);
- after, default lease (60 s): the judged figure, after / before >= 0.90;
- after, ``QDO_LEASE=3``: a task is due for renewal 1 s after ``get()``; tasks that
  take a few ms are reported long before, so renewals stay rare;
- after, ``QDO_LEASE=3`` and each process also holds one task the whole run, got
  with ``get(lease=HOLD_LEASE)`` before the barrier and reported at the end: the
  heartbeat renews it every ``HOLD_LEASE / 3`` s while the loop runs (a busy heartbeat);
- diag: after with the heartbeat replaced by a no-op in each process (monkeypatched
  ``qdo.queue.heartbeat``; src/ unchanged): what the rest of the change costs.

Renewals are counted by ``Heartbeat.renewals`` (one per ``store.renew`` call, which
covers every due task of a process at once).
"""

from __future__ import annotations

import io
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from _common import (
    REPO,
    Config,
    Ratio,
    Report,
    Row,
    clean_env,
    in_child,
    pg_drop_schema,
    pg_env,
    pg_server_version,
    pg_url,
    progress,
    released,
    scratch_dir,
    use_env,
)

BEFORE = "adddd73"
WORKERS = 8
TARGET_RATIO = 0.90  # after / before
SHORT_LEASE = "3"  # QDO_LEASE of the short-lease rows
HOLD_LEASE = 0.3  # the lease of the task each process holds all run long (busy row)
QUEUE = "bench"


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    code: str  # "before" or "after"
    lease: str | None = None  # QDO_LEASE, if set
    hold: float | None = None  # each process holds one task with this lease all run long
    stub: bool = False  # the heartbeat replaced by a no-op
    diag: bool = False


VARIANTS = (
    Variant("before", f"before ({BEFORE}), default lease 600 s", "before"),
    Variant("after", "after, default lease 60 s", "after"),
    Variant("short", f"after, QDO_LEASE={SHORT_LEASE}", "after", lease=SHORT_LEASE),
    Variant(
        "busy",
        f"after, QDO_LEASE={SHORT_LEASE} + 1 task held/process (lease {HOLD_LEASE} s)",
        "after",
        lease=SHORT_LEASE,
        hold=HOLD_LEASE,
    ),  # fmt: skip
    Variant("stub", "diag after, heartbeat stubbed out", "after", stub=True, diag=True),
)


# -- in the child processes ---------------------------------------------------------------
def _import_qdo(src: str, env: dict[str, str]) -> Any:
    """This process's environment set to ``env``; qdo imported from ``src``."""
    use_env(env)
    sys.path.insert(0, src)
    import qdo

    where = Path(qdo.__file__).resolve()
    if not where.is_relative_to(Path(src).resolve()):
        raise RuntimeError(f"imported qdo from {where}, not from {src}")
    return qdo


class _NoBeat:
    """A heartbeat that renews nothing (the diagnostic row)."""

    renewals = 0

    def hold(self, *args: Any) -> None:
        pass

    def renewed(self, *args: Any) -> None:
        pass

    def release(self, *args: Any) -> None:
        pass


_NO_BEAT = _NoBeat()


def _which(qdo: Any) -> tuple[str, bool]:
    import importlib.util

    return str(Path(qdo.__file__).parent), importlib.util.find_spec("qdo.heartbeat") is not None


def child_load(src: str, env: dict[str, str], n: int) -> tuple[str, bool]:
    qdo = _import_qdo(src, env)
    q = qdo.create(QUEUE)
    q.add_multiple(["true"] * n)
    return _which(qdo)


def child_check(src: str, env: dict[str, str], n: int) -> None:
    qdo = _import_qdo(src, env)
    counts = qdo.connect(QUEUE).status()["ntasks"]
    counts = {k: v for k, v in counts.items() if v}
    if counts != {"Succeeded": n}:
        raise RuntimeError(f"expected {n:,} tasks, all Succeeded; status says {counts}")


def child_consume(
    src: str, env: dict[str, str], hold: float | None, stub: bool, index: int, barrier: Barrier
) -> dict[str, Any]:
    qdo = _import_qdo(src, env)
    if stub:
        import qdo.queue

        qdo.queue.heartbeat = lambda: _NO_BEAT  # type: ignore[attr-defined]
    from qdo.errors import LeaseLost

    where, has_heartbeat = _which(qdo)
    q = qdo.connect(QUEUE)  # connected, before the clock starts
    held = q.get(lease=hold) if hold is not None else None
    barrier.wait()
    start, done, lost = time.monotonic(), 0, 0
    while (task := q.get()) is not None:
        try:
            task.set_state(qdo.Task.SUCCEEDED)
            done += 1
        except LeaseLost:  # its lease ran out: someone else runs it again
            lost += 1
    if held is not None:
        try:
            held.set_state(qdo.Task.SUCCEEDED)
            done += 1
        except LeaseLost:
            lost += 1
    end = time.monotonic()
    renewals = None
    if has_heartbeat and not stub:
        from qdo.heartbeat import heartbeat

        renewals = heartbeat().renewals
    return dict(done=done, lost=lost, start=start, end=end, where=where,
                heartbeat=has_heartbeat, renewals=renewals)  # fmt: skip


# -- the driver ---------------------------------------------------------------------------
def consume(src: str, env: dict[str, str], v: Variant) -> list[dict[str, Any]]:
    """WORKERS processes released together; each one's result."""
    return released(child_consume, [(src, env, v.hold, v.stub, i) for i in range(WORKERS)])


@contextmanager
def sources(cfg: Config) -> Iterator[dict[str, str]]:
    """{"before": its src/, "after": a copy of this checkout's src/}, removed afterwards."""
    with scratch_dir(cfg, "get-src") as tmp:
        tar = subprocess.run(
            ["git", "-C", str(REPO), "archive", BEFORE, "src"], capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            t.extractall(tmp / "before", filter="data")
        shutil.copytree(
            REPO / "src", tmp / "after" / "src", ignore=shutil.ignore_patterns("__pycache__")
        )
        yield {"before": str(tmp / "before" / "src"), "after": str(tmp / "after" / "src")}


def after_version() -> str:
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=False).stdout.strip()  # fmt: skip
    dirty = subprocess.run([*git, "status", "--porcelain", "src"], capture_output=True,
                           text=True, check=False).stdout.split("\n")  # fmt: skip
    changed = [line[3:] for line in dirty if line.strip()]
    return head + (f" + uncommitted {', '.join(changed)}" if changed else "")


def measure(cfg: Config, backend: str, n: int) -> Report:
    url = pg_url() if backend == "postgres" else ""
    rows = {v.key: Row(("diag " if v.diag else "qdo  ") + v.label.removeprefix("diag "), "/s")
            for v in VARIANTS}  # fmt: skip
    renewals: dict[str, list[int]] = {v.key: [] for v in VARIANTS}
    lost: dict[str, int] = {v.key: 0 for v in VARIANTS}
    imported: dict[str, set[str]] = {v.key: set() for v in VARIANTS}
    order_log: list[str] = []
    with sources(cfg) as src:
        for i in range(cfg.runs):
            k = i % len(VARIANTS)
            order = VARIANTS[k:] + VARIANTS[:k]  # rotate: each variant leads once in 5 runs
            order_log.append(" ".join(v.key for v in order))
            for v in order:
                progress(f"{'pg-get' if url else 'get'}: run {i + 1}/{cfg.runs}, "
                         f"{v.key}, {n:,} tasks, {WORKERS} processes")  # fmt: skip
                schema = f"bench_get_{v.code}"
                with scratch_dir(cfg, f"get-{v.key}") as qdo_dir:
                    env = pg_env(qdo_dir, url, schema) if url else clean_env(qdo_dir)
                    env["PYTHONPATH"] = src[v.code]
                    if v.lease is not None:
                        env["QDO_LEASE"] = v.lease
                    if url:
                        pg_drop_schema(url, schema)
                    try:
                        where, hb = in_child(child_load, src[v.code], env, n)
                        results = consume(src[v.code], env, v)
                        in_child(child_check, src[v.code], env, n)
                    finally:
                        if url:
                            pg_drop_schema(url, schema)
                done = sum(r["done"] for r in results)
                if done != n:
                    raise RuntimeError(f"{v.key}: {done:,} tasks reported, expected {n:,}")
                seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
                rows[v.key].values.append(n / seconds)
                lost[v.key] += sum(r["lost"] for r in results)
                if results[0]["renewals"] is not None:
                    renewals[v.key].append(sum(r["renewals"] for r in results))
                for r in [{"where": where, "heartbeat": hb}, *results]:
                    shown = r["where"].replace(str(cfg.scratch) + "/", "")
                    imported[v.key].add(f"{shown} (qdo.heartbeat: "
                                        f"{'yes' if r['heartbeat'] else 'no'})")  # fmt: skip
                if (v.code == "before") == any(r["heartbeat"] for r in results):
                    raise RuntimeError(f"{v.key}: imported the wrong qdo: {imported[v.key]}")
    before = rows["before"]
    ratios = [
        Ratio(f"ratio {v.key} / before", rows[v.key], before,
              target=TARGET_RATIO if v.key == "after" else None)
        for v in VARIANTS if v.key != "before"
    ]  # fmt: skip
    med = {k: statistics.median(r.values) for k, r in rows.items()}
    notes = [
        "qdo imported (load and each process): "
        + "; ".join(f"{k}: {', '.join(sorted(w))}" for k, w in imported.items()),
        f"after = {after_version()} (copied from src/ at the start); before = {BEFORE}",
        "renewals (Heartbeat.renewals, all 8 processes, per run): "
        + "; ".join(f"{k} {renewals[k]}" for k in renewals if renewals[k]),
        f"reports refused (LeaseLost) over all runs: {lost}",
        "ratio of the medians: "
        + ", ".join(f"{k} {med[k] / med['before']:.2f}x" for k in med if k != "before"),
        f"order of the variants in each run: {' | '.join(order_log)}",
    ]
    if url:
        notes.insert(0, pg_server_version(url))
    where = "PostgreSQL" if url else "SQLite"
    return Report(
        f"{'pg-get' if url else 'get'}: the heartbeat's cost, q.get() + set_state of {n:,} "
        f"no-op tasks, {WORKERS} processes, {where}, before ({BEFORE}) and after",
        list(rows.values()),
        ratios,
        notes,
    )


def run(cfg: Config) -> Report:
    """SQLite: a fresh QDO_DIR per run."""
    return measure(cfg, "sqlite", cfg.size(20_000, 2_000))


def run_pg(cfg: Config) -> Report:
    """PostgreSQL (scripts/postgres, or $QDO_BENCH_PG_URL): a fresh schema per run."""
    return measure(cfg, "postgres", cfg.size(3_000, 500))
