"""Commands between a queue and an archive file: dump, restore."""

from __future__ import annotations

import argparse

from ..api import connect, restore
from .common import Commands


def register(commands: Commands) -> None:
    p = commands.queue_command("dump", cmd_dump)
    p.add_argument("file", metavar="FILE")
    p = commands.command("restore", cmd_restore)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--as", dest="as_name", metavar="NAME", help="under another name")


def cmd_dump(args: argparse.Namespace) -> int:
    q = connect(args.queue)
    counts = q.dump(args.file)
    print(f"wrote {args.queue} to {args.file}: {counts['tasks']:,} tasks, "
          f"{counts['requires']:,} requirements, {counts['attempts']:,} attempts")  # fmt: skip
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    q, n, offset = restore(args.file, as_name=args.as_name)
    moved = f" (ids moved up by {offset:,}: the archive's were taken)" if offset else ""
    print(f"restored queue {q.name} with {n:,} tasks from {args.file} into "
          f"{q.store.location}{moved}")  # fmt: skip
    return 0
