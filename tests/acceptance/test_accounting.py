"""What each attempt used (issue 15): CPU time and peak memory, measured by the agent
that ran it, for shell tasks and ``--func`` tasks; ``qdo stats``; archives keep them."""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path

import pytest

import qdo
from qdo.models import Attempt
from tests.conftest import run_qdo

pytestmark = pytest.mark.backends

MIB = 1 << 20
PY = sys.executable
#: a task that holds 200 MiB (every page touched), then exits
ALLOCATE = f"{PY} -c 'b = bytearray(200 << 20); b[::4096] = bytes(len(b) // 4096 * 1 or 1)'"
#: one that burns one second of CPU, however long that takes on a busy machine
SPIN = f"{PY} -c 'import time\nwhile time.process_time() < 1.0: pass'"


def last_attempt(queue: str, task_id: int) -> Attempt:
    (task,) = [t for t in qdo.connect(queue).tasks(history=True) if t.id == task_id]
    return task.history[-1]


def test_shell_tasks_report_their_cpu_and_peak_memory() -> None:
    q = qdo.create("Use")
    big = q.add(ALLOCATE)
    spin = q.add(SPIN)
    nap = q.add("sleep 0.3")
    run_qdo("do", "Use", "--workers", "2", check=True)
    assert q.status()["ntasks"]["Succeeded"] == 3
    allocated = last_attempt("Use", big)
    assert allocated.rss is not None and allocated.rss >= 200 * MIB, allocated
    spun = last_attempt("Use", spin)
    assert spun.cpu is not None and spun.duration is not None
    # a second of CPU, and no more than its run time (one thread; the start of a Python
    # is in both)
    assert 1.0 <= spun.cpu <= spun.duration + 0.05, spun
    slept = last_attempt("Use", nap)
    assert slept.cpu is not None and slept.cpu < 0.2 and slept.rss is not None
    assert slept.rss < 200 * MIB
    # shown by qdo tasks --verbose, and in its --json
    text = run_qdo("tasks", "Use", "--verbose", check=True).stdout
    assert "CPU" in text.splitlines()[0] and "RSS" in text.splitlines()[0]
    assert any(line.split()[0] == str(big) and "M " in line for line in text.splitlines())
    rows = [json.loads(line) for line in run_qdo("tasks", "Use", "--json", "--verbose",
                                                  check=True).stdout.splitlines()]  # fmt: skip
    assert rows[0]["history"][-1]["rss"] >= 200 * MIB


FUNCS = """
import time

def allocate(mib):
    b = bytearray(mib << 20)
    b[::4096] = bytes(len(b) // 4096)

def churn(mib=0):
    if mib:
        b = bytearray(mib << 20)
        b[::4096] = bytes(len(b) // 4096)
        del b  # (given back to the system before the call returns)

def spin(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
"""


def test_func_tasks_report_what_each_call_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "qdo_use_funcs.py").write_text(FUNCS.replace("allocate", "work_alloc"))
    (tmp_path / "qdo_spin_funcs.py").write_text(FUNCS)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    a = qdo.create("Alloc")
    big, small = a.add({"mib": 200}), a.add({"mib": 1})
    run_qdo("do", "Alloc", "--workers", "1", "--func", "qdo_use_funcs:work_alloc", check=True)
    # one worker process ran both, the big one first: each call's peak is its own
    assert last_attempt("Alloc", big).rss >= 200 * MIB  # type: ignore[operator]
    assert last_attempt("Alloc", small).rss < 150 * MIB  # type: ignore[operator]
    s = qdo.create("Spin")
    spin = s.add({"seconds": 1.0})
    run_qdo("do", "Spin", "--func", "qdo_spin_funcs:spin", check=True)
    spun = last_attempt("Spin", spin)
    assert spun.cpu is not None and spun.duration is not None
    assert 1.0 <= spun.cpu <= spun.duration + 0.05, spun


def test_a_calls_peak_is_its_own_whether_it_touched_memory_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call that made 200 MiB resident and gave it back before it returned peaked at
    200 MiB; the calls after it, which touch no new memory (their peak is then read
    more cheaply, see runners._Meter), peaked at what the process held: more than
    nothing, far less than 200 MiB."""
    (tmp_path / "qdo_churn_funcs.py").write_text(FUNCS)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    q = qdo.create("Churn")
    churned = q.add({"mib": 200})
    idle = q.add_multiple([{} for _ in range(20)])
    run_qdo("do", "Churn", "--workers", "1", "--func", "qdo_churn_funcs:churn", check=True)
    assert last_attempt("Churn", churned).rss >= 200 * MIB  # type: ignore[operator]
    peaks = [last_attempt("Churn", i).rss for i in idle]
    assert all(p is not None and 5 * MIB < p < 150 * MIB for p in peaks), peaks


def test_stats_give_percentiles_efficiency_memory_and_a_plan() -> None:
    q = qdo.create("Stats")
    empty = json.loads(run_qdo("stats", "Stats", "--json", check=True).stdout)
    assert empty["succeeded"] == 0 and empty["runtime"]["p50"] is None and empty["plan"] is None
    q.add_multiple([f"sleep 0.{i % 3}" for i in range(12)])
    run_qdo("do", "Stats", "--workers", "2", check=True)
    q.add_multiple(["true"] * 5000)  # left to run
    out = json.loads(run_qdo("stats", "Stats", "--json", check=True).stdout)
    rt = out["runtime"]
    assert out["succeeded"] == 12 and 0 <= rt["p50"] <= rt["p95"] <= rt["max"]
    assert rt["max"] >= 0.2  # the longest slept 0.2 s
    assert 0 <= out["cpu_efficiency"] < 1 and out["rss_p95"] > 0  # sleeping, mostly
    plan = out["plan"]
    assert out["left"] == 5000 and plan["workers"] >= 1
    assert plan["command"].startswith("qdo launch Stats ") and "--walltime" in plan["command"]
    text = run_qdo("stats", "Stats", check=True).stdout
    assert "12 Succeeded attempts" in text and "p95" in text and "qdo launch Stats" in text


def test_archives_keep_what_attempts_used_and_read_older_ones(tmp_path: Path) -> None:
    q = qdo.create("Arch")
    big = q.add(ALLOCATE)
    run_qdo("do", "Arch", check=True)
    path = tmp_path / "arch.qdo"
    run_qdo("dump", "Arch", str(path), check=True)
    run_qdo("restore", str(path), "--as", "Again", check=True)
    again = [t for t in qdo.connect("Again").tasks(history=True)]
    assert again[0].history[-1].rss == last_attempt("Arch", big).rss >= 200 * MIB
    # an archive of an earlier qdo: attempts without cpu and rss
    with gzip.open(path, "rb") as f:
        lines = f.read().splitlines()
    header = json.loads(lines[0])
    header["columns"]["attempt"] = header["columns"]["attempt"][:-2]
    digest = hashlib.sha256()
    old = [json.dumps(header).encode()]
    for line in lines[1:-1]:
        tag, row = json.loads(line)
        if tag == "a":
            row = row[:-2]
        old.append(json.dumps([tag, row]).encode())
    for line in old:
        digest.update(line + b"\n")
    end = json.loads(lines[-1])
    end["end"]["sha256"] = digest.hexdigest()
    old.append(json.dumps(end).encode())
    older = tmp_path / "older.qdo"
    with gzip.open(older, "wb") as f:
        f.write(b"\n".join(old) + b"\n")
    run_qdo("restore", str(older), "--as", "Older", check=True)
    (task,) = qdo.connect("Older").tasks(history=True)
    assert task.history[-1].rss is None and task.history[-1].state == "Succeeded"
