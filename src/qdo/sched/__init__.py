"""The in-process scheduler: parallelize existing Python code with futures, output-first.

from qdo.sched import Scheduler, Queue      # also: from smqsched import ...
sch = Scheduler()
Q = Queue(sch)                               # width: the number of CPUs
a = Q.submit(load, "x.dat")
b = Q.submit(analyse, a)                     # a future as an argument is a dependency
sch.start()
print(b.result())
"""

from __future__ import annotations

from .futures import DependencyError, TaskFuture
from .scheduler import Queue, Scheduler, Timeline

__all__ = ["DependencyError", "Queue", "Scheduler", "TaskFuture", "Timeline"]
