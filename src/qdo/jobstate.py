"""What a batch system says of jobs: is each still working, or gone?

Below the queue API (``qdo recover --dead`` asks it) and below launching (``qdo jobs``,
``qdo launch --auto``).  One call asks about many jobs at once: Slurm's controller is
shared by everyone, and a script may ask every few seconds.  The asking is each batch
system's own (``qdo.batch``); this module picks the system.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

from .batch import SYSTEMS, JobState, system

__all__ = ["ACTIVE", "JobState", "ended", "job_states"]

#: The batch systems' names of job states that still count as working on the queue
#: (what a ``job_states`` value is in when its ``JobState`` is active).
ACTIVE = {native for cls in SYSTEMS.values() for native, state in cls.STATES.items()
          if state.active}  # fmt: skip


def ended(jobids: Sequence[str]) -> list[str]:
    """The batch jobs among ``jobids`` that this machine's batch system says have ended
    (not those it cannot tell about), asking it once: Slurm if ``squeue`` is here, else
    PBS.  Local jobs (``local-PID``) are left out: their workers' processes tell."""
    batch = [j for j in jobids if not j.startswith("local-")]
    found = [cls for cls in SYSTEMS.values() if cls.status_tool and shutil.which(cls.status_tool)]
    if not batch or not found:
        return []
    return [j for j, status in found[0]().status(batch).items() if status.state.over]


def job_states(kind: str, jobids: Sequence[str]) -> dict[str, str]:
    """The batch system's own name of each job's state: PENDING, RUNNING, COMPLETED,
    TIMEOUT, ...; ENDED when it is gone from the batch system's memory, UNKNOWN when the
    batch system could not be asked."""
    return {j: status.native for j, status in system(kind).status(jobids).items()}
