"""The one private contract of ``concurrent.futures`` that ``qdo.sched`` relies on,
checked against the running Python (issue 13): a ``TaskFuture`` does not call
``Future.__init__`` but sets the six attributes it would, leaner, and ``Future``'s own
methods and ``wait`` / ``as_completed`` then use them.  A Python whose
``concurrent.futures`` changes that contract fails here, by name, before anything subtler
breaks.  The rest of ``qdo.sched`` uses public API only, and the last tests hold it to
that; ``threading.Condition`` over a lock of qdo's own is checked too."""

from __future__ import annotations

import ast
import concurrent.futures as cf
import inspect
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import qdo.sched
from qdo.sched import Queue, Scheduler
from qdo.sched.scheduler import _Lock

#: what Future.__init__ sets, and what a TaskFuture sets instead (see qdo.sched.futures)
STANDS_IN_FOR = {"_condition", "_state", "_result", "_exception", "_waiters", "_done_callbacks"}
#: what concurrent.futures does with them: the _Condition and _ListWhenUsed of
#: qdo.sched.futures provide these and nothing else
CONDITION_CALLS = {"acquire", "release", "wait", "notify_all"}
LIST_CALLS = {"append", "remove"}
#: what concurrent.futures.wait, as_completed and their helpers read of a future
WAIT_USES = {"_condition", "_state", "_waiters"}


@pytest.fixture
def sch() -> Iterator[Scheduler]:
    s = Scheduler()
    yield s
    s.shutdown()


def _module_of_future() -> ast.Module:
    source = inspect.getsource(inspect.getmodule(cf.Future))  # type: ignore[arg-type]
    return ast.parse(source)


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


# -- the contract, as concurrent.futures defines it ------------------------------------
def test_future_init_sets_the_six_attributes_a_task_future_stands_in_for(
    sch: Scheduler,
) -> None:
    """Future.__init__ sets exactly these, in the instance's __dict__ (a TaskFuture's
    lazy lists write theirs there); a TaskFuture has each, as a fresh Future has it."""
    plain: cf.Future[None] = cf.Future()
    assert set(vars(plain)) == STANDS_IN_FOR
    assert "__slots__" not in vars(cf.Future)  # instances keep a __dict__
    f = Queue(sch, max_workers=1).submit(int)  # not started: stays pending
    assert isinstance(f, cf.Future) and hasattr(f, "__dict__")
    assert f._state == plain._state
    assert f._result is None is plain._result and f._exception is None is plain._exception
    assert list(f._waiters) == [] == plain._waiters and len(f._waiters) == 0
    assert list(f._done_callbacks) == [] == plain._done_callbacks
    with f._condition:  # a lock, reentrant, that waits and wakes
        with f._condition:
            assert not f._condition.wait(0)
        f._condition.notify_all()


def test_future_states_are_the_words_a_task_future_s_repr_shows() -> None:
    """A TaskFuture's repr is its _state in lower case, read without a lock (so a future
    held by a deadlocked thread can still be shown)."""
    seen: list[str] = []
    ran: cf.Future[int] = cf.Future()
    seen.append(ran._state)
    ran.set_running_or_notify_cancel()
    seen.append(ran._state)
    ran.set_result(1)
    seen.append(ran._state)
    dropped: cf.Future[int] = cf.Future()
    dropped.cancel()
    seen.append(dropped._state)
    dropped.set_running_or_notify_cancel()
    seen.append(dropped._state)
    assert [s.lower() for s in seen] == [
        "pending", "running", "finished", "cancelled", "cancelled_and_notified",
    ]  # fmt: skip


def test_futures_module_uses_the_condition_and_lists_only_as_task_futures_provide() -> None:
    """Every use in concurrent.futures of a future's _condition is ``with``, or one of
    CONDITION_CALLS; of _waiters and _done_callbacks, a ``for`` over them or one of
    LIST_CALLS (besides Future.__init__ setting them)."""
    tree = _module_of_future()
    parent = _parents(tree)
    odd: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        up = parent[node]
        if isinstance(up, ast.Assign) and node in up.targets:
            continue  # Future.__init__
        if node.attr == "_condition":
            calls = CONDITION_CALLS
            if isinstance(up, ast.withitem) and up.context_expr is node:
                continue
        elif node.attr in ("_waiters", "_done_callbacks"):
            calls = LIST_CALLS
            if isinstance(up, ast.For) and up.iter is node:
                continue
        else:
            continue
        called = (
            isinstance(up, ast.Attribute)
            and up.attr in calls
            and isinstance(parent[up], ast.Call)
            and parent[up].func is up  # type: ignore[attr-defined]
        )
        if not called:
            odd.append(f"line {node.lineno}: {ast.unparse(up)}")
    assert not odd, f"concurrent.futures uses a future's state in a new way: {odd}"


