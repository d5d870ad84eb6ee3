-- Version 2: what workers need: retries, lost leases, time limits, the history of attempts.

ALTER TABLE queues ADD COLUMN max_retries INTEGER NOT NULL DEFAULT 0 CHECK (max_retries >= 0);
ALTER TABLE queues ADD COLUMN max_lost INTEGER NOT NULL DEFAULT 3 CHECK (max_lost >= 1);

-- per task: NULL max_retries means the queue's
ALTER TABLE tasks ADD COLUMN max_retries INTEGER CHECK (max_retries >= 0);
ALTER TABLE tasks ADD COLUMN timeout REAL CHECK (timeout > 0);
ALTER TABLE tasks ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;  -- attempts that Failed
ALTER TABLE tasks ADD COLUMN lost INTEGER NOT NULL DEFAULT 0;      -- attempts whose worker vanished

-- one row per finished hand-out: Succeeded, Failed, Killed, Lost (lease expired or worker
-- dead) or Returned (given back unfinished, e.g. on SIGTERM)
CREATE TABLE attempts (
    task_id  INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt  INTEGER NOT NULL,
    state    TEXT    NOT NULL CHECK (state = 'Succeeded' OR state = 'Failed'
                 OR state = 'Killed' OR state = 'Lost' OR state = 'Returned'),
    worker   TEXT,
    jobid    TEXT,
    started  REAL,
    finished REAL,
    exitcode INTEGER,
    message  TEXT,
    PRIMARY KEY (task_id, attempt)
) WITHOUT ROWID;

UPDATE qdo_schema SET version = 2;
