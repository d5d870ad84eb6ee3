-- Named statements of the PostgreSQL store (``-- name: x`` starts block x).
-- Values always arrive as parameters (%(name)s); lists arrive as arrays.
-- Times come from the server's clock: qdo_now().

-- name: schema_version
SELECT application, version FROM qdo_schema WHERE one = 1;

-- name: schema_exists
SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %(schema)s),
       EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = %(schema)s
                                         AND tablename = 'qdo_schema'),
       (SELECT count(*) FROM pg_tables WHERE schemaname = %(schema)s);

-- name: now
SELECT qdo_now();

-- name: queue_insert
INSERT INTO queues (owner, name, state, created) VALUES (%(owner)s, %(name)s, 'Active', qdo_now())
ON CONFLICT (owner, name) DO NOTHING
RETURNING id, name, state, created, max_retries, max_lost, owner;

-- name: queue_channel
SELECT channel FROM queues WHERE id = %(queue_id)s;

-- name: extend_leases
-- Run first by a verb that follows an outage (the server away, its disk full): the
-- holders of Running tasks could not renew meanwhile, so their leases move on.
UPDATE tasks SET lease_expires = lease_expires + %(by)s WHERE state = 'Running';

-- name: queue_writable
-- (the same rows the policies let the current role change)
SELECT w FROM qdo_writable() w WHERE w = %s;

-- name: notify
-- Wake the workers waiting for these queues (delivered at COMMIT); the channel's name
-- is a token only the roles that may read the queue know, and nothing else is sent.
SELECT pg_notify(channel, '') FROM queues WHERE id = ANY(%(ids)s) ORDER BY id;

-- name: session
-- Who this connection acts as, and whether the tables' policies apply to it (not to
-- the role that owns them, nor to a superuser).
SELECT current_user, row_security_active('tasks');

-- name: share_set
INSERT INTO shares (queue_id, owner, grantee, mode)
SELECT id, owner, %(grantee)s, %(mode)s FROM queues WHERE owner = %(owner)s AND name = %(name)s
ON CONFLICT (queue_id, grantee) DO UPDATE SET mode = excluded.mode
RETURNING queue_id;

-- name: share_drop
DELETE FROM shares
WHERE queue_id = (SELECT id FROM queues WHERE owner = %(owner)s AND name = %(name)s)
  AND grantee = %(grantee)s;

-- name: shares_of
SELECT grantee, mode FROM shares WHERE queue_id = %(queue_id)s ORDER BY grantee;

-- name: role_exists
SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %(role)s);

-- name: queue_get
SELECT id, name, state, created, max_retries, max_lost, owner FROM queues
WHERE owner = %(owner)s AND name = %(name)s;

-- name: queue_list
-- %(owner)s NULL: every user's
SELECT id, name, state, created, max_retries, max_lost, owner FROM queues
WHERE %(owner)s::text IS NULL OR owner = %(owner)s ORDER BY name, owner;

-- name: queue_set_state
UPDATE queues SET state = %(state)s WHERE owner = %(owner)s AND name = %(name)s RETURNING id;

-- name: queue_set_options
UPDATE queues SET max_retries = coalesce(%(max_retries)s, max_retries),
                  max_lost = coalesce(%(max_lost)s, max_lost)
WHERE owner = %(owner)s AND name = %(name)s
RETURNING id, name, state, created, max_retries, max_lost, owner;

-- name: queue_delete
WITH gone AS (DELETE FROM queues WHERE owner = %(owner)s AND name = %(name)s RETURNING id)
SELECT (SELECT id FROM gone), (SELECT count(*) FROM tasks WHERE queue_id = (SELECT id FROM gone));

-- name: lock_last_task_id
-- (functions: a role that does not own the tables may read last_task_id, not write it)
SELECT qdo_lock_ids();

-- name: set_last_task_id
SELECT qdo_used_ids();

-- name: copy_tasks
COPY tasks (id, queue_id, payload, is_json, state, priority, created, timeout, max_retries)
FROM STDIN;

-- name: copy_requires
COPY requires (task_id, req_id) FROM STDIN;

-- name: requires_insert
INSERT INTO requires (task_id, req_id)
SELECT * FROM unnest(%(tasks)s::bigint[], %(reqs)s::bigint[])
ON CONFLICT DO NOTHING;

