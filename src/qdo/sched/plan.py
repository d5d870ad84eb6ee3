"""The output-first planner: pure bookkeeping, no threads, no I/O.

Every task has a *rank*: the sequence number of the newest submission that depends on
it, directly or not (itself included).  A queue with a free slot starts its ready task
of highest rank; among equal ranks, the newest task.  So the results that were asked
for last arrive first, and the tasks that lead to them run just before them.

Keeping ranks cheap.  A new submission is always the newest, so it raises the rank of
every one of its unfinished ancestors to the same, highest value.  Tasks of equal rank
therefore share one ``Cell`` (the cell of a rank is exactly the unfinished tasks whose
newest descendant is the same task), and a submission re-ranks whole cells at once:

- if a requirement ``d`` is the newest member of its cell, every member of that cell
  is an ancestor of ``d`` and the whole cell joins the new task's cell (merged small
  into large, so a task moves O(log n) times at most in such merges);
- otherwise only the ancestors of ``d`` inside its cell move, found by a walk that
  never leaves the cell.

A deep chain, a fan-in tree and a grid of independent tasks all cost O(1) or
O(log n) per task this way; the cost of a submission is the number of tasks whose rank
really changes group, never a rescan of everything.  Ready tasks wait in their cell,
per queue, and each queue keeps a heap of cells by rank (stale entries are skipped).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence

WAITING, READY, RUNNING, DONE, FAILED = range(5)
_NO_NODES: tuple[Node, ...] = ()  # shared "empty list" until a first element comes


class Node:
    """One task (or one item of a generator task) in the plan."""

    __slots__ = ("seq", "queue", "state", "left", "dependents", "ups", "cell", "needs",
                 "hold", "external", "held_by")  # fmt: skip

    def __init__(
        self, seq: int = 0, queue: PlanQueue | None = None, needs: Mapping[str, float] | None = None
    ) -> None:
        self.seq = seq  # 0: not in a plan (yet)
        self.queue = queue
        self.state = WAITING
        self.left = 0  # requirements not yet done
        # None, the one dependent, or a list of them once there are more: most tasks of a
        # chain or a tree have one, and a list each is one more object for the GC
        self.dependents: Node | list[Node] | None = None
        self.ups: tuple[Node, ...] = ()  # ancestors for ranking: requirements (+ generator)
        self.cell: Cell | None = None
        self.needs = needs  # counted resources it takes while it runs
        self.hold = False  # keeps its slot after it returns, until released
        self.external = False  # completed from outside (a generator's item): never started
        self.held_by: Node | None = None  # the holder whose reserved slot it may use

    def __repr__(self) -> str:
        return f"<Node {self.seq} {['waiting', 'ready', 'running', 'done', 'failed'][self.state]}>"


class Cell:
    """The unfinished tasks that share one rank, and their ready ones by queue.

    Cells merge like union-find sets (``parent``), so a merge costs nothing per member;
    a task's cell is ``find(node.cell)``."""

    __slots__ = ("rank", "parent", "size", "ready", "nready", "outside")

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.parent: Cell | None = None
        self.size = 0
        # tasks moved out of this cell (to a newer one) that members still depend on:
        # whoever pulls this whole cell into a newer rank must pull those along too
        self.outside: list[Node] = _NO_NODES  # type: ignore[assignment]
        self.ready: dict[int, list[Node]] = {}  # queue id -> ready tasks (stale ones skipped)
        self.nready: dict[int, int] = {}

    def __lt__(self, other: Cell) -> bool:  # heap ties: any order will do
        return id(self) < id(other)


def find(cell: Cell) -> Cell:
    root = cell
    while root.parent is not None:
        root = root.parent
    while cell.parent is not None and cell.parent is not root:
        cell.parent, cell = root, cell.parent
    return root


class PlanQueue:
    """A queue's width, counted resources and the heap of its cells with ready tasks."""

    __slots__ = ("id", "width", "busy", "capacity", "used", "cells", "compact_at", "held",
                 "solo")  # fmt: skip

    def __init__(self, qid: int, width: int, resources: Mapping[str, float] | None) -> None:
        self.id = qid
        self.width = width
        self.busy = 0  # slots in use (running tasks and held slots)
        self.capacity = dict(resources or {})
        self.used = dict.fromkeys(self.capacity, 0.0)
        self.cells: list[tuple[int, Cell]] = []  # heap of (-rank, cell)
        self.compact_at = 64  # drop the heap's stale entries when it grows this long
        self.held: dict[Node, int] = {}  # holder -> its slot, reserved for its session
        # ready tasks that nothing depends on yet, oldest first: each is its own rank, so
        # they need no cell (no objects per task) until something comes to depend on one
        self.solo: list[Node] = []

    def fits(self, needs: Mapping[str, float] | None) -> bool:
        if not needs:
            return True
        return all(self.used[k] + v <= self.capacity[k] for k, v in needs.items())


