-- Version 3: queues belong to a user (QDO's user=): a queue name is unique per owner,
-- not in the whole database.  SQLite cannot drop the old UNIQUE (name), so the table is
-- rebuilt (the store turns foreign keys off around this migration, so that dropping the
-- old table does not delete every task).  Queues that existed belong to whoever
-- migrates the file (:user): until now a database file was one user's.

CREATE TABLE queues_v3 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    owner       TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'Active' CHECK (state IN ('Active', 'Paused')),
    created     REAL    NOT NULL,
    max_retries INTEGER NOT NULL DEFAULT 0 CHECK (max_retries >= 0),
    max_lost    INTEGER NOT NULL DEFAULT 3 CHECK (max_lost >= 1),
    UNIQUE (owner, name)
);

INSERT INTO queues_v3 (id, owner, name, state, created, max_retries, max_lost)
SELECT id, :user, name, state, created, max_retries, max_lost FROM queues;

DROP TABLE queues;

ALTER TABLE queues_v3 RENAME TO queues;

UPDATE qdo_schema SET version = 3;
