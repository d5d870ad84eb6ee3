"""Task output in segment files: one per agent slot, appended to, rotated by size.

A million tasks that print must not make a million files (sites on Lustre forbid it).
Each slot of an agent appends what a task printed to a segment file of its own, as one
record::

    header   b"QDOL", task id (int64), attempt (int32), length (int64)    24 bytes
    data     what the task printed                                        length bytes
    trailer  CRC-32 of the data (uint32), b"END\\n"                         8 bytes

and the attempt's log in the database says where it is: ``SEGMENT#OFFSET,LENGTH``
(``locator``).  The record is written before its task is reported, so the database
never points at a record that was not written.  One the agent did not finish (it was
killed mid-write), or that the disk did not keep (the node went down before the page
cache reached it), is shorter than its header says or fails its CRC: readers raise
:class:`LogDamaged`, and ``qdo fsck`` reports every such record (``scan``).

A log that is not a locator is a file of its own (``qdo do --log-files``, and the logs
of every qdo before segments).
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from .errors import InvalidInput, QdoError
from .runtime import hostname, pid_alive

__all__ = ["LogDamaged", "Ref", "Segments", "locator", "log_path", "read", "scan", "tail"]

MAGIC = b"QDOL"
END = b"END\n"
HEADER = struct.Struct("<4sqiq")
TRAILER = struct.Struct("<I4s")
SUFFIX = ".qseg"
#: A segment is closed and the next one begun once it holds this much.
SEGMENT_BYTES = 64 << 20
#: How much of the end of a log ``tail`` reads.
TAIL_BYTES = 16384
_CHUNK = 1 << 20
_LOCATOR = re.compile(r"(?P<path>.+\.qseg)#(?P<offset>\d+),(?P<length>\d+)", re.DOTALL)


class LogDamaged(QdoError):
    """A task's log record is incomplete or corrupt (its agent died while writing it,
    or the disk lost it)."""

    def __init__(self, where: str, why: str, torn: bool = False) -> None:
        self.where = where
        self.why = why
        self.torn = torn  # it ends early (else: it is there, and wrong)
        super().__init__(f"the log record at {where} is damaged: {why}")


class Ref(NamedTuple):
    """Where a record of a segment is: its header's offset, and its data's length."""

    path: Path
    offset: int
    length: int

    def __str__(self) -> str:
        return f"{self.path}#{self.offset},{self.length}"


def locator(path: Path, offset: int, length: int) -> str:
    return str(Ref(path, offset, length))


def parse(log: str) -> Ref | None:
    """The record a log names, or None if it names a file of its own."""
    m = _LOCATOR.fullmatch(log)
    return m and Ref(Path(m["path"]), int(m["offset"]), int(m["length"]))


def inside(log: str, folder: Path) -> Path:
    """The file of ``log``; InvalidInput if it is not under ``folder``.  A log comes
    from the database, which an archive may have filled: qdo reads no other file."""
    ref = parse(log)
    path = ref.path if ref else Path(log)
    top = folder.resolve()
    if not path.resolve().is_relative_to(top):
        raise InvalidInput(f"a log is recorded as {log}, outside the log folder {top}: "
                           "qdo reads no file there")  # fmt: skip
    return path


def log_path(log_dir: Path, queue: str, task_id: int) -> Path:
    """Where a task's log file goes (``--log-files``, and every qdo before segments):
    sharded so no directory holds more than 1,000 of them."""
    return log_dir / queue / str(task_id // 1000) / f"{task_id}.log"


def remove(log_dir: Path, queue: str) -> int:
    """Remove what qdo wrote for a deleted queue under ``log_dir``: its segments and its
    tasks' log files (the database that said what is where is gone, so nothing would
    read them), and the folders that leaves empty.  Only files of qdo's names that this
    user owns: a log folder shared with someone who has a queue of the same name keeps
    theirs, and a file of the user's own there stays.  Returns how many were removed."""
    uid = os.getuid()
    removed = 0
    for folder, _, files in os.walk(log_dir / queue, topdown=False):
        where = os.path.basename(folder)
        ours = (
            SUFFIX if where == "segments" else ".log" if where.isdigit() else "/"
        )  # ("/": no name)
        for name in files:
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):  # (gone already, or not ours to remove)
                if name.endswith(ours) and os.lstat(path).st_uid == uid:
                    os.unlink(path)
                    removed += 1
        with contextlib.suppress(OSError):  # (not empty: something else is in it)
            os.rmdir(folder)
    return removed


