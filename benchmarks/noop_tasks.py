"""The functions of ``bench_func``: ``qdo do --func noop_tasks:noop`` imports this module
(``PYTHONPATH`` holds the benchmarks directory), and so does its process-pool peer."""

from __future__ import annotations

from typing import Any


def noop(**kw: Any) -> None:
    """The task: takes a parameter task's keywords and does nothing."""


def noop_payload(payload: dict[str, Any]) -> None:
    """For ``Executor.map``, which passes one argument: the dict as keywords, as qdo does."""
    noop(**payload)


def noop_value(x: Any) -> Any:
    """A durable future's call (bench_futures): gives its argument back."""
    return x


def matrix(seed: int, k: int) -> Any:
    """A k x k matrix, well conditioned, the same for a seed (bench_futures_grid)."""
    import numpy

    return numpy.random.default_rng(seed).random((k, k)) + k * numpy.eye(k)
