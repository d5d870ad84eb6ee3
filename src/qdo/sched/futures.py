"""Futures of scheduled tasks: ``concurrent.futures.Future`` with dependencies.

A ``TaskFuture`` works with ``concurrent.futures.wait`` and ``as_completed``.  A future
of a generator task is also indexable: ``f[i]`` is the future of its i-th item, done as
soon as the generator yields it.
"""

from __future__ import annotations

import concurrent.futures as cf
from typing import TYPE_CHECKING, Any

from ..errors import QdoError

if TYPE_CHECKING:
    from .plan import Node
    from .scheduler import Scheduler


class DependencyError(QdoError):
    """A task did not run because a task it depends on failed or was cancelled.

    ``cause`` is the failed task's exception (also this error's ``__cause__``)."""

    def __init__(self, task: str, requirement: str, cause: BaseException | None) -> None:
        self.cause = cause
        why = "was cancelled" if cause is None else f"raised {type(cause).__name__}: {cause}"
        super().__init__(f"{task} did not run: its requirement {requirement} {why}")


class TaskFuture(cf.Future[Any]):
    """The result of a submitted task (or of one item of a generator task)."""

    def __init__(self, scheduler: Scheduler, name: str) -> None:
        super().__init__()
        self._scheduler = scheduler
        self.name = name
        self._node: Node | None = None
        self._items: dict[int, TaskFuture] | None = None  # generator tasks only
        self._announced: int | None = None
        self._produced: list[Any] = []  # a generator task's items so far

    def __repr__(self) -> str:
        return f"<TaskFuture {self.name} {self._state.lower()}>"

    def cancel(self) -> bool:
        """Cancel the task, and every task that depends on it, if it has not started."""
        return self._scheduler._cancel(self)

    def __getitem__(self, index: int) -> TaskFuture:
        """The future of item ``index`` of a generator task."""
        if self._items is None:
            raise TypeError(f"{self.name} is not a generator task: its future has no items")
        return self._scheduler._item(self, index)

    def __len__(self) -> int:
        if self._announced is None:
            raise TypeError(f"{self.name} announced no number_of_results")
        return self._announced

    def __iter__(self) -> Any:
        raise TypeError("iterate with range(len(f)) and f[i]: a future is not a sequence")
