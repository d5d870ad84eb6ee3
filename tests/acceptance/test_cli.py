"""Acceptance tests of the ``qdo`` command line, run as a real subprocess.

Every test gets its own QDO_DIR (the autouse ``qdo_dir`` fixture), so its own SQLite
database, qdorc and logs.  Nothing is mocked: real files, real processes, real SQLite.
Tasks that write files always use absolute paths (``qdo do`` runs them in our cwd).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import qdo
from qdo.errors import InvalidInput
from tests.conftest import run_qdo

pytestmark = pytest.mark.backends

TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
TASK_FIELDS = {
    "id", "queue", "task", "state", "priority", "requires", "exitcode", "message",
    "attempts", "created", "started", "finished", "worker", "jobid", "log", "lease_expires",
    "timeout", "max_retries", "failures", "lost", "history",
}  # fmt: skip


# -- helpers --------------------------------------------------------------------------------
def ok(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> str:
    """Run qdo, require success and no traceback; return stdout."""
    proc = run_qdo(*args, input=input, env=env)
    assert proc.returncode == 0, f"qdo {args} exited {proc.returncode}:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc.stdout


def fails(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> str:
    """Run qdo, require the one-line ``qdo: error:`` failure; return that line."""
    proc = run_qdo(*args, input=input, env=env)
    assert proc.returncode == 1, f"qdo {args} exited {proc.returncode}:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"qdo {args}: expected one line on stderr, got:\n{proc.stderr}"
    assert lines[0].startswith("qdo: error: "), lines[0]
    assert proc.stdout == "", f"qdo {args} printed on stdout: {proc.stdout!r}"
    return lines[0]


def usage_error(*args: str) -> str:
    """Run qdo, require an argparse usage error (exit 2); return the error line."""
    proc = run_qdo(*args)
    assert proc.returncode == 2, f"qdo {args} exited {proc.returncode}:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    last = proc.stderr.splitlines()[-1]
    assert re.match(r"qdo( \w+)?: error: ", last), proc.stderr
    return last


def tasks(queue: str, *extra: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ok("tasks", queue, "--json", *extra).splitlines()]


def status(queue: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(ok("status", queue, "--json"))
    return result


def counts(queue: str) -> dict[str, int]:
    return {s: n for s, n in status(queue)["ntasks"].items() if n}


def queues() -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = json.loads(ok("list", "--json"))
    return result


def snapshot(qdo_dir: Path, db: str = "qdo.sqlite") -> dict[str, list[tuple[Any, ...]]] | None:
    """Every row of every qdo table (None if there is no database yet)."""
    if os.environ.get("QDO_BACKEND") == "postgres" and db == "qdo.sqlite":
        import psycopg

        schema = os.environ["QDO_DB_SCHEMA"]
        with psycopg.connect(os.environ["QDO_DB_URL"]) as pg:
            if not pg.execute("SELECT 1 FROM pg_tables WHERE schemaname = %s AND "
                              "tablename = 'qdo_schema'", (schema,)).fetchone():  # fmt: skip
                return None
            return {
                table: pg.execute(f'SELECT * FROM "{schema}".{table} ORDER BY 1, 2').fetchall()
                for table in ("qdo_schema", "queues", "tasks", "requires")
            }
    path = qdo_dir / db
    if not path.exists():
        return None
    with closing(sqlite3.connect(path)) as conn:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in ("qdo_schema", "queues", "tasks", "requires")
        }


def assert_db_ok(qdo_dir: Path, db: str = "qdo.sqlite") -> None:
    with closing(sqlite3.connect(qdo_dir / db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def appender(order: Path, name: str) -> str:
    """A shell task that appends its name to the ``order`` file."""
    return f"echo {name} >> {shlex.quote(str(order))}"


def run_order(order: Path) -> list[str]:
    return order.read_text().split() if order.exists() else []


def table_rows(text: str) -> list[list[str]]:
    """The rows of a plain-text table (header excluded), split on runs of spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()[1:]]


# -- 1. the seed's command-line flow ---------------------------------------------------------
SEED_FILE = """\
# my first queue
echo hello

true
   # an indented comment
false
\t
echo world
"""