-- name: lock_required
-- Hold the required tasks still (a concurrent finish waits) while their dependents are
-- being decided, so that no dependent stays Waiting on a task that just Succeeded.
SELECT id FROM tasks WHERE id = ANY(%(ids)s) ORDER BY id FOR SHARE;

-- name: ids_missing
SELECT x FROM unnest(%(ids)s::bigint[]) x WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE id = x);

-- name: block_unmet
UPDATE tasks SET state = 'Waiting'
WHERE id = ANY(%(ids)s) AND state = 'Pending'
  AND EXISTS (SELECT 1 FROM unmet_requires u WHERE u.task_id = tasks.id);

-- name: task_state
SELECT t.state FROM tasks t JOIN queues q ON q.id = t.queue_id
WHERE t.id = %(task_id)s AND q.owner = %(owner)s AND q.name = %(queue)s
FOR UPDATE OF t;

-- name: reaches
WITH RECURSIVE up (id) AS (
    SELECT unnest(%(ids)s::bigint[])
    UNION
    SELECT r.req_id FROM requires r JOIN up ON r.task_id = up.id
)
SELECT 1 FROM up WHERE id = %(task_id)s LIMIT 1;

-- name: claim
-- One statement: skip the rows other claimers hold, take the best n of the rest.
-- (%(reserve)s: not started yet; Store.finish(begun=...) marks them when they are)
UPDATE tasks
SET state = 'Running', attempts = attempts + 1, worker = %(worker)s, jobid = %(jobid)s,
    started = CASE WHEN %(reserve)s THEN NULL ELSE qdo_now() END, finished = NULL, exitcode = NULL, message = NULL,
    lease_expires = qdo_now() + %(lease)s, lease_token = %(token)s
WHERE id IN (SELECT id FROM tasks
             WHERE queue_id = (SELECT id FROM queues WHERE owner = %(owner)s
                                 AND name = %(queue)s AND state = 'Active')
               AND state = 'Pending'
               AND (%(max_seconds)s::float8 IS NULL OR timeout IS NULL
                    OR timeout <= %(max_seconds)s::float8)
             ORDER BY priority DESC, id
             LIMIT %(n)s
             FOR UPDATE SKIP LOCKED)
RETURNING id, queue_id, payload, is_json, state, priority, exitcode, message, attempts,
          created, started, finished, worker, jobid, log, lease_expires, lease_token,
          timeout, max_retries, failures, lost;

-- name: requires_of
SELECT task_id, req_id FROM requires WHERE task_id = ANY(%(ids)s) ORDER BY task_id, req_id;

-- name: begin
-- Reserved tasks (claimed, not started) that their holder has started since.
UPDATE tasks t SET started = o.started
FROM unnest(%(ids)s::bigint[], %(tokens)s::bigint[], %(started)s::float8[])
     AS o (id, token, started)
WHERE t.id = o.id AND t.lease_token = o.token AND t.worker = %(worker)s
  AND t.state = 'Running'
  AND t.id = ANY(%(ids)s::bigint[]);  -- (so the batch is found by key, never by a scan)

-- name: renew
UPDATE tasks t SET lease_expires = qdo_now() + %(lease)s
FROM unnest(%(ids)s::bigint[], %(tokens)s::bigint[]) AS o (id, token)
WHERE t.id = o.id AND t.lease_token = o.token AND t.worker = %(worker)s
  AND t.state = 'Running'
  AND t.id = ANY(%(ids)s::bigint[])  -- (so the batch is found by key, never by a scan)
RETURNING t.id;

-- name: finish
-- Every outcome of a batch in one statement.  'Pending' gives a task back unrun (neither
-- a failure nor a loss); a Failed one goes back to Pending while retries remain.
UPDATE tasks t
SET state = CASE WHEN o.state = 'Failed' AND t.failures < coalesce(t.max_retries,
                          (SELECT q.max_retries FROM queues q WHERE q.id = t.queue_id))
                 THEN 'Pending' ELSE o.state END,
    failures = t.failures + (o.state = 'Failed')::int,
    exitcode = CASE WHEN o.state = 'Pending' THEN t.exitcode ELSE o.exitcode END,
    message = o.message,
    finished = CASE WHEN o.state = 'Pending' THEN t.finished ELSE qdo_now() END,
    started = coalesce(o.started, t.started),
    log = coalesce(o.log, t.log),
    lease_expires = NULL, lease_token = NULL
