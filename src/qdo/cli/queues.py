"""Commands on queues as a whole: create, set, list, status, pause, resume, retry, rerun,
forget, recover, delete."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

from .. import display
from ..api import connect, create, qlist
from ..errors import InvalidInput
from ..models import State
from ..queue import left_to_run
from .common import (
    STATE_NAMES,
    Commands,
    count,
    id_list,
    positive_int,
    print_status,
    some_seconds,
)


def register(commands: Commands) -> None:
    retry_options(commands.queue_command("create", cmd_create))
    retry_options(commands.queue_command("set", cmd_set))
    p = commands.command("list", cmd_list)
    p.add_argument("--json", action="store_true")
    p.add_argument("--all-users", action="store_true", help="everybody's queues")
    p = commands.command("status", cmd_status)
    p.add_argument("queue", metavar="QUEUE", nargs="?")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--watch",
        action="store_true",
        help="refresh, with the rate and an ETA, until nothing is left to run",
    )
    p.add_argument("--interval", type=some_seconds(0.1), default=2.0,
                   help="seconds between refreshes (default 2)")  # fmt: skip
    commands.queue_command("pause", cmd_pause)
    commands.queue_command("resume", cmd_resume)
    p = commands.queue_command("retry", cmd_retry)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--group", action="append", metavar="G",
                       help="only those of failure group G (qdo why); repeat for more")  # fmt: skip
    which.add_argument("--id", type=id_list, metavar="IDS",
                       help="only these tasks, e.g. 5,7-9")  # fmt: skip
    p = commands.queue_command("why", cmd_why)
    p.add_argument("--json", action="store_true")
    p.add_argument("--lines", type=count, default=3, metavar="N",
                   help="log lines shown per group (default 3)")  # fmt: skip
    p = commands.queue_command("cancel", cmd_cancel)
    p.add_argument("--id", type=id_list, metavar="IDS", required=True,
                   help="the tasks to cancel, e.g. 5,7-9")  # fmt: skip
    p = commands.queue_command("wait", cmd_wait)
    p.add_argument("--timeout", type=some_seconds(0), metavar="SEC",
                   help="give up after SEC seconds (exit code 124)")  # fmt: skip
    p.add_argument("--interval", type=some_seconds(0.05), default=1.0, metavar="SEC",
                   help="seconds between looks (default 1)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the final status as JSON")
    p = commands.queue_command("rerun", cmd_rerun)
    p.add_argument("--force", action="store_true")
    p = commands.queue_command("stats", cmd_stats)
    p.add_argument("--json", action="store_true")
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
        if args.watch:  # (it printed the list once, and ended, without a word)
            raise InvalidInput("--watch follows one queue: qdo status QUEUE --watch")
        return cmd_list(args)
    q = connect(args.queue)
    if not args.watch:
        print_status(q.status(), args.json, sys.stdout)
        return 0
    tty = sys.stdout.isatty()
    seen: list[tuple[float, int]] = []  # (when, tasks ended): the rate over the last 30 s
    try:
        while True:
            status = q.status()
            n = status["ntasks"]
            now = time.monotonic()
            seen.append((now, n["Succeeded"] + n["Failed"] + n["Killed"]))
            while len(seen) > 2 and now - seen[1][0] >= 30:
                seen.pop(0)
            left = left_to_run(status)
            rate = (seen[-1][1] - seen[0][1]) / (now - seen[0][0]) if now > seen[0][0] else None
            when = time.strftime("%H:%M:%S", time.localtime())
            if args.json:
                print(json.dumps({**status, "left": left, "rate": rate, "time": when}),
                      flush=True)  # fmt: skip
            else:
                if tty:
                    sys.stdout.write("\x1b[H\x1b[2J")
                print_status(status, False, sys.stdout)
                eta = f"ETA {_dur(left / rate)}" if rate and left else ""
                pace = "-" if rate is None else f"{rate:,.1f} tasks/s"
                print(f"  {when}  {pace}  {left:,} left  {eta}".rstrip())
                if not tty:
                    print()
                sys.stdout.flush()
            if not left:
                return 0  # done: nothing is left to run
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
    q = connect(args.queue)
    ids = args.id
    if args.group:
        from ..triage import retry_groups

        n = retry_groups(q, args.group)
    else:
        n = q.retry(ids=ids)
    print(f"{n:,} Failed or Killed tasks of {args.queue} will run again")
    return 0


def cmd_why(args: argparse.Namespace) -> int:
    from ..triage import failure_groups

    groups = failure_groups(connect(args.queue))
    if args.json:
        print(json.dumps([{"group": g.id, "count": g.count, "signature": g.signature,
                           "state": g.state, "exitcode": g.exitcode, "examples": g.examples,
                           "lines": g.lines[-args.lines:] if args.lines else []}
                          for g in groups], indent=2))  # fmt: skip
        return 0
    if not groups:
        print(f"no Failed or Killed tasks in {args.queue}")
        return 0
    total = sum(g.count for g in groups)
    kinds = f"{len(groups)} group" + ("s" if len(groups) != 1 else "")
    print(f"{total:,} Failed or Killed tasks of {args.queue} in {kinds}:")
    for g in groups:
        more = f" (and {g.count - 5:,} more)" if g.count > 5 else ""
        tasks = f"{g.count:,} task" + ("s" if g.count != 1 else "")
        print(f"\n{g.id}  {tasks}  {display.cell(g.signature)}")
        print(f"    e.g. {', '.join(map(str, g.examples))}{more}")
        for line in g.lines[-args.lines :] if args.lines else []:
            print(f"    | {display.cell(line, 120)}")
    print(f"\nqdo retry {args.queue} --group G runs a group again; qdo log {args.queue} ID "
          "shows a task's output")  # fmt: skip
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancelled tasks are Killed (never run again unless retried); a Running one's
    lease is revoked, and its agent stops it."""
    q = connect(args.queue)
    user = q.store.user
    found = {t.id: t for i in args.id for t in q.store.tasks(q.name, task_id=i)}
    missing = [i for i in args.id if i not in found]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise InvalidInput(f"no task {shown} in {q.name}: nothing cancelled")
    done = [i for i in args.id if found[i].state in (State.SUCCEEDED, State.KILLED)]
    todo = [i for i in args.id if i not in done]
    for task_id in todo:
        q.store.set_state(q.name, task_id, State.KILLED, None, "cancelled", user)
    print(f"{len(todo):,} tasks of {q.name} cancelled (Killed)"
          + (f"; {len(done):,} had Succeeded or were Killed already" if done else ""))  # fmt: skip
    return 0


