-- Named statements of the SQLite store (``-- name: x`` starts block x).
-- Values always arrive as parameters; lists of ids arrive as one JSON array (json_each).

-- name: schema_version
SELECT application, version FROM qdo_schema WHERE one = 1;

-- name: user_tables
SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%';

-- name: queue_insert
INSERT INTO queues (owner, name, state, created) VALUES (:owner, :name, 'Active', :now)
RETURNING id, name, state, created, max_retries, max_lost, owner;

-- name: queue_get
SELECT id, name, state, created, max_retries, max_lost, owner FROM queues
WHERE owner = :owner AND name = :name;

-- name: queue_list
-- :owner NULL: every user's
SELECT id, name, state, created, max_retries, max_lost, owner FROM queues
WHERE :owner IS NULL OR owner = :owner ORDER BY name, owner;

-- name: queue_set_state
UPDATE queues SET state = :state WHERE owner = :owner AND name = :name;

-- name: queue_set_options
UPDATE queues SET max_retries = coalesce(:max_retries, max_retries),
                  max_lost = coalesce(:max_lost, max_lost)
WHERE owner = :owner AND name = :name;

-- name: queue_delete
DELETE FROM queues WHERE id = :queue_id;

-- name: queue_task_count
SELECT count(*) FROM tasks WHERE queue_id = :queue_id;

-- name: last_task_id
SELECT max(last_task_id, coalesce((SELECT max(id) FROM tasks), 0)) FROM qdo_schema;

-- name: set_last_task_id
UPDATE qdo_schema SET last_task_id = :last WHERE one = 1 AND last_task_id < :last;

-- name: task_insert
INSERT INTO tasks (id, queue_id, payload, is_json, state, priority, created, timeout,
                   max_retries)
VALUES (?, ?, ?, ?, 'Pending', ?, ?, ?, ?);

-- name: requires_insert
INSERT OR IGNORE INTO requires (task_id, req_id) VALUES (?, ?);

-- name: ids_missing
SELECT j.value FROM json_each(:ids) j LEFT JOIN tasks t ON t.id = j.value
WHERE t.id IS NULL;

-- name: block_unmet
-- Pending tasks among :ids that have a requirement not Succeeded wait for it.
UPDATE tasks SET state = 'Waiting'
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'Pending'
  AND EXISTS (SELECT 1 FROM unmet_requires u WHERE u.task_id = tasks.id);

-- name: task_state
SELECT t.state FROM tasks t JOIN queues q ON q.id = t.queue_id
WHERE t.id = :task_id AND q.owner = :owner AND q.name = :queue;

-- name: reaches
-- Is :task_id among :ids or among their requirements, transitively?
WITH RECURSIVE up (id) AS (
    SELECT value FROM json_each(:ids)
    UNION
    SELECT r.req_id FROM requires r JOIN up ON r.task_id = up.id
)
SELECT 1 FROM up WHERE id = :task_id LIMIT 1;

-- name: claim
-- (:reserve: they are not started yet; Store.finish(begun=...) marks them when they are)
UPDATE tasks
SET state = 'Running', attempts = attempts + 1, worker = :worker, jobid = :jobid,
    started = CASE WHEN :reserve THEN NULL ELSE :now END, finished = NULL, exitcode = NULL, message = NULL,
    lease_expires = :now + :lease, lease_token = :token
WHERE id IN (SELECT id FROM tasks
             WHERE queue_id = (SELECT id FROM queues
                               WHERE owner = :owner AND name = :queue AND state = 'Active')
               AND state = 'Pending'
               AND (:max_seconds IS NULL OR timeout IS NULL OR timeout <= :max_seconds)
             ORDER BY priority DESC, id LIMIT :n)
RETURNING id, queue_id, payload, is_json, state, priority, exitcode, message, attempts,
          created, started, finished, worker, jobid, log, lease_expires, lease_token,
          timeout, max_retries, failures, lost;

-- name: requires_of
SELECT task_id, req_id FROM requires
WHERE task_id IN (SELECT value FROM json_each(:ids)) ORDER BY task_id, req_id;