FROM unnest(%(ids)s::bigint[], %(tokens)s::bigint[], %(states)s::text[],
            %(exitcodes)s::int[], %(messages)s::text[], %(logs)s::text[],
            %(started)s::float8[]) AS o (id, token, state, exitcode, message, log, started)
WHERE t.id = o.id AND t.lease_token = o.token AND t.worker = %(worker)s
  AND t.state = 'Running'
  AND t.id = ANY(%(ids)s::bigint[])  -- (so the batch is found by key, never by a scan)
-- (returns the attempt's history row, then the queue and the task's new state)
RETURNING t.id, t.attempts, CASE WHEN o.state = 'Pending' THEN 'Returned' ELSE o.state END,
          t.worker, t.jobid, t.started,
          CASE WHEN o.state = 'Pending' THEN qdo_now() ELSE t.finished END,
          o.exitcode, o.message, t.queue_id, t.state;

-- name: attempt_insert
INSERT INTO attempts (task_id, attempt, state, worker, jobid, started, finished, exitcode,
                      message)
SELECT * FROM unnest(%(task_id)s::bigint[], %(attempt)s::int[], %(state)s::text[],
                     %(worker)s::text[], %(jobid)s::text[], %(started)s::float8[],
                     %(finished)s::float8[], %(exitcode)s::int[], %(message)s::text[])
ON CONFLICT (task_id, attempt) DO UPDATE
SET state = excluded.state, worker = excluded.worker, jobid = excluded.jobid,
    started = excluded.started, finished = excluded.finished,
    exitcode = excluded.exitcode, message = excluded.message;

-- name: attempts_of
SELECT task_id, attempt, state, worker, jobid, started, finished, exitcode, message
FROM attempts WHERE task_id = ANY(%(ids)s) ORDER BY task_id, attempt;

-- name: lock_dependents
-- The Waiting dependents of tasks that just Succeeded, locked in id order before they
-- are looked at: two transactions that each finish one requirement of the same task
-- then see each other's result (else both could leave it Waiting).
SELECT t.id FROM tasks t
WHERE t.state = 'Waiting' AND t.id IN (SELECT task_id FROM requires WHERE req_id = ANY(%(ids)s))
ORDER BY t.id FOR UPDATE;

-- name: release_dependents
UPDATE tasks SET state = 'Pending'
WHERE state = 'Waiting' AND id = ANY(%(ids)s)
  AND NOT EXISTS (SELECT 1 FROM unmet_requires u WHERE u.task_id = tasks.id)
RETURNING queue_id;

-- name: any_expired
-- (the clock read once, so that the index of Running leases answers, not a table scan)
SELECT 1 FROM tasks
WHERE state = 'Running' AND queue_id = %(queue_id)s AND lease_expires < (SELECT qdo_now())
LIMIT 1;

-- name: any_expired_anywhere
SELECT 1 FROM tasks WHERE state = 'Running' AND lease_expires < (SELECT qdo_now()) LIMIT 1;

-- name: requeue_expired
-- A task that was only reserved (started NULL: claimed, never started) lost nothing: it
-- goes back as if handed back.
UPDATE tasks t
SET lost = t.lost + (t.started IS NOT NULL)::int,
    state = CASE WHEN t.started IS NOT NULL AND t.lost + 1 >= q.max_lost THEN 'Killed'
                 ELSE 'Pending' END,
    finished = CASE WHEN t.started IS NOT NULL AND t.lost + 1 >= q.max_lost THEN qdo_now() END,
    message = CASE WHEN t.started IS NULL
                   THEN 'claimed by worker ' || t.worker || ', lost (' || %(why)s
                        || ') before it started attempt ' || t.attempts || '; will run again'
                   WHEN t.lost + 1 >= q.max_lost
                   THEN 'killed: its worker was lost ' || (t.lost + 1) || ' times'
                   ELSE 'worker ' || t.worker || ' lost (' || %(why)s || ') during attempt '
                        || t.attempts || '; will run again' END,
    exitcode = NULL, lease_expires = NULL, lease_token = NULL