# -- writing ----------------------------------------------------------------------------------
class Segments:
    """The segment files of one slot (one writer each: a thread or a process), a folder
    per queue: ``LOG_DIR/QUEUE/segments/HOST-PID-SLOT-N.qseg``."""

    def __init__(self, log_dir: Path, slot: str, limit: int = SEGMENT_BYTES) -> None:
        self.log_dir = log_dir
        self.name = f"{hostname()}-{os.getpid()}-{slot}"
        self.limit = limit
        self.open: dict[str, tuple[int, Path]] = {}  # queue -> its segment's fd, path
        self.size: dict[str, int] = {}
        self.n = 0

    def append(
        self, queue: str, task_id: int, attempt: int, chunks: Iterable[bytes], length: int
    ) -> str:
        """Write one task's output (``chunks``, ``length`` bytes in all) as a record;
        its locator.  On an error (a full disk) the segment is cut back to where the
        record began, and the error raised: the segment stays whole."""
        fd, path = self._segment(queue, length)
        offset = self.size[queue]
        crc = 0
        written = 0
        try:
            pending = [HEADER.pack(MAGIC, task_id, attempt, length)]
            for chunk in chunks:
                crc = zlib.crc32(chunk, crc)
                written += len(chunk)
                pending.append(chunk)
                if written >= _CHUNK:
                    _write_all(fd, pending)
                    pending = []
            if written != length:
                raise ValueError(f"a log record said {length} bytes and had {written}")
            pending.append(TRAILER.pack(crc, END))
            _write_all(fd, pending)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, offset)
            raise
        self.size[queue] = offset + HEADER.size + length + TRAILER.size
        return locator(path, offset, length)

    def _segment(self, queue: str, length: int) -> tuple[int, Path]:
        current = self.open.get(queue)
        if current is not None:
            whole = HEADER.size + length + TRAILER.size
            if self.size[queue] == 0 or self.size[queue] + whole <= self.limit:
                return current
            os.close(current[0])
        folder = self.log_dir / queue / "segments"
        folder.mkdir(parents=True, exist_ok=True)
        while True:  # (a file of the same name: a process of this pid before, elsewhere)
            self.n += 1
            path = folder / f"{self.name}-{self.n}{SUFFIX}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
                             | os.O_CLOEXEC, 0o644)  # fmt: skip
            except FileExistsError:
                continue
            break
        self.open[queue] = (fd, path)
        self.size[queue] = 0
        return fd, path

    def close(self) -> None:
        for fd, _ in self.open.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.open.clear()


def _write_all(fd: int, parts: list[bytes]) -> None:
    data = b"".join(parts) if len(parts) > 1 else parts[0]
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def file_chunks(f: int, start: int, end: int) -> Iterator[bytes]:
    """The bytes of descriptor ``f`` from ``start`` to ``end``, a piece at a time."""
    while start < end:
        chunk = os.pread(f, min(_CHUNK, end - start), start)
        if not chunk:
            raise OSError(f"the output file ended {end - start} bytes early")
        start += len(chunk)
        yield chunk


