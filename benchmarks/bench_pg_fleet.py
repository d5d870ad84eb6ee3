"""A fleet of agents on one PostgreSQL server, by simulation (issue 16): N = 50, 200
and 500 agents, each on a connection of its own, directly and through PgBouncer in
transaction mode (Debian's ``pgbouncer``; ``pg_pooled = yes``).

Each simulated agent (a thread; the fleet is spread over PROCESSES processes) runs
the cycle of a real one through the store: claim SLOTS tasks, "run" them (a sleep of
TASK_SECONDS), renew their leases halfway (as the heartbeat does for long tasks), and
report them, for SECONDS seconds.  Measured per fleet:

- p50 and p99 of the claim's latency (the call, round trips included);
- tasks finished a second, and renewals a second;
- the server's CPU (all its processes, from /proc), in cores;
- refused: agents that could not connect (``max_connections`` of the server).

The ceiling of one server: fleets of CEILING_FLEETS agents with tasks that take no time
at all (every agent claims, renews and reports as fast as it can; through PgBouncer at
500, more agents than the server has connections), with the CPU the server spends a
task finished and the CPU the simulated fleet itself spends (its processes'
``getrusage``): where the rate stops growing, and which of the two ran out.

This machine has 2 cores for the server, the pooler and the simulated fleet: the
figures say where the server saturates here, not on a dedicated database host.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from multiprocessing import get_context
from pathlib import Path
from urllib.parse import urlsplit

from _common import Config, Report, Row, pg_drop_schema, pg_url, progress

SCHEMA = "bench_pg_fleet"
PROCESSES = 4
SLOTS = 4
TASK_SECONDS = 1.0
SECONDS = 20.0
LEASE = 60.0
FLEETS = (50, 200, 500)
#: Fleets of the ceiling's sweep (tasks of no time): agents, and whether through PgBouncer
#: (500 agents are more than the server's connections).
CEILING_FLEETS = ((1, False), (4, False), (16, False), (50, False), (200, False), (500, True))
PGBOUNCER = "/usr/sbin/pgbouncer"


def agent_process(url: str, pooled: bool, agents: int, first: int, seconds: float,
                  task_seconds: float, out: object, together: object) -> None:  # fmt: skip
    """``agents`` simulated agents as threads; puts (latencies, done, renewals, refused,
    server CPU seconds over the run or None, this process's own CPU seconds over the
    run): the first process reads the server's CPU when every agent has connected and
    when all are done, before any disconnects (a backend's CPU goes with it)."""
    import resource

    from qdo.models import State
    from qdo.store.base import Outcome
    from qdo.store.postgres import PostgresStore

    store = PostgresStore(url, schema=SCHEMA, pooled=pooled, reconnect_seconds=0)
    latencies: list[float] = []
    counts = {"done": 0, "renewals": 0, "refused": 0}
    lock = threading.Lock()
    start = threading.Barrier(agents + 1)
    cpu: float | None = None

    def agent(k: int) -> None:
        worker = f"sim-{k}"
        mine: list[float] = []
        done = renewals = 0
        try:
            store.get_queue("fleet")  # its connection, before the clock starts
        except Exception:
            with lock:
                counts["refused"] += 1
            start.wait()
            return
        start.wait()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            held = store.claim("fleet", worker, SLOTS, LEASE)
            mine.append(time.perf_counter() - t0)
            if not held:
                time.sleep(0.5)
                continue
            time.sleep(task_seconds / 2)
            store.renew(worker, [(t.id, t._token or 0) for t in held], LEASE)
            renewals += 1
            time.sleep(task_seconds / 2)
            store.finish(worker, [Outcome(t.id, t._token or 0, State.SUCCEEDED) for t in held])
            done += len(held)
        with lock:
            latencies.extend(mine)
            counts["done"] += done
            counts["renewals"] += renewals

    threads = [threading.Thread(target=agent, args=(first + k,)) for k in range(agents)]
    for t in threads:
        t.start()
    start.wait()
    together.wait()  # type: ignore[attr-defined]
    if first == 0:
        cpu, began = -server_cpu(), time.monotonic()
    own = resource.getrusage(resource.RUSAGE_SELF)
    for t in threads:
        t.join()
    together.wait()  # type: ignore[attr-defined]
    end = resource.getrusage(resource.RUSAGE_SELF)
    own_cpu = end.ru_utime + end.ru_stime - own.ru_utime - own.ru_stime
    if cpu is not None:
        cpu = (cpu + server_cpu()) / (time.monotonic() - began)
    together.wait()  # type: ignore[attr-defined]
    store.close()
    sent = (latencies, counts["done"], counts["renewals"], counts["refused"], cpu, own_cpu)
    out.put(sent)  # type: ignore[attr-defined]


def server_cpu() -> float:
    """CPU seconds used so far by every PostgreSQL server process."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)
            name = fields[0].split("(", 1)[1]
        except (OSError, IndexError):
            continue
        if name.startswith("postgres") or name.startswith("postmaster"):
            rest = fields[1].split()
            total += (int(rest[11]) + int(rest[12])) / tick
    return total


def fill(url: str, n: int) -> None:
    from qdo.store.base import NewTask
    from qdo.store.postgres import PostgresStore

    pg_drop_schema(url, SCHEMA)
    store = PostgresStore(url, schema=SCHEMA)
    store.create_queue("fleet")
    store.add_many("fleet", [NewTask("true")] * n)
    store.close()


def fleet(url: str, pooled: bool, n: int, task_seconds: float) -> dict[str, float]:
    ctx = get_context("spawn")
    out = ctx.Queue()
    per = [n // PROCESSES + (1 if i < n % PROCESSES else 0) for i in range(PROCESSES)]
    per = [k for k in per if k]
    together = ctx.Barrier(len(per))
    procs = [ctx.Process(target=agent_process, args=(url, pooled, k, sum(per[:i]), SECONDS,
                                                     task_seconds, out, together))
             for i, k in enumerate(per)]  # fmt: skip
    for p in procs:
        p.start()
    results = [out.get(timeout=SECONDS + 600) for _ in procs]
    cpu = next(r[4] for r in results if r[4] is not None)
    for p in procs:
        p.join()
    lat = sorted(x for r in results for x in r[0])
    done, renewals, refused = (sum(r[i] for r in results) for i in (1, 2, 3))
    fleet_cpu = sum(r[5] for r in results) / SECONDS
    return {
        "fleet_cpu": fleet_cpu,
        "server_ms": cpu * 1000 / (done / SECONDS) if done else float("nan"),
        "p50": statistics.median(lat) * 1000 if lat else float("nan"),
        "p99": lat[int(0.99 * (len(lat) - 1))] * 1000 if lat else float("nan"),
        "rate": done / SECONDS, "renewals": renewals / SECONDS,
        "cpu": cpu, "refused": refused,
    }  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_bouncer(url: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    parts = urlsplit(url)
    db = parts.path.lstrip("/")
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="qdo-bench-pgbouncer-"))
    folder.chmod(0o755)
    (folder / "users.txt").write_text(f'"{parts.username}" "{parts.password}"\n')
    (folder / "pgbouncer.ini").write_text(
        f"[databases]\n{db} = host={parts.hostname} port={parts.port} dbname={db}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\npool_mode = transaction\n"
        f"default_pool_size = 20\nmax_client_conn = 2000\n"
        f"logfile = {folder / 'pgbouncer.log'}\nignore_startup_parameters = extra_float_digits\n"
    )
    argv = [PGBOUNCER, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:
        for f in (folder, *folder.iterdir()):
            shutil.chown(f, "postgres")
        argv[1:1] = ["-u", "postgres"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"pgbouncer did not start: {(folder / 'pgbouncer.log')}")
        time.sleep(0.05)
    netloc = f"{parts.username}:{parts.password}@127.0.0.1:{port}"
    return proc, parts._replace(netloc=netloc).geturl(), folder


def max_connections(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW max_connections").fetchone()
        return int(row[0]) if row else 0


def run(cfg: Config) -> Report:
    url = pg_url()
    fleets = (10, 40) if cfg.quick else FLEETS
    limit = max_connections(url)
    rows: list[Row] = []
    notes = [f"server max_connections = {limit}; {PROCESSES} processes of threads; "
             f"{SLOTS} tasks a claim, {TASK_SECONDS:g} s each, renewed halfway; "
             f"{SECONDS:g} s a fleet; PgBouncer 20 server sessions"]  # fmt: skip
    bouncer, pooled_url, folder = start_bouncer(url)
    try:
        for how, target, pooled in (("direct", url, False), ("PgBouncer", pooled_url, True)):
            for n in fleets:
                progress(f"pg-fleet: {n} agents, {how}")
                fill(url, n * SLOTS * int(SECONDS / max(TASK_SECONDS, 0.5) + 2))
                got = fleet(target, pooled, n, TASK_SECONDS)
                label = f"N={n:>3} {how:<9}"
                for key, unit, what in (("p50", "ms", "claim p50"), ("p99", "ms", "claim p99"),
                                        ("rate", "/s", "tasks done"),
                                        ("renewals", "/s", "renewals"),
                                        ("cpu", "x", "server CPU, cores")):  # fmt: skip
                    rows.append(Row(f"{label} {what}", unit, [got[key]],
                                    higher_is_better=key in ("rate", "renewals")))  # fmt: skip
                if got["refused"]:
                    notes.append(f"N={n} {how}: {got['refused']:.0f} agents could not connect "
                                 f"(max_connections {limit})")  # fmt: skip
        # the ceiling: tasks of no time, every agent claiming, renewing and reporting as
        # fast as it can, from 1 agent up; where the rate stops growing, and what the
        # server and the simulated fleet each spend
        for n, pooled in CEILING_FLEETS if not cfg.quick else ((1, False), (10, True)):
            how = "PgBouncer" if pooled else "direct"
            progress(f"pg-fleet: ceiling, {n} agents {how}, tasks of no time")
            fill(url, 600_000 if not cfg.quick else 60_000)
            got = fleet(pooled_url if pooled else url, pooled, n, 0.0)
            label = f"0 s tasks, N={n:>3} {how}"
            rows.append(Row(f"{label}: done", "/s", [got["rate"]]))
            rows.append(Row(f"{label}: claim p50", "ms", [got["p50"]], higher_is_better=False))
            rows.append(Row(f"{label}: server CPU", "x", [got["cpu"]], higher_is_better=False))
            rows.append(Row(f"{label}: server CPU a task", "ms", [got["server_ms"]],
                            higher_is_better=False))  # fmt: skip
            rows.append(Row(f"{label}: fleet's own CPU", "x", [got["fleet_cpu"]],
                            higher_is_better=False))  # fmt: skip
    finally:
        bouncer.terminate()
        bouncer.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
        pg_drop_schema(url, SCHEMA)
    return Report("pg-fleet: simulated agents on one PostgreSQL server", rows, [], notes)
