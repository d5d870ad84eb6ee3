"""Commands on queues as a whole: create, set, list, status, pause, resume, retry, rerun,
forget, recover, delete."""

from __future__ import annotations

import argparse
import json
import sys
import time

from .. import display
from ..api import connect, create, qlist
from ..errors import InvalidInput
from .common import STATE_NAMES, Commands, count, positive_int, print_status, some_seconds


def register(commands: Commands) -> None:
    retry_options(commands.queue_command("create", cmd_create))
    retry_options(commands.queue_command("set", cmd_set))
    p = commands.command("list", cmd_list)
    p.add_argument("--json", action="store_true")
    p.add_argument("--all-users", action="store_true", help="everybody's queues")
    p = commands.command("status", cmd_status)
    p.add_argument("queue", metavar="QUEUE", nargs="?")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--interval", type=some_seconds(0.1), default=2.0,
                   help="seconds between refreshes (default 2)")  # fmt: skip
    commands.queue_command("pause", cmd_pause)
    commands.queue_command("resume", cmd_resume)
    commands.queue_command("retry", cmd_retry)
    p = commands.queue_command("rerun", cmd_rerun)
    p.add_argument("--force", action="store_true")
    p = commands.queue_command("forget", cmd_forget)
    p.add_argument("--force", action="store_true")
    p = commands.queue_command("recover", cmd_recover)
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--dead",
        action="store_true",
        help="also those whose batch job has ended (asks the batch system)",
    )
    which.add_argument(
        "--all", action="store_true", help="every Running task (only when you know nothing runs)"
    )
    p = commands.queue_command("delete", cmd_delete)
    p.add_argument("--force", action="store_true")


def retry_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-retries", type=count, metavar="N",
                   help="run a Failed task again up to N times (default 0)")  # fmt: skip
    p.add_argument("--max-lost", type=positive_int, metavar="N",
                   help="Kill a task after its worker was lost N times (default 3)")  # fmt: skip


def cmd_create(args: argparse.Namespace) -> int:
    create(args.queue, max_retries=args.max_retries, max_lost=args.max_lost)
    print(f"created queue {args.queue}")
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    q = connect(args.queue)
    q.set(max_retries=args.max_retries, max_lost=args.max_lost)
    status = q.status()
    print(f"{args.queue}: max_retries {status['max_retries']}, max_lost {status['max_lost']}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    queues = [q.listed or q.summary() for q in qlist(all_users=getattr(args, "all_users", False))]
    if args.json:
        print(json.dumps(queues, indent=2))
        return 0
    if not queues:
        print("no queues (create one with `qdo create NAME` or `qdo load NAME FILE`)")
        return 0
    rows = [[q["name"], q["state"], *(q["ntasks"][s] for s in STATE_NAMES)] for q in queues]
    headers = ["QUEUE", "STATE", *(s.upper() for s in STATE_NAMES)]
    right = range(2, 8)
    if getattr(args, "all_users", False):
        rows = [[q["user"], *row] for q, row in zip(queues, rows, strict=True)]
        headers, right = ["USER", *headers], range(3, 9)
    for line in display.table(headers, rows, right=right):
        print(line)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if args.queue is None:
        return cmd_list(args)
    q = connect(args.queue)
    if not args.watch:
        print_status(q.status(), args.json, sys.stdout)
        return 0
    tty = sys.stdout.isatty()
    try:
        while True:
            if tty:
                sys.stdout.write("\x1b[H\x1b[2J")
            print_status(q.status(), args.json, sys.stdout)
            if not tty:
                print()
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def cmd_pause(args: argparse.Namespace) -> int:
    connect(args.queue).pause()
    print(f"paused {args.queue}: running tasks finish, nothing new starts")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    connect(args.queue).resume()
    print(f"resumed {args.queue}")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    n = connect(args.queue).retry()
    print(f"{n:,} Failed or Killed tasks of {args.queue} will run again")
    return 0


def cmd_rerun(args: argparse.Namespace) -> int:
    q = connect(args.queue)
    if not args.force:
        total = sum(q.status()["ntasks"].values())
        raise InvalidInput(
            f"rerun resets all {total:,} tasks of {args.queue} and their results: "
            "add --force to do it"
        )
    print(f"{q.rerun():,} tasks of {args.queue} will run again")
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    q = connect(args.queue)
    if not args.force:
        if q.store.get_queue(q.name).kind != "calls":
            raise InvalidInput(f"queue {q.name!r} holds shell tasks: forget is for a queue of "
                               "Python calls (qdo delete, or qdo rerun, for this one)")  # fmt: skip
        total = sum(q.status()["ntasks"].values())
        raise InvalidInput(
            f"forget deletes all {total:,} calls of {q.name} and their results, so that its "
            "driver runs afresh: add --force to do it"
        )
    print(f"{q.store.forget_calls(q.name):,} calls of {q.name} and their results are gone")
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    n = connect(args.queue).recover(dead=args.dead, all=args.all)
    which = "" if args.all else " whose worker is gone"
    print(f"{n:,} Running tasks of {args.queue}{which} are Pending again")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    q = connect(args.queue)
    if not args.force:
        total = sum(q.status()["ntasks"].values())
        raise InvalidInput(
            f"delete removes {args.queue} and its {total:,} tasks for good: add --force to do it"
        )
    n = q.delete()
    print(f"deleted queue {args.queue} and its {n:,} tasks")
    return 0
