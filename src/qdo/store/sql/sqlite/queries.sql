-- What only the SQLite store runs, or spells its own way (see ../queries.sql).

-- name: schema_version
SELECT application, version FROM qdo_schema WHERE one = 1;

-- name: user_tables
SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%';

-- name: lock_ids
-- The highest task id ever handed out (the write lock is held: the next ones are ours);
-- a file of qdo 0.1 kept no last_task_id, so the tasks themselves count too.
SELECT max(last_task_id, coalesce((SELECT max(id) FROM tasks), 0)) AS last FROM qdo_schema;

-- name: used_ids
UPDATE qdo_schema SET last_task_id = :last WHERE one = 1 AND last_task_id < :last;

-- name: integrity_check
PRAGMA integrity_check;

-- name: foreign_key_check
PRAGMA foreign_key_check;
