"""Functions that the durable executor's tests submit: importable by the agents (which
run from the repository's root), so that calls go by reference."""

from __future__ import annotations

import os
import time
from typing import Any


def square(x: int) -> int:
    return x * x


def slow_square(x: int, seconds: float = 0.05) -> int:
    time.sleep(seconds)
    return x * x


def matrix(seed: int, k: int) -> Any:
    import numpy

    return numpy.random.default_rng(seed).random((k, k)) + k * numpy.eye(k)


def job_square(x: int) -> tuple[int, str | None]:
    """The square, and the batch job it ran in."""
    return x * x, os.environ.get("SLURM_JOB_ID")


def fail(why: str) -> None:
    raise ValueError(why)


def big(nbytes: int) -> bytes:
    return b"x" * nbytes


def pid() -> int:
    return os.getpid()


class Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("cannot travel")
        self.lock = __import__("threading").Lock()


def raise_unpicklable() -> None:
    raise Unpicklable()


def gated_items(n: int, first: int, gate: str) -> Any:
    """Yield 0, 10, 20, ...: ``first`` of them, then (once the file ``gate`` exists) the
    rest: a test sees the first items come while the generator still runs."""
    for i in range(first):
        yield i * 10
    deadline = time.monotonic() + 120
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{gate} never came")
        time.sleep(0.01)
    for i in range(first, n):
        yield i * 10


gated_items.number_of_results = lambda n, first, gate: n  # type: ignore[attr-defined]


def items_then_fail(n: int) -> Any:
    yield from range(n)
    raise ValueError(f"failed after {n} items")


def gated_square(x: int, gate: str) -> int:
    """The square, once the file ``gate`` exists."""
    deadline = time.monotonic() + 120
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{gate} never came")
        time.sleep(0.01)
    return x * x


def shout(text: str) -> None:
    """A parameter task's function that prints (and fails on "boom")."""
    if text == "boom":
        raise ValueError("boom")
    print(text.upper())


def ident(x: Any) -> Any:
    return x


class NoLoad:
    """Pickles, but does not unpickle (int("not-an-int"))."""

    def __reduce__(self) -> Any:
        return (int, ("not-an-int",))


def returns_noload() -> NoLoad:
    return NoLoad()


def yields_noload() -> Any:
    yield 1
    yield NoLoad()
    yield 3


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ exploded")


def raise_badstr() -> None:
    raise BadStr()


class BadRepr(Exception):
    def __repr__(self) -> str:
        raise RuntimeError("__repr__ exploded")


def raise_badrepr() -> None:
    raise BadRepr("bad repr")


def exits(code: int) -> None:
    raise SystemExit(code)


class TwoArgs(Exception):
    """Pickles as TwoArgs(message), which its __init__ refuses: it cannot be rebuilt."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def raise_two_args() -> None:
    raise TwoArgs("needs two", 2)


def yields_a_lock() -> Any:
    yield 1
    yield __import__("threading").Lock()
