"""``qdo do Q --workers 2`` running 20,000 shell tasks ``true``, as a real subprocess,
against a bare thread pool, GNU parallel and xargs running the same 20,000 commands.

Each run loads a fresh queue from a file of 20,000 lines ``true`` with ``qdo load``
(untimed), then times ``.venv/bin/qdo do bench --workers 2`` from start to exit
(interpreter start-up included), then checks with ``qdo status bench --json`` that all
20,000 tasks are Succeeded.  ``true`` is a plain word, so qdo runs ``/usr/bin/true``
itself, without a shell (``runners.direct_argv``).

Peers, each a subprocess timed the same way, on the same file of 20,000 lines:

- pool: ``python -c`` with ``ThreadPoolExecutor(2)``, each call
  ``subprocess.run(["true"])`` (the ceiling of any Python runner with 2 slots);
- xargs, through a shell: ``xargs -P 2 -I{} sh -c '{}' -a FILE`` (one ``sh -c true`` per
  line; /bin/sh is usually dash, whose ``true`` is a builtin: one exec per task);
- xargs, direct: ``xargs -P 2 -n 1 -a FILE true``, which runs ``true true`` per line: one
  exec of /usr/bin/true per task, as qdo does;
- GNU parallel: ``parallel --will-cite -j 2 -a FILE`` (each line run by ``$SHELL -c``,
  with its default ``--group`` output buffering); skipped with a note if not installed
  (``benchmarks/run.sh`` installs it with apt-get when it can).

Two diagnostic rows say where qdo's time goes: qdo with ``QDO_LOG_DIR`` on a tmpfs
(``/dev/shm``), and the thread pool doing what qdo's slot does around each task (a new
log file per task under a sharded directory, ``start_new_session``, stdin from
/dev/null, three extra environment variables).

The order of the rows rotates from run to run, so that a slow spell of this noisy
machine does not always fall on the same row.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from _common import (
    Config,
    Ratio,
    Report,
    Row,
    check_all_succeeded,
    clean_env,
    filesystem_of,
    progress,
    qdo_command,
    run_child,
    scratch_dir,
)

WORKERS = 2
QUEUE = "bench"
TARGET_VS_POOL = 0.8  # qdo's rate over the bare pool's, same run
TMPFS = Path("/dev/shm")

POOL = """
import subprocess, sys
from concurrent.futures import ThreadPoolExecutor
n, workers = int(sys.argv[1]), int(sys.argv[2])
def one(_):
    return subprocess.run(["true"]).returncode
with ThreadPoolExecutor(workers) as pool:
    codes = list(pool.map(one, range(n)))
if codes.count(0) != n:
    sys.exit(f"{n - codes.count(0)} commands failed")
