"""Commands between a queue and an archive file: dump, restore."""

from __future__ import annotations

import argparse
import os
import sys

from .. import archive
from ..api import connect, restore
from .common import Commands


def register(commands: Commands) -> None:
    p = commands.queue_command("dump", cmd_dump)
    p.add_argument("file", metavar="FILE", help="the archive to write (- for standard output)")
    p = commands.command("restore", cmd_restore)
    p.add_argument("file", metavar="FILE", help="the archive to read (- for standard input)")
    p.add_argument("--as", dest="as_name", metavar="NAME", help="under another name")


def cmd_dump(args: argparse.Namespace) -> int:
    q = connect(args.queue)
    to_stdout = args.file == "-" or _is_stdout(args.file)
    if args.file == "-":  # (as tar's -f -: the archive on standard output)
        counts = archive.dump(q.store, q.name, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        counts = q.dump(args.file)
    # (where the archive went to standard output, what was written is said on stderr)
    print(
        f"wrote {args.queue} to {'standard output' if args.file == '-' else args.file}: "
        f"{counts['tasks']:,} tasks, {counts['requires']:,} requirements, "
        f"{counts['attempts']:,} attempts",
        file=sys.stderr if to_stdout else sys.stdout,
    )
    return 0


def _is_stdout(path: str) -> bool:
    """Whether ``path`` is the file that standard output writes to (``/dev/stdout``)."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError):
        return False


def cmd_restore(args: argparse.Namespace) -> int:
    stdin = args.file == "-"  # (as dump's -: the archive on standard input)
    q, n, offset = restore("/dev/stdin" if stdin else args.file, as_name=args.as_name)
    moved = f" (ids moved up by {offset:,}: the archive's were taken)" if offset else ""
    print(f"restored queue {q.name} with {n:,} tasks from "
          f"{'standard input' if stdin else args.file} into "
          f"{q.store.location}{moved}")  # fmt: skip
    return 0
