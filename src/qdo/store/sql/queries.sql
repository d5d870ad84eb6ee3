-- The statements of every store verb, written once for both backends (``-- name: x``
-- starts block x).  What the dialects spell differently is written as a hook, which
-- each dialect renders its own way (store/sql/__init__.py):
--
--   :name                   a parameter
--   {now}                   the store's clock, epoch seconds (SQLite: read by the store
--                           once it holds the write lock; PostgreSQL: the server's)
--   {in ids bigint}         "is in the list ids" (SQLite: a JSON array; PostgreSQL: an
--                           array of that type)
--   {rows o (a bigint, b text)}
--                           a table of rows passed as one parameter, named o
--   {rowlock FOR UPDATE}    a row lock (PostgreSQL); nothing on SQLite, where a write
--                           transaction holds the whole database
--   {among ids bigint}      "is one of the batch's ids", where a table of rows names the
--                           batch: PostgreSQL finds the batch by key with it (not by a
--                           scan); SQLite drives the join from the rows instead (with the
--                           list it looked up each row of them for every id), and it is
--                           true there
--   {idlist x}              the aggregate of the integers x as text, "1,2,3" (in any
--                           order: SQLite's group_concat, PostgreSQL's string_agg)
--
-- Everything else is the SQL both understand: CAST(... AS ...) rather than ::, CASE
-- rather than boolean arithmetic, ON CONFLICT rather than INSERT OR.  A dialect's own
-- queries.sql adds what only it has (and what it must spell its own way: id allocation,
-- catalog lookups).  Policy (retries, lost workers, their messages) lives here alone.

-- name: queue_insert
INSERT INTO queues (owner, name, state, created) VALUES (:owner, :name, 'Active', {now})
ON CONFLICT (owner, name) DO NOTHING
RETURNING id, name, state, created, max_retries, max_lost, owner, kind;

-- name: queue_get
SELECT id, name, state, created, max_retries, max_lost, owner, kind FROM queues
WHERE owner = :owner AND name = :name;

-- name: queue_list
-- :owner NULL: every user's
SELECT id, name, state, created, max_retries, max_lost, owner, kind FROM queues
WHERE CAST(:owner AS text) IS NULL OR owner = :owner ORDER BY name, owner;

-- name: queue_set_state
UPDATE queues SET state = :state WHERE id = :queue_id;

-- name: queue_set_options
UPDATE queues SET max_retries = coalesce(CAST(:max_retries AS integer), max_retries),
                  max_lost = coalesce(CAST(:max_lost AS integer), max_lost)
WHERE id = :queue_id
RETURNING id, name, state, created, max_retries, max_lost, owner, kind;

-- name: queue_task_count
SELECT CAST(coalesce(sum(n), 0) AS bigint) AS n FROM queue_counts_now WHERE queue_id = :queue_id;

-- name: queue_delete
DELETE FROM queues WHERE id = :queue_id;

-- name: extend_leases
-- The holders of Running tasks could not renew for :by seconds (a write held the
-- database that long, or writes failed: a full disk, a server away), so a lease that
-- ran out in that time, or would run out before as long again has passed, now runs
-- until then: the holder has :by seconds to renew, and a lease that ran out before the
-- outage stays expired.  Idempotent: every store back from the same outage gives the
-- same time, not as much again each (1,000 agents back from a server restart moved a
-- dead holder's lease on by 1,000 outages).  (Queue by queue: the index finds the
-- Running tasks without a scan.)  A row another transaction holds is left alone, not
-- waited for: it is being renewed, reported, requeued or extended by another store
-- back from the same outage.  (Waiting, the stores back from an outage updated every
-- Running row at once, in no common order: they deadlocked, and each deadlock was an
-- outage that extended again.)
UPDATE tasks SET lease_expires = {now} + :by
WHERE id IN (SELECT id FROM tasks
             WHERE queue_id IN (SELECT id FROM queues) AND state = 'Running'
               AND lease_expires > {now} - :by AND lease_expires < {now} + :by
             {rowlock FOR UPDATE SKIP LOCKED});

-- name: requires_insert
INSERT INTO requires (task_id, req_id)
SELECT task_id, req_id FROM {rows r (task_id bigint, req_id bigint)} WHERE true
ON CONFLICT DO NOTHING;

