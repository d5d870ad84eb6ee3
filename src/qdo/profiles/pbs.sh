#!/bin/bash
#qdo kind=pbs
# qdo's PBS/Torque profile.  `qdo launch --profile pbs` fills in the $${...} fields and
# submits the result with `qsub [--batchopts...] SCRIPT`.  Copy it to
# $$QDO_DIR/profiles/NAME.sh to make a site profile (keep the `#qdo kind=` line).
#PBS -N ${job_name}
#PBS -l nodes=${nodes}:ppn=${cores_per_node}
${time_line}
${partition_line}

cd "$${PBS_O_WORKDIR:-$$PWD}"
${agent}
