"""Task output in segment files (qdo.logs): a few files per agent, each task's output
read at once, and a record torn by a SIGKILL found and reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import qdo
from qdo import logs
from qdo.errors import InvalidInput
from tests.conftest import run_qdo

# A process that writes one record of LENGTH bytes read from its stdin, as an agent's
# slot writes a task's output: killed halfway, it leaves a torn record.
WRITER = """
import sys
from pathlib import Path
from qdo.logs import Segments
length = int(sys.argv[2])
seg = Segments(Path(sys.argv[1]), "s0")
print(seg.append("Q", 7, 1, [b"whole\\n"], 6), flush=True)
def chunks():
    left = length
    while left:
        data = sys.stdin.buffer.read1(min(left, 65536))
        if not data:
            raise SystemExit("stdin ended early")
        left -= len(data)
        yield data
print(seg.append("Q", 8, 2, chunks(), length), flush=True)
"""


def test_agents_append_to_a_few_segments_and_each_task_is_read_at_once(qdo_dir: Path) -> None:
    q = qdo.create("P")
    ids = q.add_multiple([f"echo out {i}; echo err {i} >&2" for i in range(300)] + ["true"])
    q.do(workers=2)
    files = [p for p in (qdo_dir / "logs").rglob("*") if p.is_file()]
    # 300 tasks printed: one segment per slot, no file per task
    assert sorted(p.parent.name for p in files) == ["segments", "segments"]
    for i, task_id in enumerate(ids[:-1]):
        assert q.output(task_id) == f"out {i}\nerr {i}\n".encode()
    assert q.output(ids[-1]) is None  # printed nothing: no record
    assert run_qdo("log", "P", str(ids[5]), check=True).stdout == "out 5\nerr 5\n"
    assert run_qdo("fsck", check=True).returncode == 0


def test_every_attempt_keeps_its_record(qdo_dir: Path) -> None:
    q = qdo.create("R", max_retries=2)
    t = q.add("echo try $QDO_TASK_ATTEMPT; exit 1")
    q.do()
    task = q.tasks(id=t, history=True)
    assert task.attempts == 3 and all(a.log for a in task.history)
    assert q.output(t) == b"try 1\ntry 2\ntry 3\n"


def test_function_tasks_write_records_of_their_process(qdo_dir: Path) -> None:
    q = qdo.create("F")
    ok = q.add({"text": "hello"})
    bad = q.add({"text": "boom"})
    q.do(func="tests.calls_helpers:shout", workers=2)
    assert q.output(ok) == b"HELLO\n"
    assert b"Traceback" in (q.output(bad) or b"")
    assert (q.tasks(id=ok).log or "").startswith(str(qdo_dir / "logs" / "F" / "segments"))


def test_segments_rotate_by_size(tmp_path: Path) -> None:
    seg = logs.Segments(tmp_path, "s0", limit=150)
    where = [seg.append("Q", i, 1, [b"x" * 40], 40) for i in range(1, 8)]
    seg.close()
    assert len(logs.segments(tmp_path)) == 4  # two 72-byte records to a segment of 150
    assert [logs.read(w, tmp_path) for w in where] == [b"x" * 40] * 7
    assert [d for p in logs.segments(tmp_path) for d in logs.scan(p)] == []


def test_a_record_torn_by_sigkill_is_found_and_reported(tmp_path: Path) -> None:
    length = 8 << 20
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(length)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        whole = proc.stdout.readline().decode().strip()
        proc.stdin.write(b"y" * (3 * length // 8))
        proc.stdin.flush()
        (segment,) = logs.segments(tmp_path)
        deadline = time.monotonic() + 60
        # the writer has put the header and a quarter of the data in the segment
        while segment.stat().st_size < 38 + logs.HEADER.size + length // 4:
            assert time.monotonic() < deadline, "the writer wrote nothing"
            time.sleep(0.01)
    finally:  # killed there (or, if the test failed, anyway)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    assert logs.read(whole, tmp_path) == b"whole\n"  # the record before it stands
    (damage,) = [d for p in logs.segments(tmp_path) for d in logs.scan(p)]
    assert (damage.task, damage.attempt, damage.offset) == (8, 2, 38)
    assert not damage.writing and "writer died" in damage.why
    torn = logs.locator(segment, 38, length)  # as it would have been recorded
    with pytest.raises(logs.LogDamaged, match="writer died"):
        logs.read(torn, tmp_path)


def test_fsck_and_qdo_log_report_a_damaged_record(qdo_dir: Path) -> None:
    q = qdo.create("D")
    t = q.add("echo precious output")
    q.do()
    ref = logs.parse(q.tasks(id=t).log or "")
    assert ref is not None
    data = bytearray(ref.path.read_bytes())
    data[ref.offset + logs.HEADER.size] ^= 0xFF  # the disk kept it wrong
    ref.path.write_bytes(bytes(data))
    proc = run_qdo("log", "D", str(t))
    assert proc.returncode == 1 and "CRC does not match" in proc.stderr
    proc = run_qdo("fsck", "--json")
    assert proc.returncode == 1
    (problem,) = json.loads(proc.stdout)
    assert f"task {t}, attempt 1" in problem and "CRC" in problem


def test_a_log_outside_the_log_folder_is_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.qseg"
    secret.write_bytes(b"x")
    with pytest.raises(InvalidInput, match="outside the log folder"):
        logs.read(logs.locator(secret, 0, 1), tmp_path / "logs")
    with pytest.raises(InvalidInput, match="outside the log folder"):
        logs.read(str(tmp_path / "secret.log"), tmp_path / "logs")


def test_a_failed_write_leaves_the_segment_whole(tmp_path: Path) -> None:
    seg = logs.Segments(tmp_path, "s0")
    first = seg.append("Q", 1, 1, [b"one\n"], 4)

    def broken():  # type: ignore[no-untyped-def]
        yield b"h" * (2 << 20)  # (written before the error)
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        seg.append("Q", 2, 1, broken(), 4 << 20)
    second = seg.append("Q", 3, 1, [b"three\n"], 6)
    assert logs.read(first) == b"one\n" and logs.read(second) == b"three\n"
    assert [d for p in logs.segments(tmp_path) for d in logs.scan(p)] == []
    assert os.path.getsize(logs.segments(tmp_path)[0]) == 2 * 32 + 10


def test_a_deleted_queues_logs_go_with_it_and_nothing_else(qdo_dir: Path) -> None:
    """Its segments and its --log-files files are removed (nothing could read them once
    the database forgets them); another queue's logs, a file of the user's own, and a
    file of qdo's name that someone else owns stay."""
    log_dir = qdo_dir / "logs"
    gone, kept = qdo.create("Gone"), qdo.create("Kept")
    for q in (gone, kept):
        q.add_multiple([f"echo {q.name} {i}" for i in range(5)])
        q.do(workers=2)
        q.add_multiple([f"echo {q.name} file {i}" for i in range(1005)])  # two shards
        q.do(workers=2, log_files=True)
    own = log_dir / "Gone" / "notes.txt"
    own.write_text("mine")
    theirs = log_dir / "Gone" / "segments" / f"elsewhere-1{logs.SUFFIX}"
    theirs.write_bytes(b"")
    if os.getuid() == 0:  # (only root can give a file away)
        os.chown(theirs, 65534, 65534)
    else:
        theirs.unlink()
    kept_before = sorted(p for p in (log_dir / "Kept").rglob("*") if p.is_file())
    assert len([p for p in kept_before if p.suffix == ".log"]) == 1005
    assert gone.delete() == 1010
    left = sorted(p for p in (log_dir / "Gone").rglob("*"))
    assert left == sorted({own, theirs.parent, theirs} if os.getuid() == 0 else {own}), left
    assert sorted(p for p in (log_dir / "Kept").rglob("*") if p.is_file()) == kept_before
    assert kept.output(kept.tasks()[0].id) == b"Kept 0\n"
    assert run_qdo("delete", "Kept", "--force", check=True).returncode == 0
    assert not (log_dir / "Kept").exists()
