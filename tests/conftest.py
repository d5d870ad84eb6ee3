"""Shared fixtures: every test gets its own QDO_DIR, so its own SQLite database, and on
PostgreSQL its own schema.

Test modules marked ``pytestmark = pytest.mark.backends`` run every test once per
backend (``sqlite``, ``postgres``).  The PostgreSQL server is the one ``scripts/postgres
start`` runs (its URL in ``QDO_TEST_PG_URL``, else in the file that script writes).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qdo.heartbeat import heartbeat
from qdo.store.base import Store
from qdo.store.factory import close_all

REQUIRED = {s.strip() for s in os.environ.get("QDO_TEST_REQUIRE", "").split(",") if s.strip()}


def need_service(name: str, reason: str) -> None:
    """Skip a test whose service is missing, or fail it if QDO_TEST_REQUIRE names it."""
    if name in REQUIRED:
        pytest.fail(f"{name} is required (QDO_TEST_REQUIRE) but unavailable: {reason}")
    pytest.skip(f"{name} unavailable: {reason}")


BACKENDS = ["sqlite", "postgres"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "backends: run each test on every backend")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("backends") and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@functools.cache
def postgres_url() -> str | None:
    """The test server's URL, or None (with the reason in ``postgres_problem``)."""
    url = os.environ.get("QDO_TEST_PG_URL")
    if not url:
        base = Path(
            os.environ.get("QDO_PG_BASE") or Path(os.environ.get("TMPDIR", "/tmp")) / "qdo-pg"
        )
        url_file = base / "url"
        url = url_file.read_text().strip() if url_file.is_file() else None
    if not url:
        _problem.append("no QDO_TEST_PG_URL and no server started by scripts/postgres")
        return None
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=5).close()
    except Exception as e:  # ImportError, OperationalError: either way, no server to use
        _problem.append(f"{type(e).__name__}: {e}")
        return None
    return url


_problem: list[str] = []


def postgres_or_skip() -> str:
    url = postgres_url()
    if url is None:
        need_service("postgres", "; ".join(_problem) or "unreachable")
        raise AssertionError("unreachable")
    return url


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The backend of this run of the test (sqlite unless the module runs on all)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(autouse=True)
def qdo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str) -> Iterator[Path]:
    """A private QDO_DIR for the test, with no qdo settings leaking in from outside; on
    PostgreSQL a private schema too (dropped afterwards)."""
    for name in list(os.environ):
        if name.startswith("QDO_") and not name.startswith("QDO_TEST_") or name == "QDORC_LOCATION":
            monkeypatch.delenv(name)
    home = tmp_path / "qdo"
    monkeypatch.setenv("QDO_DIR", str(home))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    schema = None
    if backend == "postgres":
        url = postgres_or_skip()
        schema = f"t_{uuid.uuid4().hex[:16]}"
        monkeypatch.setenv("QDO_BACKEND", "postgres")
        monkeypatch.setenv("QDO_DB_URL", url)
        monkeypatch.setenv("QDO_DB_SCHEMA", schema)
    yield home
    heartbeat().clear()  # the tasks this test got belong to its database only
    close_all()
    if schema is not None:
        drop_schema(postgres_or_skip(), schema)


def make_store(backend: str, qdo_dir: Path, user: str | None = None) -> Store:
    """A store of the backend for this test (its own file, or its own schema)."""
    if backend == "sqlite":
        from qdo.store.sqlite import SQLiteStore

        return SQLiteStore(qdo_dir / "contract.sqlite", user=user)
    from qdo.store.postgres import PostgresStore

    return PostgresStore(postgres_or_skip(), schema=os.environ["QDO_DB_SCHEMA"], user=user)


@pytest.fixture
def store(backend: str, qdo_dir: Path) -> Iterator[Store]:
    """The test's backend (the contract suite runs against each of them)."""
    s = make_store(backend, qdo_dir)
    yield s
    problems = s.check()
    s.close()
    assert problems == [], f"database integrity check: {problems}"


def run_qdo(
    *args: str,
    input: str | None = None,
    check: bool = False,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run the qdo command line as a real subprocess (``python -m qdo``)."""
    proc = subprocess.run(
        [sys.executable, "-m", "qdo", *args],
        input=input,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"qdo {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def die_holding(queue: str, lease: float) -> int:
    """A real process gets a task of ``queue`` under ``lease`` and is SIGKILLed at once,
    renewing nothing: its task comes back once the lease runs out.  Returns its id."""
    code = ("import os, signal, qdo\n"
            f"t = qdo.connect({queue!r}).get(lease={lease!r})\n"
            "print(t.id, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == -9, proc.stderr
    return int(proc.stdout)


@pytest.fixture
def sqlite_only(backend: str) -> None:
    """For tests of the SQLite file itself (its path, its locking, its pragmas)."""
    if backend != "sqlite":
        pytest.skip("about the SQLite file")