-- name: ids_found
-- (and the required tasks stay as they are until this transaction ends: a concurrent
-- finish waits, so that no dependent stays Waiting on a task that just Succeeded)
SELECT id FROM tasks WHERE id {in ids bigint} ORDER BY id {rowlock FOR SHARE};

-- name: block_unmet
-- Pending tasks among :ids that have a requirement not Succeeded wait for it.
UPDATE tasks SET state = 'Waiting'
WHERE id {in ids bigint} AND state = 'Pending'
  AND EXISTS (SELECT 1 FROM unmet_requires u WHERE u.task_id = tasks.id);

-- name: task_state
SELECT t.state FROM tasks t JOIN queues q ON q.id = t.queue_id
WHERE t.id = :task_id AND q.owner = :owner AND q.name = :queue
{rowlock FOR UPDATE OF t};

-- name: restored_requires
-- The requirements between the tasks a restore just wrote (ids :low to :high, one queue):
-- what the restore checks before it commits.
SELECT r.task_id, r.req_id
FROM requires r JOIN tasks t ON t.id = r.task_id JOIN tasks p ON p.id = r.req_id
WHERE r.task_id BETWEEN :low AND :high AND t.queue_id = :queue_id AND p.queue_id = :queue_id;

-- name: reaches
-- Is :task_id among :ids or among their requirements, transitively?
WITH RECURSIVE up (id) AS (
    SELECT id FROM {rows x (id bigint)}
    UNION
    SELECT r.req_id FROM requires r JOIN up ON r.task_id = up.id
)
SELECT 1 AS found FROM up WHERE id = :task_id LIMIT 1;

-- name: claim
-- The best n Pending tasks, picked once (on PostgreSQL skipping the rows other claimers
-- hold): picked in a subquery of the UPDATE instead, a plan that runs it again for each
-- row (a nested loop over a small table) finds more rows each time, and hands out more
-- than n.  (:reserve: not started yet; Store.finish(begun=...) marks them.)
WITH picked AS MATERIALIZED (
    SELECT id AS pick FROM tasks
    WHERE queue_id = (SELECT id FROM queues WHERE owner = :owner AND name = :queue
                                             AND state = 'Active' AND kind = :kind)
      AND state = 'Pending'
      AND (CAST(:max_seconds AS double precision) IS NULL OR timeout IS NULL
           OR timeout <= CAST(:max_seconds AS double precision))
    ORDER BY priority DESC, id
    LIMIT :n
    {rowlock FOR UPDATE SKIP LOCKED}
)
UPDATE tasks AS t
SET state = 'Running', attempts = t.attempts + 1, worker = :worker, jobid = :jobid,
    started = CASE WHEN :reserve THEN NULL ELSE {now} END, finished = NULL,
    exitcode = NULL, message = NULL, signature = NULL, lease_expires = {now} + :lease,
    lease_token = :token
FROM picked
WHERE t.id = picked.pick
RETURNING id, queue_id, payload, is_json, state, priority, exitcode, message, attempts,
          created, started, finished, worker, jobid, log, lease_expires, lease_token,
          timeout, max_retries, failures, lost,
          -- (here, not in a statement of their own: one statement less at every claim;
          -- "id" unqualified, as SQLite wants in RETURNING: requires has no column id)
          (SELECT {idlist r.req_id} FROM requires r WHERE r.task_id = id) AS requires;

-- name: requires_of
SELECT task_id, req_id FROM requires WHERE task_id {in ids bigint} ORDER BY task_id, req_id;

-- name: begin
-- Reserved tasks (claimed, not started) that their holder has started since: a batch
-- in one statement (one per task made the marks cost as much as the results).
UPDATE tasks AS t SET started = b.began
FROM {rows b (task_id bigint, token bigint, began double precision)}
WHERE t.id = b.task_id AND t.lease_token = b.token AND t.worker = :worker
  AND t.state = 'Running'
  AND t.id {among ids bigint};

-- name: renew
UPDATE tasks AS t SET lease_expires = {now} + :lease
FROM {rows o (task_id bigint, token bigint)}
WHERE t.id = o.task_id AND t.lease_token = o.token AND t.worker = :worker
  AND t.state = 'Running'
  AND t.id {among ids bigint}
RETURNING id;