class Planner:
    """Tasks, their requirements and queues; says what to start next.  Not thread-safe:
    the scheduler calls it under one lock."""

    def __init__(self) -> None:
        self.queues: list[PlanQueue] = []
        self.seq = 0

    # -- building ---------------------------------------------------------------------------
    def add_queue(self, width: int, resources: Mapping[str, float] | None = None) -> PlanQueue:
        if width < 1:
            raise ValueError("a queue needs at least one slot")
        q = PlanQueue(len(self.queues), width, resources)
        self.queues.append(q)
        return q

    def submit(
        self,
        queue: PlanQueue | None,
        requires: Sequence[Node] = (),
        *,
        needs: Mapping[str, float] | None = None,
        hold: bool = False,
        release: Iterable[Node] = (),
        external_of: Node | None = None,
        node: Node | None = None,
    ) -> Node:
        """Add a task that runs in ``queue`` once every one of ``requires`` is done.

        ``external_of``: the node is an item of that generator task: it never runs, it
        is completed by ``finish`` when the generator yields it, and ranks like a
        dependent of the generator.  ``node``: the object to enter (a new ``Node`` if
        None; a subclass can carry what the caller keeps with the task).  Returns the
        node; its ``state`` is FAILED at once if a requirement already failed.
        """
        if queue is not None and needs:
            unknown = set(needs) - set(queue.capacity)
            if unknown:
                raise ValueError(f"the queue has no resource {', '.join(sorted(unknown))}")
            if any(v > queue.capacity[k] for k, v in needs.items()):
                raise ValueError(f"needs {dict(needs)}, more than the queue has {queue.capacity}")
        self.seq += 1
        if node is None:
            node = Node(self.seq, queue, needs)
        else:
            node.seq, node.queue, node.needs = self.seq, queue, needs
        node.hold = hold
        if not requires and not release and external_of is None and queue is not None:
            # the common case, an independent task: ready at once, ranked by itself
            node.state = READY
            queue.solo.append(node)
            return node
        node.external = external_of is not None
        given = requires
        requires = list(requires)
        for holder in release:
            requires.append(holder)  # releasing a session comes after the session
            if holder.hold and node.queue is holder.queue:
                node.held_by = holder
        for r in requires:
            if r.held_by is None and r.hold and r.queue is queue and node.held_by is None:
                node.held_by = r  # a task of the session may use its reserved slot
        ups: list[Node] = []
        seen: set[Node] = set()
        for r in requires:
            if r.state == FAILED:
                node.state = FAILED
            elif r.state != DONE and r not in seen:
                seen.add(r)
                node.left += 1
                deps = r.dependents
                if deps is None:
                    r.dependents = node
                elif type(deps) is list:
                    deps.append(node)
                else:
                    r.dependents = [deps, node]  # type: ignore[list-item]
                ups.append(r)
        if external_of is not None and external_of.state not in (DONE, FAILED):
            ups.append(external_of)
        if type(given) is tuple and len(ups) == len(given) == len(requires) and not node.external:
            node.ups = given  # the same nodes in the same order: share the caller's tuple
        else:
            node.ups = tuple(ups)
        if node.state == FAILED:
            return node
        self._rank(node, ups)
        if node.left == 0 and not node.external:
            self._make_ready(node)
        return node

    def _rank(self, node: Node, ups: list[Node]) -> None:
        """Give ``node`` the newest rank and pull all its unfinished ancestors along."""
        target = Cell(node.seq)
        work = list(ups)
        while work:
            y = work.pop()
            if y.state in (DONE, FAILED):
                continue
            if y.cell is None:
                # a solo task: its own rank was its seq, it has no ancestors to pull,
                # so it joins the new cell directly (no cell of its own to make)
                y.cell = target
                target.size += 1
                if y.state == READY and y.queue is not None:
                    qid = y.queue.id
                    target.ready.setdefault(qid, []).append(y)
                    target.nready[qid] = target.nready.get(qid, 0) + 1
                continue
            c = find(y.cell)
            if c is target:
                continue
            if c.rank == y.seq:
                # y is its cell's newest task: the whole cell is y's ancestry
                work.extend(c.outside)
                c.outside = _NO_NODES  # type: ignore[assignment]
                target = self._union(c, target)
            else:
                work.extend(self._split(y, c, target))
            target.rank = node.seq
        node.cell = target
        target.size += 1
        for qid, n in target.nready.items():
            if n:
                self._push(self.queues[qid], target)

    @staticmethod
    def _push(queue: PlanQueue, cell: Cell) -> None:
        """Enter ``cell`` at its rank into the queue's heap.  A re-ranked cell leaves a
        stale entry behind (a deep chain, one per task), so the heap is rebuilt without
        them (and without repeats of a cell) whenever it has doubled: amortised O(1), and
        memory stays in proportion to the cells with ready tasks."""
        heap = queue.cells
        heapq.heappush(heap, (-cell.rank, cell))
        if len(heap) >= queue.compact_at:
            qid = queue.id
            live: dict[int, tuple[int, Cell]] = {}  # one entry a cell
            for e in heap:
                c = e[1]
                if c.parent is None and -e[0] == c.rank and c.nready.get(qid):
                    live[id(c)] = e
            heap[:] = live.values()
            heapq.heapify(heap)
            queue.compact_at = max(64, 2 * len(heap))

    def _split(self, d: Node, cell: Cell, target: Cell) -> list[Node]:
        """Move ``d`` and its ancestors inside ``cell`` to ``target``; return the
        ancestors met outside ``cell`` (to be pulled too)."""
        found = [d]
        seen = {d}
        beyond: list[Node] = []
        i = 0
        while i < len(found):
            for up in found[i].ups:
                if up in seen or up.cell is None or up.state in (DONE, FAILED):
                    continue
                seen.add(up)
                if find(up.cell) is cell:
                    found.append(up)
                else:
                    beyond.append(up)
            i += 1
        for m in found:
            self._move(m, target)
        # The cell's newest task stays behind and descends from every task moved, so
        # whoever pulls this cell later must pull d's ancestry again: remember d only.
        if cell.outside:
            cell.outside.append(d)
        else:
            cell.outside = [d]
        return beyond

    @staticmethod
    def _union(a: Cell, b: Cell) -> Cell:
        """Merge two cells, the smaller into the larger; return the one that stays."""
        small, big = (a, b) if a.size <= b.size else (b, a)
        small.parent = big
        big.size += small.size
        if small.outside:
            big.outside = [*big.outside, *small.outside]
            small.outside = _NO_NODES  # type: ignore[assignment]
        for qid, ready in small.ready.items():
            if small.nready.get(qid):
                big.ready.setdefault(qid, []).extend(ready)
                big.nready[qid] = big.nready.get(qid, 0) + small.nready[qid]
        small.ready = {}
        small.nready = {}
        return big

    def _move(self, node: Node, to: Cell) -> None:
        assert node.cell is not None
        old = find(node.cell)
        if old is to:
            return
        old.size -= 1
        to.size += 1
        node.cell = to
        if node.state == READY and node.queue is not None:
            qid = node.queue.id
            old.nready[qid] -= 1
            to.nready[qid] = to.nready.get(qid, 0) + 1
            to.ready.setdefault(qid, []).append(node)

    def _make_ready(self, node: Node) -> None:
        node.state = READY
        q = node.queue
        assert q is not None and node.cell is not None
        cell = find(node.cell)
        cell.ready.setdefault(q.id, []).append(node)
        count = cell.nready.get(q.id, 0)
        cell.nready[q.id] = count + 1
        if count == 0:
            self._push(q, cell)

    # -- running ----------------------------------------------------------------------------
    def next(self, queue: PlanQueue) -> Node | None:
        """The ready task of ``queue`` to start now (highest rank, then newest), marked
        RUNNING with its slot and resources taken; None if nothing can start."""
        if queue.busy >= queue.width and not queue.held:
            return None
        heap = queue.cells
        qid = queue.id
        solo = self._solo(queue)
        parked: list[tuple[int, Cell]] = []  # cells with ready tasks that don't fit now
        chosen = None
        while heap:
            negrank, cell = heap[0]
            if cell.parent is not None or -negrank != cell.rank or not cell.nready.get(qid):
                heapq.heappop(heap)  # stale: merged or re-ranked since, or nothing ready
                continue
            if solo is not None and -negrank < solo.seq:
                break  # the solo task outranks every cell left
            chosen = self._pick(queue, cell)
            if chosen is not None:
                break
            parked.append(heapq.heappop(heap))
        for entry in parked:
            heapq.heappush(heap, entry)
        if chosen is None:
            if solo is None:
                return None
            chosen = solo
            stack = queue.solo
            if stack[-1] is solo:
                stack.pop()
            else:
                stack.remove(solo)  # a newer one did not fit: rare
        else:
            assert chosen.cell is not None
            find(chosen.cell).nready[qid] -= 1
        chosen.state = RUNNING
        if chosen.held_by is None or chosen.held_by not in queue.held:
            queue.busy += 1
        if chosen.needs:
            for k, v in chosen.needs.items():
                queue.used[k] += v
        return chosen

    def _solo(self, queue: PlanQueue) -> Node | None:
        """The newest solo task of ``queue`` that may start now (stale entries dropped)."""
        stack = queue.solo
        while stack and (stack[-1].state != READY or stack[-1].cell is not None):
            stack.pop()
        for i in range(len(stack) - 1, -1, -1):
            node = stack[i]
            if node.state == READY and node.cell is None and self._may_start(queue, node):
                return node
        return None

    def _pick(self, queue: PlanQueue, cell: Cell) -> Node | None:
        """A ready task of ``cell`` in ``queue`` that may start now, newest first."""
        ready = cell.ready[queue.id]
        for i in range(len(ready) - 1, -1, -1):
            node = ready[i]
            if node.state != READY or node.cell is None or find(node.cell) is not cell:
                continue  # started, failed or moved to another cell: dropped below
            if self._may_start(queue, node):
                del ready[i:]  # what lay above it was stale
                return node
        # nothing fits: keep only the live entries
        ready[:] = [n for n in ready if n.state == READY and n.cell is not None
                    and find(n.cell) is cell]  # fmt: skip
        return None

    @staticmethod
    def _may_start(queue: PlanQueue, node: Node) -> bool:
        if node.held_by is not None and node.held_by in queue.held:
            return queue.fits(node.needs)  # its session's reserved slot
        return queue.busy < queue.width and queue.fits(node.needs)

    def finish(self, node: Node) -> list[Node]:
        """``node`` succeeded (or, for an item, was produced); return the tasks that
        became ready.  A ``hold`` task keeps its slot until ``release``d."""
        q = node.queue
        if node.state == RUNNING and q is not None:
            self._free(q, node)
        node.state = DONE
        node.ups = ()  # a done task's ancestors are done too: let them go
        self._leave_cell(node)
        woke = []
        for d in _each(node.dependents):
            if d.state == WAITING:
                d.left -= 1
                if d.left == 0 and not d.external:
                    self._make_ready(d)
                    woke.append(d)
        node.dependents = None
        return woke

    def fail(self, node: Node) -> list[Node]:
        """``node`` failed (or was cancelled); every unfinished task that depends on it,
        directly or not, fails too without running.  Returns those tasks."""
        q = node.queue
        if node.state == RUNNING and q is not None:
            self._free(q, node)
            if q.held.pop(node, None) is not None:
                q.busy -= 1  # a failed session ends at once: no task of it will run
        node.state = FAILED
        self._leave_cell(node)
        failed: list[Node] = []
        todo = list(_each(node.dependents))
        node.dependents = None
        while todo:
            d = todo.pop()
            if d.state in (DONE, FAILED, RUNNING):
                continue
            d.state = FAILED
            self._leave_cell(d)
            failed.append(d)
            todo.extend(_each(d.dependents))
            d.dependents = None
        return failed

    def release(self, holder: Node) -> None:
        """Free the slot a ``hold`` task kept after it finished.  Released before it
        finished (the task that was to release it will not run), it keeps none."""
        q = holder.queue
        if q is not None and q.held.pop(holder, None) is not None:
            q.busy -= 1
        elif holder.state not in (DONE, FAILED):
            holder.hold = False

    def _free(self, q: PlanQueue, node: Node) -> None:
        if node.needs:
            for k, v in node.needs.items():
                q.used[k] -= v
        if node.held_by is not None and node.held_by in q.held:
            return  # it ran in its session's reserved slot
        if node.hold:
            q.held[node] = 1  # the slot stays taken until release()
        else:
            q.busy -= 1

    @staticmethod
    def _leave_cell(node: Node) -> None:
        if node.cell is not None:
            cell = find(node.cell)
            cell.size -= 1
            if node.state == READY and node.queue is not None:
                cell.nready[node.queue.id] -= 1
            node.cell = None

    def cancel(self, node: Node) -> list[Node] | None:
        """Cancel a task that has not started: it and its dependents fail.  None if it
        is running or finished already."""
        if node.state not in (WAITING, READY):
            return None
        if node.state == READY and node.cell is not None and node.queue is not None:
            find(node.cell).nready[node.queue.id] -= 1
            node.state = WAITING  # so _leave_cell does not count it twice
        return [node, *self.fail(node)]


def _each(dependents: Node | list[Node] | None) -> tuple[Node, ...] | list[Node]:
    """A node's dependents as a sequence, whichever way they are kept."""
    if dependents is None:
        return ()
    if type(dependents) is list:
        return dependents
    return (dependents,)  # type: ignore[return-value]
