#!/bin/bash
#qdo kind=local
# qdo's local profile: no batch system, the workers run detached on this machine
# (`qdo launch --profile local`).  Its "job id" is local-<pid of this script>.
export QDO_JOB_ID=local-$$$$
${agent}
