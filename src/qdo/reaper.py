"""Processes die with their agent: a watchdog that kills them when the agent is gone.

A SIGKILLed agent cannot clean up after itself, and the processes of the tasks it ran
would go on, while the tasks' next attempts start elsewhere: two copies at once.  So
each agent starts one small watchdog process (not one per task; it imports nothing of
qdo) and writes down, in a file, each process group it starts and ends.  When the
pipe between them closes, because the agent exited however it did, the watchdog reads
the file and SIGKILLs every group still on the list, and every process whose
environment holds the agent's token (``QDO_AGENT``: one it started but could not yet
write down), then exits.  It ignores terminal and batch signals (they are the agent's
to handle) and sits in a session of its own.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import threading

_WATCHDOG = r"""
import os, signal, sys
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
while os.read(0, 4096):  # until the agent's end of the pipe closes
    pass
live = set()
with open(sys.argv[1], "rb") as f:
    for line in f.read().split(b"\n"):
        if line[:1] == b"+":
            live.add(int(line[1:]))
        elif line[:1] == b"-":
            live.discard(int(line[1:]))
os.unlink(sys.argv[1])
# and whatever the agent started but had no time to write down (it died in between):
# the tasks' environment carries the agent's token
marker, me = b"\0QDO_AGENT=" + sys.argv[2].encode() + b"\0", os.getpid()
for name in os.listdir("/proc"):
    if not name.isdigit() or int(name) == me:
        continue
    try:
        with open("/proc/" + name + "/environ", "rb") as f:
            if marker not in b"\0" + f.read():
                continue
        live.add(os.getpgid(int(name)))
        os.kill(int(name), signal.SIGKILL)
    except OSError:
        pass
for pid in live:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
"""


class Reaper:
    """The agent's side of the watchdog.  ``started``/``ended`` take the id of a process
    group (a process started with ``setsid`` leads its own).  They append to a file the
    watchdog reads only once the agent is gone: writing to it wakes nobody up (a pipe
    woke the watchdog at every task, a third of a short task's rate)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: goes into the environment of every task (QDO_AGENT): how the watchdog knows
        #: a process the agent started before it could write it down
        self.token = secrets.token_hex(8)
        fd, self._path = tempfile.mkstemp(prefix="qdo-agent-", suffix=".groups")
        self._log: int | None = fd
        os.set_inheritable(fd, False)  # a task must not hold these open
        self._proc = subprocess.Popen(
            [sys.executable, "-S", "-c", _WATCHDOG, self._path, self.token], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            close_fds=True,
        )  # fmt: skip
        if self._proc.stdin is not None:
            os.set_inheritable(self._proc.stdin.fileno(), False)

    def started(self, pgid: int) -> None:
        self._say(b"+%d\n" % pgid)

    def ended(self, pgid: int) -> None:
        self._say(b"-%d\n" % pgid)

    def _say(self, line: bytes) -> None:
        with self._lock:
            if self._log is not None:
                os.write(self._log, line)

    def close(self) -> None:
        """Stop the watchdog (it kills what is still on its list: nothing, normally)."""
        with self._lock:
            fd, self._log = self._log, None
        if fd is None:
            return
        os.close(fd)
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=30)
