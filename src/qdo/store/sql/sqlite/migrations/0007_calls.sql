-- Version 7: durable futures (qdo.executor).  A queue of kind 'calls' holds Python
-- calls: each task's call (the function and its arguments, pickled) is in calls, keyed
-- so that a driver run again finds the calls it made before; what a call returned or
-- raised, and the items a generator yielded, are in results, numbered in the order
-- they were written (seq), which is what a driver's watcher follows.

ALTER TABLE queues ADD COLUMN kind TEXT NOT NULL DEFAULT 'shell'
    CHECK (kind = 'shell' OR kind = 'calls');

CREATE TABLE calls (
    task_id  INTEGER PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    queue_id INTEGER NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    call_key TEXT    NOT NULL,
    call     BLOB    NOT NULL,
    UNIQUE (queue_id, call_key)
);

-- item -1: the call's return value (ok) or exception (not ok); 0, 1, ...: the items a
-- generator yielded, each as it came.  AUTOINCREMENT: a seq is never handed out twice,
-- so a watcher that has seen seq n has seen everything up to n (writes are serialized).
CREATE TABLE results (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    queue_id INTEGER NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    task_id  INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    item     INTEGER NOT NULL CHECK (item >= -1),
    ok       INTEGER NOT NULL CHECK (ok = 0 OR ok = 1),
    data     BLOB    NOT NULL,
    UNIQUE (task_id, item)
);
CREATE INDEX results_by_queue ON results (queue_id, seq);

UPDATE qdo_schema SET version = 7;
