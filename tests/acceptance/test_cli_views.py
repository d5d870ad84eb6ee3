"""The command line for terminals and scripts (issue 15): ``qdo tasks`` limits by
default, ``qdo status --watch`` ends when the queue is done, the bar of ``qdo do``
fits 80 columns (under a real pty), ``qdo trace`` writes a Perfetto trace."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import qdo
from tests.conftest import run_qdo


def test_tasks_shows_a_page_by_default_aligned_past_id_9999() -> None:
    q = qdo.create("Many")
    q.add_multiple([f"echo {i}" for i in range(10_050)])
    out = run_qdo("tasks", "Many", check=True).stdout.splitlines()
    assert len(out) == 1 + 1000 + 1 and out[-1].startswith("(the first 1,000; --limit N")
    every = run_qdo("tasks", "Many", "--all", check=True).stdout.splitlines()
    assert len(every) == 1 + 10_050 and not every[-1].startswith("(")
    # the TASK column starts at the same place on every line, ids of 1 to 5 digits
    starts = {line.index("echo") for line in every[1:]}
    assert len(starts) == 1, sorted(starts)[:5]
    assert len(run_qdo("tasks", "Many", "--limit", "5", check=True).stdout.splitlines()) == 7
    lines = run_qdo("tasks", "Many", "--json", check=True).stdout.splitlines()
    assert len(lines) == 10_050  # scripts get everything


def test_status_watch_shows_rate_and_time_and_ends_when_done() -> None:
    q = qdo.create("Watched")
    q.add_multiple(["sleep 0.01"] * 200)
    watch = subprocess.Popen([sys.executable, "-m", "qdo", "status", "Watched", "--watch",
                              "--interval", "0.2", "--json"], stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
    run_qdo("do", "Watched", "--workers", "2", check=True)
    out, _ = watch.communicate(timeout=60)  # it ends by itself: nothing is left
    assert watch.returncode == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[-1]["left"] == 0 and rows[-1]["ntasks"]["Succeeded"] == 200
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d", r["time"]) for r in rows)
    text = run_qdo("status", "Watched", "--watch", check=True).stdout
    assert re.search(r"\d\d:\d\d:\d\d  .*  0 left", text), text


def test_the_progress_bar_fits_80_columns_and_never_scrolls(tmp_path: Path) -> None:
    q = qdo.create("Bar")
    q.add_multiple(["sleep 0.02"] * 400)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "qdo", "do", "Bar", "--workers", "2"],
                            stdin=follower, stdout=follower, stderr=follower)  # fmt: skip
    os.close(follower)
    data = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        assert ready, "no output for a minute"
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        data += chunk
    proc.wait(timeout=60)
    os.close(leader)
    text = data.decode(errors="replace")
    bars = [s.replace("\x1b[K", "") for s in text.split("\r") if s.startswith("[")]
    assert len(bars) >= 2, text  # it was drawn, and drawn again
    for bar in bars:
        line = bar.split("\n")[0]
        assert len(line) < 80, line
    # one bar line, redrawn in place: no line of the output is a bar but the last drawn
    assert all("\n" not in bar or bar.endswith("\n") or "ran " in bar for bar in bars[:-1])
    assert "ran 400 tasks" in text


def test_trace_lays_each_agents_attempts_on_its_slots(tmp_path: Path) -> None:
    q = qdo.create("Traced")
    q.add_multiple([f"sleep 0.0{i % 4}" for i in range(60)])
    run_qdo("do", "Traced", "--workers", "3", check=True)
    path = tmp_path / "trace.json"
    out = run_qdo("trace", "Traced", str(path), check=True).stdout
    assert "wrote 60 attempts" in out
    events = json.loads(path.read_text())["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    assert sorted(int(e["name"].split()[0]) for e in slices) == list(range(1, 61))
    assert all(e["name"].endswith("Succeeded") and e["dur"] >= 0 for e in slices)
    tracks: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for e in slices:
        tracks.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
    assert 1 <= len(tracks) <= 3  # one agent of three slots
    for spans in tracks.values():  # nothing overlaps on a track
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    names = [e["args"]["name"] for e in events if e["ph"] == "M"]
    assert any(n.startswith("agent ") for n in names) and "slot 0" in names


def test_status_shows_claimed_tasks_apart_from_those_running() -> None:
    q = qdo.create("Claims")
    q.add_multiple(["true"] * 3)
    # an agent's claim ahead (reserved: not started), and one task really started
    reserved = q.store.claim("Claims", "agent:1", 2, lease=60, reserve=True)
    q.store.claim("Claims", "agent:1", 1, lease=60)
    assert len(reserved) == 2
    status = json.loads(run_qdo("status", "Claims", "--json", check=True).stdout)
    assert status["ntasks"]["Running"] == 3 and status["claimed"] == 2
    text = run_qdo("status", "Claims", check=True).stdout
    assert re.search(
        r"^\s+Running\s+1   \(and 2 claimed ahead by agents, not started\)$", text, re.M
    ), text
