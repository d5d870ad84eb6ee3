"""qdo: durable queues for very many small tasks.

import qdo
q = qdo.create('EchoChamber')
q.add('echo Hello')
task = q.get(timeout=10)

The queue API is loaded on first use (``qdo.connect`` and the rest), so that
``import qdo.sched`` (and ``smqsched``) loads nothing of the durable side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import QdoError
from .models import State, Task
from .version import __version__

__all__ = [
    "QdoError", "Queue", "State", "Task", "__version__", "connect", "create", "load", "qlist",
    "queues", "restore", "tojson",
]  # fmt: skip

if TYPE_CHECKING:
    from .api import Queue, connect, create, load, qlist, queues, restore
    from .compat import tojson

# A library says nothing unless its user asks (logging.basicConfig, or `qdo -v`): its
# warnings (a server away, a full disk) go to the "qdo" logger (qdo.runtime.Log), which
# the command line shows on stderr.

_API = {"Queue", "connect", "create", "load", "qlist", "queues", "restore"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api

        return getattr(api, name)
    if name == "tojson":
        from .compat import tojson

        return tojson
    raise AttributeError(f"module 'qdo' has no attribute {name!r}")
