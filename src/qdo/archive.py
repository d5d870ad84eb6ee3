"""Queue archives: ``qdo dump`` and ``qdo restore`` (also how a queue moves between
backends, SQLite to PostgreSQL and back).

An archive is gzip-compressed JSON lines, version 1:

- a header ``{"format": "qdo-archive", "version": 1, "queue": {...}, "span": [lowest id,
  highest id, tasks], "columns": {...}}``;
- one line per record: ``["t", task]``, ``["r", requirement]``, ``["a", attempt]``, each
  a list of the values named in ``columns`` (every field of every task, its
  requirements and its history of attempts);
- a trailer ``{"end": {"tasks": n, "requires": n, "attempts": n, "sha256": ...}}``, the
  digest of every line before it.

A restore reads the archive twice: once to check it (a damaged, truncated or foreign
file is refused before anything is written), then to load it in one transaction,
which a mismatch found on that second read also undoes.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import math
import os
import shutil
import stat
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from .errors import BadArchive, InvalidInput, InvalidPayload
from .models import (
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    PRIORITY_MAX,
    PRIORITY_MIN,
    QueueInfo,
    QueueState,
    State,
    check_queue_name,
    encode_payload,
    is_seconds,
    is_utf8,
)
from .store.base import ATTEMPT_COLUMNS, REQUIRE_COLUMNS, TASK_COLUMNS, Store, kept_text
from .version import __version__

FORMAT = "qdo-archive"
VERSION = 1
#: An archive is untrusted input.  Ids above this are refused: near 2**63 they would
#: leave no id for any later add in the whole database.
MAX_TASK_ID = 2**48
#: A line longer than this (decompressed) is refused before it is all in memory: a
#: payload is at most 1 MB, and JSON escaping may make it 6 times as long.
MAX_LINE = 8 << 20
#: A lease may run at most this far past the restore (seconds): a crafted one far in
#: the future would keep its task Running for ever.
MAX_LEASE_AHEAD = 86_400.0
COLUMNS = {"task": list(TASK_COLUMNS), "requires": list(REQUIRE_COLUMNS),
           "attempt": list(ATTEMPT_COLUMNS)}  # fmt: skip
_TAGS = {"task": "t", "requires": "r", "attempt": "a"}
#: Where a record holds a message (a database written before messages were cut may hold
#: one longer than the store keeps now, and its line would be longer than MAX_LINE)
_MESSAGE = {"task": TASK_COLUMNS.index("message"), "attempt": ATTEMPT_COLUMNS.index("message")}
_KINDS = {tag: kind for kind, tag in _TAGS.items()}


def dump(
    store: Store, queue: str, path: str | os.PathLike[str] | BinaryIO
) -> dict[str, int]:  # fmt: skip
    """Write every task of ``queue`` (every field, requirements, attempts) to ``path``;
    return the counts written.  A file is replaced only once the archive is complete
    (through a link, the file it points to: the link stays); a device or a pipe
    (``/dev/stdout``, a FIFO), or a binary file object, is written to as the archive
    comes."""
    if store.get_queue(queue).kind == "calls":
        # an archive holds tasks as text: a call restored as one would run as a command
        raise InvalidInput(f"queue {queue!r} holds Python calls (an executor's): archives "
                           "do not keep calls yet")  # fmt: skip
    if not isinstance(path, (str, os.PathLike)):
        if not hasattr(path, "write"):
            raise InvalidInput(f"an archive is written to a file name, or a binary file "
                               f"object, got {path!r}")  # fmt: skip
        return _write_archive(store, queue, path)
    if not os.fspath(path):
        raise InvalidInput("an archive needs a file name, got ''")
    path = Path(path)
    if path.is_dir():
        raise InvalidInput(f"{path} is a directory: give the archive's file name")
    try:
        mode: int | None = path.stat().st_mode  # (a link's target)
    except FileNotFoundError:
        mode = None
    except OSError as e:
        raise InvalidInput(f"cannot write the archive {path}: {e.strerror}") from None
    try:
        if mode is not None and not stat.S_ISREG(mode):
            with open(path, "wb") as out:  # (not replaced: a device node is not ours)
                return _write_archive(store, queue, out)
        target = Path(os.path.realpath(path)) if path.is_symlink() else path
        if not target.parent.is_dir():
            raise InvalidInput(f"no directory {target.parent} to write {target.name} in: "
                               "create it first")  # fmt: skip
        tmp = target.with_name(f".{target.name}.part{os.getpid()}")
        try:
            with open(tmp, "wb") as out:
                counts = _write_archive(store, queue, out)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as e:  # (the temporary file's name would mislead: the archive's)
        raise InvalidInput(f"cannot write the archive {path}: {e.strerror or e}") from None
    return counts


def _write_archive(store: Store, queue: str, raw: BinaryIO) -> dict[str, int]:
    digest = hashlib.sha256()
    counts = {"tasks": 0, "requires": 0, "attempts": 0}
    names = {"task": "tasks", "requires": "requires", "attempt": "attempts"}
    # (filename "": the header names no file, not the temporary one it is written to)
    with gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6) as out:

        def line(obj: Any) -> None:
            data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
            digest.update(data)
            out.write(data)

        records = store.export_queue(queue)
        header: dict[str, Any] = {
            "format": FORMAT, "version": VERSION, "qdo": __version__,
            "written": datetime.now(timezone.utc).isoformat(),
        }  # fmt: skip
        for kind, row in records:
            if kind == "queue":
                name, state, created, max_retries, max_lost, owner = row
                header["queue"] = {"name": name, "state": state, "created": created,
                                   "max_retries": max_retries, "max_lost": max_lost,
                                   "owner": owner}  # fmt: skip
            elif kind == "span":
                header["span"] = list(row)
                header["columns"] = COLUMNS
                line(header)
            else:
                fields = list(row)
                at = _MESSAGE.get(kind)
                if at is not None and fields[at]:
                    fields[at] = kept_text(fields[at])
                line([_TAGS[kind], fields])
                counts[names[kind]] += 1
        out.write(json.dumps({"end": {**counts, "sha256": digest.hexdigest()}}).encode() + b"\n")
    return counts


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a whole archive; return its header.  Raises BadArchive."""
    header: dict[str, Any] = {}
    for kind, row in _records(Path(path)):
        if kind == "header":
            header = row
    return header


