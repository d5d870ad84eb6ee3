"""Facts about this process and machine (``qdo.runtime``)."""

from __future__ import annotations

import os
import socket

from qdo.runtime import hostname, worker_id


def test_hostname_is_the_socket_modules() -> None:
    """Workers and log segments are named by ``hostname()``; ``dead_here`` and the
    segments' liveness compare it with names written by other qdo versions, which used
    ``socket.gethostname()``: the two must agree."""
    assert hostname() == socket.gethostname()
    assert worker_id() == f"{socket.gethostname()}:{os.getpid()}"