-- name: begin
-- Reserved tasks (claimed, not started) that their holder starts now: :begun is a JSON
-- array of [id, token, started] (one statement for a batch: one UPDATE per task made
-- the marks cost as much as the results).
UPDATE tasks SET started = b.started
FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS token,
             json_extract(value, '$[2]') AS started
      FROM json_each(:begun)) AS b
WHERE tasks.id = b.id AND tasks.lease_token = b.token AND tasks.worker = :worker
  AND tasks.state = 'Running';

-- name: renew
UPDATE tasks SET lease_expires = :now + :lease
WHERE id = :task_id AND lease_token = :token AND worker = :worker AND state = 'Running';

-- name: finish
-- A Failed attempt goes back to Pending while the task (or else its queue) allows retries.
UPDATE tasks
SET state = CASE WHEN :state = 'Failed' AND failures < coalesce(max_retries,
                          (SELECT q.max_retries FROM queues q WHERE q.id = tasks.queue_id))
                 THEN 'Pending' ELSE :state END,
    failures = failures + (:state = 'Failed'),
    exitcode = :exitcode, message = :message, finished = :now,
    started = coalesce(:started, started), log = coalesce(:log, log),
    lease_expires = NULL, lease_token = NULL
WHERE id = :task_id AND lease_token = :token AND worker = :worker AND state = 'Running'
RETURNING id, attempts, worker, jobid, started, finished, state;

-- name: attempt_insert
INSERT OR REPLACE INTO attempts
    (task_id, attempt, state, worker, jobid, started, finished, exitcode, message)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: attempts_of
SELECT task_id, attempt, state, worker, jobid, started, finished, exitcode, message
FROM attempts WHERE task_id IN (SELECT value FROM json_each(:ids))
ORDER BY task_id, attempt;

-- name: give_back
-- Handed back unfinished by its holder (e.g. on SIGTERM): neither a failure nor a loss.
UPDATE tasks
SET state = 'Pending', lease_expires = NULL, lease_token = NULL, message = :message
WHERE id = :task_id AND lease_token = :token AND worker = :worker AND state = 'Running'
RETURNING id, attempts, worker, jobid, started, :now, 'Returned';

-- name: release_dependents
-- Waiting dependents of the tasks in :ids whose requirements have now all Succeeded.
UPDATE tasks SET state = 'Pending'
WHERE state = 'Waiting'
  AND id IN (SELECT task_id FROM requires WHERE req_id IN (SELECT value FROM json_each(:ids)))
  AND NOT EXISTS (SELECT 1 FROM unmet_requires u WHERE u.task_id = tasks.id);

-- name: extend_leases
-- Run by a write that held the database for long (SQLiteStore._write): the holders of
-- Running tasks could not renew meanwhile, so their leases move on (queue by queue: the
-- index finds the Running tasks without a scan).
UPDATE tasks SET lease_expires = lease_expires + :by
WHERE queue_id IN (SELECT id FROM queues) AND state = 'Running';

-- name: any_expired
SELECT 1 FROM tasks
WHERE state = 'Running' AND lease_expires < :now
  AND (:queue_id IS NULL OR queue_id = :queue_id)
LIMIT 1;

-- name: requeue_expired
-- A task whose holder vanished runs again, unless it lost max_lost holders already.  One
-- that was only reserved (started NULL: claimed, never started) lost nothing: it goes
-- back as if handed back.  (SET expressions all see the row as it was before.)
UPDATE tasks
SET lost = lost + (started IS NOT NULL),
    state = CASE WHEN started IS NOT NULL AND lost + 1 >= (SELECT q.max_lost FROM queues q
                                                           WHERE q.id = tasks.queue_id)
                 THEN 'Killed' ELSE 'Pending' END,
    finished = CASE WHEN started IS NOT NULL AND lost + 1 >= (SELECT q.max_lost FROM queues q
                                                              WHERE q.id = tasks.queue_id)
                    THEN :now END,
    message = CASE WHEN started IS NULL
                   THEN 'claimed by worker ' || worker || ', lost (' || :why
                        || ') before it started attempt ' || attempts || '; will run again'
                   WHEN lost + 1 >= (SELECT q.max_lost FROM queues q WHERE q.id = tasks.queue_id)
                   THEN 'killed: its worker was lost ' || (lost + 1) || ' times'
                   ELSE 'worker ' || worker || ' lost (' || :why || ') during attempt '
                        || attempts || '; will run again' END,
    exitcode = NULL, lease_expires = NULL, lease_token = NULL
