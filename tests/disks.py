"""Small disks for real: a tmpfs to fill up, and a PostgreSQL server of its own whose
tables live on one (and which a test may restart)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.conftest import need_service


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


class Server:
    """A PostgreSQL server of its own (``pg_ctl``), run as the postgres user."""

    def __init__(self, data: Path, wal: Path) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins or os.geteuid() != 0:
            need_service("tmpfs", "a private PostgreSQL server needs root and its binaries")
        self.bin = bins[-1].parent
        self.data, self.wal, self.port = data, wal, free_port()
        self.url = f"postgresql://qdo@127.0.0.1:{self.port}/postgres"
        self._pg("initdb", "-D", str(data), f"--waldir={wal}/wal", "--no-sync", "-E", "UTF8",
                 "--locale=C.UTF-8", "--auth=trust", "-U", "qdo")  # fmt: skip
        self.start()

    def _pg(self, tool: str, *args: str, check: bool = True) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / tool), *args],
                       check=check, capture_output=True)  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.wal} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg("pg_ctl", "-D", str(self.data), "-l", f"{self.wal}/log", "-w", "-o", options,
                 "start")  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "stop", check=False)

    def restart(self) -> None:
        """Stop at once (as a crash would), then start again."""
        self.stop()
        self.start()


@contextmanager
def database_disk(
    backend: str, tmp_path: Path, env: pytest.MonkeyPatch, size_mb: int = 8
) -> Iterator[tuple[Disk, Server | None]]:
    """The disk that holds the database, small: on SQLite a tmpfs with qdo's directory
    (database and logs); on PostgreSQL one with the tables of a server of its own (its
    write-ahead log elsewhere: a server whose WAL cannot be written stops, which is
    another story), whose URL goes to QDO_DB_URL."""
    with ExitStack() as stack:
        if backend == "sqlite":
            path = tmp_path / "disk"
            mount_tmpfs(path, f"{size_mb}m")
            stack.callback(subprocess.run, ["umount", "-l", str(path)], check=False)
            env.setenv("QDO_DIR", str(path / "qdo"))
            yield Disk(path), None
            return
        # outside pytest's directories: the server's user must reach them
        base = Path(tempfile.mkdtemp(prefix="qdo-disk-"))
        stack.callback(shutil.rmtree, base, ignore_errors=True)
        path, wal = base / "disk", base / "wal"
        mount_tmpfs(path, f"{max(size_mb, 64)}m")
        stack.callback(subprocess.run, ["umount", "-l", str(path)], check=False)
        wal.mkdir()
        for folder in (base, path, wal):
            shutil.chown(folder, "postgres")
        server = Server(path / "data", wal)
        stack.callback(server.stop)
        env.setenv("QDO_DB_URL", server.url)
        yield Disk(path), server
