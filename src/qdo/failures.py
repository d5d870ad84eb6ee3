"""What a failure's group is: its *signature*, the task's state and exit code and its
message with the numbers taken out (``ValueError: bad input 7`` and ``... 12`` are one
group).  Where the message says no more than the exit code (``exit code 1``, a shell
task's), the last line of the task's log stands in for it (``No such file or
directory: 'x.fits'``).

The agent that ran the task reads that line (``Outcome.tail``); the store writes the
signature beside the task when it fails, so that ``qdo why`` and the dashboard group
failures in SQL.
"""

from __future__ import annotations

import re

from .logs import tail
from .models import State

__all__ = ["failure_tail", "normalise", "says_nothing", "signature"]

#: The longest signature kept (the end of a longer message is cut).
LONGEST = 160
_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\b[0-9a-fA-F]{12,}\b|\d+(?:\.\d+)?")
_SAYS_NOTHING = re.compile(r"(exit code -?\d+|killed by signal \d+)")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """What stays of a message from one failure to the next: numbers become N."""
    return _SPACE.sub(" ", _NUMBERS.sub("N", text)).strip()[:LONGEST]


def says_nothing(message: str | None) -> bool:
    """Whether ``message`` says no more than the exit code (the log should speak)."""
    return not message or _SAYS_NOTHING.fullmatch(message) is not None


def signature(state: State, exitcode: int | None, message: str | None, tail: str | None) -> str:
    """The signature of a task that ended ``state`` (Failed or Killed) with this exit code
    and message, its log's last line being ``tail``."""
    what = tail if tail and says_nothing(message) else (message or "")
    code = "-" if exitcode is None else exitcode
    return f"{state.value} exit {code}: {normalise(what) or '(no message)'}"


def failure_tail(state: State, message: str | None, log: str | None) -> str | None:
    """The last line of the log of a task that ended ``state`` with ``message``, where its
    signature needs it (a failure whose message says nothing); else None."""
    if (state is State.FAILED or state is State.KILLED) and log and says_nothing(message):
        last = tail(log, 1)
        return last[0] if last else None
    return None