def test_futures_module_touches_no_other_private_attribute_of_a_future() -> None:
    """Future's methods use only what __init__ set and its own methods; wait,
    as_completed and their helpers only WAIT_USES."""
    tree = _module_of_future()
    future = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Future")
    own = {n.name for n in future.body if isinstance(n, ast.FunctionDef)}
    own |= {f"_Future{name}" for name in own if name.startswith("__")}  # name mangling
    in_future = {id(n) for n in ast.walk(future)}
    modules = {n.asname or n.name for i in ast.walk(tree) if isinstance(i, ast.Import)
               for n in i.names}  # fmt: skip
    odd: set[str] = set()
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            continue
        name = node.value.id
        if id(node) in in_future:
            if name == "self" and node.attr not in STANDS_IN_FOR | own:
                odd.add(f"Future: self.{node.attr}")
        elif name not in {"self", *modules} and node.attr not in WAIT_USES:
            odd.add(f"line {node.lineno}: {name}.{node.attr}")
    assert not odd, f"concurrent.futures uses more of a future's private state: {odd}"


# -- qdo's side: a wait that lets go of a reentrant lock with public calls --------------
def test_a_task_future_s_condition_waits_however_many_times_its_thread_holds_it(
    sch: Scheduler,
) -> None:
    """A thread holding a future's lock twice waits on it: another thread can take the
    lock (to set the result), and the waiter holds it twice again after, as
    threading.Condition does; both on a wake-up and on a timeout."""
    f = Queue(sch, max_workers=1).submit(int)
    cond = f._condition
    got: list[object] = []

    def waiter() -> None:
        cond.acquire()
        cond.acquire()
        got.append(cond.wait(0))  # times out at once
        got.append(cond.wait(10))  # woken below
        cond.release()
        cond.release()
        try:
            cond.release()
        except RuntimeError:
            got.append("held twice, no more")

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    for _ in range(10_000):  # until it sleeps in the second wait
        if f._sleepers:
            break
        time.sleep(0.001)
    taken = cond.acquire(True, 10)  # would block forever if the waiter still held it
    assert taken, "the waiter kept the lock while it waited"
    cond.notify_all()
    cond.release()
    t.join(10)
    assert got == [False, True, "held twice, no more"]
    with pytest.raises(RuntimeError, match="un-acquired"):
        cond.wait(0)
    assert not f._sleepers


# -- threading.Condition over the scheduler's own lock ---------------------------------
def test_a_condition_over_the_scheduler_s_lock_waits_notifies_and_checks_its_owner() -> None:
    """The scheduler's conditions are threading.Condition over its _Lock (neither a
    Lock nor an RLock): Condition then uses only acquire and release, and says when it
    is notified by a thread that does not hold the lock."""
    lock = _Lock()
    cond = threading.Condition(lock)  # type: ignore[arg-type]
    with cond:
        assert not cond.wait(0)
    with pytest.raises(RuntimeError):
        cond.notify()
    ready = threading.Event()
    woke: list[bool] = []

    def waiter() -> None:
        with cond:
            ready.set()
            woke.append(cond.wait(10))

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    assert ready.wait(10)
    with cond:  # the waiter let go of the lock in wait()
        cond.notify()
    t.join(10)
    assert woke == [True]


# -- the rest of qdo.sched: public API only ---------------------------------------------
def _sched_sources() -> dict[str, ast.Module]:
    folder = Path(qdo.sched.__file__).parent
    return {p.name: ast.parse(p.read_text()) for p in sorted(folder.glob("*.py"))}


def _private_module(dotted: str) -> bool:
    return any(p.startswith("_") and not p.startswith("__") for p in dotted.split("."))


def test_qdo_sched_imports_no_private_module() -> None:
    """No ``_thread``, no ``concurrent.futures._base``: nothing private of the standard
    library is imported (qdo's own modules, relative, are fine)."""
    odd = [
        f"{name}: {ast.unparse(node)}"
        for name, tree in _sched_sources().items()
        for node in ast.walk(tree)
        if (isinstance(node, ast.Import) and any(_private_module(a.name) for a in node.names))
        or (isinstance(node, ast.ImportFrom) and node.level == 0
            and _private_module(node.module or ""))
    ]  # fmt: skip
    assert not odd


def test_qdo_sched_touches_no_private_attribute_beyond_the_contract() -> None:
    """Of a Future's private attributes and methods, only the six it stands in for;
    of a lock's or a condition's, none (``_lock`` and ``_waiters`` are also names of
    qdo's own attributes)."""
    plain: cf.Future[None] = cf.Future()
    lock_kinds = (threading.Lock(), threading.RLock(), threading.Condition())
    private = {n for n in {*dir(plain), *vars(plain)} if n.startswith("_")
               and not n.startswith("__")}  # fmt: skip
    private |= {
        n for o in lock_kinds for n in dir(o) if n.startswith("_") and not n.startswith("__")
    }
    forbidden = private - STANDS_IN_FOR - {"_lock"}
    assert {"_invoke_callbacks", "_release_save", "_acquire_restore"} <= forbidden
    odd = [
        f"{name} line {node.lineno}: {ast.unparse(node)}"
        for name, tree in _sched_sources().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in forbidden
    ]
    assert not odd
