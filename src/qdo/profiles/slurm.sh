#!/bin/bash
#qdo kind=slurm
# qdo's Slurm profile.  `qdo launch` fills in the $${...} fields and submits the result
# with `sbatch [--batchopts...] SCRIPT`; `qdo launch --dry-run` prints it.  A site copies
# this file to $$QDO_DIR/profiles/NAME.sh, edits it (keep the `#qdo kind=` line) and
# picks it with `--profile NAME` or QDO_BATCH_PROFILE=NAME.
#SBATCH --job-name=${job_name}
#SBATCH --nodes=${nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=${cores_per_node}
#SBATCH --output=${job_log}
#SBATCH --export=${export}
${time_line}
${partition_line}

# one qdo agent per node, running ${workers_per_node} workers; it exits when the queue is
# empty, and hands its running tasks back when the time limit's SIGTERM comes
${agent}
