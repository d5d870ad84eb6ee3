-- Version 8: the live agents (`qdo do`) of each queue: where they run, how many slots
-- they have, when they were last seen.  A durable executor sizes what it keeps in its
-- queue by their slots; `qdo agents` and the dashboard show them.  An agent adds its
-- row when it starts, renews `seen` as it goes and deletes the row when it ends; one
-- that died is no longer live once `seen` is old (see qdo.store.base.AGENT_LIVE).
-- `hand`: how many tasks it keeps claimed (running, and ahead of its slots: as many as
-- its tasks' durations call for), which is what a driver must keep in the queue for it.

CREATE TABLE agents (
    worker   TEXT    NOT NULL,   -- host:pid, as in tasks.worker
    queue_id INTEGER NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    host     TEXT    NOT NULL,
    slots    INTEGER NOT NULL CHECK (slots >= 1),
    hand     INTEGER NOT NULL CHECK (hand >= 1),   -- tasks it keeps: running, and ahead
    jobid    TEXT,
    started  REAL    NOT NULL,
    seen     REAL    NOT NULL,
    PRIMARY KEY (queue_id, worker)
) WITHOUT ROWID;

UPDATE qdo_schema SET version = 8;
