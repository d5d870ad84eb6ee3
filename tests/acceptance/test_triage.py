"""Failure triage in the command line (issue 15): ``qdo why`` groups, ``qdo retry
--group/--id``, ``qdo cancel --id``, and ``qdo wait`` with its exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import qdo
from tests.conftest import run_qdo

pytestmark = pytest.mark.backends


def why(queue: str) -> list[dict[str, object]]:
    return json.loads(run_qdo("why", queue, "--json", check=True).stdout)  # type: ignore[no-any-return]


def states(queue: str) -> dict[int, str]:
    return {t.id: t.state.value for t in qdo.connect(queue).tasks()}


def test_failures_are_grouped_by_what_went_wrong_and_retried_by_group(tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    q = qdo.create("W")
    missing = q.add_multiple([f"cat {tmp_path}/input-{i}.fits" for i in range(4)])
    exit3 = q.add_multiple([f"test -e {flag} || exit 3" for _ in range(2)])
    ok = q.add("true")
    run_qdo("do", "W", check=True)
    groups = why("W")
    # the four cat failures are one group (their file names differ only by a number):
    # a shell task's message says only "exit code 1", so its last log line stands in
    assert [g["count"] for g in groups] == [4, 2]
    cat, three = groups
    assert "No such file or directory" in str(cat["signature"]) and cat["exitcode"] == 1
    assert cat["examples"] == missing and any("input-" in line for line in cat["lines"])  # type: ignore[attr-defined]
    assert three["signature"] == "Failed exit 3: exit code N" and three["exitcode"] == 3
    text = run_qdo("why", "W", check=True).stdout
    assert f"{cat['group']}  4 tasks  Failed exit 1:" in text and "qdo retry W --group G" in text
    # retry one group: only its tasks run again
    flag.touch()
    out = run_qdo("retry", "W", "--group", str(three["group"]), check=True).stdout
    assert "2 Failed or Killed tasks of W will run again" in out
    assert [states("W")[i] for i in exit3] == ["Pending", "Pending"]
    assert all(states("W")[i] == "Failed" for i in missing)
    run_qdo("do", "W", check=True)
    assert [g["count"] for g in why("W")] == [4] and states("W")[ok] == "Succeeded"
    unknown = run_qdo("retry", "W", "--group", "nosuchgr")
    assert unknown.returncode == 1 and "no failure group nosuchgr" in unknown.stderr
    # by id: 5,7-9 style
    first, _, third, fourth = missing
    out = run_qdo("retry", "W", "--id", f"{first},{third}-{fourth}", check=True).stdout
    assert "3 Failed or Killed" in out
    assert [states("W")[i] for i in missing] == ["Pending", "Failed", "Pending", "Pending"]
    bad = run_qdo("retry", "W", "--id", "9-2")
    assert bad.returncode == 2 and "from low to high" in bad.stderr


def test_a_failure_that_printed_nul_bytes_is_reported_and_grouped() -> None:
    # the last line of a failed task's output names its failure, and here it holds a NUL,
    # which PostgreSQL's text cannot hold: the agent's report of the whole batch failed
    # (its tasks stayed Running), and on SQLite a big batch cut the message at the NUL
    q = qdo.create("N")
    bad = q.add_multiple([f"printf 'bad\\000input {i}\\n'; exit 3" for i in range(3)])
    ok = q.add("true")
    run_qdo("do", "N", check=True)
    assert states("N") == {**dict.fromkeys(bad, "Failed"), ok: "Succeeded"}
    (group,) = why("N")
    assert group["signature"] == "Failed exit 3: bad\ufffdinput N" and group["count"] == 3
    assert run_qdo("log", "N", str(bad[0]), check=True).stdout == "bad\x00input 0\n"


def test_why_shows_what_a_task_printed_without_letting_it_drive_the_terminal() -> None:
    # a failed task's last line went to the terminal as it was: it could retitle the
    # window (OSC) or clear the screen (CSI) of whoever ran qdo why
    q = qdo.create("Esc")
    q.add("printf '\\033]0;owned\\007\\033[2Jgone\\n'; exit 5")
    run_qdo("do", "Esc", check=True)
    text = run_qdo("why", "Esc", check=True).stdout
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b]0;owned\\x07\\x1b[2Jgone" in text  # (shown, escaped)


def test_a_call_that_raised_odd_text_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an exception's text with a lone surrogate (a file name read with surrogateescape)
    # made the agent's report of the whole batch fail: the agent stopped, its tasks
    # stayed Running, and after their leases ran out the innocent ones were Killed too
    (tmp_path / "qdo_odd_funcs.py").write_text(
        "def f(i):\n"
        "    if i % 50 == 7:\n"
        "        raise ValueError('cannot read caf\\udce9-%d.fits' % i + 'x' * 100_000)\n"
        "    return i\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    q = qdo.create("Odd")
    ids = q.add_multiple([{"i": i} for i in range(200)])
    run_qdo("do", "Odd", "--func", "qdo_odd_funcs:f", "--workers", "2", check=True)
    bad = {ids[i] for i in range(200) if i % 50 == 7}
    assert states("Odd") == {i: "Failed" if i in bad else "Succeeded" for i in ids}
    (group,) = why("Odd")
    assert str(group["signature"]).startswith("Failed exit 1: ValueError: cannot read caf\ufffd-N")
    assert group["count"] == 4
    # (and the end of its 100,000 characters is cut: a task's output is for its log)
    message = qdo.connect("Odd").tasks(state="Failed")[0].message or ""
    assert message.endswith(" characters cut)") and len(message) < 70_000


def test_cancel_kills_tasks_by_id_and_stops_a_running_one(tmp_path: Path) -> None:
    q = qdo.create("C")
    long = q.add("sleep 600")
    pending = q.add_multiple(["true"] * 3)
    # (a short lease: the agent looks at it, and finds it gone, every second)
    agent = subprocess.Popen([sys.executable, "-m", "qdo", "do", "C", "--workers", "1",
                              "--lease", "3"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = __import__("time").monotonic() + 60
        while states("C")[long] != "Running" or not q.tasks(state="Running")[0].started:
            assert __import__("time").monotonic() < deadline, "the long task never started"
            __import__("time").sleep(0.05)
        refused = run_qdo("cancel", "C", "--id", f"{long},999999")
        assert refused.returncode == 1 and "no task 999999" in refused.stderr
        assert states("C")[long] == "Running"  # nothing cancelled
        out = run_qdo("cancel", "C", "--id", f"{long},{pending[0]}", check=True).stdout
        assert "2 tasks of C cancelled" in out
        # the agent finds the lease gone, stops the sleep, and runs the rest
        agent.wait(timeout=120)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    final = states("C")
    assert final[long] == "Killed" and final[pending[0]] == "Killed"
    assert [final[i] for i in pending[1:]] == ["Succeeded", "Succeeded"]
    (task,) = [t for t in qdo.connect("C").tasks(history=True) if t.id == long]
    assert "cancelled" in (task.message or "")


def test_wait_exits_when_nothing_is_left_and_says_how_it_went(tmp_path: Path) -> None:
    q = qdo.create("Wt")
    q.add_multiple(["true"] * 3)
    timed_out = run_qdo("wait", "Wt", "--timeout", "0.2", "--interval", "0.05")
    assert timed_out.returncode == 124 and "3 tasks still to run" in timed_out.stdout
    argv = [sys.executable, "-m", "qdo", "wait", "Wt", "--json", "--interval", "0.05"]
    waiter = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    run_qdo("do", "Wt", check=True)
    out, _ = waiter.communicate(timeout=60)
    assert waiter.returncode == 0 and json.loads(out)["exit"] == 0
    # a failure, and a task blocked by it: nothing can run, and it says so
    bad = q.add("exit 4")
    q.add("true", requires=[bad])
    run_qdo("do", "Wt", check=True)
    done = run_qdo("wait", "Wt")
    assert done.returncode == 1 and "1 Failed" in done.stdout and "1 blocked" in done.stdout
