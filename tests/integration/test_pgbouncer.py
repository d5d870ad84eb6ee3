"""qdo through a real PgBouncer in transaction mode (Debian's ``pgbouncer``), the pooler
a site puts in front of PostgreSQL when a thousand nodes would each hold connections.

There, each transaction may land on another server session: qdo with
``pg_pooled = yes`` keeps nothing in a session (the schema is set in every transaction,
no prepared statements, no LISTEN).  Without it, its tables are not found ("relation
tasks does not exist") as soon as a transaction lands on a session it never set up.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import drop_schema, need_service, postgres_or_skip

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def bouncer() -> Iterator[str]:
    """A PgBouncer in transaction mode with a pool of 2 server sessions in front of the
    test server; its URL."""
    url = postgres_or_skip()
    if not os.path.exists(PGBOUNCER):
        need_service("pgbouncer", "no pgbouncer (apt-get install pgbouncer)")
    parts = urlsplit(url)
    port = _free_port()
    # (its own folder, which the user it runs as can reach: pytest's are 0700)
    folder = Path(tempfile.mkdtemp(prefix="qdo-pgbouncer-"))
    folder.chmod(0o755)
    (folder / "users.txt").write_text(f'"{parts.username}" "{parts.password}"\n')
    (folder / "pgbouncer.ini").write_text(f"""[databases]
{parts.path.lstrip("/")} = host={parts.hostname} port={parts.port} dbname={parts.path.lstrip("/")}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / "users.txt"}
pool_mode = transaction
default_pool_size = 2
max_client_conn = 200
logfile = {folder / "pgbouncer.log"}
ignore_startup_parameters = extra_float_digits
""")
    # (it will not run as root: then as the owner of the PostgreSQL server's files)
    argv = [PGBOUNCER, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        for f in folder.iterdir():
            shutil.chown(f, "postgres")
        argv[1:1] = ["-u", "postgres"]
    with open(folder / "stderr", "wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, (folder / "stderr").read_text()
            assert time.monotonic() < deadline, "pgbouncer did not start listening"
            time.sleep(0.05)
        yield parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{port}").geturl()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def test_agents_and_futures_work_through_a_transaction_pooler(bouncer: str, tmp_path: Path) -> None:
    schema = f"t_pgb_{os.urandom(4).hex()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QDO_")}
    env.update(QDO_DIR=str(tmp_path), QDO_BACKEND="postgres", QDO_DB_URL=bouncer,
               QDO_DB_SCHEMA=schema, QDO_PG_POOLED="yes")  # fmt: skip
    qdo = [sys.executable, "-m", "qdo"]
    try:
        tasks = "".join(f"echo {i}\n" for i in range(600))
        subprocess.run([*qdo, "load", "B", "-"], input=tasks, env=env, check=True, text=True,
                       capture_output=True)  # fmt: skip
        # 3 agents of 2 slots each, on 2 server sessions: transactions change sessions
        agents = [subprocess.Popen([*qdo, "do", "B", "--workers", "2"], env=env, text=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                  for _ in range(3)]  # fmt: skip
        errors = [a.communicate(timeout=300)[1] for a in agents]
        assert [a.returncode for a in agents] == [0, 0, 0], errors
        # durable futures: a driver and an agent, both through the pooler
        driver = subprocess.run([sys.executable, "-c", DRIVER], env=env, text=True,
                                capture_output=True, timeout=300)  # fmt: skip
        assert driver.returncode == 0, driver.stderr
        assert driver.stdout.split() == ["ok", str(sum(i * i for i in range(20)))]
        status = subprocess.run([*qdo, "status", "B", "--json"], env=env, check=True,
                                text=True, capture_output=True).stdout  # fmt: skip
        assert json.loads(status)["ntasks"]["Succeeded"] == 600, status
        fsck = subprocess.run([*qdo, "fsck"], env=env, text=True, capture_output=True)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    finally:
        drop_schema(postgres_or_skip(), schema)


DRIVER = """
import subprocess, sys
import qdo
q = qdo.connect("F", create_ok=True)
agent = subprocess.Popen([sys.executable, "-m", "qdo", "do", "F", "--wait", "--workers", "2"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    with q.executor() as ex:
        futures = [ex.submit(pow, i, 2) for i in range(20)]
        print("ok", sum(f.result(timeout=120) for f in futures))
finally:
    agent.terminate()
    agent.wait(timeout=60)
"""


def test_qdo_leaves_nothing_in_the_pools_sessions(bouncer: str) -> None:
    """Through a pooler, a setting made for a session stays with the server session, for
    whichever client gets it next: a pooled store sets its schema in each transaction
    only, never for the session."""
    import psycopg

    from qdo.store.postgres import PostgresStore

    schema = f"t_pgb_{os.urandom(4).hex()}"
    try:
        store = PostgresStore(bouncer, schema=schema, pooled=True)
        store.create_queue("Q")
        assert store.get_queue("Q").name == "Q"
        store.close()
        # two transactions open at once hold both server sessions of the pool
        a, b = psycopg.connect(bouncer), psycopg.connect(bouncer)
        try:
            paths = [str(c.execute("SHOW search_path").fetchone()[0]) for c in (a, b)]
        finally:
            a.close()
            b.close()
        assert not [p for p in paths if schema in p], paths
    finally:
        drop_schema(postgres_or_skip(), schema)