FROM queues q
WHERE q.id = t.queue_id AND t.state = 'Running'
  AND ((%(workers)s::text[] IS NULL AND %(jobids)s::text[] IS NULL
        AND t.lease_expires < (SELECT qdo_now()))
       OR t.worker = ANY(%(workers)s::text[]) OR t.jobid = ANY(%(jobids)s::text[]))
  AND (%(queue_id)s::bigint IS NULL OR t.queue_id = %(queue_id)s)
RETURNING t.id, t.attempts, CASE WHEN t.started IS NULL THEN 'Returned' ELSE 'Lost' END,
          t.worker, t.jobid, t.started, qdo_now(), NULL::int, t.message, t.queue_id, t.state;

-- name: running_workers
SELECT DISTINCT worker FROM tasks WHERE queue_id = %(queue_id)s AND state = 'Running';

-- name: running_jobs
SELECT DISTINCT jobid FROM tasks
WHERE queue_id = %(queue_id)s AND state = 'Running' AND jobid IS NOT NULL;

-- name: counts
SELECT state, count(*) FROM tasks WHERE queue_id = %(queue_id)s GROUP BY state;

-- name: all_counts
SELECT queue_id, state, count(*) FROM tasks
WHERE %(owner)s::text IS NULL OR queue_id IN (SELECT id FROM queues WHERE owner = %(owner)s)
GROUP BY queue_id, state;

-- name: blocked
SELECT count(*) FROM tasks t
WHERE t.queue_id = %(queue_id)s AND t.state = 'Waiting'
  AND EXISTS (SELECT 1 FROM unmet_requires u WHERE u.task_id = t.id
              AND (u.req_state IS NULL OR u.req_state IN ('Failed', 'Killed')));

-- name: tasks_all
SELECT id, queue_id, payload, is_json, state, priority, exitcode, message, attempts,
       created, started, finished, worker, jobid, log, lease_expires, lease_token,
       timeout, max_retries, failures, lost
FROM tasks WHERE queue_id = %(queue_id)s AND id > %(after)s
  AND (%(exitcode)s::int IS NULL OR exitcode = %(exitcode)s)
ORDER BY id LIMIT %(limit)s;

-- name: tasks_in_state
SELECT id, queue_id, payload, is_json, state, priority, exitcode, message, attempts,
       created, started, finished, worker, jobid, log, lease_expires, lease_token,
       timeout, max_retries, failures, lost
FROM tasks WHERE queue_id = %(queue_id)s AND state = %(state)s AND id > %(after)s
  AND (%(exitcode)s::int IS NULL OR exitcode = %(exitcode)s)
ORDER BY id LIMIT %(limit)s;

-- name: task_by_id
SELECT id, queue_id, payload, is_json, state, priority, exitcode, message, attempts,
       created, started, finished, worker, jobid, log, lease_expires, lease_token,
       timeout, max_retries, failures, lost
FROM tasks WHERE queue_id = %(queue_id)s AND id = %(task_id)s;

-- name: task_for_change
SELECT t.state, t.attempts, t.worker, t.jobid, t.started FROM tasks t
JOIN queues q ON q.id = t.queue_id
WHERE t.id = %(task_id)s AND q.owner = %(owner)s AND q.name = %(queue)s
FOR UPDATE OF t;

-- name: set_state
-- An administrative change (see Store.set_state).  Pending waits where a requirement has
-- not Succeeded, and starts with fresh failure and loss budgets.
UPDATE tasks
SET state = CASE WHEN %(state)s = 'Pending'
                      AND EXISTS (SELECT 1 FROM unmet_requires u WHERE u.task_id = tasks.id)
                 THEN 'Waiting' ELSE %(state)s END,
    exitcode = %(exitcode)s, message = %(message)s, attempts = %(attempts)s,
    finished = CASE WHEN %(state)s = 'Pending' THEN NULL ELSE %(now)s END,
    failures = CASE WHEN %(state)s = 'Pending' THEN 0 ELSE failures END,
    lost = CASE WHEN %(state)s = 'Pending' THEN 0 ELSE lost END,
    lease_expires = NULL, lease_token = NULL
WHERE id = %(task_id)s
RETURNING state, queue_id;

-- name: block_dependents
UPDATE tasks SET state = 'Waiting'
WHERE state = 'Pending' AND id IN (SELECT task_id FROM requires WHERE req_id = ANY(%(ids)s));

