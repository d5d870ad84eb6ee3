"""A full disk, for real: a small tmpfs holds qdo's directory (database and logs), and
a file fills it up.  Agents wait it out, saying why, and carry on when space returns;
nothing is left Running; the loader says "disk full" in one line and adds nothing."""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

import qdo
from tests.conftest import need_service, run_qdo

pytestmark = pytest.mark.backends


class Disk:
    """A tmpfs at ``path``; ``fill()`` takes all its space, ``free()`` gives it back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for size in (1 << 16, 512, 1):  # big writes, then the last bytes
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError:
                    pass
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink()


def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        need_service("tmpfs", f"cannot mount a tmpfs (needs root): {proc.stderr.strip()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server_on(disk: Path, wal: Path) -> Iterator[str]:
    """A PostgreSQL server of its own whose tables live on ``disk`` (its write-ahead log
    elsewhere: a server whose WAL cannot be written stops, which is another story)."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins or os.geteuid() != 0:
        need_service("tmpfs", "a private PostgreSQL server needs root and its binaries")
    bin_dir = bins[-1].parent
    for folder in (disk, wal):
        shutil.chown(folder, "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"]
    data, port = disk / "data", free_port()
    subprocess.run([*as_pg, str(bin_dir / "initdb"), "-D", str(data), f"--waldir={wal}/wal",
                    "--no-sync", "-E", "UTF8", "--locale=C.UTF-8", "--auth=trust", "-U", "qdo"],
                   check=True, capture_output=True)  # fmt: skip
    options = f"-p {port} -k {wal} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*as_pg, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", f"{wal}/log", "-w",
                    "-o", options, "start"], check=True, capture_output=True)  # fmt: skip
    try:
        yield f"postgresql://qdo@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_pg, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], check=False, capture_output=True)  # fmt: skip


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str) -> Iterator[Disk]:
    """The disk that holds the database: a tmpfs with qdo's directory (SQLite), or the
    tables of a private PostgreSQL server."""
    path = tmp_path / "disk"
    try:
        with ExitStack() as stack:
            if backend == "sqlite":
                mount_tmpfs(path, "8m")
                stack.callback(subprocess.run, ["umount", "-l", str(path)], check=False)
                monkeypatch.setenv("QDO_DIR", str(path / "qdo"))
            else:
                # outside pytest's directories: the server's user must reach it
                base = Path(tempfile.mkdtemp(prefix="qdo-disk-"))
                stack.callback(shutil.rmtree, base, ignore_errors=True)
                path, wal = base / "disk", base / "wal"
                mount_tmpfs(path, "64m")
                stack.callback(subprocess.run, ["umount", "-l", str(path)], check=False)
                wal.mkdir()
                shutil.chown(base, "postgres")
                url = stack.enter_context(server_on(path, wal))
                monkeypatch.setenv("QDO_DB_URL", url)
            yield Disk(path)
            for store in qdo.queue._stores.values():
                store.close()
            qdo.queue._stores.clear()
    finally:
        for store in qdo.queue._stores.values():
            store.close()
        qdo.queue._stores.clear()


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
        said = read_until(proc, "disk full")
        assert "Traceback" not in said, said
        assert proc.poll() is None  # waiting, not crashed
        disk.free()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
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
    proc = agent("Q")
    try:
        said = read_until(proc, "disk full")
        assert "Traceback" not in said, said
        disk.free()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
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
