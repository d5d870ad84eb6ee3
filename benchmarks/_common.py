"""Shared helpers of the benchmarks: scratch directories, child processes, timing, tables.

Every measurement runs in a fresh process (spawned, never forked) with ``QDO_DIR``
pointing at a fresh scratch directory, so runs share no cache, connection or memory,
and nothing ever touches ``~/.qdo``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from multiprocessing import get_context
from pathlib import Path
from queue import Empty
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SPAWN = get_context("spawn")


@dataclass
class Config:
    runs: int
    quick: bool
    scratch: Path  # parent of every run's scratch directory; on the disk being measured

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full


# -- environment and scratch directories ---------------------------------------------------
def clean_env(qdo_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """This environment without any qdo setting, plus ``QDO_DIR`` if given.

    A user's ``QDORC_LOCATION`` or ``QDO_DB_NAME`` could otherwise point a benchmark at
    a real database.
    """
    # (and with bytecode caches, as a pip install writes them: a command's start-up is
    # then what users see, not Python compiling qdo's modules at every run)
    env = {
        k: v for k, v in os.environ.items()
        if not (k.startswith("QDO_") or k in ("QDORC_LOCATION", "PYTHONDONTWRITEBYTECODE"))
    }  # fmt: skip
    if qdo_dir is not None:
        env["QDO_DIR"] = str(qdo_dir)
    return env


def use_env(env: dict[str, str]) -> None:
    """Make ``env`` this process's whole environment (call before the first qdo call)."""
    os.environ.clear()
    os.environ.update(env)


def use_qdo_dir(qdo_dir: str | os.PathLike[str]) -> None:
    """Point this process's qdo at ``qdo_dir`` (call before the first qdo call)."""
    use_env(clean_env(qdo_dir))


@contextmanager
def scratch_dir(cfg: Config, prefix: str) -> Iterator[Path]:
    """A fresh, empty directory under ``cfg.scratch``, removed afterwards."""
    cfg.scratch.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix + "-", dir=cfg.scratch))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding ``path`` (from /proc/mounts), or '?'."""
    try:
        mounts = Path("/proc/mounts").read_text().split("\n")
    except OSError:
        return "?"
    real, best, kind = os.path.realpath(path), "", "?"
    for line in mounts:
        fields = line.split()
        inside = len(fields) >= 3 and (real + "/").startswith(fields[1].rstrip("/") + "/")
        if inside and len(fields[1]) >= len(best):
            best, kind = fields[1], fields[2]
    return kind


# -- processes ----------------------------------------------------------------------------
def in_child(func: Callable[..., Any], *args: Any) -> Any:
    """``func(*args)`` in a freshly spawned Python process; its return value."""
    with ProcessPoolExecutor(max_workers=1, mp_context=SPAWN) as pool:
        return pool.submit(func, *args).result()


def released(func: Callable[..., Any], args_of: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Run ``func(*args, barrier)`` for each tuple of ``args_of``, each in a spawned
    process, all released together by the barrier; return their results (in the order
    they came).  A process that fails aborts the barrier, and its error is raised here."""
    barrier = SPAWN.Barrier(len(args_of))
    out = SPAWN.Queue()
    procs = [SPAWN.Process(target=_released, args=(func, args, barrier, out)) for args in args_of]
    for p in procs:
        p.start()
    results = []
    try:
        for _ in procs:
            results.append(out.get(timeout=1800))
    except Empty:
        raise RuntimeError("a consumer process did not report within 30 minutes") from None
    finally:
        for p in procs:
            p.join(timeout=60)
    failed = [r for r in results if isinstance(r, str)]
    if failed:
        raise RuntimeError(f"a consumer process failed: {failed[0]}")
    return results


def _released(func: Callable[..., Any], args: tuple[Any, ...], barrier: Any, out: Any) -> None:
    try:
        out.put(func(*args, barrier))
    except BaseException as e:
        barrier.abort()
        out.put(f"{type(e).__name__}: {e}")
        raise


def qdo_command() -> list[str]:
    """How a user starts qdo from this environment: its ``qdo`` script, else ``-m qdo``."""
    script = Path(sys.executable).parent / "qdo"
    return [str(script)] if script.exists() else [sys.executable, "-m", "qdo"]


