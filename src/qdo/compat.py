"""What scripts written for LBNL's original QDO call that has no better home in qdo.

``qdo.tojson`` is how QDO's web server turned queues and tasks into its REST answers.
"""

from __future__ import annotations

import json
from typing import Any

from .models import Task
from .queue import Queue


def tojson(obj: Any, indent: int | None = None) -> str:
    """JSON text of a queue (its status and owner), a task (every field, and ``err``
    for its exit code), or of lists, tuples and dicts of them and of plain values;
    None is ``null``."""
    return json.dumps(_plain(obj), indent=indent)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Queue):
        return obj.listed or obj.summary()
    if isinstance(obj, Task):
        return {**obj.to_dict(), "err": obj.exitcode}
    if isinstance(obj, (list, tuple)):
        return [_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    return obj
