"""Running tasks on this machine: the body of ``qdo do``.

This first worker runs one task at a time in this process: a shell task under
``$QDO_SHELL`` (default ``/bin/bash`` if present, else ``/bin/sh``) with its
output in a per-task log file; its exit code decides Succeeded (0) or Failed.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .models import State, Task
from .queue import Queue


@dataclass
class RunSummary:
    """What one ``do`` run did."""

    ran: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def default_shell() -> str:
    return os.environ.get("QDO_SHELL") or shutil.which("bash") or "/bin/sh"


def log_path(log_dir: Path, queue: str, task_id: int) -> Path:
    """Where a task's output goes: sharded so no directory holds more than 1,000 logs."""
    return log_dir / queue / str(task_id // 1000) / f"{task_id}.log"


def command_for(task: Task, script: str | None, shell: str) -> list[str]:
    """The argv that runs a task: the shell command itself, or ``script`` with the
    task's words (shell tasks) or its JSON (parameter tasks) as arguments."""
    if script is not None:
        args = shlex.split(task.task) if task.is_shell else [json.dumps(task.task)]
        return [*shlex.split(script), *args]
    if not task.is_shell:
        raise ValueError("a parameter task needs a script to run it: use --script")
    return [shell, "-c", task.task]


def run_one(task: Task, *, log_dir: Path, script: str | None = None, shell: str = "") -> None:
    """Run a held task to completion and report its result."""
    log = log_path(log_dir, task.queue, task.id)
    try:
        argv = command_for(task, script, shell or default_shell())
    except ValueError as e:
        task.set_state(State.FAILED, message=str(e))
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "QDO_QUEUE": task.queue, "QDO_TASK_ID": str(task.id)}
    message: str | None
    with open(log, "ab") as out:
        try:
            code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                  env=env).returncode  # fmt: skip
        except OSError as e:
            out.write(f"qdo: cannot run {argv[0]}: {e}\n".encode())
            code, message = 127, f"cannot run {argv[0]}: {e.strerror}"
        else:
            message = None if code == 0 else f"exit code {code}"
    assert task._handle is not None
    state = State.SUCCEEDED if code == 0 else State.FAILED
    task._handle._report(task, state, code, message, log=str(log))


def do(
    queue: Queue,
    *,
    script: str | None = None,
    progress: Callable[[RunSummary], None] | None = None,
) -> RunSummary:
    """Run the queue's tasks one by one until none is left (or the queue is paused)."""
    summary = RunSummary()
    start = time.monotonic()
    log_dir = queue.settings.log_dir
    shell = default_shell()
    while (task := queue.get(timeout=0)) is not None:
        run_one(task, log_dir=log_dir, script=script, shell=shell)
        summary.ran += 1
        summary.by_state[task.state.value] = summary.by_state.get(task.state.value, 0) + 1
        summary.seconds = time.monotonic() - start
        if progress:
            progress(summary)
    summary.seconds = time.monotonic() - start
    sys.stdout.flush()
    return summary