"""

# what qdo's ShellRunner does around each task, without the database and the agent
POOL_EXTRAS = """
import os, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
n, workers, log_dir = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
env = dict(os.environ)
made = set()
def one(i):
    log = log_dir / "bench" / str(i // 1000) / f"{i}.log"
    if log.parent not in made:
        log.parent.mkdir(parents=True, exist_ok=True)
        made.add(log.parent)
    task_env = {**env, "QDO_QUEUE": "bench", "QDO_TASK_ID": str(i), "QDO_TASK_ATTEMPT": "1"}
    with open(log, "ab") as out:
        proc = subprocess.Popen(["true"], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env=task_env, start_new_session=True)
        return proc.wait()
with ThreadPoolExecutor(workers) as pool:
    codes = list(pool.map(one, range(1, n + 1)))
if codes.count(0) != n:
    sys.exit(f"{n - codes.count(0)} commands failed")
"""


def count_files(root: Path) -> tuple[int, int]:
    """Files under ``root`` and how many of them are empty."""
    files = empty = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            files += 1
            empty += os.path.getsize(os.path.join(dirpath, name)) == 0
    return files, empty


def tmpfs_available() -> bool:
    return TMPFS.is_dir() and os.access(TMPFS, os.W_OK) and filesystem_of(TMPFS) == "tmpfs"


def parallel_shell(env: dict[str, str]) -> str:
    """Which shell GNU parallel runs each line with, started the way the benchmark does."""
    probe = ["parallel", "--will-cite", "-j", "1", "readlink /proc/$$/exe; :", ":::", "x"]
    got = run_child(probe, env, check=False)
    return got.stdout.split()[0] if got.stdout.split() else "?"


class Measures:
    """One measurement per row, each in its own fresh scratch directory."""

    def __init__(self, cfg: Config, task_file: Path, n: int) -> None:
        self.cfg, self.task_file, self.n = cfg, task_file, n
        self.log_files: list[tuple[int, int]] = []

    def qdo(self, tmpfs_logs: bool = False) -> float:
        with scratch_dir(self.cfg, "do-qdo") as d:
            env = clean_env(d)
            log_dir = Path(tempfile.mkdtemp(prefix="qdo-bench-", dir=TMPFS)) if tmpfs_logs else None
            if log_dir is not None:
                env["QDO_LOG_DIR"] = str(log_dir)
            try:
                got = run_child([*qdo_command(), "load", QUEUE, str(self.task_file)], env)
                assert f"loaded {self.n:,} tasks" in got.stdout, got.stdout
                argv = [*qdo_command(), "do", QUEUE, "--workers", str(WORKERS)]
                got = run_child(argv, env)
                assert f"ran {self.n:,} tasks" in got.stdout, got.stdout
                check_all_succeeded(QUEUE, env, self.n)
                if log_dir is None:
                    self.log_files.append(count_files(d / "logs"))
            finally:
                if log_dir is not None:
                    shutil.rmtree(log_dir, ignore_errors=True)
        return got.seconds

    def pool(self) -> float:
        with scratch_dir(self.cfg, "do-pool") as d:
            argv = [sys.executable, "-c", POOL, str(self.n), str(WORKERS)]
            return run_child(argv, clean_env(d)).seconds

    def pool_extras(self) -> float:
        with scratch_dir(self.cfg, "do-pool-extras") as d:
            argv = [sys.executable, "-c", POOL_EXTRAS, str(self.n), str(WORKERS), str(d / "logs")]
            seconds = run_child(argv, clean_env(d)).seconds
            assert count_files(d / "logs")[0] == self.n
            return seconds

    def command(self, argv: list[str]) -> Callable[[], float]:
        def measure() -> float:
            with scratch_dir(self.cfg, "do-peer") as d:
                return run_child(argv, clean_env(d)).seconds

        return measure


def run(cfg: Config) -> Report:
    n = cfg.size(20_000, 2_000)
    f = str(WORKERS)
    qdo = Row(f"qdo  `qdo do bench --workers {f}`", "/s")
    pool = Row(f"peer ThreadPoolExecutor({f}), subprocess.run(['true'])", "/s")
    xargs_sh = Row(f"peer xargs -P {f} -I{{}} sh -c '{{}}'", "/s")
    xargs_direct = Row(f"peer xargs -P {f} -n 1 true", "/s")
    parallel = Row(f"peer GNU parallel --will-cite -j {f}", "/s")
    qdo_tmpfs = Row("diag qdo, QDO_LOG_DIR on tmpfs", "/s")
    pool_extras = Row("diag pool + a new log file, session, env per task", "/s")
    notes: list[str] = []
    has_parallel = shutil.which("parallel") is not None
    has_tmpfs = tmpfs_available()
    with scratch_dir(cfg, "do-file") as files:
        task_file = files / "tasks.txt"
        task_file.write_text("true\n" * n)
        m = Measures(cfg, task_file, n)
        xargs = ["xargs", "-P", f, "-a", str(task_file)]
        steps: list[tuple[Row, Callable[[], float]]] = [
            (qdo, m.qdo),
            (pool, m.pool),
            (xargs_sh, m.command([*xargs, "-I{}", "sh", "-c", "{}"])),
            (xargs_direct, m.command([*xargs, "-n", "1", "true"])),
            (pool_extras, m.pool_extras),
        ]
        if has_parallel:
            argv = ["parallel", "--will-cite", "-j", f, "-a", str(task_file)]
            steps.append((parallel, m.command(argv)))
        if has_tmpfs:
            steps.append((qdo_tmpfs, lambda: m.qdo(tmpfs_logs=True)))
        for i in range(cfg.runs):
            k = i % len(steps)
            for row, measure in steps[k:] + steps[:k]:
                progress(f"do: run {i + 1}/{cfg.runs}, {n:,} tasks, {row.label}")
                row.values.append(n / measure())
        if has_parallel:
            version = subprocess.run(["parallel", "--version"], capture_output=True, text=True)
            shell = parallel_shell(clean_env(files))
            notes.append(f"{version.stdout.splitlines()[0]}, running each line with {shell} -c")
    rows = [qdo, pool, xargs_sh, xargs_direct]
    ratios = [Ratio("ratio qdo / thread pool", qdo, pool, target=TARGET_VS_POOL)]
    if has_parallel:
        rows.append(parallel)
        ratios.append(Ratio("ratio qdo / GNU parallel", qdo, parallel, target=1.0))
    else:
        notes.append("GNU parallel not installed (apt-get install parallel): its row is skipped")
    ratios += [
        Ratio("ratio qdo / xargs sh -c", qdo, xargs_sh, target=1.0),
        Ratio("ratio qdo / xargs direct", qdo, xargs_direct, target=1.0),
        Ratio("diag pool + extras / pool", pool_extras, pool),
    ]
    rows.append(pool_extras)
    if has_tmpfs:
        rows.append(qdo_tmpfs)
        ratios.append(Ratio("diag qdo logs on tmpfs / pool", qdo_tmpfs, pool))
    else:
        notes.append(f"{TMPFS} is not a writable tmpfs: the row with logs on tmpfs is skipped")
    made = sorted(set(m.log_files))
    notes.append(f"qdo made (log files, of them empty) per run: {made}")
    notes.append(
        f"rates are tasks per second of wall time of the whole command (start-up included); "
        f"{n:,} lines 'true'; command: {' '.join(qdo_command())} do {QUEUE} --workers {f} "
        f"on a queue loaded by `qdo load` (untimed), all Succeeded after each run "
        f"(qdo status --json); the order of the rows rotates from run to run"
    )
    return Report(f"qdo do: {n:,} shell tasks 'true', {f} workers, as a subprocess",
                  rows, ratios, notes)  # fmt: skip