# -- reading ----------------------------------------------------------------------------------
def read(log: str, folder: Path | None = None, limit: int | None = None) -> bytes | None:
    """What a task printed, as ``log`` records it (a locator or a file of its own);
    None if there is no such file.  With ``folder``, a log outside it is refused
    (InvalidInput).  With ``limit``, only the last ``limit`` bytes (of a record: its
    CRC is then not checked).  LogDamaged if the record is damaged."""
    path = inside(log, folder) if folder is not None else None
    ref = parse(log)
    try:
        if ref is None:
            with open(path or log, "rb") as f:
                if limit is not None:
                    f.seek(0, os.SEEK_END)
                    f.seek(max(0, f.tell() - limit))
                return f.read()
        with open(ref.path, "rb") as f:
            return _record(f.fileno(), ref, str(ref), limit)
    except FileNotFoundError:
        return None


def _record(fd: int, ref: Ref, where: str, limit: int | None = None) -> bytes:
    head = os.pread(fd, HEADER.size, ref.offset)
    if len(head) < HEADER.size:
        raise LogDamaged(where, "the segment ends inside its header", torn=True)
    magic, _task, _attempt, length = HEADER.unpack(head)
    if magic != MAGIC or length != ref.length:
        raise LogDamaged(where, "no record begins there")
    start = ref.offset + HEADER.size
    if limit is not None and limit < length:
        data = os.pread(fd, limit, start + length - limit)
        if len(data) < limit:
            raise LogDamaged(where, "the segment ends inside it (its writer died)", torn=True)
        return data
    data = os.pread(fd, length + TRAILER.size, start)
    if len(data) < length + TRAILER.size:
        raise LogDamaged(where, f"the segment ends {length + TRAILER.size - len(data)} bytes "
                         "short of its end (its writer died while writing it)",
                         torn=True)  # fmt: skip
    crc, end = TRAILER.unpack(data[length:])
    if end != END or crc != zlib.crc32(data[:length]):
        raise LogDamaged(where, "its CRC does not match (the disk did not keep it whole)")
    return data[:length]


def tail(log: str | None, lines: int = 3, folder: Path | None = None) -> list[str]:
    """The last non-empty ``lines`` of a log ([] if there is none, or it is unreadable)."""
    if not log:
        return []
    try:
        data = read(log, folder, TAIL_BYTES)
    except (OSError, QdoError):
        return []
    text = (data or b"").decode("utf-8", "replace").splitlines()
    return [line.rstrip() for line in text if line.strip()][-lines:]


# -- checking ---------------------------------------------------------------------------------
class Damage(NamedTuple):
    """A record of a segment that is not whole (``task`` from its header, if readable)."""

    segment: Path
    offset: int
    task: int | None
    attempt: int | None
    why: str
    #: it ends early and its writer still runs (on this machine): it may be being
    #: written now
    writing: bool

    def __str__(self) -> str:
        who = f" (task {self.task}, attempt {self.attempt})" if self.task is not None else ""
        live = "; its writer still runs, it may be being written now" if self.writing else ""
        return f"{self.segment}#{self.offset}{who}: {self.why}{live}"


def segments(log_dir: Path) -> list[Path]:
    """Every segment file under ``log_dir``."""
    return sorted(log_dir.glob(f"*/segments/*{SUFFIX}"))


def scan(path: Path) -> Iterator[Damage]:
    """Walk a segment's records; a Damage for the first one that is not whole (what
    follows it cannot be found)."""
    host, pid = _writer(path)
    live = host == hostname() and pid is not None and pid_alive(pid)
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            head = os.pread(fd, HEADER.size, offset)
            if len(head) < HEADER.size:
                yield Damage(path, offset, None, None, "the segment ends inside a header", live)
                return
            magic, task, attempt, length = HEADER.unpack(head)
            if magic != MAGIC or length < 0:
                yield Damage(path, offset, None, None, "no record begins there", False)
                return
            try:
                _record(fd, Ref(path, offset, length), "")
            except LogDamaged as e:
                yield Damage(path, offset, task, attempt, e.why, live and e.torn)
                return
            offset += HEADER.size + length + TRAILER.size


def _writer(path: Path) -> tuple[str, int | None]:
    """The host and pid that wrote a segment, from its name (HOST-PID-SLOT-N)."""
    parts = path.stem.rsplit("-", 3)
    if len(parts) == 4 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return "", None
