"""Failure triage: a queue's Failed and Killed tasks, grouped by what went wrong.

The store groups them by signature (qdo.failures), in SQL; a group's ``id`` is a short
hash of its signature, the same from one look to the next, so that
``qdo retry Q --group ID`` names what ``qdo why Q`` listed.  The last lines of the log
of each group's first task are read here, one log per group.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from .errors import InvalidInput
from .logs import tail as log_tail
from .queue import Queue

__all__ = ["Group", "failure_groups", "group_id", "log_tail", "retry_groups"]

#: How many groups a look lists at most (the largest).
MOST_GROUPS = 1000


@dataclass
class Group:
    """Failed or Killed tasks that went wrong the same way."""

    id: str
    signature: str
    state: str
    exitcode: int | None
    count: int
    #: the first ids of the group
    examples: list[int] = field(default_factory=list)
    #: the last lines of the log of the group's first task (if it wrote any)
    lines: list[str] = field(default_factory=list)


def group_id(signature: str) -> str:
    return hashlib.sha1(signature.encode()).hexdigest()[:8]


def retry_groups(q: Queue, ids: list[str]) -> int:
    """The tasks of the failure groups ``ids`` (as ``qdo why`` lists them) run again;
    how many.  An id that names no group of ``q``: InvalidInput, and nothing changes."""
    signatures = {group_id(g.signature): g.signature
                  for g in q.store.failure_groups(q.name, examples=0)}  # fmt: skip
    unknown = [i for i in ids if i not in signatures]
    if unknown:
        raise InvalidInput(f"no failure group {', '.join(unknown)} in {q.name} (qdo why "
                           f"{q.name} lists them)")  # fmt: skip
    return q.store.retry(q.name, signatures=[signatures[i] for i in ids])


def failure_groups(q: Queue, limit: int | None = MOST_GROUPS) -> list[Group]:
    """The failure groups of queue ``q``, the largest first (``limit`` of them), with the
    end of each group's first log."""
    out = []
    for g in q.store.failure_groups(q.name, limit=limit):
        first = q.store.tasks(q.name, task_id=g.examples[0]) if g.examples else []
        tail = log_tail(first[0].log, folder=q.settings.log_dir) if first else []
        out.append(Group(group_id(g.signature), g.signature, g.state.value, g.exitcode, g.count,
                         g.examples, tail))  # fmt: skip
    return out
