-- What only the PostgreSQL store runs, or spells its own way (see ../queries.sql).

-- name: schema_version
SELECT application, version FROM qdo_schema WHERE one = 1;

-- name: has_qdo_table
-- The usual case, a schema qdo made, answered from the catalog's cache (the full look
-- below reads pg_tables: 3 of the 4 ms a command's store took to start).
SELECT to_regclass(:table) IS NOT NULL AS has_table;

-- name: schema_exists
SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = :schema) AS has_schema,
       EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = :schema
                                         AND tablename = 'qdo_schema') AS has_table,
       (SELECT count(*) FROM pg_tables WHERE schemaname = :schema) AS ntables;

-- name: now
SELECT qdo_now() AS now;

-- name: planned_rows
-- How many rows the planner believes a table of this schema holds (-1: never analyzed).
SELECT CAST(coalesce((SELECT reltuples FROM pg_class WHERE oid = to_regclass(:table)), -1)
            AS double precision) AS n;

-- name: lock_ids
-- The highest task id ever handed out; its row lock orders concurrent adds, so the
-- next ids are ours.  (Functions: a role that does not own the tables may read
-- last_task_id, not write it.)
SELECT qdo_lock_ids() AS last;

-- name: used_ids
SELECT qdo_used_ids();

-- name: queue_channel
SELECT channel FROM queues WHERE id = :queue_id;

-- name: queue_writable
-- (the same rows the policies let the current role change)
SELECT w FROM qdo_writable() w WHERE w = :queue_id;

-- name: notify
-- Wake the workers waiting for these queues (delivered at COMMIT); the channel's name
-- is a token only the roles that may read the queue know, and nothing else is sent.
SELECT pg_notify(channel, '') FROM queues WHERE id {in ids bigint} ORDER BY id;

-- name: session
-- Who this connection acts as, and whether the tables' policies apply to it (not to
-- the role that owns them, nor to a superuser).
SELECT current_user AS role, row_security_active('tasks') AS row_security;

-- name: share_set
INSERT INTO shares (queue_id, owner, grantee, mode)
SELECT id, owner, :grantee, :mode FROM queues WHERE owner = :owner AND name = :name
ON CONFLICT (queue_id, grantee) DO UPDATE SET mode = excluded.mode
RETURNING queue_id;

-- name: share_drop
DELETE FROM shares
WHERE queue_id = (SELECT id FROM queues WHERE owner = :owner AND name = :name)
  AND grantee = :grantee;

-- name: shares_of
SELECT grantee, mode FROM shares WHERE queue_id = :queue_id ORDER BY grantee;

-- name: role_exists
SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :role) AS found;

-- name: check
-- what the constraints cannot say: requirements of unknown tasks are allowed (blocked),
-- but ids above last_task_id would be reused
SELECT 'task id ' || max(id) || ' is above last_task_id '
       || (SELECT last_task_id FROM qdo_schema) AS problem
FROM tasks HAVING max(id) > (SELECT last_task_id FROM qdo_schema);

-- name: counts_add
SELECT qdo_count_added(:queue_id, :state, :n);

-- name: counts_repair
SELECT qdo_recount();
