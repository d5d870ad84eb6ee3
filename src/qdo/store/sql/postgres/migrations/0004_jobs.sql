-- Version 4: the batch jobs launched for a queue (`qdo launch`, `qdo jobs`).

CREATE TABLE jobs (
    queue_id  bigint  NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    jobid     text    NOT NULL,
    profile   text    NOT NULL,   -- slurm, pbs, local or a site profile's name
    workers   integer NOT NULL,
    submitted double precision NOT NULL,
    PRIMARY KEY (queue_id, jobid)
);

UPDATE qdo_schema SET version = 4;
