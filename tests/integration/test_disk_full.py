"""A full disk, for real: a small tmpfs holds qdo's directory (database and logs), and
a file fills it up.  Agents wait it out, saying why, and carry on when space returns;
nothing is left Running; the loader says "disk full" in one line and adds nothing."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import qdo
from qdo.store.factory import close_all
from tests.conftest import run_qdo
from tests.disks import Disk, database_disk

pytestmark = pytest.mark.backends


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str) -> Iterator[Disk]:
    try:
        with database_disk(backend, tmp_path, monkeypatch) as (disk, _server):
            yield disk
            close_stores()
    finally:
        close_stores()


def close_stores() -> None:
    close_all()


def counts(queue: str) -> dict[str, int]:
    proc = run_qdo("status", queue, "--json", check=True)
    return dict(json.loads(proc.stdout)["ntasks"])


def read_until(proc: subprocess.Popen[str], text: str, timeout: float = 120) -> str:
    """What the process writes to stderr, up to a line holding ``text``."""
    assert proc.stderr is not None
    seen = ""
    end = time.monotonic() + timeout
    while text not in seen:
        left = end - time.monotonic()
        assert left > 0 and proc.poll() is None, (proc.poll(), seen)
        ready, _, _ = select.select([proc.stderr], [], [], min(left, 1.0))
        if ready:
            line = proc.stderr.readline()
            seen += line
    return seen


def agent(queue: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "qdo", "do", queue, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_out(proc: subprocess.Popen[str], disk: Disk) -> tuple[str, str]:
    """The agent says the disk is full and waits, not crashed; once there is room it
    finishes, and well.  Returns what it said up to then, and what it said after."""
    try:
        said = read_until(proc, "disk full")
        assert "Traceback" not in said, said
        assert proc.poll() is None  # waiting, not crashed
        disk.free()
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    return said, err


def test_agent_waits_out_a_full_disk_and_carries_on(disk: Disk, tmp_path: Path) -> None:
    go = tmp_path / "go"  # tasks wait for it: the disk fills while they run
    tasks = [f"echo output of {i}; while [ ! -e {go} ]; do sleep 0.05; done" for i in range(6)]
    tasks += [f"echo later {i}" for i in range(20)]
    q = qdo.create("Q")
    q.add_multiple(tasks)
    proc = agent("Q", "--workers", "3")
    try:
        # the first three run; now the disk fills up, and they end
        while counts("Q")["Running"] < 3:
            time.sleep(0.05)
        disk.fill()
        go.touch()
    except BaseException:
        proc.kill()
        raise
    said, err = wait_out(proc, disk)
    assert "carrying on" in said + err, said + err
    final = counts("Q")
    assert final["Running"] == 0 and final["Pending"] == 0, final
    assert final["Succeeded"] + final["Failed"] == len(tasks), final
    for t in q.tasks():
        if t.state == "Failed":
            assert "disk" in (t.message or ""), t
    # what failed for want of space runs again and succeeds
    run_qdo("retry", "Q", check=True)
    run_qdo("do", "Q", check=True)
    assert counts("Q")["Succeeded"] == len(tasks)


def test_agent_started_on_a_full_disk_waits_for_space(disk: Disk) -> None:
    q = qdo.create("Q")
    q.add_multiple([f"echo {i}" for i in range(5)])
    disk.fill()
    wait_out(agent("Q"), disk)
    assert counts("Q")["Succeeded"] == 5


def test_loader_says_disk_full_in_one_line_and_adds_nothing(disk: Disk, tmp_path: Path) -> None:
    qdo.create("Q").add("echo first")
    lines = tmp_path / "tasks.txt"
    lines.write_text("".join(f"echo task number {i} with some words to fill pages\n"
                             for i in range(20_000)))  # fmt: skip
    disk.fill()
    proc = run_qdo("load", "Q", str(lines))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and "disk full" in proc.stderr, proc.stderr
    disk.free()
    assert sum(counts("Q").values()) == 1
    assert run_qdo("load", "Q", str(lines)).returncode == 0  # with space, it loads
    assert sum(counts("Q").values()) == 20_001