@dataclass
class ChildRun:
    seconds: float  # wall time from start to exit
    max_rss: int | None  # the child's own peak resident set size, in bytes, if asked for
    stdout: str
    stderr: str


GNU_TIME = "/usr/bin/time"


@cache
def rss_method() -> str:
    """How :func:`run_child` measures a child's peak RSS: "time" or "wait4".

    Linux carries the parent's peak RSS into a child across fork + exec: a child of
    this 30 MB driver reports ``ru_maxrss`` >= 30 MB whatever it does itself (and so
    does ``getrusage(RUSAGE_CHILDREN)``).  GNU time is a small C program, so the
    figure it reports for its child is the child's own.  Without it, ``os.wait4`` of
    the child gives an upper bound: max(the child's peak, this process's peak).
    """
    if not os.access(GNU_TIME, os.X_OK):
        return "wait4"
    with tempfile.NamedTemporaryFile("r") as out:
        probe = [GNU_TIME, "-f", "%M", "-o", out.name, "true"]
        done = subprocess.run(probe, capture_output=True, check=False)
        return "time" if done.returncode == 0 and out.read().strip().isdigit() else "wait4"


def run_child(
    argv: Sequence[str], env: dict[str, str], rss: bool = False, check: bool = True
) -> ChildRun:
    """Run a command to its end: its wall time and (with ``rss``) its peak RSS."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as timed,
    ):
        wrap = rss and rss_method() == "time"
        if wrap:  # GNU time adds about a millisecond to the wall time
            argv = [GNU_TIME, "-f", "%M", "-o", timed.name, *argv]
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen
        max_rss = None
        if rss:
            max_rss = int(timed.read().strip().splitlines()[-1]) if wrap else usage.ru_maxrss
            max_rss *= 1024  # both count kB
        out.seek(0)
        err.seek(0)
        result = ChildRun(seconds, max_rss, out.read().decode(), err.read().decode())
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {result.stderr.strip()}")
    return result


def median_wall(argv: Sequence[str], env: dict[str, str], runs: int) -> float:
    """The median wall time (seconds) of ``runs`` runs of a command, after one run
    untimed (it writes the bytecode caches and warms the page cache)."""
    run_child(argv, env)
    return statistics.median(run_child(argv, env).seconds for _ in range(runs))


def qdo_state_counts(queue: str, env: dict[str, str]) -> dict[str, int]:
    """The queue's tasks by state, from ``qdo status QUEUE --json`` (a subprocess)."""
    got = run_child([*qdo_command(), "status", queue, "--json"], env)
    counts: dict[str, int] = json.loads(got.stdout)["ntasks"]
    return counts


def check_all_succeeded(queue: str, env: dict[str, str], n: int) -> None:
    """Fail the benchmark unless ``qdo status`` counts exactly ``n`` tasks, all Succeeded."""
    counts = qdo_state_counts(queue, env)
    if counts.get("Succeeded") != n or sum(counts.values()) != n:
        raise RuntimeError(f"expected {n:,} tasks, all Succeeded; qdo status says {counts}")


# -- workloads ----------------------------------------------------------------------------
def shell_tasks(n: int) -> list[str]:
    """The issue's workload: ``n`` short shell commands, all different."""
    return [f"echo Wow {i}" for i in range(n)]


# -- results ------------------------------------------------------------------------------
@dataclass
class Row:
    """One measured figure: its value in each run."""

    label: str
    unit: str  # "/s", "s" or "MB"
    values: list[float] = field(default_factory=list)
    target: float | None = None
    higher_is_better: bool = True

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def verdict(self, quick: bool) -> str:
        if self.target is None:
            return ""
        if quick:
            return "(quick)"
        ok = self.median >= self.target if self.higher_is_better else self.median <= self.target
        return "PASS" if ok else "MISS"

    def target_text(self) -> str:
        if self.target is None:
            return ""
        return (">= " if self.higher_is_better else "<= ") + fmt(self.target, self.unit)


