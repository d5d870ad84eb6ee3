"""The store, written once for every SQL backend: each verb of ``base.Store`` is a few
named statements (``sql/queries.sql``) run in one transaction of a ``Dialect``.

Policy lives here and in those statements alone: when a failure is retried, when a
lost task is killed, what the history says.  A dialect only carries it out.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from ..errors import (
    DependencyCycle,
    InvalidInput,
    NotAllowed,
    QueueExists,
    TaskNotEditable,
    UnknownQueue,
    UnknownTask,
)
from ..failures import signature
from ..models import Attempt, QueueInfo, QueueState, State, Task
from .base import (
    AGENT_LIVE,
    ATTEMPT_COLUMNS,
    TASK_COLUMNS,
    TASK_ROW,
    Agent,
    Begun,
    CallResult,
    Counts,
    FailureGroup,
    Item,
    Job,
    NewCall,
    NewTask,
    Outcome,
    SameTasks,
    Stats,
    Store,
    Submitted,
    admin_change,
    attempts_by_task,
    counts_by_queue,
    id_offset,
    kept_text,
    queue_info,
    requires_by_task,
    task_from_row,
)
from .dialect import Dialect, Repeat, Row, Tx

_PENDING = State.PENDING.value
_FINAL = {State.SUCCEEDED.value, State.FAILED.value, State.KILLED.value}
#: A claim's rows: a task's, and its requirements (``{idlist}``: "1,2,3")
_CLAIMED = (*TASK_ROW, "requires")
_ID, _PRIORITY = TASK_ROW.index("id"), TASK_ROW.index("priority")
#: A report's rows: the tasks it changed (``_keep_results`` reads them too)
_FINISHED = ("id", "attempts", "worker", "jobid", "started", "finished", "queue_id", "state",
             "now")  # fmt: skip


def _hand_out_order(row: Row) -> tuple[int, int]:
    return -row[_PRIORITY], row[_ID]


#: The rows of restored_requires
_RESTORED = ("task_id", "req_id")


def _impossible_requirements(edges: Sequence[Row], offset: int) -> str | None:
    """What a restored queue's requirements (task, requirement) hold that no queue can,
    said with the archive's ids: a cycle (a task that requires itself, or tasks that
    require each other), which ``add`` and ``add_requires`` refuse; restored, its tasks
    would wait for each other for ever.  (A state is not judged: a task that runs, or
    that fails and goes back to Pending, while its requirement is set back by hand, is a
    real queue's.)"""
    # what is left once every task whose requirements can all end is taken away
    waits: dict[int, int] = {}  # a task: how many of its requirements are left
    dependents: dict[int, list[int]] = {}
    for task, req in edges:
        waits[task] = waits.get(task, 0) + 1
        waits.setdefault(req, 0)
        dependents.setdefault(req, []).append(task)
    free = [t for t, n in waits.items() if n == 0]
    while free:
        for task in dependents.get(free.pop(), ()):
            waits[task] -= 1
            if not waits[task]:
                free.append(task)
    looped = sorted(t - offset for t, n in waits.items() if n)
    if looped:
        shown = ", ".join(map(str, looped[:10])) + (", ..." if len(looped) > 10 else "")
        return f"tasks {shown} are in, or wait on, a cycle of requirements"
    return None


RESULT_COLUMNS = ("queue_id", "task_id", "item", "ok", "data")
CALL_COLUMNS = ("task_id", "queue_id", "call_key", "call")

#: The columns a new task is written with (the rest take their defaults).
#: "No limit", as a LIMIT both dialects take.
NO_LIMIT = 2**63 - 1
T = TypeVar("T")


class SQLStore(Store):
    """``base.Store`` over a SQL ``Dialect``, acting for ``user``."""

    def __init__(self, dialect: Dialect, user: str) -> None:
        self.d = dialect
        self.location = dialect.location
        self.user = user

    @property
    def notifies(self) -> bool:  # type: ignore[override]
        """Whether waiting workers are told of new tasks: the dialect's to say."""
        return self.d.listens

    def _run(
        self, verb: Callable[[Tx], T], *, write: bool = True, repeat: Repeat = Repeat.SAFE
    ) -> T:
        return self.d.run(verb, write=write, repeat=repeat)

    def close(self) -> None:
        self.d.close()

    # -- queues ---------------------------------------------------------------------------
    def _queue(self, tx: Tx, name: str, change: bool = False) -> Row:
        """The row of this user's queue ``name``; with ``change``, for a verb that
        changes it: a role it is shared with to read gets NotAllowed, not a change of
        nothing (the policies of a shared database would skip its rows without a word)."""
        row = tx.row("queue_get", name=name, owner=self.user)
        if row is None:
            raise UnknownQueue(name)
        if change:
            self._may_change(tx, row)
        return row

    def _may_change(self, tx: Tx, row: Row) -> None:
        if self.d.row_security and tx.row("queue_writable", queue_id=row["id"]) is None:
            raise NotAllowed(self.location, f"queue {row['name']!r} of {row['owner']} is "
                             "shared with you to read, not to change")  # fmt: skip

    def _insert_queue(self, tx: Tx, name: str) -> QueueInfo:
        row = tx.row("queue_insert", name=name, owner=self.user)
        if row is None:
            raise QueueExists(name)
        return queue_info(row)

    def create_queue(self, name: str) -> QueueInfo:
        return self._run(lambda tx: self._insert_queue(tx, name))

    def get_queue(self, name: str) -> QueueInfo:
        return self._run(lambda tx: queue_info(self._queue(tx, name)), write=False)

    def list_queues(self, all_users: bool = False) -> list[QueueInfo]:
        owner = None if all_users else self.user
        return self._run(lambda tx: [queue_info(r) for r in tx.rows("queue_list", owner=owner)],
                         write=False)  # fmt: skip

    def set_queue_state(self, name: str, state: QueueState) -> None:
        def verb(tx: Tx) -> None:
            queue_id = self._queue(tx, name, change=True)["id"]
            tx.count("queue_set_state", queue_id=queue_id, state=state.value)
            if state is QueueState.ACTIVE:
                tx.notify([queue_id])

        self._run(verb)

    def set_queue_options(
        self, name: str, *, max_retries: int | None = None, max_lost: int | None = None
    ) -> QueueInfo:
        def verb(tx: Tx) -> QueueInfo:
            queue_id = self._queue(tx, name, change=True)["id"]
            return queue_info(tx.one("queue_set_options", queue_id=queue_id,
                                     max_retries=max_retries, max_lost=max_lost))  # fmt: skip

        return self._run(verb)

    def delete_queue(self, name: str) -> int:
        def verb(tx: Tx) -> int:
            row = self._queue(tx, name)
            if self.d.row_security and row["owner"] != self.d.role:
                raise NotAllowed(self.location, f"queue {name!r} is {row['owner']}'s: only "
                                 "its owner may delete it")  # fmt: skip
            n = tx.one("queue_task_count", queue_id=row["id"])["n"]
            tx.count("queue_delete", queue_id=row["id"])
            return int(n)

        return self._run(verb, repeat=Repeat.NOT_IF_UNSURE)

    # -- adding ---------------------------------------------------------------------------
    def add_many(
        self, queue: str, tasks: Iterable[NewTask] | SameTasks, *, create_queue: bool = False
    ) -> range:
        def verb(tx: Tx) -> range:
            row = tx.row("queue_get", name=queue, owner=self.user)
            if row is not None:
                self._may_change(tx, row)
                queue_id = row["id"]
            elif create_queue:
                queue_id = self._insert_queue(tx, queue).id
            else:
                raise UnknownQueue(queue)
            if row is not None and row["kind"] == "calls":
                raise InvalidInput(f"queue {queue!r} holds Python calls (made by its "
                                   "executor()): submit calls to it there")  # fmt: skip
            return self._add_rows(tx, queue_id, tasks)

        # a list can be sent again if the connection drops before the commit; a stream
        # can't (it is half read): then the error says so and nothing was written
        replayable = isinstance(tasks, Sequence)
        return self._run(verb, repeat=Repeat.NOT_IF_UNSURE if replayable else Repeat.NEVER)

    def _add_rows(self, tx: Tx, queue_id: int, tasks: Iterable[NewTask] | SameTasks) -> range:
        """Add the tasks to the queue; their ids, consecutive."""
        # the ids from here on are ours (the dialect's lock orders concurrent adds)
        first = int(tx.one("lock_ids")["last"]) + 1
        now = tx.time()
        if isinstance(tasks, SameTasks):
            ids = self._add_same(tx, queue_id, first, now, tasks)
        else:
            ids = self._add_listed(tx, queue_id, first, now, tasks)
        tx.grew("tasks", len(ids))
        return ids

    def _add_listed(
        self, tx: Tx, queue_id: int, first: int, now: float, tasks: Iterable[NewTask]
    ) -> range:
        next_id = first
        requires: list[tuple[int, int]] = []

        def rows() -> Iterator[tuple[Any, ...]]:
            nonlocal next_id
            for t in tasks:
                for r in t.requires:
                    requires.append((next_id, r))
                yield (next_id, queue_id, t.payload, t.is_json, "Pending", t.priority, now,
                       t.timeout, t.max_retries)  # fmt: skip
                next_id += 1

        tx.insert_tasks(rows())
        tx.count("used_ids", last=next_id - 1)
        tx.count("counts_add", queue_id=queue_id, state=_PENDING, n=next_id - first)
        if requires:
            self._check_exist(tx, {r for _, r in requires}, before=first)
            tx.insert("requires", ("task_id", "req_id"), sorted(set(requires)))
            tx.count("block_unmet", ids=sorted({t for t, _ in requires}))
        if next_id > first:
            tx.notify([queue_id])
        return range(first, next_id)

    @staticmethod
    def _add_same(tx: Tx, queue_id: int, first: int, now: float, tasks: SameTasks) -> range:
        n = len(tasks.payloads)
        tx.insert_same(first, {"queue_id": queue_id, "is_json": tasks.is_json, "state": _PENDING,
                            "priority": tasks.priority, "created": now, "timeout": None,
                            "max_retries": None}, tasks.payloads)  # fmt: skip
        tx.count("used_ids", last=first + n - 1)
        tx.count("counts_add", queue_id=queue_id, state=_PENDING, n=n)
        if n:
            tx.notify([queue_id])
        return range(first, first + n)

    def _check_exist(self, tx: Tx, ids: set[int], before: int) -> None:
        # ids at or after `before` are being added right now: nobody can know them yet
        unknown = {i for i in ids if i >= before}
        older = sorted(ids - unknown)
        if older:
            found = {r["id"] for r in tx.rows("ids_found", ids=older)}
            unknown.update(i for i in older if i not in found)
        if unknown:
            raise UnknownTask(unknown, "required task")

    def add_requires(self, queue: str, task_id: int, requires: Sequence[int]) -> None:
        def verb(tx: Tx) -> None:
            self._queue(tx, queue, change=True)
            row = tx.row("task_state", task_id=task_id, queue=queue, owner=self.user)
            if row is None:
                raise UnknownTask([task_id], f"task of queue {queue!r}")
            if row["state"] not in (State.WAITING.value, State.PENDING.value):
                raise TaskNotEditable(
                    f"task {task_id} is {row['state']}: only Waiting or Pending tasks can get "
                    "new requirements (rerun it first)"
                )
            wanted = sorted(set(requires))
            self._check_exist(tx, set(wanted), before=2**63)
            if tx.row("reaches", x=[(r,) for r in wanted], task_id=task_id):
                raise DependencyCycle(task_id, requires)
            tx.count("requires_insert", r=[(task_id, r) for r in wanted])
            tx.count("block_unmet", ids=[task_id])

        self._run(verb)

    # -- working --------------------------------------------------------------------------
    def claim(
        self, queue: str, worker: str, n: int, lease: float, jobid: str | None = None,
        max_seconds: float | None = None, reserve: bool = False, calls: bool = False,
    ) -> list[Task]:  # fmt: skip
        params = {
            "queue": queue, "owner": self.user, "worker": worker, "jobid": jobid, "n": n,
            "lease": lease, "max_seconds": max_seconds, "reserve": reserve,
            "kind": "calls" if calls else "shell",
            "token": int.from_bytes(os.urandom(8), "big") >> 2 | 1,
        }  # fmt: skip

        def verb(tx: Tx) -> list[Row]:
            if self.d.row_security:
                self._queue(tx, queue, change=True)
            return tx.tuples("claim", _CLAIMED, **params)

        # a claim cut off at its commit may have happened: the tasks it took then run
        # again when their lease expires, as for a worker that died
        rows = self._run(verb)
        if len(rows) > 1:  # RETURNING order is not defined
            rows.sort(key=_hand_out_order)
        return [task_from_row(r, queue, _ids(r[-1])) for r in rows]

    @staticmethod
    def _requires_of(tx: Tx, ids: list[int]) -> dict[int, list[int]]:
        return requires_by_task(tx.rows("requires_of", ids=ids))

    def renew(self, worker: str, tokens: Sequence[tuple[int, int]], lease: float) -> list[int]:
        if not tokens:
            return []
        ids = [t for t, _ in tokens]

        def verb(tx: Tx) -> set[int]:
            rows = tx.rows("renew", worker=worker, lease=lease, o=list(tokens), ids=ids)
            return {r["id"] for r in rows}

        kept = self._run(verb)
        return [t for t in ids if t not in kept]

    def finish(
        self, worker: str, outcomes: Sequence[Outcome], begun: Sequence[Begun] = ()
    ) -> list[int]:
        if not outcomes and not begun:
            return []
        if any(o.message or o.tail for o in outcomes):  # (a success says nothing)
            outcomes = [_storable(o) for o in outcomes]
        by_id = {o.task_id: o for o in outcomes}
        values = any(o.value is not None for o in outcomes)

        def verb(tx: Tx) -> set[int]:
            if begun:
                tx.count("begin", worker=worker, b=[tuple(b) for b in begun],
                         ids=[b.task_id for b in begun])  # fmt: skip
            if not outcomes:
                return set()
            # (a state's text as ``_value_``: the ``value`` property costs a call, and this
            # runs for every task reported)
            rows = tx.tuples("finish", _FINISHED, worker=worker, ids=list(by_id), o=[
                (o.task_id, o.token, o.state._value_, o.exitcode, o.message, o.log, o.started,
                 o.ended, _signature_of(o.state, o.exitcode, o.message, o.tail))
                for o in outcomes])  # fmt: skip
            history = []
            succeeded = []
            woke = []
            for task_id, attempt, by, jobid, started, finished, queue_id, state, now in rows:
                o = by_id[task_id]
                returned = o.state is State.PENDING  # given back unrun
                history.append((task_id, attempt, "Returned" if returned else o.state._value_,
                                by, jobid, started, now if returned else finished, o.exitcode,
                                o.message, o.cpu, o.rss, o.log))  # fmt: skip
                if o.state is State.SUCCEEDED:
                    succeeded.append(task_id)
                if state == _PENDING:
                    woke.append(queue_id)
            tx.count("attempt_insert", a=history)
            if values:  # (their drivers' watchers listen where agents do)
                woke += self._keep_results(tx, rows, by_id)
            if succeeded:
                woke += self._release(tx, succeeded)
            tx.notify(woke)
            return {r[0] for r in rows}

        # cut off at its commit and run again, an accepted report is refused the second
        # time (the task is no longer Running): the result stands either way
        accepted = self._run(verb)
        return [o.task_id for o in outcomes if o.task_id not in accepted]

    @staticmethod
    def _keep_results(tx: Tx, rows: list[Row], by_id: dict[int, Outcome]) -> list[int]:
        """The results of the calls whose state is now final (a Failed call that runs
        again keeps none: its future waits for the last attempt); their queues' ids."""
        kept = [(queue_id, task_id, -1, by_id[task_id].state is State.SUCCEEDED,
                 by_id[task_id].value)
                for task_id, *_, queue_id, state, _now in rows
                if by_id[task_id].value is not None and state in _FINAL]  # fmt: skip
        if kept:
            tx.count("results_drop", ids=[k[1] for k in kept])
            tx.insert("results", RESULT_COLUMNS, kept)
        return [k[0] for k in kept]

    @staticmethod
    def _release(tx: Tx, succeeded: list[int]) -> list[int]:
        """Make Pending the dependents of ``succeeded`` that wait for nothing else;
        return their queue ids."""
        waiting = [r["id"] for r in tx.rows("lock_dependents", ids=succeeded)]
        if not waiting:
            return []
        return [r["queue_id"] for r in tx.rows("release_dependents", ids=waiting)]

    def requeue_expired(self, queue: str | None = None) -> list[int]:
        def look(tx: Tx) -> tuple[int | None, bool]:
            if queue is None:
                return None, tx.row("any_expired_anywhere") is not None
            queue_id = self._queue(tx, queue)["id"]
            return queue_id, tx.row("any_expired", queue_id=queue_id) is not None

        # the usual case, nothing expired, is answered by a read
        queue_id, expired = self._run(look, write=False)
        return self._requeue(queue_id, "lease expired", expired=True) if expired else []

    def requeue_workers(
        self, queue: str, workers: Sequence[str] | None = None,
        jobids: Sequence[str] | None = None, why: str = "process gone",
    ) -> list[int]:  # fmt: skip
        if not workers and not jobids:
            return []
        queue_id = self._run(lambda tx: self._queue(tx, queue, change=True)["id"], write=False)
        return self._requeue(queue_id, why, workers=workers or (), jobids=jobids or ())

    def _requeue(
        self, queue_id: int | None, why: str, *, expired: bool = False,
        workers: Sequence[str] = (), jobids: Sequence[str] = (),
    ) -> list[int]:  # fmt: skip
        def verb(tx: Tx) -> list[int]:
            rows = tx.rows("requeue", queue_id=queue_id, why=why, expired=expired,
                           workers=list(workers), jobids=list(jobids))  # fmt: skip
            tx.count("attempt_insert", a=[
                (r["id"], r["attempts"], "Returned" if r["started"] is None else "Lost",
                 r["worker"], r["jobid"], r["started"], r["now"], None, r["message"], None,
                 None, None)
                for r in rows])  # fmt: skip
            tx.notify(r["queue_id"] for r in rows if r["state"] == State.PENDING.value)
            return [r["id"] for r in rows]

        return self._run(verb)

    # -- reading --------------------------------------------------------------------------
    @staticmethod
    def _blocked(tx: Tx, queue_id: int) -> int:
        return int(tx.one("blocked", queue_id=queue_id)["n"])

    def _counts(self, tx: Tx, queue_id: int) -> Counts:
        rows = tx.rows("counts", queue_id=queue_id)
        counts = counts_by_queue([queue_id], rows, lambda i: self._blocked(tx, i))[queue_id]
        if counts.by_state[State.RUNNING]:
            claimed = int(tx.one("claimed", queue_id=queue_id)["n"])
            return Counts(counts.by_state, counts.blocked, claimed)
        return counts

    def counts(self, queue: str) -> Counts:
        return self._run(lambda tx: self._counts(tx, self._queue(tx, queue)["id"]), write=False)

    def queue_status(self, queue: str) -> tuple[QueueInfo, Counts]:
        def read(tx: Tx, look: bool) -> tuple[QueueInfo, Counts] | None:
            row = self._queue(tx, queue)
            if look and tx.row("any_expired", queue_id=row["id"]) is not None:
                return None  # requeued first
            return queue_info(row), self._counts(tx, row["id"])

        # the usual case, nothing expired, is one read
        got = self._run(lambda tx: read(tx, True), write=False)
        if got is None:
            self.requeue_expired(queue)
            got = self._run(lambda tx: read(tx, False), write=False)
        assert got is not None  # (read without the look always answers)
        return got

    def all_counts(self, all_users: bool = False) -> dict[int, Counts]:
        owner = None if all_users else self.user

        def verb(tx: Tx) -> dict[int, Counts]:
            ids = [r["id"] for r in tx.rows("queue_list", owner=owner)]
            rows = tx.rows("all_counts", owner=owner)
            return counts_by_queue(ids, rows, lambda i: self._blocked(tx, i))

        return self._run(verb, write=False)

    def tasks(
        self,
        queue: str,
        state: State | None = None,
        task_id: int | None = None,
        after: int = 0,
        limit: int | None = None,
        exitcode: int | None = None,
    ) -> list[Task]:
        def verb(tx: Tx) -> tuple[list[Row], dict[int, list[int]]]:
            params: dict[str, Any] = {
                "queue_id": self._queue(tx, queue)["id"], "after": after, "exitcode": exitcode,
                "limit": NO_LIMIT if limit is None else limit,
                "state": None if state is None else state.value,
            }  # fmt: skip
            if task_id is not None:
                rows = tx.tuples("task_by_id", TASK_ROW, task_id=task_id, **params)
            elif state is not None:
                rows = tx.tuples("tasks_in_state", TASK_ROW, **params)
            else:
                rows = tx.tuples("tasks", TASK_ROW, **params)
            return rows, (self._requires_of(tx, [r[0] for r in rows]) if rows else {})

        rows, requires = self._run(verb, write=False)
        return [task_from_row(r, queue, requires.get(r[0], ())) for r in rows]

    def attempts(self, task_ids: Sequence[int]) -> dict[int, list[Attempt]]:
        ids = list(task_ids)
        return self._run(lambda tx: attempts_by_task(tx.rows("attempts_of", ids=ids)),
                         write=False)  # fmt: skip

    def running_workers(self, queue: str) -> list[str]:
        return self._names(queue, "running_workers")

    def running_jobs(self, queue: str) -> list[str]:
        return self._names(queue, "running_jobs")

    def _names(self, queue: str, query: str) -> list[str]:
        def verb(tx: Tx) -> list[str]:
            return [r["name"] for r in tx.rows(query, queue_id=self._queue(tx, queue)["id"])]

        return self._run(verb, write=False)

    # -- changing by hand -----------------------------------------------------------------
    def set_state(
        self, queue: str, task_id: int, state: State, exitcode: int | None,
        message: str | None, who: str,
    ) -> State:  # fmt: skip
        def verb(tx: Tx) -> State:
            self._queue(tx, queue, change=True)
            row = tx.row("task_for_change", task_id=task_id, queue=queue, owner=self.user)
            if row is None:
                raise UnknownTask([task_id], f"task of queue {queue!r}")
            now = tx.time()
            change = admin_change(row, state, exitcode, kept_text(message), who, now)
            failure = _signature_of(state, exitcode, change.message, None)
            new = tx.one("set_state", task_id=task_id, state=state.value, exitcode=exitcode,
                         message=change.message, attempts=change.attempts, now=now,
                         signature=failure)  # fmt: skip
            tx.count("attempt_insert", a=[(task_id, *change.history)])
            woke = [new["queue_id"]] if new["state"] == State.PENDING.value else []
            if state is State.SUCCEEDED:
                woke += self._release(tx, [task_id])
            elif row["state"] == State.SUCCEEDED.value:
                tx.count("block_dependents", ids=[task_id])
            tx.notify(woke)
            return State(new["state"])

        # run again after a commit that was cut off, it records the change twice: harmless
        return self._run(verb)

    # -- resetting ------------------------------------------------------------------------
    def retry(
        self, queue: str, states: Sequence[State] = (State.FAILED, State.KILLED),
        priority: int | None = None, ids: Sequence[int] | None = None,
        signatures: Sequence[str] | None = None,
    ) -> int:  # fmt: skip
        if (ids is not None or signatures is not None) and priority is not None:
            raise InvalidInput("retry takes a priority for all its tasks, not for some ids")

        def verb(tx: Tx) -> int:
            queue_id = self._queue(tx, queue, change=True)["id"]
            wanted = [s.value for s in states]
            if signatures is not None:
                n = tx.count("retry_groups", queue_id=queue_id, states=wanted,
                             signatures=list(signatures))  # fmt: skip
            elif ids is None:
                n = tx.count("retry", queue_id=queue_id, priority=priority, states=wanted)
            else:
                n = sum(tx.count("retry_ids", queue_id=queue_id, states=wanted,
                                 ids=list(ids[i : i + 10_000]))
                        for i in range(0, len(ids), 10_000))  # fmt: skip
            tx.notify([queue_id])
            return n

        return self._run(verb)

    def failure_groups(
        self, queue: str, limit: int | None = None, examples: int = 5
    ) -> list[FailureGroup]:
        def verb(tx: Tx) -> list[FailureGroup]:
            queue_id = self._queue(tx, queue)["id"]
            rows = tx.rows("failure_groups", queue_id=queue_id,
                           limit=NO_LIMIT if limit is None else limit)  # fmt: skip
            return [FailureGroup(r["signature"], State(r["state"]), r["exitcode"], int(r["n"]),
                                 [e["id"] for e in tx.rows("failure_examples", queue_id=queue_id,
                                                           signature=r["signature"],
                                                           limit=examples)] if examples else [])
                    for r in rows]  # fmt: skip

        return self._run(verb, write=False)

    def rerun(self, queue: str) -> int:
        def verb(tx: Tx) -> int:
            queue_id = self._queue(tx, queue, change=True)["id"]
            tx.count("rerun_forget", queue_id=queue_id)
            n = tx.count("rerun_reset", queue_id=queue_id)
            tx.count("rerun_block", queue_id=queue_id)
            tx.notify([queue_id])
            return n

        return self._run(verb)

    # -- batch jobs -----------------------------------------------------------------------
    def add_job(self, queue: str, jobid: str, profile: str, workers: int) -> None:
        def verb(tx: Tx) -> None:
            tx.count("job_insert", queue_id=self._queue(tx, queue, change=True)["id"],
                     jobid=jobid, profile=profile, workers=workers)  # fmt: skip

        self._run(verb)

    def last_id(self, queue: str) -> int:
        return self._run(lambda tx: int(tx.one("last_id",
                                               queue_id=self._queue(tx, queue)["id"])["last"]),
                         write=False)  # fmt: skip

    def stats(self, queue: str) -> Stats:
        def verb(tx: Tx) -> Stats:
            queue_id = self._queue(tx, queue)["id"]
            totals = tx.one("stats_totals", queue_id=queue_id)
            n, nrss = int(totals["n"]), int(totals["nrss"])

            def at(name: str, share: float, count: int) -> Any:
                if not count:
                    return None
                return tx.one(name, queue_id=queue_id, k=int(share * (count - 1)))["v"]

            wall, cpu = float(totals["wall"]), float(totals["cpu"])
            return Stats(n, at("stats_runtime_at", 0.5, n), at("stats_runtime_at", 0.95, n),
                         totals["longest"], cpu / wall if wall > 0 else None,
                         at("stats_rss_at", 0.95, nrss))  # fmt: skip

        return self._run(verb, write=False)

    # -- agents -----------------------------------------------------------------------------
    def agent_seen(
        self, queue: str, worker: str, host: str, slots: int, hand: int, jobid: str | None
    ) -> None:
        def verb(tx: Tx) -> None:
            queue_id = self._queue(tx, queue, change=True)["id"]
            tx.count("agent_seen", queue_id=queue_id, worker=worker, host=host, slots=slots,
                     hand=hand, jobid=jobid)  # fmt: skip
            tx.count("agents_purge", queue_id=queue_id, older=100 * AGENT_LIVE)

        self._run(verb)

    def agent_gone(self, queue: str, worker: str) -> None:
        def verb(tx: Tx) -> None:
            tx.count("agent_gone", queue_id=self._queue(tx, queue, change=True)["id"],
                     worker=worker)  # fmt: skip

        self._run(verb)

    def agents(self, queue: str) -> list[Agent]:
        def verb(tx: Tx) -> list[Agent]:
            rows = tx.rows("agents_live", queue_id=self._queue(tx, queue)["id"], within=AGENT_LIVE)
            return [Agent(r["worker"], r["host"], r["slots"], r["hand"], r["jobid"], r["started"],
                          r["seen"]) for r in rows]  # fmt: skip

        return self._run(verb, write=False)

    def jobs(self, queue: str) -> list[Job]:
        def verb(tx: Tx) -> list[Job]:
            rows = tx.rows("jobs_of", queue_id=self._queue(tx, queue)["id"])
            return [Job(r["jobid"], r["profile"], r["workers"], r["submitted"]) for r in rows]

        return self._run(verb, write=False)

    def pending_fits(self, queue: str, max_seconds: float) -> bool:
        def verb(tx: Tx) -> bool:
            queue_id = self._queue(tx, queue)["id"]
            return bool(tx.one("pending_fits", queue_id=queue_id, max_seconds=max_seconds)["fits"])

        return self._run(verb, write=False)

    # -- calls ----------------------------------------------------------------------------
    def _calls_queue(self, tx: Tx, queue: str, change: bool = False) -> Row:
        row = self._queue(tx, queue, change=change)
        if row["kind"] != "calls":
            raise InvalidInput(f"queue {queue!r} holds shell tasks, not Python calls: make "
                               "a queue of calls with executor()")  # fmt: skip
        return row

    def make_call_queue(self, queue: str) -> None:
        def verb(tx: Tx) -> None:
            row = self._queue(tx, queue, change=True)
            if row["kind"] == "calls":
                return
            if tx.row("queue_any_task", queue_id=row["id"]) is not None:
                raise InvalidInput(f"queue {queue!r} holds shell tasks: Python calls go to "
                                   "a queue of their own")  # fmt: skip
            tx.count("queue_make_calls", queue_id=row["id"])

        self._run(verb)

    def submit_calls(self, queue: str, calls: Sequence[NewCall]) -> list[Submitted]:
        if not calls:
            return []

        def verb(tx: Tx) -> list[Submitted]:
            queue_id = self._calls_queue(tx, queue, change=True)["id"]
            keys = sorted({c.key for c in calls})
            found = {r["call_key"]: (r["task_id"], State(r["state"]))
                     for r in tx.rows("calls_by_key", queue_id=queue_id, keys=keys)}  # fmt: skip
            again = {i for i, state in found.values() if state in (State.FAILED, State.KILLED)}
            if again:
                tx.count("calls_retry", ids=sorted(again))
                found.update({k: (i, State.PENDING) for k, (i, _) in found.items() if i in again})
            new: dict[str, NewCall] = {}
            for c in calls:
                if c.key not in found:
                    new.setdefault(c.key, c)
            made: dict[str, int] = {}
            if new:
                ids = self._add_rows(tx, queue_id, [NewTask(c.payload, priority=c.priority,
                                                            requires=c.requires)
                                                    for c in new.values()])  # fmt: skip
                made = dict(zip(new, ids, strict=True))
                tx.insert("calls", CALL_COLUMNS,
                          [(made[k], queue_id, k, c.call) for k, c in new.items()])  # fmt: skip
            elif again:
                tx.notify([queue_id])
            done = sorted({i for i, st in found.values() if st is State.SUCCEEDED})
            results = {r.task_id: r for r in _results(tx.rows("results_of", ids=done))
                       if r.item == -1} if done else {}  # fmt: skip
            return [Submitted(made[c.key], State.PENDING, True) if c.key in made
                    else Submitted(*found[c.key], False, results.get(found[c.key][0]))
                    for c in calls]  # fmt: skip

        # a second run after a commit cut off finds the calls by their keys
        return self._run(verb)

    def call_data(self, task_ids: Sequence[int]) -> dict[int, bytes]:
        ids = list(task_ids)
        if not ids:
            return {}
        return self._run(lambda tx: {r["task_id"]: bytes(r["call"])
                                     for r in tx.rows("call_data", ids=ids)},
                         write=False)  # fmt: skip

    def results_since(self, queue: str, after: int, limit: int) -> list[CallResult]:
        def verb(tx: Tx) -> list[CallResult]:
            queue_id = self._queue(tx, queue)["id"]
            return _results(tx.rows("results_since", queue_id=queue_id, after=after,
                                    limit=limit))  # fmt: skip

        return self._run(verb, write=False)

    def last_result(self, queue: str) -> int:
        return self._run(lambda tx: int(tx.one("results_last",
                                               queue_id=self._queue(tx, queue)["id"])["seq"]),
                         write=False)  # fmt: skip

    def add_items(self, worker: str, items: Sequence[Item]) -> list[int]:
        ids = sorted({i.task_id for i in items})
        if not ids:
            return []
        pairs = sorted({(i.task_id, i.token) for i in items})

        def verb(tx: Tx) -> set[int]:
            held = {r["id"]: r["queue_id"] for r in tx.rows("held", worker=worker, o=pairs,
                                                             ids=ids)}  # fmt: skip
            if not held:
                return set()
            there = {(r["task_id"], r["item"]) for r in tx.rows("items_of", ids=sorted(held))}
            new = [(held[i.task_id], i.task_id, i.item, True, i.data) for i in items
                   if i.task_id in held and (i.task_id, i.item) not in there]  # fmt: skip
            if new:
                tx.insert("results", RESULT_COLUMNS, new)
                tx.notify(held.values())
            return set(held)

        kept = self._run(verb)
        return [t for t in ids if t not in kept]

    def results_of(self, task_ids: Sequence[int]) -> list[CallResult]:
        ids = list(task_ids)
        if not ids:
            return []
        return self._run(lambda tx: _results(tx.rows("results_of", ids=ids)), write=False)

    def task_states(self, task_ids: Sequence[int]) -> dict[int, tuple[State, str | None]]:
        ids = list(task_ids)
        if not ids:
            return {}
        return self._run(lambda tx: {r["id"]: (State(r["state"]), r["message"])
                                     for r in tx.rows("task_states", ids=ids)},
                         write=False)  # fmt: skip

    def cancel_calls(self, queue: str, task_ids: Sequence[int]) -> list[int]:
        ids = list(task_ids)

        def verb(tx: Tx) -> list[int]:
            queue_id = self._queue(tx, queue, change=True)["id"]
            return sorted(r["id"] for r in tx.rows("calls_cancel", queue_id=queue_id, ids=ids))

        return self._run(verb) if ids else []

    def forget_calls(self, queue: str) -> int:
        def verb(tx: Tx) -> int:
            return tx.count("queue_tasks_delete",
                            queue_id=self._calls_queue(tx, queue, change=True)["id"])  # fmt: skip

        return self._run(verb, repeat=Repeat.NOT_IF_UNSURE)

    # -- archives -------------------------------------------------------------------------
    def export_queue(self, queue: str) -> Iterator[tuple[str, tuple[Any, ...]]]:
        with self.d.snapshot() as tx:
            row = self._queue(tx, queue)
            info = queue_info(row)
            span = tx.one("export_span", queue_id=info.id)
            yield "queue", (info.name, info.state.value, row["created"], info.max_retries,
                            info.max_lost, info.owner)  # fmt: skip
            yield "span", (span["low"] or 0, span["high"] or 0, span["n"])
            for r in tx.stream("export_tasks", queue_id=info.id):
                yield "task", (*r[:2], bool(r[2]), *r[3:])
            for r in tx.stream("export_requires", queue_id=info.id):
                yield "requires", (r[0], r[1], bool(r[2]))
            for r in tx.stream("export_attempts", queue_id=info.id):
                yield "attempt", r

    def import_queue(
        self, name: str, info: QueueInfo, span: tuple[int, int], records: Iterable[Any]
    ) -> int:
        def verb(tx: Tx) -> int:
            row = tx.row("import_queue", owner=self.user, name=name, state=info.state.value,
                         created=info.created.timestamp() if info.created else None,
                         max_retries=info.max_retries, max_lost=info.max_lost)  # fmt: skip
            if row is None:
                raise QueueExists(name)
            queue_id = row["id"]
            offset = id_offset(span, int(tx.one("lock_ids")["last"]))
            high = 0
            states: dict[str, int] = {}
            at = {c: TASK_COLUMNS.index(c) for c in ("state", "exitcode", "message")}
            # streamed, kind after kind: a queue of 50 million attempts is never in memory
            it = iter(records)
            head = next(it, None)

            def run_of(kind: str) -> Iterator[Any]:
                nonlocal head
                while head is not None and head[0] == kind:
                    yield head[1]
                    head = next(it, None)

            def tasks() -> Iterator[tuple[Any, ...]]:
                nonlocal high
                for r in run_of("task"):
                    high = max(high, r[0] + offset)
                    state = r[at["state"]]
                    states[state] = states.get(state, 0) + 1
                    yield (r[0] + offset, queue_id, *r[1:],
                           _signature_of(State(state), r[at["exitcode"]], r[at["message"]],
                                         None))  # fmt: skip

            tx.insert("tasks", ("id", "queue_id", *TASK_COLUMNS[1:], "signature"), tasks())
            for state, n in sorted(states.items()):
                tx.count("counts_add", queue_id=queue_id, state=state, n=n)
            tx.insert("requires", ("task_id", "req_id"),
                      ((r[0] + offset, r[1] + offset if r[2] else r[1])
                       for r in run_of("requires")))  # fmt: skip
            tx.insert("attempts", ATTEMPT_COLUMNS,
                      ((r[0] + offset, *r[1:]) for r in run_of("attempt")))  # fmt: skip
            if head is not None:
                raise InvalidInput(f"an archive's {head[0]!r} record is out of place: tasks "
                                   "come first, then requirements, then attempts")  # fmt: skip
            edges = tx.tuples("restored_requires", _RESTORED, low=span[0] + offset, high=high,
                              queue_id=queue_id)  # fmt: skip
            problem = _impossible_requirements(edges, offset)
            if problem is not None:  # (as add refuses them: nothing is written)
                raise InvalidInput(f"the archive's requirements are impossible: {problem}")
            tx.count("used_ids", last=high)
            tx.grew("tasks", sum(states.values()))
            tx.notify([queue_id])
            return offset

        return self._run(verb, repeat=Repeat.NEVER)

    # -- housekeeping ---------------------------------------------------------------------
    def check(self) -> list[str]:
        def verb(tx: Tx) -> list[str]:
            names = {r["id"]: f"{r['owner']}/{r['name']}"
                     for r in tx.rows("queue_list", owner=None)}  # fmt: skip
            return self.d.check(tx) + [
                f"queue {names.get(r['queue_id'], r['queue_id'])}: {r['counted']} {r['state']} "
                f"tasks, counted as {r['kept']}" for r in tx.rows("counts_recount")]  # fmt: skip

        return self._run(verb, write=False)

    def repair_counts(self) -> None:
        self._run(lambda tx: tx.count("counts_repair"), repeat=Repeat.SAFE)


def _storable(o: Outcome) -> Outcome:
    """``o`` with its message and tail as the store keeps them."""
    message, tail = kept_text(o.message), kept_text(o.tail)
    if message is o.message and tail is o.tail:
        return o
    return o._replace(message=message, tail=tail)


def _signature_of(
    state: State, exitcode: int | None, message: str | None, tail: str | None
) -> str | None:
    """What a task in ``state`` keeps as its failure's signature: None unless Failed or
    Killed."""
    if state is State.FAILED or state is State.KILLED:
        return signature(state, exitcode, message, tail)
    return None


def _results(rows: list[Row]) -> list[CallResult]:
    return [CallResult(r["seq"], r["task_id"], r["item"], bool(r["ok"]), bytes(r["data"]))
            for r in rows]  # fmt: skip


def _ids(text: str | None) -> list[int]:
    """The ids of an ``{idlist}`` aggregate, in order."""
    return sorted(map(int, text.split(","))) if text else []
