-- Schema of a fresh qdo SQLite database: version 1.  A fresh database then runs every
-- migration in migrations/ too, exactly as an old one does, so the two never differ.
-- A new version: add migrations/NNNN_*.sql and bump SCHEMA_VERSION in store/sqlite.py.

-- name: create_schema
CREATE TABLE qdo_schema (
    one          INTEGER PRIMARY KEY CHECK (one = 1),
    application  TEXT    NOT NULL CHECK (application = 'qdo'),
    version      INTEGER NOT NULL,
    -- the highest task id ever handed out: ids are never reused, so a requirement or a
    -- log name can't point at a task that replaced a deleted one.  (AUTOINCREMENT would
    -- do the same but rewrites sqlite_sequence for every row: loads 15% slower.)
    last_task_id INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE queues (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    name    TEXT    NOT NULL UNIQUE,
    state   TEXT    NOT NULL DEFAULT 'Active' CHECK (state IN ('Active', 'Paused')),
    created REAL    NOT NULL
);

-- ids are assigned by the store from qdo_schema.last_task_id
CREATE TABLE tasks (
    id            INTEGER PRIMARY KEY,
    queue_id      INTEGER NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    payload       TEXT    NOT NULL,
    is_json       INTEGER NOT NULL DEFAULT 0 CHECK (is_json = 0 OR is_json = 1),
    -- spelled with OR: SQLite rebuilds an IN list for every inserted row (2x slower loads)
    state         TEXT    NOT NULL CHECK (state = 'Waiting' OR state = 'Pending'
                      OR state = 'Running' OR state = 'Succeeded' OR state = 'Failed'
                      OR state = 'Killed'),
    priority      INTEGER NOT NULL DEFAULT 0,
    exitcode      INTEGER,
    message       TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created       REAL    NOT NULL,
    started       REAL,
    finished      REAL,
    worker        TEXT,
    jobid         TEXT,
    log           TEXT,
    lease_expires REAL,
    lease_token   INTEGER,
    -- a Running task is always held by a lease, and only a Running task is
    CHECK ((state = 'Running') = (lease_expires IS NOT NULL AND lease_token IS NOT NULL
                                  AND worker IS NOT NULL))
);
-- One index serves both claims (the Pending range, in hand-out order) and counts by
-- state; two separate indexes made loads 25% slower.
CREATE INDEX tasks_by_state ON tasks (queue_id, state, priority DESC, id);

-- task_id requires req_id.  req_id has no foreign key: a requirement may outlive
-- its task's queue (the dependent then stays Waiting, counted as blocked).
CREATE TABLE requires (
    task_id INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    req_id  INTEGER NOT NULL,
    PRIMARY KEY (task_id, req_id)
) WITHOUT ROWID;
CREATE INDEX requires_by_req ON requires (req_id, task_id);

-- a row per requirement of a task that has not (or no longer) Succeeded
CREATE VIEW unmet_requires AS
    SELECT r.task_id, r.req_id, p.state AS req_state
    FROM requires r LEFT JOIN tasks p ON p.id = r.req_id
    WHERE p.state IS NULL OR p.state <> 'Succeeded';

INSERT INTO qdo_schema (one, application, version) VALUES (1, 'qdo', 1);