WHERE state = 'Running'
  AND ((:workers IS NULL AND :jobids IS NULL AND lease_expires < :now)
       OR worker IN (SELECT value FROM json_each(coalesce(:workers, '[]')))
       OR jobid IN (SELECT value FROM json_each(coalesce(:jobids, '[]'))))
  AND (:queue_id IS NULL OR queue_id = :queue_id)
-- (returns the attempt's history row)
RETURNING id, attempts, CASE WHEN started IS NULL THEN 'Returned' ELSE 'Lost' END, worker,
          jobid, started, :now, NULL, message;

-- name: running_workers
SELECT DISTINCT worker FROM tasks WHERE queue_id = :queue_id AND state = 'Running';

-- name: running_jobs
SELECT DISTINCT jobid FROM tasks
WHERE queue_id = :queue_id AND state = 'Running' AND jobid IS NOT NULL;

-- name: counts
SELECT state, count(*) FROM tasks WHERE queue_id = :queue_id GROUP BY state;

-- name: all_counts
SELECT queue_id, state, count(*) FROM tasks
WHERE :owner IS NULL OR queue_id IN (SELECT id FROM queues WHERE owner = :owner)
GROUP BY queue_id, state;

-- name: blocked
SELECT count(*) FROM tasks t
WHERE t.queue_id = :queue_id AND t.state = 'Waiting'
  AND EXISTS (SELECT 1 FROM unmet_requires u WHERE u.task_id = t.id
              AND (u.req_state IS NULL OR u.req_state IN ('Failed', 'Killed')));

-- name: tasks_all
SELECT id, queue_id, payload, is_json, state, priority, exitcode, message, attempts,
       created, started, finished, worker, jobid, log, lease_expires, lease_token,
       timeout, max_retries, failures, lost
FROM tasks WHERE queue_id = :queue_id AND id > :after
  AND (:exitcode IS NULL OR exitcode = :exitcode)
ORDER BY id LIMIT :limit;

-- name: tasks_in_state
SELECT id, queue_id, payload, is_json, state, priority, exitcode, message, attempts,
       created, started, finished, worker, jobid, log, lease_expires, lease_token,
       timeout, max_retries, failures, lost
FROM tasks WHERE queue_id = :queue_id AND state = :state AND id > :after
  AND (:exitcode IS NULL OR exitcode = :exitcode)
ORDER BY id LIMIT :limit;

-- name: task_by_id
SELECT id, queue_id, payload, is_json, state, priority, exitcode, message, attempts,
       created, started, finished, worker, jobid, log, lease_expires, lease_token,
       timeout, max_retries, failures, lost
FROM tasks WHERE queue_id = :queue_id AND id = :task_id;

-- name: task_for_change
SELECT t.state, t.attempts, t.worker, t.jobid, t.started FROM tasks t
JOIN queues q ON q.id = t.queue_id
WHERE t.id = :task_id AND q.owner = :owner AND q.name = :queue;

-- name: set_state
-- An administrative change (see Store.set_state).  Pending waits where a requirement has
-- not Succeeded, and starts with fresh failure and loss budgets.
UPDATE tasks
SET state = CASE WHEN :state = 'Pending'
                      AND EXISTS (SELECT 1 FROM unmet_requires u WHERE u.task_id = tasks.id)
                 THEN 'Waiting' ELSE :state END,
    exitcode = :exitcode, message = :message, attempts = :attempts,
    finished = CASE WHEN :state = 'Pending' THEN NULL ELSE :now END,
    failures = CASE WHEN :state = 'Pending' THEN 0 ELSE failures END,
    lost = CASE WHEN :state = 'Pending' THEN 0 ELSE lost END,
    lease_expires = NULL, lease_token = NULL
WHERE id = :task_id
RETURNING state;

-- name: block_dependents
-- Pending dependents of tasks in :ids (no longer Succeeded) wait again.
UPDATE tasks SET state = 'Waiting'
WHERE state = 'Pending'
  AND id IN (SELECT task_id FROM requires WHERE req_id IN (SELECT value FROM json_each(:ids)));

-- name: retry
UPDATE tasks
SET state = CASE WHEN EXISTS (SELECT 1 FROM unmet_requires u WHERE u.task_id = tasks.id)
                 THEN 'Waiting' ELSE 'Pending' END,
    failures = 0, lost = 0, lease_expires = NULL, lease_token = NULL,
    priority = coalesce(:priority, priority)
WHERE queue_id = :queue_id AND state IN (SELECT value FROM json_each(:states));

-- name: rerun_forget
DELETE FROM attempts WHERE task_id IN (SELECT id FROM tasks WHERE queue_id = :queue_id);

-- name: rerun_reset
UPDATE tasks
SET state = 'Pending', exitcode = NULL, message = NULL, attempts = 0, started = NULL,
    failures = 0, lost = 0,
    finished = NULL, worker = NULL, jobid = NULL, log = NULL,
    lease_expires = NULL, lease_token = NULL
WHERE queue_id = :queue_id;

-- name: rerun_block
-- After a reset, tasks of the queue and Pending dependents elsewhere wait again.
UPDATE tasks SET state = 'Waiting'
WHERE state = 'Pending'
  AND (queue_id = :queue_id
       OR id IN (SELECT r.task_id FROM requires r JOIN tasks p ON p.id = r.req_id
                 WHERE p.queue_id = :queue_id))
  AND EXISTS (SELECT 1 FROM unmet_requires u WHERE u.task_id = tasks.id);

-- name: integrity_check
PRAGMA integrity_check;

-- name: foreign_key_check
PRAGMA foreign_key_check;

-- name: export_tasks
SELECT id, payload, is_json, state, priority, exitcode, message, attempts, created, started,
       finished, worker, jobid, log, lease_expires, lease_token, timeout, max_retries,
       failures, lost
FROM tasks WHERE queue_id = :queue_id ORDER BY id;

-- name: export_requires
-- (task, requirement, whether the requirement is a task of the same queue)
SELECT r.task_id, r.req_id, coalesce(p.queue_id = :queue_id, 0)
FROM requires r JOIN tasks t ON t.id = r.task_id LEFT JOIN tasks p ON p.id = r.req_id
WHERE t.queue_id = :queue_id ORDER BY r.task_id, r.req_id;

-- name: export_attempts
SELECT a.task_id, a.attempt, a.state, a.worker, a.jobid, a.started, a.finished, a.exitcode,
       a.message
FROM attempts a JOIN tasks t ON t.id = a.task_id
WHERE t.queue_id = :queue_id ORDER BY a.task_id, a.attempt;

-- name: import_task
INSERT INTO tasks (id, queue_id, payload, is_json, state, priority, exitcode, message,
                   attempts, created, started, finished, worker, jobid, log, lease_expires,
                   lease_token, timeout, max_retries, failures, lost)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: import_queue
INSERT INTO queues (owner, name, state, created, max_retries, max_lost)
VALUES (:owner, :name, :state, :created, :max_retries, :max_lost);

-- name: export_span
SELECT min(id), max(id), count(*) FROM tasks WHERE queue_id = :queue_id;

-- name: job_insert
INSERT OR REPLACE INTO jobs (queue_id, jobid, profile, workers, submitted)
VALUES (:queue_id, :jobid, :profile, :workers, :now);

-- name: jobs_of
SELECT jobid, profile, workers, submitted FROM jobs WHERE queue_id = :queue_id
ORDER BY submitted, jobid;

-- name: pending_fits
SELECT EXISTS (SELECT 1 FROM tasks WHERE queue_id = :queue_id AND state = 'Pending'
               AND (timeout IS NULL OR timeout <= :max_seconds));