-- name: finish
-- Every outcome of a batch in one statement.  'Pending' gives a task back unrun (neither
-- a failure nor a loss); a Failed one goes back to Pending while the task (or else its
-- queue) allows retries.
UPDATE tasks AS t
SET state = CASE WHEN o.outcome = 'Failed' AND t.failures < coalesce(t.max_retries,
                          (SELECT q.max_retries FROM queues q WHERE q.id = t.queue_id))
                 THEN 'Pending' ELSE o.outcome END,
    failures = t.failures + CASE WHEN o.outcome = 'Failed' THEN 1 ELSE 0 END,
    exitcode = CASE WHEN o.outcome = 'Pending' THEN t.exitcode ELSE o.code END,
    message = o.note,
    signature = o.sig,
    finished = CASE WHEN o.outcome = 'Pending' THEN t.finished
                    ELSE coalesce(o.ended, {now}) END,
    started = coalesce(o.began, t.started),
    log = coalesce(o.output, t.log),
    lease_expires = NULL, lease_token = NULL
FROM {rows o (task_id bigint, token bigint, outcome text, code integer, note text,
              output text, began double precision, ended double precision, sig text)}
WHERE t.id = o.task_id AND t.lease_token = o.token AND t.worker = :worker
  AND t.state = 'Running'
  AND t.id {among ids bigint}
