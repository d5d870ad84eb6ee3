-- Version 4: the batch jobs launched for a queue (`qdo launch`, `qdo jobs`).

CREATE TABLE jobs (
    queue_id  INTEGER NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    jobid     TEXT    NOT NULL,
    profile   TEXT    NOT NULL,   -- slurm, pbs, local or a site profile's name
    workers   INTEGER NOT NULL,
    submitted REAL    NOT NULL,
    PRIMARY KEY (queue_id, jobid)
) WITHOUT ROWID;

UPDATE qdo_schema SET version = 4;
