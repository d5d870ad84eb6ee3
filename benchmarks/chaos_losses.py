"""How fairly lost attempts are counted when agents die (issue 11, item 5).

A queue of short shell tasks (each appends its id to a file when it starts) on SQLite,
``max_lost=2``; 4 ``qdo do`` agents; one of them SIGKILLed every 0.5-2 s (and replaced)
for ``--seconds``; then the rest finish.  Printed: how many tasks ended Killed, and how
many of those never ran at all (their id is not in the file): losses counted against
tasks that no agent had started.

    python benchmarks/chaos_losses.py [--src PATH] [--seconds 20] [--tasks 3000]

``--src`` runs another qdo (e.g. a ``git worktree`` of an older commit: its ``src``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"))
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--tasks", type=int, default=3000)
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        env = {**os.environ, "PYTHONPATH": args.src, "QDO_DIR": str(home / "qdo")}
        ran = home / "ran"
        tasks = home / "tasks.txt"
        tasks.write_text("".join(f"echo $QDO_TASK_ID >> {ran}; sleep 0.0{i % 5}\n"
                                 for i in range(args.tasks)))  # fmt: skip

        def qdo(*a: str) -> str:
            return subprocess.run([sys.executable, "-m", "qdo", *a], env=env, check=True,
                                  capture_output=True, text=True).stdout  # fmt: skip

        qdo("create", "C", "--max-lost", "2")
        qdo("load", "C", str(tasks))

        def agent() -> subprocess.Popen[bytes]:
            return subprocess.Popen([sys.executable, "-m", "qdo", "do", "C", "--workers", "2",
                                     "--lease", "1"], env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)  # fmt: skip

        rng = random.Random(args.seed)
        agents = [agent() for _ in range(4)]
        kills = 0
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            time.sleep(rng.uniform(0.5, 2.0))
            victim = agents.pop(rng.randrange(len(agents)))
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            kills += 1
            agents.append(agent())
        for a in agents:
            a.wait()
        time.sleep(1.5)
        qdo("recover", "C")  # the last leases
        rows = [json.loads(line) for line in qdo("tasks", "C", "--json").splitlines()]
        killed = {r["id"] for r in rows if r["state"] == "Killed"}
        losses = sum(r["lost"] for r in rows)
        started = {int(x) for x in ran.read_text().split()}
        never = killed - started
        print(f"qdo from {args.src}: {args.tasks} tasks, {kills} agents SIGKILLed; "
              f"{losses} lost attempts counted; {len(killed)} tasks ended Killed, "
              f"{len(never)} of them never ran "
              f"({100 * len(never) / max(1, len(killed)):.0f}%)")  # fmt: skip


if __name__ == "__main__":
    main()