def test_seed_flow(qdo_dir: Path, tmp_path: Path) -> None:
    file = write(tmp_path / "tasks.txt", SEED_FILE)

    out = ok("load", "Q", str(file))
    assert out == "loaded 4 tasks into Q (ids 1-4)\n"
    assert [(t["id"], t["task"], t["state"]) for t in tasks("Q")] == [
        (1, "echo hello", "Pending"), (2, "true", "Pending"),
        (3, "false", "Pending"), (4, "echo world", "Pending"),
    ]  # fmt: skip

    listing = ok("list")
    assert listing.splitlines()[0].split() == [
        "QUEUE", "STATE", "WAITING", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "KILLED",
    ]  # fmt: skip
    assert listing.splitlines()[1].split() == ["Q", "Active", "0", "4", "0", "0", "0", "0"]
    assert [q["name"] for q in queues()] == ["Q"]

    text = ok("status", "Q")
    assert text.splitlines()[0].split() == ["Q", "Active", "4", "tasks,", "0.0%", "done"]
    assert re.search(r"^\s+Pending\s+4$", text, re.M)
    assert status("Q") == {
        "name": "Q", "state": "Active", "blocked": 0, "max_retries": 0, "max_lost": 3,
        "claimed": 0,
        "ntasks": {"Waiting": 0, "Pending": 4, "Running": 0, "Succeeded": 0, "Failed": 0,
                   "Killed": 0},
    }  # fmt: skip

    out = ok("do", "Q")
    assert out.startswith("ran 4 tasks in ")
    assert "1 Failed, 3 Succeeded" in out.splitlines()[0]
    assert "100.0% done" in out
    assert counts("Q") == {"Succeeded": 3, "Failed": 1}

    failed = ok("tasks", "Q", "--state", "Failed")
    assert table_rows(failed) == [["3", "Failed", "0", "false"]]
    assert ok("tasks", "Q", "--state", "failed") == failed  # any case
    [bad] = tasks("Q", "--state", "Failed")
    assert (bad["task"], bad["exitcode"], bad["attempts"]) == ("false", 1, 1)
    assert ok("log", "Q", "1") == "hello\n"

    assert ok("retry", "Q") == "1 Failed or Killed tasks of Q will run again\n"
    assert [t["state"] for t in tasks("Q")] == ["Succeeded", "Succeeded", "Pending", "Succeeded"]

    before = snapshot(qdo_dir)
    line = fails("rerun", "Q")
    assert "--force" in line and "4 tasks" in line
    assert snapshot(qdo_dir) == before

    assert ok("rerun", "Q", "--force") == "4 tasks of Q will run again\n"
    assert [(t["state"], t["attempts"], t["exitcode"]) for t in tasks("Q")] == [
        ("Pending", 0, None)
    ] * 4
    ok("do", "Q")
    assert counts("Q") == {"Succeeded": 3, "Failed": 1}

    before = snapshot(qdo_dir)
    line = fails("delete", "Q")
    assert "--force" in line
    assert snapshot(qdo_dir) == before
    assert [q["name"] for q in queues()] == ["Q"]

    assert ok("delete", "Q", "--force") == "deleted queue Q and its 4 tasks\n"
    assert queues() == []
    assert ok("list").startswith("no queues")
    assert "no queue named 'Q'" in fails("status", "Q")
    assert_db_ok(qdo_dir)


# -- 2. loading, adding, priorities, requirements, tasks, log --------------------------------
def test_load_from_stdin(qdo_dir: Path) -> None:
    out = ok("load", "S", "-", input="echo a\n\n# skip me\necho b\r\n  echo c  \n")
    assert out == "loaded 3 tasks into S (ids 1-3)\n"
    assert [t["task"] for t in tasks("S")] == ["echo a", "echo b", "  echo c  "]
    assert_db_ok(qdo_dir)


def test_a_log_directory_that_cannot_be_made_is_said_before_any_task_is_claimed(
    qdo_dir: Path, tmp_path: Path
) -> None:  # fmt: skip
    # (its slot thread died, the agent waited for it for ever, SIGTERM too, and the task
    # stayed Running)
    (tmp_path / "a-file").write_text("")
    ok("create", "L")
    ok("add", "L", "echo hi")
    for extra in ([], ["--log-files"], ["--func", "os:getcwd"]):
        line = fails("do", "L", *extra, env={"QDO_LOG_DIR": str(tmp_path / "a-file")})
        assert "cannot keep the tasks' output in the log directory" in line, line
    assert counts("L") == {"Pending": 1}


