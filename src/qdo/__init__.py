"""qdo: durable queues for very many small tasks.

import qdo
q = qdo.create('EchoChamber')
q.add('echo Hello')
task = q.get(timeout=10)
"""

from __future__ import annotations

from .compat import tojson
from .errors import QdoError
from .models import State, Task
from .queue import Queue, connect, create, load, qlist, queues, restore

__version__ = "0.2.0"
__all__ = [
    "QdoError", "Queue", "State", "Task", "connect", "create", "load", "qlist", "queues",
    "restore", "tojson",
]  # fmt: skip