def restore(
    store: Store, path: str | os.PathLike[str], as_name: str | None = None
) -> tuple[str, int, int]:
    """Rebuild the queue of an archive (named ``as_name`` if given) for the store's user,
    in one transaction; return (queue name, tasks, id offset).  Nothing is written if
    the archive is damaged (BadArchive) or the queue exists (QueueExists).  A pipe or
    a device (``/dev/stdin``) is read once, into a temporary file."""
    try:
        with _readable_twice(Path(path)) as readable:
            return _restore(store, readable, as_name)
    except BadArchive as e:  # (named as the user named it, not as its copy)
        raise BadArchive(str(path), e.why) from None


@contextlib.contextmanager
def _readable_twice(path: Path) -> Iterator[Path]:
    """``path``, or a temporary copy of it where it is a pipe or a device: a restore
    reads its archive twice (checked whole, then imported in one transaction)."""
    try:
        special = path.exists() and not path.is_dir() and not path.is_file()
    except OSError:
        special = False  # (the read says why)
    if not special:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="qdo-restore-") as folder:
        copy = Path(folder) / "archive"
        try:
            with open(path, "rb") as src, open(copy, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except OSError as e:
            raise BadArchive(str(path), f"{type(e).__name__}: {e}") from e
        yield copy


def _restore(store: Store, path: Path, as_name: str | None) -> tuple[str, int, int]:
    header = read_header(path)
    q = header["queue"]
    name = check_queue_name(as_name or q["name"])
    info = QueueInfo(
        id=0, name=name, state=QueueState(q["state"]),
        created=datetime.fromtimestamp(q["created"], timezone.utc) if q["created"] else None,
        max_retries=q["max_retries"], max_lost=q["max_lost"], owner=store.user,
    )  # fmt: skip
    low, high, n = header["span"]
    records = ((kind, row) for kind, row in _records(Path(path)) if kind != "header")
    try:
        offset = store.import_queue(name, info, (low, high), records)
    except BadArchive:
        raise
    except InvalidInput as e:  # (what its records hold that the store refuses, as a cycle)
        raise BadArchive(str(path), str(e)) from None
    return name, n, offset


def _records(path: Path) -> Iterator[tuple[str, Any]]:
    """("header", dict), then (kind, row) of every record; raises BadArchive on any
    damage, at the latest when the trailer is reached (so a consumer inside a
    transaction can still undo what it did)."""
    digest = hashlib.sha256()
    counts = {"task": 0, "requires": 0, "attempt": 0}
    widths = dict.fromkeys(COLUMNS, 0)
    ended = False
    last_id = 0
    try:
        with gzip.open(path, "rb") as f:
            first = f.readline(MAX_LINE)
            if not first:
                raise BadArchive(str(path), "it is empty")
            digest.update(first)
            header = _header(path, first)
            widths = {kind: len(cols) for kind, cols in header["columns"].items()}
            low, high, _n = header["span"]
            yield "header", header
            for lineno, data in enumerate(iter(lambda: f.readline(MAX_LINE), b""), 2):
                if len(data) >= MAX_LINE and not data.endswith(b"\n"):
                    raise BadArchive(str(path), f"line {lineno} is longer than {MAX_LINE:,} "
                                                "bytes: no qdo writes such lines")  # fmt: skip
                if ended:
                    raise BadArchive(str(path), f"line {lineno} comes after the end")
                obj = json.loads(data)
                if isinstance(obj, dict):
                    _check_end(path, obj, counts, digest.hexdigest(), header)
                    ended = True
                    continue
                digest.update(data)
                tag, row = obj
                kind = _KINDS[tag]
                if not isinstance(row, list) or len(row) != widths[kind]:
                    raise BadArchive(str(path), f"line {lineno} is not a {kind} record")
                row += [None] * (len(COLUMNS[kind]) - len(row))  # (an earlier qdo's)
                why = _CHECKS[kind](row) or _in_span(kind, row, low, high, last_id)
                if why:
                    raise BadArchive(str(path), f"line {lineno}: {why}")
                if kind == "task":
                    last_id = row[0]
                counts[kind] += 1
                yield kind, row
    except BadArchive:
        raise
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise BadArchive(str(path), f"{type(e).__name__}: {e}") from e
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise BadArchive(str(path), f"{type(e).__name__}: {e}") from e
    except RecursionError:
        raise BadArchive(str(path), "a line nests lists or objects too deep") from None
    if not ended:
        raise BadArchive(str(path), "it is truncated: no end record")


def _header(path: Path, first: bytes) -> dict[str, Any]:
    try:
        header = json.loads(first)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadArchive(str(path), "its first line is not a qdo archive header") from e
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise BadArchive(str(path), "its first line is not a qdo archive header")
    if header.get("version") != VERSION:
        raise BadArchive(
            str(path), f"archive version {header.get('version')}; this qdo reads version {VERSION}"
        )
    columns = header.get("columns")
    # an earlier qdo's archive has fewer columns at the end of a record (attempts had no
    # cpu and rss before schema 9): they are read as unknown
    if (not isinstance(columns, dict) or set(columns) != set(COLUMNS)
            or any(not isinstance(columns[k], list) or not columns[k]
                   or columns[k] != COLUMNS[k][: len(columns[k])] for k in COLUMNS)
            or "queue" not in header or "span" not in header):  # fmt: skip
        raise BadArchive(str(path), "its header does not describe the records this qdo writes")
    why = _check_header(header)
    if why:
        raise BadArchive(str(path), f"its header: {why}")
    return header


# -- what a record may hold: what qdo itself writes, nothing else ---------------------------
#: The times qdo writes: from 1970 to the end of year 9999 (what a datetime holds)
LATEST = 253_402_300_799


def _int(v: Any, low: int = INT64_MIN, high: int = INT64_MAX) -> bool:
    """An integer from ``low`` to ``high`` (what a bigint column holds, by default)."""
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _int32(v: Any, low: int = INT32_MIN) -> bool:
    """An integer that a column of 32-bit integers holds, from ``low``."""
    return _int(v, low, INT32_MAX)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _time(v: Any) -> bool:
    return _num(v) and 0 <= v <= LATEST


def _opt(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or test(v)


def _text(v: Any) -> bool:
    """Text both backends hold: no NUL, no lone surrogate."""
    return isinstance(v, str) and "\0" not in v and is_utf8(v)


_TASK_FIELDS: dict[str, Callable[[Any], bool]] = {
    "id": lambda v: _int(v, 1),
    "payload": lambda v: _text(v) and v != "",
    "is_json": lambda v: isinstance(v, bool),
    "state": lambda v: v in {s.value for s in State},
    "priority": lambda v: _int(v, PRIORITY_MIN, PRIORITY_MAX),
    "exitcode": _opt(_int32),
    "message": _opt(_text),
    "attempts": lambda v: _int32(v, 0),
    "created": _time,
    "started": _opt(_time),
    "finished": _opt(_time),
    "worker": _opt(_text),
    "jobid": _opt(_text),
    "log": _opt(_text),
    "lease_expires": _opt(_time),
    "lease_token": _opt(_int),
    "timeout": _opt(lambda v: is_seconds(v, positive=True)),
    "max_retries": _opt(lambda v: _int32(v, 0)),
    "failures": lambda v: _int32(v, 0),
    "lost": lambda v: _int32(v, 0),
}
_ATTEMPT_FIELDS: dict[str, Callable[[Any], bool]] = {
    "task_id": lambda v: _int(v, 1),
    "attempt": lambda v: _int32(v, 0),
    "state": lambda v: v in {"Succeeded", "Failed", "Killed", "Lost", "Returned"},
    "worker": _opt(_text),
    "jobid": _opt(_text),
    "started": _opt(_time),
    "finished": _opt(_time),
    "exitcode": _opt(_int32),
    "message": _opt(_text),
    "cpu": _opt(lambda v: _num(v) and v >= 0),
    "rss": _opt(lambda v: _int(v, 0)),
    "log": _opt(_text),
}


def _bad_fields(row: list[Any], fields: dict[str, Callable[[Any], bool]], what: str) -> str:
    for (name, test), value in zip(fields.items(), row, strict=True):
        if not test(value):
            return f"{what} has an impossible {name} {value!r}"
    return ""


def _check_task(row: list[Any]) -> str:
    why = _bad_fields(row, _TASK_FIELDS, f"task {row[0]!r}")
    if why:
        return why
    try:  # (an archive is untrusted: its payloads must be ones that add takes)
        task = _PAYLOADS.decode(row[1]) if row[2] else row[1]
    except (ValueError, RecursionError):
        return f"task {row[0]} says its payload is JSON, and it is not JSON that qdo writes"
    if row[2] and isinstance(task, str):
        return f"task {row[0]} says its payload is JSON, and it is a JSON string"
    try:
        encode_payload(task)
    except InvalidPayload as e:
        return f"task {row[0]}: {e}"
    held = row[14] is not None and row[15] is not None and row[11] is not None
    if (row[3] == State.RUNNING.value) != held:
        return f"task {row[0]} is {row[3]} {'with' if held else 'without'} a lease"
    return ""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


#: (made once: json.loads with options makes a decoder at every call)
_PAYLOADS = json.JSONDecoder(parse_constant=_no_constant)


def _in_span(kind: str, row: list[Any], low: int, high: int, last_id: int) -> str:
    """What the ids of a record must be: tasks in strictly rising order (no id twice)
    within the header's span; requirements and attempts of tasks of the archive."""
    if kind == "task":
        if not low <= row[0] <= high or row[0] <= last_id:
            return f"task id {row[0]} out of order or outside the span {low}-{high}"
        if row[14] is not None and row[14] > time.time() + MAX_LEASE_AHEAD:
            return f"task {row[0]} has a lease that runs out only in the far future"
        return ""
    if not low <= row[0] <= high or (kind == "requires" and row[2] and not low <= row[1] <= high):
        return f"a {kind} record names a task that is not in the archive: {row[:2]!r}"
    return ""


def _check_requires(row: list[Any]) -> str:
    ok = _int(row[0], 1) and _int(row[1], 1) and isinstance(row[2], bool)
    return "" if ok else f"an impossible requirement {row!r}"


def _check_attempt(row: list[Any]) -> str:
    return _bad_fields(row, _ATTEMPT_FIELDS, f"an attempt of task {row[0]!r}")


_CHECKS: dict[str, Callable[[list[Any]], str]] = {
    "task": _check_task, "requires": _check_requires, "attempt": _check_attempt,
}  # fmt: skip


def _check_header(header: dict[str, Any]) -> str:
    q, span = header["queue"], header["span"]
    if not isinstance(q, dict) or not isinstance(span, list) or len(span) != 3:
        return "no queue record or span"
    try:
        check_queue_name(q.get("name"))
    except InvalidInput as e:
        return str(e)
    checks = {
        "state": q.get("state") in ("Active", "Paused"),
        "created": q.get("created") is None or _time(q.get("created")),
        "max_retries": _int32(q.get("max_retries"), 0),
        "max_lost": _int32(q.get("max_lost"), 1),
        "owner": isinstance(q.get("owner"), str),
        "span": all(_int(v, 0) and v <= MAX_TASK_ID for v in span) and span[0] <= span[1],
    }
    bad = [name for name, ok in checks.items() if not ok]
    return f"impossible {', '.join(bad)}" if bad else ""


def _check_end(
    path: Path, obj: dict[str, Any], counts: dict[str, int], sha: str, header: dict[str, Any]
) -> None:
    end = obj.get("end")
    if not isinstance(end, dict):
        raise BadArchive(str(path), "a line is neither a record nor the end")
    found = {"tasks": counts["task"], "requires": counts["requires"],
             "attempts": counts["attempt"]}  # fmt: skip
    want = {k: end.get(k) for k in found}
    if found != want or header["span"][2] != counts["task"]:
        raise BadArchive(str(path), f"it holds {found}, its end says {want}")
    if end.get("sha256") != sha:
        raise BadArchive(str(path), "its checksum does not match its contents")
