"""Facts about this process and this machine that every layer may ask: how a worker
names itself, which batch job it runs in, whether a process still exists; and how
qdo's own messages reach its user (:class:`Log`)."""

from __future__ import annotations

import os
import sys
from typing import Any


def hostname() -> str:
    """This machine's name, as ``socket.gethostname()`` gives it (the kernel's node name),
    without importing ``socket``: short commands do not pay for it."""
    return os.uname().nodename


def worker_id() -> str:
    """How this process names itself as a worker: ``host:pid``."""
    return f"{hostname()}:{os.getpid()}"


def batch_job_id() -> str | None:
    """The id of the batch job this process runs in, if any."""
    env = os.environ
    return env.get("QDO_JOB_ID") or env.get("SLURM_JOB_ID") or env.get("PBS_JOBID") or None


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_here(worker: str, host: str) -> bool:
    """True if ``worker`` (host:pid) ran on ``host``, this one, and its process is gone."""
    where, _, pid = worker.rpartition(":")
    return where == host and pid.isdigit() and not pid_alive(int(pid))


class Log:
    """The standard library's logger ``name``, imported at its first message: a short
    command that says nothing does not pay for ``logging`` (a few milliseconds).

    The library says nothing unless its user asks (``logging.basicConfig``, or
    ``qdo -v``): the ``qdo`` logger gets a NullHandler when logging is first needed,
    so that Python's last-resort handler does not print qdo's warnings either.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, method: str) -> Any:  # warning, info, exception, ...
        return getattr(_logging().getLogger(self.name), method)


_ready = False
_shown: bool | None = None  # what show_logs asked for, until logging is first needed
_handler: Any = None  # show_logs's, once made


def show_logs(debug: bool) -> None:
    """What the library logs, on stderr as it is when a message comes: its warnings
    (a server away, a full disk), or everything if ``debug`` (the command line's way)."""
    global _shown
    _shown = debug
    if _ready:
        _to_stderr(debug)
    elif "logging" in sys.modules:  # (imported anyway: no reason to wait)
        _logging()


def _logging() -> Any:
    global _ready
    import logging

    if not _ready:
        _ready = True
        logging.getLogger("qdo").addHandler(logging.NullHandler())
        if _shown is not None:
            _to_stderr(_shown)
    return logging


def _to_stderr(debug: bool) -> None:
    global _handler
    import logging

    class ToStderr(logging.StreamHandler):  # type: ignore[type-arg]
        """The message alone, to stderr as it is then (tests swap it)."""

        def emit(self, record: logging.LogRecord) -> None:
            self.stream = sys.stderr
            super().emit(record)

    logger = logging.getLogger("qdo")
    if _handler is None:
        _handler = ToStderr()
        _handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(_handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