-- (the rows' columns are named apart from the task's: RETURNING names the task's)
RETURNING id, attempts, worker, jobid, started, finished, queue_id, state, {now} AS now;

-- name: attempt_insert
INSERT INTO attempts (task_id, attempt, state, worker, jobid, started, finished, exitcode,
                      message, cpu, rss, log)
SELECT task_id, attempt, state, worker, jobid, started, finished, exitcode, message, cpu, rss,
       log
FROM {rows a (task_id bigint, attempt integer, state text, worker text, jobid text,
              started double precision, finished double precision, exitcode integer,
              message text, cpu double precision, rss bigint, log text)}
WHERE true
ON CONFLICT (task_id, attempt) DO UPDATE
SET state = excluded.state, worker = excluded.worker, jobid = excluded.jobid,
    started = excluded.started, finished = excluded.finished,
    exitcode = excluded.exitcode, message = excluded.message, cpu = excluded.cpu,
    rss = excluded.rss, log = coalesce(excluded.log, attempts.log);

-- name: attempts_of
SELECT task_id, attempt, state, worker, jobid, started, finished, exitcode, message, cpu, rss,
       log
FROM attempts WHERE task_id {in ids bigint} ORDER BY task_id, attempt;

-- name: lock_dependents
-- The Waiting dependents of tasks that just Succeeded (on PostgreSQL locked in id order
-- before they are looked at: two transactions that each finish one requirement of the
-- same task then see each other's result, else both could leave it Waiting).
SELECT t.id FROM tasks t
WHERE t.state = 'Waiting'
  AND t.id IN (SELECT task_id FROM requires WHERE req_id {in ids bigint})
ORDER BY t.id {rowlock FOR UPDATE};

-- name: release_dependents
-- Those of :ids whose requirements have now all Succeeded.
UPDATE tasks SET state = 'Pending'
WHERE state = 'Waiting' AND id {in ids bigint}
  AND NOT EXISTS (SELECT 1 FROM unmet_requires u WHERE u.task_id = tasks.id)
RETURNING queue_id;

-- name: any_expired
-- (the clock read once, so that the index of Running leases answers, not a table scan)
SELECT 1 AS found FROM tasks
WHERE state = 'Running' AND queue_id = :queue_id AND lease_expires < (SELECT {now})
LIMIT 1;

-- name: any_expired_anywhere
SELECT 1 AS found FROM tasks WHERE state = 'Running' AND lease_expires < (SELECT {now})
LIMIT 1;

-- name: requeue
-- A task whose holder vanished (its lease expired, or :workers / :jobids name it) runs
-- again, unless it lost max_lost holders already.  One that was only reserved (started
-- NULL: claimed, never started) lost nothing: it goes back as if handed back.  (SET
-- expressions all see the row as it was before.)
UPDATE tasks
SET lost = lost + CASE WHEN started IS NOT NULL THEN 1 ELSE 0 END,
    state = CASE WHEN started IS NOT NULL AND lost + 1 >= (SELECT q.max_lost FROM queues q
                                                           WHERE q.id = tasks.queue_id)
                 THEN 'Killed' ELSE 'Pending' END,
    finished = CASE WHEN started IS NOT NULL AND lost + 1 >= (SELECT q.max_lost FROM queues q
                                                              WHERE q.id = tasks.queue_id)
                    THEN {now} END,
    message = CASE WHEN started IS NULL
                   THEN 'claimed by worker ' || worker || ', lost (' || :why
                        || ') before it started attempt ' || attempts || '; will run again'
                   WHEN lost + 1 >= (SELECT q.max_lost FROM queues q WHERE q.id = tasks.queue_id)
                   THEN 'killed: its worker was lost ' || (lost + 1) || ' times'
                   ELSE 'worker ' || worker || ' lost (' || :why || ') during attempt '
                        || attempts || '; will run again' END,
    -- (qdo.failures.signature of that message)
    signature = CASE WHEN started IS NOT NULL AND lost + 1 >= (SELECT q.max_lost FROM queues q
                                                               WHERE q.id = tasks.queue_id)
                     THEN 'Killed exit -: killed: its worker was lost N times' END,
    exitcode = NULL, lease_expires = NULL, lease_token = NULL
WHERE state = 'Running'
  AND ((:expired AND lease_expires < (SELECT {now}))
       OR worker {in workers text} OR jobid {in jobids text})
  AND (CAST(:queue_id AS bigint) IS NULL OR queue_id = :queue_id)
RETURNING id, attempts, worker, jobid, started, message, queue_id, state, {now} AS now;

-- name: running_workers
SELECT DISTINCT worker AS name FROM tasks WHERE queue_id = :queue_id AND state = 'Running';

-- name: running_jobs
SELECT DISTINCT jobid AS name FROM tasks
WHERE queue_id = :queue_id AND state = 'Running' AND jobid IS NOT NULL;

-- name: counts
-- (kept as states change: see migrations/0010_counts.sql)
SELECT CAST(:queue_id AS bigint) AS queue_id, state, CAST(sum(n) AS bigint) AS n
FROM queue_counts_now WHERE queue_id = :queue_id GROUP BY state;

-- name: all_counts
SELECT queue_id, state, CAST(sum(n) AS bigint) AS n FROM queue_counts_now
WHERE CAST(:owner AS text) IS NULL
   OR queue_id IN (SELECT id FROM queues WHERE owner = :owner)
GROUP BY queue_id, state;

-- name: counts_add
-- new tasks of one state (the triggers count state changes and deletions)
UPDATE queue_counts SET n = n + :n WHERE queue_id = :queue_id AND state = :state;

-- name: counts_recount
-- where the counts kept differ from those the tasks give (`qdo fsck`)
SELECT queue_id, state, CAST(sum(counted) AS bigint) AS counted,
       CAST(sum(kept) AS bigint) AS kept FROM (
    SELECT queue_id, state, count(*) AS counted, 0 AS kept FROM tasks GROUP BY queue_id, state
    UNION ALL SELECT queue_id, state, 0, n FROM queue_counts_now) c
GROUP BY queue_id, state HAVING sum(counted) <> sum(kept)
ORDER BY queue_id, state;

-- name: counts_repair
-- (the write lock is held: nothing changes while the tasks are counted)
UPDATE queue_counts SET n = (SELECT count(*) FROM tasks t
                             WHERE t.queue_id = queue_counts.queue_id
                               AND t.state = queue_counts.state);

-- name: claimed
-- Running tasks that their holder has claimed ahead but not started yet.
SELECT count(*) AS n FROM tasks
WHERE queue_id = :queue_id AND state = 'Running' AND started IS NULL;

-- name: blocked
-- Waiting tasks of the queue stuck on a requirement that cannot succeed.
SELECT count(*) AS n FROM tasks t
WHERE t.queue_id = :queue_id AND t.state = 'Waiting'
  AND EXISTS (SELECT 1 FROM unmet_requires u WHERE u.task_id = t.id
              AND (u.req_state IS NULL OR u.req_state IN ('Failed', 'Killed')));

-- name: failure_groups
-- The Failed and Killed tasks by signature (qdo.failures), the largest groups first;
-- an index holds just the tasks that have one.
SELECT signature, min(state) AS state, min(exitcode) AS exitcode, count(*) AS n
FROM tasks
WHERE queue_id = :queue_id AND signature IS NOT NULL AND (state = 'Failed' OR state = 'Killed')
GROUP BY signature
ORDER BY n DESC, signature
LIMIT :limit;

-- name: failure_examples
SELECT id FROM tasks
WHERE queue_id = :queue_id AND signature = :signature AND (state = 'Failed' OR state = 'Killed')
ORDER BY id LIMIT :limit;

-- name: tasks
SELECT id, queue_id, payload, is_json, state, priority, exitcode, message, attempts,
       created, started, finished, worker, jobid, log, lease_expires, lease_token,
       timeout, max_retries, failures, lost
FROM tasks WHERE queue_id = :queue_id AND id > :after
  AND (CAST(:exitcode AS integer) IS NULL OR exitcode = :exitcode)
ORDER BY id LIMIT :limit;

-- name: last_id
SELECT coalesce(max(id), 0) AS last FROM tasks WHERE queue_id = :queue_id;

-- name: tasks_in_state
-- (as tasks, with the state known: the index then walks that state's range alone)
SELECT id, queue_id, payload, is_json, state, priority, exitcode, message, attempts,
       created, started, finished, worker, jobid, log, lease_expires, lease_token,
       timeout, max_retries, failures, lost
FROM tasks WHERE queue_id = :queue_id AND state = :state AND id > :after
  AND (CAST(:exitcode AS integer) IS NULL OR exitcode = :exitcode)
ORDER BY id LIMIT :limit;

-- name: task_by_id
SELECT id, queue_id, payload, is_json, state, priority, exitcode, message, attempts,
       created, started, finished, worker, jobid, log, lease_expires, lease_token,
       timeout, max_retries, failures, lost
FROM tasks WHERE queue_id = :queue_id AND id = :task_id
  AND (CAST(:state AS text) IS NULL OR state = :state)
  AND (CAST(:exitcode AS integer) IS NULL OR exitcode = :exitcode);

-- name: task_for_change
SELECT t.state, t.attempts, t.worker, t.jobid, t.started FROM tasks t
JOIN queues q ON q.id = t.queue_id
WHERE t.id = :task_id AND q.owner = :owner AND q.name = :queue
{rowlock FOR UPDATE OF t};

-- name: set_state
-- An administrative change (see Store.set_state).  Pending waits where a requirement has
-- not Succeeded, and starts with fresh failure and loss budgets.
UPDATE tasks
SET state = CASE WHEN :state = 'Pending'
                      AND EXISTS (SELECT 1 FROM unmet_requires u WHERE u.task_id = tasks.id)
                 THEN 'Waiting' ELSE :state END,
    exitcode = :exitcode, message = :message, attempts = :attempts, signature = :signature,
    finished = CASE WHEN :state = 'Pending' THEN NULL ELSE CAST(:now AS double precision) END,
    failures = CASE WHEN :state = 'Pending' THEN 0 ELSE failures END,
    lost = CASE WHEN :state = 'Pending' THEN 0 ELSE lost END,
    lease_expires = NULL, lease_token = NULL
WHERE id = :task_id
RETURNING state, queue_id;

-- name: block_dependents
-- Pending dependents of tasks in :ids (no longer Succeeded) wait again.
UPDATE tasks SET state = 'Waiting'
WHERE state = 'Pending'
  AND id IN (SELECT task_id FROM requires WHERE req_id {in ids bigint});

-- name: retry
UPDATE tasks
SET state = CASE WHEN EXISTS (SELECT 1 FROM unmet_requires u WHERE u.task_id = tasks.id)
                 THEN 'Waiting' ELSE 'Pending' END,
    failures = 0, lost = 0, lease_expires = NULL, lease_token = NULL, signature = NULL,
    priority = coalesce(CAST(:priority AS bigint), priority)
WHERE queue_id = :queue_id AND state {in states text};

-- name: retry_ids
UPDATE tasks
SET state = CASE WHEN EXISTS (SELECT 1 FROM unmet_requires u WHERE u.task_id = tasks.id)
                 THEN 'Waiting' ELSE 'Pending' END,
    failures = 0, lost = 0, lease_expires = NULL, lease_token = NULL, signature = NULL
WHERE queue_id = :queue_id AND state {in states text} AND id {in ids bigint};

-- name: retry_groups
-- (as retry_ids, for the tasks of these failure groups)
UPDATE tasks
SET state = CASE WHEN EXISTS (SELECT 1 FROM unmet_requires u WHERE u.task_id = tasks.id)
                 THEN 'Waiting' ELSE 'Pending' END,
    failures = 0, lost = 0, lease_expires = NULL, lease_token = NULL, signature = NULL
WHERE queue_id = :queue_id AND state {in states text} AND signature {in signatures text};

-- name: rerun_forget
DELETE FROM attempts WHERE task_id IN (SELECT id FROM tasks WHERE queue_id = :queue_id);

-- name: rerun_reset
UPDATE tasks
SET state = 'Pending', exitcode = NULL, message = NULL, attempts = 0, started = NULL,
    failures = 0, lost = 0, finished = NULL, worker = NULL, jobid = NULL, log = NULL,
    lease_expires = NULL, lease_token = NULL, signature = NULL
WHERE queue_id = :queue_id;

-- name: rerun_block
-- After a reset, tasks of the queue and Pending dependents elsewhere wait again.
UPDATE tasks SET state = 'Waiting'
WHERE state = 'Pending'
  AND (queue_id = :queue_id
       OR id IN (SELECT r.task_id FROM requires r JOIN tasks p ON p.id = r.req_id
                 WHERE p.queue_id = :queue_id))
  AND EXISTS (SELECT 1 FROM unmet_requires u WHERE u.task_id = tasks.id);

-- name: export_span
SELECT min(id) AS low, max(id) AS high, count(*) AS n FROM tasks WHERE queue_id = :queue_id;

-- name: export_tasks
-- (in the order of base.TASK_COLUMNS)
SELECT id, payload, is_json, state, priority, exitcode, message, attempts, created, started,
       finished, worker, jobid, log, lease_expires, lease_token, timeout, max_retries,
       failures, lost
FROM tasks WHERE queue_id = :queue_id ORDER BY id;

-- name: export_requires
-- (task, requirement, whether the requirement is a task of the same queue: 1 or 0)
SELECT r.task_id, r.req_id, CASE WHEN p.queue_id = :queue_id THEN 1 ELSE 0 END
FROM requires r JOIN tasks t ON t.id = r.task_id LEFT JOIN tasks p ON p.id = r.req_id
WHERE t.queue_id = :queue_id ORDER BY r.task_id, r.req_id;

-- name: export_attempts
SELECT a.task_id, a.attempt, a.state, a.worker, a.jobid, a.started, a.finished, a.exitcode,
       a.message, a.cpu, a.rss, a.log
FROM attempts a JOIN tasks t ON t.id = a.task_id
WHERE t.queue_id = :queue_id ORDER BY a.task_id, a.attempt;

-- name: import_queue
INSERT INTO queues (owner, name, state, created, max_retries, max_lost)
VALUES (:owner, :name, :state, coalesce(CAST(:created AS double precision), {now}),
        :max_retries, :max_lost)
ON CONFLICT (owner, name) DO NOTHING
RETURNING id;

-- name: job_insert
INSERT INTO jobs (queue_id, jobid, profile, workers, submitted)
VALUES (:queue_id, :jobid, :profile, :workers, {now})
ON CONFLICT (queue_id, jobid) DO NOTHING;

-- name: jobs_of
SELECT jobid, profile, workers, submitted FROM jobs WHERE queue_id = :queue_id
ORDER BY submitted, jobid;

-- name: stats_totals
-- The Succeeded attempts of a queue: how many, their longest run, and the run time and
-- CPU time of those whose CPU was measured.
SELECT count(*) AS n, max(a.finished - a.started) AS longest,
       coalesce(sum(a.cpu), 0) AS cpu,
       coalesce(sum(CASE WHEN a.cpu IS NOT NULL THEN a.finished - a.started END), 0) AS wall,
       count(a.rss) AS nrss
FROM attempts a JOIN tasks t ON t.id = a.task_id
WHERE t.queue_id = :queue_id AND a.state = 'Succeeded'
  AND a.started IS NOT NULL AND a.finished IS NOT NULL;

-- name: stats_runtime_at
-- (a percentile: the k-th shortest run)
SELECT a.finished - a.started AS v FROM attempts a JOIN tasks t ON t.id = a.task_id
WHERE t.queue_id = :queue_id AND a.state = 'Succeeded'
  AND a.started IS NOT NULL AND a.finished IS NOT NULL
ORDER BY v LIMIT 1 OFFSET :k;

-- name: stats_rss_at
SELECT a.rss AS v FROM attempts a JOIN tasks t ON t.id = a.task_id
WHERE t.queue_id = :queue_id AND a.state = 'Succeeded' AND a.started IS NOT NULL
  AND a.finished IS NOT NULL AND a.rss IS NOT NULL
ORDER BY v LIMIT 1 OFFSET :k;

-- name: agent_seen
INSERT INTO agents (worker, queue_id, host, slots, hand, jobid, started, seen)
VALUES (:worker, :queue_id, :host, :slots, :hand, :jobid, {now}, {now})
ON CONFLICT (queue_id, worker) DO UPDATE
SET slots = excluded.slots, hand = excluded.hand, jobid = excluded.jobid, seen = excluded.seen;

-- name: agents_purge
-- (the rows of agents that died: long gone, they would only pile up)
DELETE FROM agents WHERE queue_id = :queue_id AND seen < {now} - :older;

-- name: agent_gone
DELETE FROM agents WHERE queue_id = :queue_id AND worker = :worker;

-- name: agents_live
SELECT worker, host, slots, hand, jobid, started, seen FROM agents
WHERE queue_id = :queue_id AND seen >= {now} - :within
ORDER BY started, worker;

-- name: pending_any
SELECT 1 AS found FROM tasks
WHERE queue_id = (SELECT id FROM queues WHERE owner = :owner AND name = :queue
                                         AND state = 'Active')
  AND state = 'Pending'
LIMIT 1;

-- name: pending_fits
SELECT EXISTS (SELECT 1 FROM tasks WHERE queue_id = :queue_id AND state = 'Pending'
               AND (timeout IS NULL OR timeout <= :max_seconds)) AS fits;

-- == calls (durable futures: qdo.executor) ==============================================

-- name: queue_make_calls
UPDATE queues SET kind = 'calls' WHERE id = :queue_id;

-- name: queue_any_task
SELECT id FROM tasks WHERE queue_id = :queue_id LIMIT 1;

-- name: calls_by_key
SELECT c.call_key, c.task_id, t.state FROM calls c JOIN tasks t ON t.id = c.task_id
WHERE c.queue_id = :queue_id AND c.call_key {in keys text};

-- name: calls_retry
-- Calls found Failed or Killed when submitted again: they run again, as `retry` has it.
UPDATE tasks
SET state = 'Pending', failures = 0, lost = 0, lease_expires = NULL, lease_token = NULL,
    signature = NULL
WHERE id {in ids bigint} AND (state = 'Failed' OR state = 'Killed');

-- name: call_data
SELECT task_id, call FROM calls WHERE task_id {in ids bigint};

-- name: results_since
SELECT seq, task_id, item, ok, data FROM results
WHERE queue_id = :queue_id AND seq > :after ORDER BY seq LIMIT :limit;

-- name: results_last
SELECT coalesce(max(seq), 0) AS seq FROM results WHERE queue_id = :queue_id;

-- name: held
-- Which of these (task, token) pairs this worker holds, Running.
SELECT t.id, t.queue_id FROM tasks AS t, {rows o (task_id bigint, token bigint)}
WHERE t.id = o.task_id AND t.lease_token = o.token AND t.worker = :worker
  AND t.state = 'Running'
  AND t.id {among ids bigint};

-- name: items_of
SELECT task_id, item FROM results WHERE task_id {in ids bigint} AND item >= 0;

-- name: results_of
SELECT seq, task_id, item, ok, data FROM results WHERE task_id {in ids bigint} ORDER BY seq;

-- name: results_drop
-- A call's final result again (it ran once more): the new row gets a new seq, which
-- is what the watchers follow.
DELETE FROM results WHERE task_id {in ids bigint} AND item = -1;

-- name: task_states
SELECT id, state, message FROM tasks WHERE id {in ids bigint};

-- name: calls_cancel
DELETE FROM tasks
WHERE queue_id = :queue_id AND id {in ids bigint} AND (state = 'Waiting' OR state = 'Pending')
RETURNING id;

-- name: queue_tasks_delete
DELETE FROM tasks WHERE queue_id = :queue_id;
