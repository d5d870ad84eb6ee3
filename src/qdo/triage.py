"""Failure triage: a queue's Failed and Killed tasks, grouped by what went wrong.

A group's *signature* is the task's state and exit code, and its message with the
numbers taken out (``ValueError: bad input 7`` and ``... 12`` are one group).  Where
the message says no more than the exit code (``exit code 1``, a shell task's), the
last line of the task's log stands in for it (``No such file or directory: 'x.fits'``),
for the first ``READ_LOGS`` such tasks; a group's ``id`` is a short hash of its
signature, the same from one look to the next, so that ``qdo retry Q --group ID``
names what ``qdo why Q`` listed.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field

from .models import State, Task
from .queue import Queue

__all__ = ["Group", "failure_groups", "log_tail", "signature"]

#: The logs of at most this many failed tasks are read (their last lines).
READ_LOGS = 10_000
#: How much of the end of a log is read.
TAIL_BYTES = 4096
_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\b[0-9a-fA-F]{12,}\b|\d+(?:\.\d+)?")
_SAYS_NOTHING = re.compile(r"(exit code -?\d+|killed by signal \d+)")
_SPACE = re.compile(r"\s+")


@dataclass
class Group:
    """Failed or Killed tasks that went wrong the same way."""

    id: str
    signature: str
    state: str
    exitcode: int | None
    ids: list[int] = field(default_factory=list)
    #: the last lines of the log of the group's first task (if it wrote any)
    lines: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.ids)


def normalise(text: str) -> str:
    """What stays of a message from one failure to the next: numbers become N."""
    return _SPACE.sub(" ", _NUMBERS.sub("N", text)).strip()[:160]


def signature(task: Task, tail: list[str]) -> str:
    """The signature of a failed ``task`` whose log ends with ``tail``."""
    what = task.message or ""
    if (not what or _SAYS_NOTHING.fullmatch(what)) and tail:
        what = tail[-1]
    code = "-" if task.exitcode is None else task.exitcode
    return f"{task.state.value} exit {code}: {normalise(what) or '(no message)'}"


def log_tail(path: str | None, lines: int = 3) -> list[str]:
    """The last non-empty ``lines`` of a log file ([] if there is none)."""
    if not path:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            data = f.read()
    except OSError:
        return []
    text = data.decode("utf-8", "replace").splitlines()
    return [line.rstrip() for line in text if line.strip()][-lines:]


def failure_groups(q: Queue) -> list[Group]:
    """The failure groups of queue ``q``, the largest first."""
    groups: dict[str, Group] = {}
    read = 0
    for state in (State.FAILED, State.KILLED):
        for task in q.iter_tasks(state=state):
            tail: list[str] | None = None  # (None: its log not read yet)
            if (
                read < READ_LOGS
                and task.log
                and (not task.message or _SAYS_NOTHING.fullmatch(task.message))
            ):
                tail = log_tail(task.log)
                read += 1
            sig = signature(task, tail or [])
            group = groups.get(sig)
            if group is None:
                gid = hashlib.sha1(sig.encode()).hexdigest()[:8]
                group = groups[sig] = Group(gid, sig, state.value, task.exitcode)
                group.lines = log_tail(task.log) if tail is None else tail
            group.ids.append(task.id)
    return sorted(groups.values(), key=lambda g: (-g.count, g.signature))