#: ``qdo wait``'s exit codes: nothing left, all Succeeded; nothing left, some did not
#: (Failed, Killed, or blocked by those); the timeout came first.
WAIT_OK, WAIT_FAILED, WAIT_TIMEOUT = 0, 1, 124


def cmd_wait(args: argparse.Namespace) -> int:
    q = connect(args.queue)
    end = None if args.timeout is None else time.monotonic() + args.timeout
    while True:
        status = q.status()
        n = status["ntasks"]
        left = left_to_run(status)
        if not left or (end is not None and time.monotonic() >= end):
            break
        time.sleep(
            args.interval if end is None else max(0.0, min(args.interval, end - time.monotonic()))
        )
    bad = n["Failed"] + n["Killed"] + status["blocked"]
    code = WAIT_TIMEOUT if left else WAIT_FAILED if bad else WAIT_OK
    if args.json:
        print(json.dumps({**status, "left": left, "exit": code}, indent=2))
    elif left:
        print(f"{q.name}: {left:,} tasks still to run after {args.timeout:g} s")
    else:
        print(f"{q.name}: done, {n['Succeeded']:,} Succeeded"
              + (f", {n['Failed']:,} Failed, {n['Killed']:,} Killed, {status['blocked']:,} "
                 f"blocked (qdo why {q.name})" if bad else ""))  # fmt: skip
    return code


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


#: Per batch job, at most this many workers in the launch that ``qdo stats`` suggests.
PLAN_WORKERS_PER_JOB = 32


def cmd_stats(args: argparse.Namespace) -> int:
    q = connect(args.queue)
    s = q.store.stats(q.name)
    counts = q.status()["ntasks"]
    left = counts["Pending"] + counts["Waiting"]
    slots = sum(a.slots for a in q.store.agents(q.name))
    plan = _plan(q.name, left, s.p95, slots)
    if args.json:
        print(json.dumps({"queue": q.name, "succeeded": s.succeeded, "runtime": {
            "p50": s.p50, "p95": s.p95, "max": s.longest}, "cpu_efficiency": s.cpu_efficiency,
            "rss_p95": s.rss_p95, "left": left, "plan": plan}, indent=2))  # fmt: skip
        return 0
    print(f"{q.name}: {s.succeeded:,} Succeeded attempts")
    if s.succeeded:
        print(f"  run time   p50 {_dur(s.p50)}   p95 {_dur(s.p95)}   max {_dur(s.longest)}")
        eff = "-" if s.cpu_efficiency is None else f"{100 * s.cpu_efficiency:.0f} %"
        print(f"  CPU        {eff} of the run time (CPU seconds over run seconds)")
        print(f"  memory     peak p95 {display.size(s.rss_p95)}")
    if plan is None:
        print(f"  plan       {left:,} left to run" + ("" if left else ": nothing to plan"))
    else:
        workers = f"{plan['workers']:,} worker" + ("s" if plan["workers"] != 1 else "")
        print(f"  plan       {left:,} left; at the p95 run time, {workers} finish in about "
              f"{_dur(plan['seconds'])}; e.g. {plan['command']}")  # fmt: skip
    return 0


def _plan(queue: str, left: int, p95: float | None, slots: int) -> dict[str, Any] | None:
    """How many workers finish what is left, and in how long, at the p95 run time: the
    live agents' slots if there are any, else enough for about an hour."""
    if not left or not p95:
        return None
    workers = min(left, slots or max(1, math.ceil(left * p95 / 3600)))
    seconds = math.ceil(left / workers) * p95
    wall = max(600, math.ceil(seconds * 1.25 / 600) * 600)  # some margin, in 10 minutes
    walltime = f"{wall // 3600:02d}:{wall % 3600 // 60:02d}:00"
    jobs = math.ceil(workers / PLAN_WORKERS_PER_JOB)
    per_job = math.ceil(workers / jobs)
    command = f"qdo launch {queue} {per_job}" + (f" --jobs {jobs}" if jobs > 1 else "")
    return {"workers": workers, "seconds": seconds, "walltime": walltime,
            "command": f"{command} --walltime {walltime}"}  # fmt: skip


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


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
