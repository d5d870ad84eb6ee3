"""Shared fixtures: every test gets its own QDO_DIR, so its own SQLite database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import qdo.queue
from qdo.store.base import Store

REQUIRED = {s.strip() for s in os.environ.get("QDO_TEST_REQUIRE", "").split(",") if s.strip()}


def need_service(name: str, reason: str) -> None:
    """Skip a test whose service is missing, or fail it if QDO_TEST_REQUIRE names it."""
    if name in REQUIRED:
        pytest.fail(f"{name} is required (QDO_TEST_REQUIRE) but unavailable: {reason}")
    pytest.skip(f"{name} unavailable: {reason}")


@pytest.fixture(autouse=True)
def qdo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private QDO_DIR for the test, with no qdo settings leaking in from outside."""
    for name in list(os.environ):
        if name.startswith("QDO_") and not name.startswith("QDO_TEST_") or name == "QDORC_LOCATION":
            monkeypatch.delenv(name)
    home = tmp_path / "qdo"
    monkeypatch.setenv("QDO_DIR", str(home))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    yield home
    for store in qdo.queue._stores.values():
        store.close()
    qdo.queue._stores.clear()


@pytest.fixture(params=["sqlite"])
def store(request: pytest.FixtureRequest, qdo_dir: Path) -> Iterator[Store]:
    """Each real backend in turn (the contract suite runs against all of them)."""
    if request.param == "sqlite":
        from qdo.store.sqlite import SQLiteStore

        s: Store = SQLiteStore(qdo_dir / "contract.sqlite")
    else:  # pragma: no cover - backends arrive with their issues
        raise AssertionError(request.param)
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