def test_too_many_slots_for_the_open_file_limit_is_one_error_before_any_task_is_claimed(
    qdo_dir: Path,
) -> None:
    # (each slot thread failed to open its spool: a traceback per slot, and the task they
    # could not run was claimed and Failed)
    import resource

    ok("create", "L")
    ok("add", "L", "echo hi")

    def few_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    proc = subprocess.run(
        [sys.executable, "-m", "qdo", "do", "L", "--workers", "100"],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=few_files,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "Too many open files" in proc.stderr and "ulimit -n" in proc.stderr, proc.stderr
    assert counts("L") == {"Pending": 1}
    assert ok("do", "L", "--workers", "100").startswith("ran 1 task")  # with the usual limit


def test_load_from_a_pipe_a_device_and_a_file_with_a_bom(qdo_dir: Path, tmp_path: Path) -> None:
    # a named pipe and /dev/stdin were "task files that do not exist"
    fifo = tmp_path / "tasks.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=("echo from a pipe\n",), daemon=True)
    writer.start()
    assert ok("load", "P", str(fifo)) == "loaded 1 tasks into P (ids 1-1)\n"
    writer.join(timeout=60)
    assert ok("load", "P", "/dev/stdin", input="echo from stdin\n").startswith("loaded 1 tasks")
    # a UTF-8 byte order mark (Windows editors write one) is not part of the first task
    (tmp_path / "bom.txt").write_bytes("\ufeffecho first\necho second\n".encode())
    (tmp_path / "bom.jsonl").write_bytes('\ufeff{"n": 1}\n'.encode())
    ok("load", "P", str(tmp_path / "bom.txt"))
    ok("load", "J", str(tmp_path / "bom.jsonl"), "--json")
    assert [t["task"] for t in tasks("P")] == ["echo from a pipe", "echo from stdin",
                                               "echo first", "echo second"]  # fmt: skip
    assert [t["task"] for t in tasks("J")] == [{"n": 1}]


def test_load_refuses_lines_that_end_in_a_carriage_return_alone(qdo_dir: Path) -> None:
    # (a file of old Mac line ends loaded as one task, "echo a\recho b", run as one command)
    line = fails("load", "M", "-", input="echo ok\necho a\recho b\r")
    assert "stdin, line 2" in line and "carriage return" in line and "tr '\\r'" in line, line
    assert "M" not in [q["name"] for q in queues()]
    assert ok("load", "M", "-", input="echo a\r\necho b\r\n").startswith("loaded 2 tasks")


def test_load_json_parameter_tasks(qdo_dir: Path, tmp_path: Path) -> None:
    file = write(
        tmp_path / "params.jsonl",
        '{"infile": "a.tif", "n": 1}\n# a comment\n\n[1, 2]\n7\n{"s": "just a string"}\n',
    )
    assert ok("load", "P", str(file), "--json") == "loaded 4 tasks into P (ids 1-4)\n"
    assert [t["task"] for t in tasks("P")] == [{"infile": "a.tif", "n": 1}, [1, 2], 7,
                                               {"s": "just a string"}]  # fmt: skip

    # a parameter task needs a script; with one, the JSON is its argument
    ok("add", "P", '{"x": "y"}', "--json")
    ok("do", "P", "--script", "echo")
    assert counts("P") == {"Succeeded": 5}
    assert json.loads(ok("log", "P", "1")) == {"infile": "a.tif", "n": 1}
    assert json.loads(ok("log", "P", "5")) == {"x": "y"}

    ok("rerun", "P", "--force")
    ok("do", "P")  # no script: parameter tasks fail, with a message saying why
    failed = {t["id"]: t for t in tasks("P", "--state", "Failed")}
    assert sorted(failed) == [1, 2, 3, 4, 5]
    assert all("--script" in failed[i]["message"] for i in (1, 2, 3, 4, 5))
    assert_db_ok(qdo_dir)


def test_a_script_that_cannot_run_is_refused_before_any_task_is_claimed(
    qdo_dir: Path, tmp_path: Path
) -> None:  # fmt: skip
    # (each task failed with exit 127, and qdo do exited 0: a typo used the queue up)
    ok("create", "S")
    ok("add", "S", "a")
    ok("add", "S", "b")
    (tmp_path / "plain.sh").write_text("echo not executable\n")
    for script, why in [("/nonexistent/run.sh", "no such file"),
                        ("no-such-program-here", "no such program on PATH"),
                        (str(tmp_path / "plain.sh"), "it is not executable"),
                        ("'unclosed", "No closing quotation"), ("  ", "is empty")]:  # fmt: skip
        assert why in fails("do", "S", "--script", script)
    assert counts("S") == {"Pending": 2}
    ok("do", "S", "--script", "echo")
    assert counts("S") == {"Succeeded": 2}


def test_json_string_is_refused_as_parameter_task(qdo_dir: Path, tmp_path: Path) -> None:
    # a str task is a shell command; a JSON string would be silently run as one
    file = write(tmp_path / "params.jsonl", '{"a": 1}\n"two  words"\n')
    err = fails("load", "P", str(file), "--json")
    assert "line 2" in err and "JSON string" in err
    assert "JSON string" in fails("add", "P", '"x"', "--json")
    assert queues() == []


def test_load_creates_queue_and_priorities_decide_order(qdo_dir: Path, tmp_path: Path) -> None:
    order = tmp_path / "order"
    low = write(tmp_path / "low", "".join(appender(order, f"low{i}") + "\n" for i in range(3)))
    high = write(tmp_path / "high", "".join(appender(order, f"hi{i}") + "\n" for i in range(3)))
    assert queues() == []
    ok("load", "O", str(low))  # creates the queue
    ok("load", "O", str(high), "--priority", "10")
    ok("add", "O", appender(order, "mid"), "--priority", "5")
    ok("add", "O", appender(order, "neg"), "--priority", "-3")
    ok("add", "O", appender(order, "zero"))
    assert [t["priority"] for t in tasks("O")] == [0, 0, 0, 10, 10, 10, 5, -3, 0]
    assert ok("do", "O").startswith("ran 9 tasks")
    assert run_order(order) == ["hi0", "hi1", "hi2", "mid", "low0", "low1", "low2", "zero", "neg"]
    assert_db_ok(qdo_dir)


def test_add_requires_waits_for_requirements(qdo_dir: Path, tmp_path: Path) -> None:
    order = tmp_path / "order"
    ok("create", "D")
    a = ok("add", "D", appender(order, "a")).strip()
    b = ok("add", "D", appender(order, "b"), "--priority", "100", "--requires", a).strip()
    c = ok("add", "D", appender(order, "c"), "--priority", "50", "--requires", f"{a},{b}")
    d = ok("add", "D", appender(order, "d"), "--priority", "-1")
    assert [a, b, c.strip(), d.strip()] == ["1", "2", "3", "4"]
    by_id = {t["id"]: t for t in tasks("D")}
    assert [by_id[i]["state"] for i in (1, 2, 3, 4)] == ["Pending", "Waiting", "Waiting",
                                                         "Pending"]  # fmt: skip
    assert by_id[3]["requires"] == [1, 2]
    assert status("D")["blocked"] == 0  # waiting, but on nothing that failed
    ok("do", "D")
    # b has the highest priority but must wait for a; c waits for a and b.  d may run
    # anywhere after a: once tasks prove short the worker claims a few at a time, and d
    # was the only Pending task when a finished (priorities order hand-outs, not runs)
    ran = run_order(order)
    assert sorted(ran) == ["a", "b", "c", "d"]
    assert [x for x in ran if x != "d"] == ["a", "b", "c"] and ran[0] == "a"
    assert counts("D") == {"Succeeded": 4}
    assert_db_ok(qdo_dir)


def test_failed_requirement_blocks_until_retried(qdo_dir: Path, tmp_path: Path) -> None:
    order, flag = tmp_path / "order", tmp_path / "flag"
    ok("create", "F")
    ok("add", "F", f"test -e {shlex.quote(str(flag))} && " + appender(order, "a"))
    ok("add", "F", appender(order, "b"), "--requires", "1")
    ok("do", "F")
    assert counts("F") == {"Failed": 1, "Waiting": 1}
    assert status("F")["blocked"] == 1
    assert "1 blocked by a failed or missing requirement" in ok("status", "F")
    flag.touch()
    ok("retry", "F")
    ok("do", "F")
    assert run_order(order) == ["a", "b"]
    assert counts("F") == {"Succeeded": 2}
    assert_db_ok(qdo_dir)


def test_requirements_across_queues_and_require_command(qdo_dir: Path, tmp_path: Path) -> None:
    order = tmp_path / "order"
    ok("create", "A")
    ok("create", "B")
    ok("add", "A", appender(order, "a1"))  # 1
    ok("add", "B", appender(order, "b1"), "--requires", "1")  # 2, needs a task of A
    ok("add", "B", appender(order, "b2"))  # 3
    ok("add", "B", appender(order, "b3"), "--priority", "9")  # 4
    assert ok("require", "B", "4", "--on", "3") == "task 4 now also requires 3\n"
    assert [t["state"] for t in tasks("B")] == ["Waiting", "Pending", "Waiting"]
    ok("do", "B")  # b1 waits for A
    assert run_order(order) == ["b2", "b3"]
    ok("do", "A")
    assert [t["state"] for t in tasks("B")] == ["Pending", "Succeeded", "Succeeded"]
    ok("do", "B")
    assert run_order(order) == ["b2", "b3", "a1", "b1"]
    assert_db_ok(qdo_dir)


def test_tasks_verbose_and_limit(qdo_dir: Path) -> None:
    ok("create", "V")
    ok("add", "V", "exit 3")
    ok("add", "V", "true", "--priority", "2")
    ok("add", "V", "echo later", "--requires", "1")
    ok("do", "V")
    out = ok("tasks", "V", "--verbose")
    header = out.splitlines()[0].split()
    for column in ("ID", "STATE", "PRI", "EXIT", "TRIES", "CREATED", "STARTED", "FINISHED",
                   "MESSAGE", "TASK"):  # fmt: skip
        assert column in header
    lines = out.splitlines()
    failed = next(line for line in lines if "exit 3" in line)
    assert re.match(r"\s*1\s+Failed\s+0\s+3\s+1\s", failed)
    assert len(TIME.findall(failed)) == 3  # created, started, finished
    assert "exit code 3" in failed
    waiting = next(line for line in lines if "echo later" in line)
    assert re.match(r"\s*3\s+Waiting\s+0\s+-\s+0\s", waiting)
    assert len(TIME.findall(waiting)) == 1  # only created
    assert ok("tasks", "V", "-v") == out
    assert len(tasks("V", "--limit", "2")) == 2
    assert ok("tasks", "V", "--state", "Running").splitlines()[-1] == "(no tasks in state Running)"

    [t] = tasks("V", "--state", "Failed")
    assert (t["exitcode"], t["attempts"], t["message"]) == (3, 1, "exit code 3")
    assert t["started"] and t["finished"] and t["worker"]


def test_tasks_negative_limit_is_refused(qdo_dir: Path) -> None:
    ok("create", "T")
    ok("add", "T", "true")
    proc = run_qdo("tasks", "T", "--limit", "-1")
    assert "Traceback" not in proc.stderr
    assert proc.returncode != 0


def test_tasks_json_has_only_task_fields(qdo_dir: Path) -> None:
    ok("create", "J")
    ok("add", "J", "true")
    [t] = tasks("J")
    assert set(t) == TASK_FIELDS


def test_log_and_tail(qdo_dir: Path) -> None:
    ok("create", "L")
    ok("add", "L", "for i in 1 2 3 4 5; do echo line$i; done; echo oops >&2")
    ok("add", "L", "echo never")
    ok("pause", "L")
    assert ok("do", "L").startswith("ran 0 tasks")  # paused: nothing runs
    assert status("L")["state"] == "Paused"
    line = fails("log", "L", "1")
    assert "no log yet" in line and "Pending" in line
    ok("resume", "L")
    ok("do", "L")
    assert ok("log", "L", "1") == "line1\nline2\nline3\nline4\nline5\noops\n"
    assert ok("log", "L", "1", "--tail", "2") == "line5\noops\n"
    assert ok("log", "L", "1", "--tail", "100") == ok("log", "L", "1")
    assert "no task of queue 'L' with id 99" in fails("log", "L", "99")
    usage_error("log", "L", "1", "--tail", "x")
    assert_db_ok(qdo_dir)


def test_log_tail_without_final_newline(qdo_dir: Path) -> None:
    ok("create", "T")
    ok("add", "T", "printf 'a\\nb\\nc'")
    ok("do", "T")
    assert ok("log", "T", "1") == "a\nb\nc"
    assert ok("log", "T", "1", "--tail", "1") == "c"


def test_log_tail_negative_is_refused(qdo_dir: Path) -> None:
    ok("create", "T")
    ok("add", "T", "echo a; echo b")
    ok("do", "T")
    proc = run_qdo("log", "T", "1", "--tail", "-1")
    assert proc.returncode != 0


# -- 3. bad input: one line, non-zero exit, nothing changed -----------------------------------
@pytest.fixture
def populated(qdo_dir: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Queue Q with tasks 1 <- 2 <- 3 (each requires the previous), queue Other empty."""
    ok("create", "Q")
    ok("add", "Q", "echo one")
    ok("add", "Q", "echo two", "--requires", "1")
    ok("add", "Q", "echo three", "--requires", "2")
    ok("create", "Other")
    snap = snapshot(qdo_dir)
    assert snap is not None
    return snap


UNKNOWN_QUEUE_COMMANDS = [
    ["status", "Nope"], ["status", "Nope", "--json"], ["tasks", "Nope"], ["do", "Nope"],
    ["add", "Nope", "echo x"], ["require", "Nope", "2", "--on", "1"], ["pause", "Nope"],
    ["resume", "Nope"], ["retry", "Nope"], ["rerun", "Nope", "--force"], ["recover", "Nope"],
    ["delete", "Nope", "--force"], ["log", "Nope", "1"],
]  # fmt: skip


def test_unknown_queue(qdo_dir: Path, populated: dict[str, Any]) -> None:
    for args in UNKNOWN_QUEUE_COMMANDS:
        line = fails(*args)
        assert "no queue named 'Nope'" in line, args
    assert snapshot(qdo_dir) == populated
    assert_db_ok(qdo_dir)


def test_create_existing_queue(qdo_dir: Path, populated: dict[str, Any]) -> None:
    assert "already exists" in fails("create", "Q")
    assert snapshot(qdo_dir) == populated


BAD_NAMES = [" ", "a b", "a/b", "../x", "x" * 101, "", "é", "队列", "tab\there", "a\n", "a;b"]


def test_bad_queue_names(qdo_dir: Path, tmp_path: Path, populated: dict[str, Any]) -> None:
    file = write(tmp_path / "t.txt", "echo x\n")
    for name in BAD_NAMES:
        for args in (["create", name], ["load", name, str(file)], ["add", name, "echo x"]):
            assert "invalid queue name" in fails(*args), args
    assert "invalid queue name" in fails("status", "a/b")
    assert snapshot(qdo_dir) == populated
    # the edges of what is allowed
    for name in ["x" * 100, "a.b_c-D9", "0"]:
        ok("create", name)
    assert_db_ok(qdo_dir)


def test_priority_not_an_integer(qdo_dir: Path, tmp_path: Path, populated: dict[str, Any]) -> None:
    file = write(tmp_path / "t.txt", "echo x\n")
    for value in ["x", "1.5", "", "1e3", "0x10"]:
        assert "priority" in usage_error("add", "Q", "echo x", "--priority", value)
        assert "priority" in usage_error("load", "Q", str(file), "--priority", value)
        assert "priority" in usage_error("load", "New", str(file), "--priority", value)
    for value in [str(2**63), str(-(2**63) - 1)]:
        assert "64-bit" in usage_error("add", "Q", "echo x", "--priority", value)
        assert "64-bit" in usage_error("load", "New", str(file), "--priority", value)
    assert snapshot(qdo_dir) == populated
    ok("add", "Q", "echo max", "--priority", str(2**63 - 1))  # the largest is fine


def test_load_bad_priority_message_names_no_line(qdo_dir: Path, tmp_path: Path) -> None:
    file = write(tmp_path / "t.txt", "echo x\n")
    assert "line 0" not in usage_error("load", "New", str(file), "--priority", str(2**63))


def test_requires_unknown_or_malformed(qdo_dir: Path, populated: dict[str, Any]) -> None:
    assert "no required task with id 99" in fails("add", "Q", "echo x", "--requires", "99")
    assert "99" in fails("add", "Q", "echo x", "--requires", "1,99")
    assert "no task of queue 'Q' with id 77" in fails("require", "Q", "77", "--on", "1")
    assert "no required task with id 99" in fails("require", "Q", "3", "--on", "99")
    for value in ["0", "-1", "a", "1,,x", ","]:
        usage_error("add", "Q", "echo x", "--requires", value)
    usage_error("require", "Q", "x", "--on", "1")
    usage_error("require", "Q", "1")  # --on is required
    assert snapshot(qdo_dir) == populated


def test_requirement_cycles(qdo_dir: Path, populated: dict[str, Any]) -> None:
    assert "cycle" in fails("require", "Q", "1", "--on", "2")  # 2 requires 1
    assert "cycle" in fails("require", "Q", "1", "--on", "3")  # 3 -> 2 -> 1
    assert "cycle" in fails("require", "Q", "1", "--on", "1")  # itself
    assert "cycle" in fails("require", "Q", "2", "--on", "2")
    assert "cycle" in fails("require", "Q", "1", "--on", "3,2")
    assert snapshot(qdo_dir) == populated
    ok("require", "Q", "3", "--on", "1")  # already implied: no cycle
    assert_db_ok(qdo_dir)


def test_require_checks_the_queue(qdo_dir: Path, populated: dict[str, Any]) -> None:
    ok("add", "Other", "echo other")  # 4
    proc = run_qdo("require", "Other", "1", "--on", "4")  # task 1 is in Q, not Other
    assert tasks("Q")[0]["requires"] == []
    assert proc.returncode == 1


def test_add_bad_payloads(qdo_dir: Path, populated: dict[str, Any]) -> None:
    assert "not a JSON value" in fails("add", "Q", "{bad", "--json")
    assert "not a JSON value" in fails("add", "Q", "", "--json")
    assert "None" in fails("add", "Q", "null", "--json")
    # (numbers of more digits than Python reads, and nesting deeper: not a traceback)
    assert "digits" in fails("add", "Q", '{"n": ' + "9" * 5000 + "}", "--json")
    assert "too deep" in fails("add", "Q", "[" * 5000 + "]" * 5000, "--json")
    assert "empty" in fails("add", "Q", "")
    assert "empty" in fails("add", "Q", "   ")
    assert snapshot(qdo_dir) == populated


def test_numbers_past_what_qdo_holds_are_usage_errors(
    qdo_dir: Path, populated: dict[str, Any]
) -> None:
    # a lease of 1e308 s left its task Running for ever and every qdo tasks crashed (no
    # datetime holds its end); a timeout of 1e10 s failed every task; ids and counts
    # past 64 bits, and a port past 65535, were tracebacks
    big = str(2**63)
    for args in (["do", "Q", "--lease", "1e308"], ["do", "Q", "--timeout", "1e10"],
                 ["add", "Q", "echo x", "--timeout", "1e308"], ["retry", "Q", "--id", big],
                 ["cancel", "Q", "--id", f"1-{big}"], ["tasks", "Q", "--limit", "9" * 20],
                 ["log", "Q", big], ["serve", "--port", "65536"],
                 ["launch", "Q", "2000", "--profile", "local", "--dry-run"],
                 ["launch", "Q", "9" * 20, "--dry-run"]):  # fmt: skip
        usage_error(*args)
    assert "at most 10,000 jobs" in fails("launch", "Q", "1", "--jobs", "1000000", "--dry-run")
    assert "at most" in fails("status", "Q", env={"QDO_LEASE": "1e308"})
    assert "at most" in fails("status", "Q", env={"QDO_LEASE": "nan"})
    assert snapshot(qdo_dir) == populated
    with pytest.raises(InvalidInput, match="up to a year"):
        qdo.connect("Q").get(lease=1e308)
    with pytest.raises(InvalidInput, match="up to a year"):
        qdo.connect("Q").add("echo x", timeout=1e10)
    assert snapshot(qdo_dir) == populated


def test_an_options_value_of_two_dashes_is_judged_as_written(
    qdo_dir: Path, populated: dict[str, Any]
) -> None:
    # argparse (3.11, 3.12) took the value of --lease=-- for the end of the options and
    # gave the option an empty list: qdo do crashed in its loop, retry --id=-- retried
    # nothing and said so with exit 0
    for args in (["do", "Q", "--lease=--"], ["retry", "Q", "--id=--"],
                 ["cancel", "Q", "--id=--"], ["tasks", "Q", "--limit=--"],
                 ["set", "Q", "--max-retries=--"]):  # fmt: skip
        usage_error(*args)
    assert snapshot(qdo_dir) == populated


def test_load_bad_files(qdo_dir: Path, tmp_path: Path, populated: dict[str, Any]) -> None:
    good = "echo 1\necho 2\n"
    cases: list[tuple[str, str | bytes | None, list[str], list[str]]] = [
        ("missing.txt", None, [], ["does not exist"]),
        ("empty.txt", "", [], ["holds no tasks"]),
        ("comments.txt", "# one\n\n   \n# two\n", [], ["holds no tasks"]),
        ("nul.txt", b"echo 1\necho \x00 2\necho 3\n", [], ["line 2", "NUL", "nothing was loaded"]),
        ("latin1.txt", "echo 1\necho caf\xe9\necho 3\n".encode("latin-1"), [],
         ["line 2", "UTF-8", "nothing was loaded"]),
        ("binary.bin", bytes(range(256)) * 4, [], ["line 1", "nothing was loaded"]),
        ("huge.txt", good + "echo " + "x" * 1_100_000 + "\n", [], ["line 3", "larger than"]),
        ("bad.jsonl", '{"a": 1}\n{bad\n', ["--json"], ["line 2", "JSON", "nothing was loaded"]),
        ("null.jsonl", '{"a": 1}\nnull\n', ["--json"], ["line 2", "nothing was loaded"]),
        ("digits.jsonl", '{"a": 1}\n{"n": ' + "9" * 5000 + "}\n", ["--json"],
         ["line 2", "digits", "nothing was loaded"]),
        ("deep.jsonl", '{"a": 1}\n' + "[" * 5000 + "]" * 5000 + "\n", ["--json"],
         ["line 2", "too deep", "nothing was loaded"]),
    ]  # fmt: skip
    (tmp_path / "a-directory").mkdir()
    assert "is a directory" in fails("load", "New", str(tmp_path / "a-directory"))
    for name, content, options, fragments in cases:
        path = tmp_path / name
        if content is not None:
            write(path, content)
        for queue in ("New", "Q"):
            line = fails("load", queue, str(path), *options)
            for fragment in fragments:
                assert fragment in line, (name, line)
            assert "task #" not in line, line  # (the line says which: "line 3: task #2")
    assert "holds no tasks" in fails("load", "New", "-", input="")
    assert "holds no tasks" in fails("load", "New", "-", input="# only a comment\n\n")
    assert snapshot(qdo_dir) == populated  # no task added, queue New never created
    assert_db_ok(qdo_dir)


def test_empty_file_creates_nothing_in_a_fresh_dir(qdo_dir: Path, tmp_path: Path) -> None:
    empty = write(tmp_path / "empty.txt", "")
    fails("load", "New", str(empty))
    assert queues() == []


def test_dot_dot_queue_logs_stay_in_log_dir(qdo_dir: Path) -> None:
    if run_qdo("create", "..").returncode != 0:
        return  # refusing the name is fine too
    ok("add", "..", "echo up")
    ok("do", "..")
    [t] = tasks("..")
    log_dir = (qdo_dir / "logs").resolve()
    assert Path(t["log"]).resolve().is_relative_to(log_dir), t["log"]


# -- 3b. databases that are not (usable) qdo databases ----------------------------------------
DB_COMMANDS = [["list"], ["create", "X"], ["status", "X"], ["add", "X", "echo x"]]


def _refuses_db(qdo_dir: Path, tmp_path: Path, db: str, *fragments: str) -> None:
    path = qdo_dir / db
    before = digest(path)
    file = write(tmp_path / "t.txt", "echo x\n")
    for args in [*DB_COMMANDS, ["load", "X", str(file)]]:
        line = fails(*args, env={"QDO_DB_NAME": db})
        for fragment in fragments:
            assert fragment in line, (args, line)
        assert str(path) in line
    assert digest(path) == before, "the database file was changed"
    # `qdo config` does not need the database: it still works, to help find the problem
    assert f"database: {path}" in ok("config", env={"QDO_DB_NAME": db})


def test_garbage_database_file(qdo_dir: Path, tmp_path: Path, sqlite_only: None) -> None:
    qdo_dir.mkdir()
    write(qdo_dir / "garbage.db", b"\x00\xffnot sqlite at all\n" * 300)
    _refuses_db(qdo_dir, tmp_path, "garbage.db", "is not a qdo database")
    assert sorted(p.name for p in qdo_dir.iterdir() if p.name.startswith("garbage")) == [
        "garbage.db"
    ]


def _foreign_db(qdo_dir: Path) -> Path:
    qdo_dir.mkdir(exist_ok=True)
    path = qdo_dir / "other.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT)")
        conn.execute("INSERT INTO accounts (owner) VALUES ('alice'), ('bob')")
        conn.commit()
    return path


def test_foreign_sqlite_database_is_refused(
    qdo_dir: Path, tmp_path: Path, sqlite_only: None
) -> None:
    path = _foreign_db(qdo_dir)
    file = write(tmp_path / "t.txt", "echo x\n")
    for args in [*DB_COMMANDS, ["load", "X", str(file)]]:
        line = fails(*args, env={"QDO_DB_NAME": "other.db"})
        assert "is not a qdo database" in line and "accounts" in line, line
    with closing(sqlite3.connect(path)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert tables == ["accounts"]
        assert conn.execute("SELECT owner FROM accounts").fetchall() == [("alice",), ("bob",)]


def test_foreign_sqlite_database_is_left_unchanged(
    qdo_dir: Path, tmp_path: Path, sqlite_only: None
) -> None:
    _foreign_db(qdo_dir)
    _refuses_db(qdo_dir, tmp_path, "other.db", "is not a qdo database")


def test_schema_too_new(qdo_dir: Path, tmp_path: Path, sqlite_only: None) -> None:
    ok("create", "X")
    with closing(sqlite3.connect(qdo_dir / "qdo.sqlite")) as conn:
        conn.execute("UPDATE qdo_schema SET version = 99")
        conn.commit()
    _refuses_db(qdo_dir, tmp_path, "qdo.sqlite", "schema version 99", "upgrade qdo")
    with closing(sqlite3.connect(qdo_dir / "qdo.sqlite")) as conn:
        assert conn.execute("SELECT version FROM qdo_schema").fetchall() == [(99,)]
        assert conn.execute("SELECT name FROM queues").fetchall() == [("X",)]


def test_database_path_is_a_directory(qdo_dir: Path, sqlite_only: None) -> None:
    (qdo_dir / "adir").mkdir(parents=True)
    assert "adir" in fails("list", env={"QDO_DB_NAME": "adir"})
    assert list((qdo_dir / "adir").iterdir()) == []


# -- 5. the command itself --------------------------------------------------------------------
def test_version() -> None:
    assert ok("--version") == f"qdo {qdo.__version__}\n"


def test_no_command_is_a_usage_error(qdo_dir: Path) -> None:
    proc = run_qdo()
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: qdo")
    assert "Traceback" not in proc.stderr
    assert not qdo_dir.exists()  # nothing was written


def test_help_lists_the_commands() -> None:
    out = ok("--help")
    for command in (
        "create",
        "load",
        "add",
        "require",
        "list",
        "status",
        "tasks",
        "do",
        "pause",
        "resume",
        "retry",
        "rerun",
        "recover",
        "delete",
        "log",
        "config",
    ):
        assert re.search(rf"^\s+{command}\s", out, re.M), command


def test_unknown_command_and_option() -> None:
    usage_error("frobnicate")
    usage_error("list", "--bogus")
    usage_error("tasks", "Q", "--state", "Sleeping")


@pytest.fixture
def big_queue(qdo_dir: Path) -> str:
    ok("load", "Big", "-", input="".join(f"echo {i}\n" for i in range(5000)))
    return "Big"


def test_broken_pipe_in_a_shell_pipeline(big_queue: str) -> None:
    qdo_cmd = f"{shlex.quote(sys.executable)} -m qdo"
    for args in ("tasks Big", "tasks Big --json", "tasks Big --verbose"):
        proc = subprocess.run(
            ["bash", "-c", f'{qdo_cmd} {args} | head -1; echo "qdo exit ${{PIPESTATUS[0]}}" >&2'],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert len(proc.stdout.splitlines()) == 1
        assert proc.stderr == "qdo exit 0\n", proc.stderr


def test_broken_pipe_reader_gone(big_queue: str) -> None:
    for args in (["tasks", "Big"], ["tasks", "Big", "--json"], ["list"], ["status", "Big"],
                 ["status", "Big", "--json"], ["config"], ["--version"]):  # fmt: skip
        read, write_end = os.pipe()
        os.close(read)  # the reader left before qdo wrote anything
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "qdo", *args], stdout=write_end, stderr=subprocess.PIPE,
                text=True, timeout=60,
            )  # fmt: skip
        finally:
            os.close(write_end)
        assert proc.stderr == "", (args, proc.stderr)
        assert proc.returncode == 0, args


def test_bad_values_get_one_clear_error_and_change_nothing(tmp_path: Path) -> None:
    """Issue 12 item 6: each of these gave a traceback, a raw errno message, or changed
    something (the queue was created before its retry budget overflowed)."""
    assert "max_retries must be an integer from 0" in fails(
        "create", "Q", "--max-retries", str(2**40)
    )
    assert "expected a number from 0" in usage_error(
        "create", "Q", "--max-retries", "1000000000000000000000"
    )
    # (it printed the list once, and ended)
    assert "--watch follows one queue" in fails("status", "--watch")
    # (abc said "a number of at least 0", and 0 then "from 1 to 65535")
    for value in ("abc", "0", "70000"):
        assert "expected a port number from 1 to 65535" in usage_error("serve", "--port", value)
    # (-1 said "a number from 0", and 0 then "at least 1")
    assert "expected a number of at least 1, got '-1'" in usage_error("do", "Q", "--workers", "-1")
    assert "no queue" in fails("status", "Q")  # it was not created
    ok("create", "Q")
    for args in (["status", "Q", "--watch", "--interval", "-1"],
                 ["do", "Q", "--workers", "100000"], ["do", "Q", "--lease", "0"],
                 ["do", "Q", "--timeout", "0"], ["add", "Q", "x", "--timeout", "0"]):  # fmt: skip
        line = usage_error(*args)
        assert "expected" in line or "at most" in line, line
    a_file = tmp_path / "plain-file"
    a_file.write_text("")
    assert "is a file, not a directory" in fails("list", env={"QDO_DIR": str(a_file)})
    assert "is a directory" in fails("list", env={"QDORC_LOCATION": str(tmp_path)})
    assert "no directory" in fails("dump", "Q", str(tmp_path / "missing" / "q.qdo"))


def test_fsck_finds_a_count_that_is_off_and_repairs_it(qdo_dir: Path) -> None:
    from qdo.models import State
    from tests.integration.test_store_contract import _set_kept_count

    q = qdo.create("F")
    q.add_multiple(["true"] * 3)
    healthy = run_qdo("fsck")
    assert healthy.returncode == 0 and "no problems" in healthy.stderr, healthy.stderr
    assert json.loads(run_qdo("fsck", "--json", check=True).stdout) == []
    _set_kept_count(q.store, "F", State.PENDING, 5)
    found = run_qdo("fsck")
    assert found.returncode == 1 and "F: 3 Pending tasks, counted as 5" in found.stdout
    assert json.loads(run_qdo("fsck", "--json").stdout) == [found.stdout.strip()]
    repaired = run_qdo("fsck", "--repair")
    assert repaired.returncode == 0 and "repaired: " in repaired.stderr, repaired.stderr
    assert run_qdo("fsck").returncode == 0
    assert q.status()["ntasks"]["Pending"] == 3


# -- the parser of one command ---------------------------------------------------------------
def _help_of(parser: Any, name: str) -> str:
    (commands,) = (a for a in parser._actions if a.dest == "command")
    return str(commands.choices[name].format_help())


def test_a_command_parsed_alone_has_the_whole_parsers_arguments() -> None:
    """``qdo X ...`` makes X's parser alone (the others' cost more than some commands
    take): its help, defaults and parse must be the whole parser's."""
    from qdo.cli import COMMANDS, _command_named, build_parser

    whole = build_parser()
    for name in COMMANDS:
        alone = build_parser(name)
        assert _help_of(alone, name) == _help_of(whole, name), name
    argv = ["log", "q", "7", "--tail", "3"]
    assert vars(build_parser("log").parse_args(argv)) == vars(whole.parse_args(argv))
    assert _command_named(["--user", "ann", "-v", "log", "q", "7"]) == "log"
    assert _command_named(["--user=ann", "status"]) == "status"
    assert _command_named(["--user", "status"]) is None  # (status is the user's name)
    assert _command_named(["lgo", "q"]) is None
    assert _command_named(["--help"]) is None


def test_a_misspelt_command_lists_every_command(qdo_dir: Path) -> None:
    from qdo.cli import COMMANDS

    proc = run_qdo("lgo", "q", "7")
    assert proc.returncode == 2
    assert all(repr(name) in proc.stderr for name in COMMANDS), proc.stderr
    assert "--tail" in ok("--user", os.environ.get("USER", "root"), "log", "--help")


# What a short command loads, and not only how fast: a module that comes back onto the
# read path costs every `qdo add` of a shell loop a few milliseconds again.
_LOADED = """
import sys
import qdo.cli
code = qdo.cli.main(sys.argv[1:])
print(" ".join(sorted({"logging", "dataclasses", "inspect", "traceback", "socket"}
                      & set(sys.modules))))
sys.exit(code)
"""


def test_a_short_command_loads_neither_logging_nor_dataclasses(qdo_dir: Path, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("psycopg itself loads logging and dataclasses")
    ok("create", "Q")
    ok("add", "Q", "echo hello")
    ok("do", "Q", "--workers", "1")
    said = {}
    for argv in (["log", "Q", "1"], ["status", "Q"], ["add", "Q", "echo again"]):
        proc = subprocess.run([sys.executable, "-c", _LOADED, *argv], capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        *said[argv[0]], loaded = proc.stdout.split("\n")[:-1]
        assert loaded == "", f"qdo {' '.join(argv)} loaded {loaded}"
    assert said["log"] == ["hello"]  # (the command's own output, before the modules')


def test_the_library_says_nothing_and_the_command_line_says_its_warnings(
    qdo_dir: Path,
) -> None:
    """A library warning (through qdo.runtime.Log, which loads logging at its first
    message) is silent in a program that did not set up logging, and on stderr under
    the command line; ``-v`` adds the library's info messages."""
    warn = (
        "from qdo.runtime import Log, show_logs\n"
        "import sys\n"
        "if sys.argv[1:] != ['quiet']: show_logs(sys.argv[1:] == ['debug'])\n"
        "Log('qdo.test').info('an info')\n"
        "Log('qdo.test').warning('a warning')\n"
    )
    said = {
        how: subprocess.run(
            [sys.executable, "-c", warn, how], capture_output=True, text=True, timeout=60
        ).stderr  # fmt: skip
        for how in ("quiet", "cli", "debug")
    }
    assert said == {"quiet": "", "cli": "a warning\n", "debug": "an info\na warning\n"}
