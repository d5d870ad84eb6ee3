"""Run qdo's benchmarks and print a table per benchmark: qdo, its target and its peer.

Usually started by ``benchmarks/run.sh`` (which sets up .venv and installs the peers):

    benchmarks/run.sh                 # every benchmark, 3 runs each, full sizes
    benchmarks/run.sh --quick         # small sizes, 1 run: a smoke test
    benchmarks/run.sh --runs 5 claim  # only some: add, load, claim, status, do, func,
                                      # sched-noop, sched-grid, sched-shapes (or: sched)
    benchmarks/run.sh pg              # pg-claim, pg-load, pg-status: PostgreSQL (issue 5),
                                      # not run by default; pg-where: where their time goes
    benchmarks/run.sh heartbeat       # get (SQLite, run by default) and pg-get (PostgreSQL,
                                      # not by default): the heartbeat's cost (issue 11)
    benchmarks/run.sh launch          # qdo launch vs a Slurm job array on the test cluster
                                      # (issue 6), not run by default

Each run of each benchmark works in its own fresh scratch directory (``QDO_DIR``),
under ``--scratch`` (default: ``.bench/`` in the repository, on the disk being
measured), removed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from _common import REPO, Config, filesystem_of, print_report, use_qdo_dir

BENCHMARKS = {
    "add": "bench_add",
    "load": "bench_load",
    "claim": "bench_claim",
    "status": "bench_status",
    "do": "bench_do",
    "func": "bench_func",
    "sched-noop": "bench_sched_noop",
    "sched-grid": "bench_sched_grid",
    "sched-shapes": "bench_sched_shapes",
    "pg-claim": "bench_pg_claim",
    "pg-load": "bench_pg_load",
    "pg-status": "bench_pg_status",
    "pg-where": "bench_pg_where",
    "launch": "bench_launch",
    "get": "bench_get",  # issue 11: SQLite
    "pg-get": "bench_get:run_pg",  # issue 11: PostgreSQL (module:function; default: run)
    "pg-shared": "bench_pg_shared",  # issue 12: the cost of row-level security
    "futures": "bench_futures",  # issue 14: durable futures vs dask.distributed
    "futures-grid": "bench_futures_grid",  # issue 14: the seed grid, sched + executor
    "dashboard": "bench_dashboard",  # issue 15: qdo serve's cost
    "scale": "bench_scale",  # issue 16: 100M tasks in one queue, SQLite
    "pg-scale": "bench_pg_scale",  # issue 16: the same, PostgreSQL
    "pg-fleet": "bench_pg_fleet",  # issue 16: 50-500 simulated agents, direct and PgBouncer
    "log": "bench_log",  # issue 16: qdo log on 1M tasks, log segments vs a file per task
}
GROUPS = {
    "sched": ["sched-noop", "sched-grid", "sched-shapes"],  # issue 4
    "pg": ["pg-claim", "pg-load", "pg-status"],  # issue 5
    "heartbeat": ["get", "pg-get"],  # issue 11
}
#: Not run by default: they need a PostgreSQL server (scripts/postgres start, or
#: $QDO_BENCH_PG_URL); name them, or the group "pg".  launch needs the Slurm cluster
#: of scripts/slurm (started if it is down) and takes about 15 minutes; scale builds a
#: queue of 100 million tasks (about 15 minutes, 15 GB).
NOT_BY_DEFAULT = {*GROUPS["pg"], "pg-where", "pg-get", "launch", "scale", "pg-scale", "pg-fleet"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all of "
        f"{', '.join(n for n in BENCHMARKS if n not in NOT_BY_DEFAULT)}; "
        f"sched: the three sched-* ones; pg: the three pg-* ones, on PostgreSQL, "
        f"which need a server: scripts/postgres start, or $QDO_BENCH_PG_URL; "
        f"heartbeat: get and pg-get, the heartbeat's cost (pg-get needs that server too); "
        f"launch: qdo launch vs a job array, on the Slurm cluster of scripts/slurm)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs of each benchmark (default: $QDO_BENCH_RUNS, else 3, or 1 with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="sizes 10x smaller, for a smoke test (targets are not judged)",
    )
    parser.add_argument(
        "--scratch",
        type=Path,
        default=os.environ.get("QDO_BENCH_TMPDIR", REPO / ".bench"),
        help="where scratch directories go (default: $QDO_BENCH_TMPDIR, "
        "else .bench/ in the repository)",
    )
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="also write every run's figures to FILE"
    )
    args = parser.parse_args()
    args.names = [m for n in args.names for m in GROUPS.get(n, [n])]
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"no benchmark {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}")
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def source_version() -> str:
    """The commit measured, and whether src/ differed from it."""
    try:
        git = ["git", "-C", str(REPO)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "src"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" with uncommitted changes in src/" if dirty else "")


def main() -> int:
    args = parse_args()
    runs = args.runs or int(os.environ.get("QDO_BENCH_RUNS") or (1 if args.quick else 3))
    cfg = Config(runs=runs, quick=args.quick, scratch=args.scratch.absolute())
    # nothing in this process may reach a real qdo database either
    use_qdo_dir(cfg.scratch / "driver-unused")
    names = args.names or [n for n in BENCHMARKS if n not in NOT_BY_DEFAULT]

    print(f"qdo benchmarks  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"  command: {' '.join(sys.argv)}")
    print(f"  machine: {os.cpu_count()} cores, {cpu_model()}, {platform.platform()}")
    print(
        f"  python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"qdo-queue {package_version('qdo-queue')}, huey {package_version('huey')}, "
        f"dask {package_version('dask')}, distributed {package_version('distributed')}, "
        f"numpy {package_version('numpy')}"
    )
    if any(n in NOT_BY_DEFAULT for n in names):
        print(
            f"  psycopg {package_version('psycopg')}, "
            f"procrastinate {package_version('procrastinate')}"
        )
    print(f"  source: {source_version()}")
    print(f"  scratch: {cfg.scratch} ({filesystem_of(cfg.scratch.parent)})")
    print(f"  runs: {cfg.runs}{'  QUICK: small sizes, targets not judged' * cfg.quick}")
    sys.stdout.flush()  # fmt: skip

    figures = {}
    for name in names:
        module_name, _, func = BENCHMARKS[name].partition(":")
        module = importlib.import_module(module_name)
        report = getattr(module, func or "run")(cfg)
        print_report(report, cfg)
        figures[name] = {
            "title": report.title,
            "rows": {r.label: {"unit": r.unit, "values": r.values, "median": r.median,
                               "target": r.target, "verdict": r.verdict(cfg.quick)}
                     for r in report.rows},
            "ratios": {q.label: q.values for q in report.ratios},
            "ratio_targets": {q.label: {"target": q.target, "verdict": q.verdict(cfg.quick)}
                              for q in report.ratios if q.target is not None},
        }  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    with contextlib.suppress(OSError):
        cfg.scratch.rmdir()  # only if empty: never remove what a user keeps there
    return 0


if __name__ == "__main__":
    sys.exit(main())