-- name: retry
UPDATE tasks
SET state = CASE WHEN EXISTS (SELECT 1 FROM unmet_requires u WHERE u.task_id = tasks.id)
                 THEN 'Waiting' ELSE 'Pending' END,
    failures = 0, lost = 0, lease_expires = NULL, lease_token = NULL,
    priority = coalesce(%(priority)s::bigint, priority)
WHERE queue_id = %(queue_id)s AND state = ANY(%(states)s::text[]);

-- name: rerun_forget
DELETE FROM attempts WHERE task_id IN (SELECT id FROM tasks WHERE queue_id = %(queue_id)s);

-- name: rerun_reset
UPDATE tasks
SET state = 'Pending', exitcode = NULL, message = NULL, attempts = 0, started = NULL,
    failures = 0, lost = 0, finished = NULL, worker = NULL, jobid = NULL, log = NULL,
    lease_expires = NULL, lease_token = NULL
WHERE queue_id = %(queue_id)s;

-- name: rerun_block
UPDATE tasks SET state = 'Waiting'
WHERE state = 'Pending'
  AND (queue_id = %(queue_id)s
       OR id IN (SELECT r.task_id FROM requires r JOIN tasks p ON p.id = r.req_id
                 WHERE p.queue_id = %(queue_id)s))
  AND EXISTS (SELECT 1 FROM unmet_requires u WHERE u.task_id = tasks.id);

-- name: check
-- what the constraints cannot say: requirements of unknown tasks are allowed (blocked),
-- but ids above last_task_id would be reused
SELECT 'task id ' || max(id) || ' is above last_task_id ' || (SELECT last_task_id FROM qdo_schema)
FROM tasks HAVING max(id) > (SELECT last_task_id FROM qdo_schema);

-- name: export_span
SELECT min(id), max(id), count(*) FROM tasks WHERE queue_id = %(queue_id)s;

-- name: export_tasks
SELECT id, payload, is_json, state, priority, exitcode, message, attempts, created, started,
       finished, worker, jobid, log, lease_expires, lease_token, timeout, max_retries,
       failures, lost
FROM tasks WHERE queue_id = %(queue_id)s ORDER BY id;

-- name: export_requires
SELECT r.task_id, r.req_id, coalesce(p.queue_id = %(queue_id)s, false)
FROM requires r JOIN tasks t ON t.id = r.task_id LEFT JOIN tasks p ON p.id = r.req_id
WHERE t.queue_id = %(queue_id)s ORDER BY r.task_id, r.req_id;

-- name: export_attempts
SELECT a.task_id, a.attempt, a.state, a.worker, a.jobid, a.started, a.finished, a.exitcode,
       a.message
FROM attempts a JOIN tasks t ON t.id = a.task_id
WHERE t.queue_id = %(queue_id)s ORDER BY a.task_id, a.attempt;

-- name: import_queue
INSERT INTO queues (owner, name, state, created, max_retries, max_lost)
VALUES (%(owner)s, %(name)s, %(state)s, %(created)s, %(max_retries)s, %(max_lost)s)
ON CONFLICT (owner, name) DO NOTHING
RETURNING id;

-- name: copy_import_tasks
COPY tasks (id, queue_id, payload, is_json, state, priority, exitcode, message, attempts,
            created, started, finished, worker, jobid, log, lease_expires, lease_token,
            timeout, max_retries, failures, lost)
FROM STDIN;

-- name: copy_import_attempts
COPY attempts (task_id, attempt, state, worker, jobid, started, finished, exitcode, message)
FROM STDIN;

-- name: job_insert
INSERT INTO jobs (queue_id, jobid, profile, workers, submitted)
VALUES (%(queue_id)s, %(jobid)s, %(profile)s, %(workers)s, qdo_now())
ON CONFLICT (queue_id, jobid) DO NOTHING;

-- name: jobs_of
SELECT jobid, profile, workers, submitted FROM jobs WHERE queue_id = %(queue_id)s
ORDER BY submitted, jobid;

-- name: pending_fits
SELECT EXISTS (SELECT 1 FROM tasks WHERE queue_id = %(queue_id)s AND state = 'Pending'
               AND (timeout IS NULL OR timeout <= %(max_seconds)s::float8));
