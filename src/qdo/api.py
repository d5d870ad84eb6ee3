"""The public Python API of durable queues: ``qdo.create``, ``qdo.connect``,
``qdo.qlist``, ``qdo.load``, ``qdo.restore`` and the ``Queue`` they return.

It sits above the node agent and batch launch, so that a queue can run its own tasks
(``q.do()``) and submit jobs that do (``q.launch()``); every other verb of a queue is in
``qdo.queue``, which knows nothing of them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import config, queue
from .errors import InvalidInput, QueueExists, UnknownQueue
from .models import check_priority, check_queue_name
from .queue import _check_limits, _new_task, _status
from .store.base import Store
from .store.factory import open_store

if TYPE_CHECKING:  # (imported where used: `qdo status` needs none of them, and starts faster)
    from . import executor, worker

__all__ = ["Queue", "connect", "create", "load", "qlist", "queues", "restore"]


class Queue(queue.Queue):
    """A named, persistent queue of tasks.  Get one with ``qdo.create`` or ``qdo.connect``."""

    def do(self, workers: int = 1, **options: Any) -> worker.RunSummary:
        """Run this queue's tasks on this machine until none is left; return a summary.

        Options as ``qdo do``: ``script``, ``func`` (a function or "module:function",
        called with a parameter task's dict as keyword arguments), ``timeout``,
        ``runtime``, ``wait``, ``grace``, ``lease``; ``progress`` is called with the
        running summary a few times a second.
        """
        from . import worker

        progress = options.pop("progress", None)
        return worker.do(self, worker.WorkerOptions(workers=workers, **options), progress)

    def launch(self, nworkers: int, jobs: int = 1, *, dry_run: bool = False,
               **options: Any) -> list[str]:  # fmt: skip
        """Submit ``jobs`` batch jobs, each running ``nworkers`` workers on this queue;
        return their ids.  Options as ``qdo launch``: cores_per_worker, walltime,
        batchqueue, batchopts, script, keep_env, mpiproc, profile, cores_per_node."""
        from dataclasses import fields

        from . import launch

        known = {f.name for f in fields(launch.LaunchOptions)} - {"workers", "jobs"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidInput(f"no launch option {', '.join(map(repr, unknown))}: the "
                               f"options are {', '.join(sorted(known))}")  # fmt: skip
        opts = launch.LaunchOptions(workers=nworkers, jobs=jobs, **options)
        return launch.launch(self, opts, dry_run=dry_run)

    def executor(
        self, *, poll: float = 0.02, max_workers: int | None = None
    ) -> executor.DurableExecutor:
        """A ``concurrent.futures.Executor`` whose calls are tasks of this queue, run by
        any ``qdo do`` agent of it, here or in batch jobs; their results come back to
        the futures.  The queue becomes a queue of calls (it must hold no shell tasks).
        Run again after a crash, a driver gets back the results of the calls that
        Succeeded, waits for those still running, and runs only the rest (see
        ``qdo.executor``).  ``max_workers``: see ``DurableExecutor.max_workers``."""
        from .executor import DurableExecutor

        return DurableExecutor(self, poll=poll, max_workers=max_workers)


def create(
    name: str,
    *,
    max_retries: int | None = None,
    max_lost: int | None = None,
    user: str | None = None,
    store: Store | None = None,
) -> Queue:
    """Create a new, empty queue.  Raises QueueExists if it exists already.

    ``max_retries``: how often a Failed task runs again (default 0); ``max_lost``: after
    how many lost workers a task is Killed (default 3).  ``user``: whose queue it is
    (default: yours).
    """
    check_queue_name(name)
    _check_limits(max_retries, max_lost)
    settings = config.load()
    store = store or open_store(settings, user)
    store.create_queue(name)
    q = Queue(name, store=store, settings=settings)
    if max_retries is not None or max_lost is not None:
        q.set(max_retries=max_retries, max_lost=max_lost)
    return q


def connect(
    name: str, create_ok: bool = False, *, user: str | None = None, store: Store | None = None
) -> Queue:
    """Open an existing queue (or create it, with ``create_ok=True``).

    ``user``: whose queue (default: yours; another user's queue is only reached by
    naming them).  Raises UnknownQueue if it does not exist and ``create_ok`` is false.
    """
    check_queue_name(name)
    settings = config.load()
    store = store or open_store(settings, user)
    try:
        store.get_queue(name)
    except UnknownQueue:
        if not create_ok:
            raise
        with contextlib.suppress(QueueExists):  # created by someone else meanwhile: fine
            store.create_queue(name)
    return Queue(name, store=store, settings=settings)


def qlist(
    *, user: str | None = None, all_users: bool = False, store: Store | None = None
) -> list[Queue]:
    """Your queues (or ``user``'s, or with ``all_users`` everybody's), by name, as
    :class:`Queue` objects.  Each keeps the status it had when listed (all read at
    once) in ``q.listed``: ``{'name', 'state', 'ntasks', 'blocked', 'user'}``."""
    settings = config.load()
    store = store or open_store(settings, user)
    counts = store.all_counts(all_users)
    out = []
    for info in store.list_queues(all_users):
        c = counts.get(info.id)
        if c is None:
            continue
        # another user's queue is reached through a store acting for them
        owner = store if info.owner == store.user else open_store(settings, info.owner)
        q = Queue(info.name, store=owner, settings=settings)
        q.listed = {**_status(info.name, info.state, c.by_state, c.blocked), "user": info.owner}
        out.append(q)
    return out


#: The original QDO's other name for :func:`qlist`.
queues = qlist


def load(
    name: str,
    tasks: Iterable[Any],
    priority: int = 0,
    *,
    store: Store | None = None,
) -> range:
    """Add a stream of tasks to a queue, creating the queue if needed; all or nothing.

    Unlike :meth:`Queue.add_multiple` the tasks are never all in memory, and the ids
    come back as a ``range``.  This is what ``qdo load`` calls.
    """
    check_queue_name(name)
    check_priority(priority)
    store = store or open_store()
    rows = (_new_task(i, t, priority, ()) for i, t in enumerate(tasks))
    return store.add_many(name, rows, create_queue=True)


def restore(
    path: str | os.PathLike[str],
    as_name: str | None = None,
    *,
    user: str | None = None,
    store: Store | None = None,
) -> tuple[Queue, int, int]:
    """Rebuild a queue from an archive written by :meth:`Queue.dump` (on any backend),
    named ``as_name`` if given; all or nothing.  Returns (queue, tasks, id offset):
    the tasks keep their ids where none of them was ever used here, else all move up
    by the offset.  Raises BadArchive, QueueExists."""
    if as_name is not None:
        check_queue_name(as_name)
    settings = config.load()
    store = store or open_store(settings, user)
    from . import archive

    name, n, offset = archive.restore(store, path, as_name)
    return Queue(name, store=store, settings=settings), n, offset