@dataclass
class Ratio:
    """``row / peer`` within each run (same run, same disk), summarised by the median."""

    label: str
    row: Row
    peer: Row
    target: float | None = None  # the median ratio must reach it, if given
    higher_is_better: bool = True  # False: the median ratio must stay at or below target

    @property
    def values(self) -> list[float]:
        return [a / b for a, b in zip(self.row.values, self.peer.values, strict=True) if b]

    def verdict(self, quick: bool) -> str:
        if self.target is None:
            return ""
        if quick:
            return "(quick)"
        vals = self.values
        if not vals:
            return "MISS"
        median = statistics.median(vals)
        ok = median >= self.target if self.higher_is_better else median <= self.target
        return "PASS" if ok else "MISS"

    def target_text(self) -> str:
        if self.target is None:
            return ""
        return (">= " if self.higher_is_better else "<= ") + f"{self.target:.2f}x"


@dataclass
class Report:
    title: str
    rows: list[Row]
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, label: str) -> Row:
        return next(r for r in self.rows if r.label == label)


def fmt(value: float, unit: str) -> str:
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "ms":
        return f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"
    if unit == "µs":
        return f"{value:.1f} µs"
    if unit == "%":
        return f"{value:.2f} %"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:.3g} {unit}"


def print_report(report: Report, cfg: Config) -> None:
    runs = len(report.rows[0].values) if report.rows else 0
    print(f"\n== {report.title}  ({runs} run{'s' * (runs != 1)}, median [min .. max]) ==")
    lines = [("", "median", "min .. max", "target", "")]
    for r in report.rows:
        spread = f"{fmt(min(r.values), r.unit)} .. {fmt(max(r.values), r.unit)}"
        lines.append(
            (r.label, fmt(r.median, r.unit), spread, r.target_text(), r.verdict(cfg.quick))
        )
    for q in report.ratios:
        vals = q.values
        spread = f"{min(vals):.2f}x .. {max(vals):.2f}x" if vals else ""
        median = f"{statistics.median(vals):.2f}x" if vals else "-"
        lines.append((q.label, median, spread, q.target_text(), q.verdict(cfg.quick)))
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    for line in lines:
        label, *figures, verdict = line
        cells = [c.rjust(w) for c, w in zip(figures, widths[1:4], strict=True)]
        print(("  " + "  ".join([label.ljust(widths[0]), *cells, verdict])).rstrip())
    for note in report.notes:
        print(f"  note: {note}")
    sys.stdout.flush()


def progress(text: str) -> None:
    """A line on stderr saying what runs now (the tables go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- PostgreSQL (the pg-* benchmarks) --------------------------------------------------------
@cache
def pg_url() -> str:
    """The URL of the PostgreSQL server the pg-* benchmarks use.

    ``$QDO_BENCH_PG_URL`` if set, else the private server of ``scripts/postgres start``
    (started if it is not running; it installs PostgreSQL when run as root).
    """
    url = os.environ.get("QDO_BENCH_PG_URL")
    if url:
        return url
    got = subprocess.run(
        [str(REPO / "scripts" / "postgres"), "start"], capture_output=True, text=True, check=False
    )
    if got.returncode != 0 or not got.stdout.strip():
        raise RuntimeError(f"scripts/postgres start failed: {got.stderr.strip()}")
    return got.stdout.strip().splitlines()[-1]


def pg_env(qdo_dir: str | os.PathLike[str], url: str, schema: str) -> dict[str, str]:
    """:func:`clean_env` pointing qdo at schema ``schema`` of the PostgreSQL at ``url``."""
    env = clean_env(qdo_dir)
    env.update(QDO_BACKEND="postgres", QDO_DB_URL=url, QDO_DB_SCHEMA=schema)
    return env


def use_pg(qdo_dir: str | os.PathLike[str], url: str, schema: str) -> None:
    """Like :func:`use_qdo_dir`, with qdo's backend the PostgreSQL schema ``schema``."""
    use_env(pg_env(qdo_dir, url, schema))


def pg_drop_schema(url: str, schema: str) -> None:
    """Drop ``schema`` and everything in it, if it exists (psycopg, autocommit)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def pg_server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        settings = conn.execute(
            "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings "
            "WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', "
            "'shared_buffers', 'max_parallel_workers_per_gather')"
        ).fetchone()
    version = row[0] if row else "?"
    return f"PostgreSQL {version} ({settings[0] if settings else '?'})"
