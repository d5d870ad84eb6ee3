"""``smqsched``: the historical name of qdo's in-process scheduler (same objects)."""

from qdo.sched import DependencyError, Queue, Scheduler, TaskFuture, Timeline

__all__ = ["DependencyError", "Queue", "Scheduler", "TaskFuture", "Timeline"]
