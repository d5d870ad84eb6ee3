"""The ``qdo`` command: a thin shell over the Python API, one command per call.

Errors print one line (``qdo: error: ...``) and exit 1; ``qdo -v ...`` shows the
cause chain as well.  Usage errors exit 2.

Each command group is a module that registers its commands: ``queues`` (a queue as a
whole), ``tasks`` (adding and looking at tasks), ``work`` (running them, here or in
batch jobs), ``archive`` (dump and restore), ``admin`` (settings and sharing); ``common``
holds what they share.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from ..errors import QdoError, QdoWarning
from ..runtime import show_logs
from ..version import __version__
from . import admin, archive, queues, tasks, work
from .common import Commands, Parser

__all__ = ["build_parser", "main"]

#: Every command and its one-line help, in the order ``qdo --help`` lists them: roughly
#: the order of use.  (Here rather than beside each command, because argparse lists
#: commands in the order they were made.)
COMMANDS = {
    "create": "create an empty queue",
    "set": "change a queue's retry policy",
    "load": "add the tasks of a file, one per line ('-': stdin)",
    "add": "add one task",
    "require": "make a task also require other tasks",
    "list": "your queues and their task counts",
    "status": "a queue's state and task counts (all queues if none)",
    "tasks": "list a queue's tasks (-v: also exit code, attempts, times, worker and message)",
    "do": "run the queue's tasks here until none is left",
    "pause": "stop handing out tasks (running ones finish)",
    "resume": "hand out tasks again",
    "retry": "Failed and Killed tasks go back to Pending (--group G: a failure group's; "
    "--id 5,7-9: those)",
    "why": "the Failed and Killed tasks grouped by what went wrong, with log lines",
    "cancel": "tasks that should not run (--id 5,7-9) become Killed; a running one stops",
    "wait": "wait until nothing is left to run; exit 0 if all Succeeded, 1 if not, 124 on "
    "--timeout",
    "rerun": "every task starts over (needs --force)",
    "stats": "run time p50/p95/max, CPU efficiency and peak memory of a queue's tasks, and "
    "a plan for what is left",
    "forget": "delete the calls of a queue of Python calls and their results, for a fresh "
    "run of its driver (needs --force)",
    "recover": "Running tasks whose worker is gone go back to Pending",
    "noop": "do nothing, successfully, if qdo works here (for job scripts)",
    "delete": "delete a queue and its tasks (needs --force)",
    "log": "print a task's output",
    "trace": "write a queue's attempts as a Chrome trace, a track per agent slot (Perfetto)",
    "launch": "submit batch jobs that run the queue's workers",
    "jobs": "the batch jobs launched for a queue and their state (--cancel ends them)",
    "agents": "the live agents (qdo do) of a queue: host, slots, hand (the tasks it keeps "
    "claimed), batch job, last heartbeat",
    "dump": "write a queue (every task and field) to an archive",
    "restore": "rebuild a queue from an archive (any backend)",
    "config": "the settings in effect and where each came from",
    "fsck": "check the database (its integrity, every queue's counts; --repair: count "
    "again) and the log segments",
    "serve": "a web dashboard and REST API of the queues (needs the web extra)",
    "share": "let another PostgreSQL role read or change a queue of yours (without --with: "
    "whom it is shared with)",
    "admin": "for the owner of a shared PostgreSQL database",
}

GROUPS = (queues, tasks, work, archive, admin)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with ``only`` of that command alone (see
    ``Commands``)."""
    parser = Parser(prog="qdo", description="Durable queues for very many small tasks.")
    parser.add_argument("--version", action="version", version=f"qdo {__version__}")
    parser.add_argument("-v", "--debug", action="store_true", dest="debug",
                        help="say what qdo does as it works (its log), and on errors "
                             "the whole cause chain")  # fmt: skip
    parser.add_argument("--user", metavar="NAME",
                        help="act on NAME's queues (default: yours; QDO_USER)")  # fmt: skip
    commands = Commands(parser, COMMANDS, only)
    for group in GROUPS:
        group.register(commands)
    commands.check()
    return parser


def _command_named(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs, if it names one before anything else but the
    top-level options (``-v``, ``--user NAME``); None if it does not (``qdo --help``, a
    misspelt command): then every command's parser is made, for help to list them."""
    args = iter(argv)
    for arg in args:
        if arg == "--user":
            next(args, None)
        elif arg in ("-v", "--debug") or arg.startswith("--user="):
            continue
        else:
            return arg if arg in COMMANDS else None
    return None


def _glue_batchopts(argv: Sequence[str]) -> list[str]:
    """``--batchopts "--comment=x"`` as ``--batchopts=--comment=x``: argparse takes a
    value that starts with '-' for an option, and every sbatch/qsub option does."""
    out = list(argv)
    i = 0
    while i < len(out) - 1 and out[i] != "--":
        if out[i] == "--batchopts":
            out[i : i + 2] = [f"--batchopts={out[i + 1]}"]
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``qdo`` command (``argv`` without the program name; default
    ``sys.argv[1:]``) and return its exit code."""
    argv = _glue_batchopts(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command_named(argv)).parse_args(argv)
    show_logs(args.debug)
    warnings.showwarning = _show_warning
    if args.user:
        os.environ["QDO_USER"] = args.user  # read with the other settings
    try:
        result: int = args.func(args)
        return result
    except QdoError as e:
        if args.debug or args.verbose:
            _print_traceback()
        print(f"qdo: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("qdo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `qdo tasks Q | head`: the reader left; say nothing
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as e:
        if args.debug or args.verbose:
            _print_traceback()
        print(f"qdo: error: {e}", file=sys.stderr)
        return 1


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:  # fmt: skip
    """qdo's own warnings, on the command line, as its errors are: one line, no source."""
    if issubclass(category, QdoWarning):
        print(f"qdo: warning: {message}", file=sys.stderr)
    else:
        _show_python_warning(message, category, filename, lineno, file, line)


_show_python_warning = warnings.showwarning


def _print_traceback() -> None:
    import traceback

    traceback.print_exc()
