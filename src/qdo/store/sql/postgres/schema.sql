-- Schema of a fresh qdo PostgreSQL database, inside its own schema (search_path is set
-- by the store): version 3, the same layout as SQLite's version 3.  A later version
-- adds migrations/NNNN_*.sql (NNNN = the version it reaches) and bumps SCHEMA_VERSION in
-- store/postgres.py; a fresh database runs them too, so the two never differ.
-- Times are seconds since the epoch by the server's clock (qdo_now()), as in SQLite.

-- name: create_schema
CREATE TABLE qdo_schema (
    one          integer PRIMARY KEY CHECK (one = 1),
    application  text    NOT NULL CHECK (application = 'qdo'),
    version      integer NOT NULL,
    -- the highest task id ever handed out (ids are never reused); its row lock also
    -- orders concurrent adds, so that each gets consecutive ids
    last_task_id bigint  NOT NULL DEFAULT 0
);

CREATE FUNCTION qdo_now() RETURNS double precision
    LANGUAGE sql VOLATILE
    AS $$ SELECT extract(epoch FROM clock_timestamp())::double precision $$;

CREATE TABLE queues (
    id          bigserial PRIMARY KEY,
    owner       text      NOT NULL,
    name        text      NOT NULL,
    state       text      NOT NULL DEFAULT 'Active' CHECK (state IN ('Active', 'Paused')),
    created     double precision NOT NULL,
    max_retries integer   NOT NULL DEFAULT 0 CHECK (max_retries >= 0),
    max_lost    integer   NOT NULL DEFAULT 3 CHECK (max_lost >= 1),
    UNIQUE (owner, name)
);

CREATE TABLE tasks (
    id            bigint  PRIMARY KEY,
    queue_id      bigint  NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    payload       text    NOT NULL,
    is_json       boolean NOT NULL DEFAULT false,
    state         text    NOT NULL CHECK (state IN ('Waiting', 'Pending', 'Running',
                                                    'Succeeded', 'Failed', 'Killed')),
    priority      bigint  NOT NULL DEFAULT 0,
    exitcode      integer,
    message       text,
    attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created       double precision NOT NULL,
    started       double precision,
    finished      double precision,
    worker        text,
    jobid         text,
    log           text,
    lease_expires double precision,
    lease_token   bigint,
    timeout       double precision CHECK (timeout > 0),
    max_retries   integer CHECK (max_retries >= 0),  -- NULL: the queue's
    failures      integer NOT NULL DEFAULT 0,       -- attempts that Failed
    lost          integer NOT NULL DEFAULT 0,       -- attempts whose worker vanished
    -- a Running task is always held by a lease, and only a Running task is
    CHECK ((state = 'Running') = (lease_expires IS NOT NULL AND lease_token IS NOT NULL
                                  AND worker IS NOT NULL))
);
-- claims walk the Pending range in hand-out order; counts group by state
CREATE INDEX tasks_by_state ON tasks (queue_id, state, priority DESC, id);

-- task_id requires req_id; req_id has no foreign key: a requirement may outlive its
-- task's queue (the dependent then stays Waiting, counted as blocked)
CREATE TABLE requires (
    task_id bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    req_id  bigint NOT NULL,
    PRIMARY KEY (task_id, req_id)
);
CREATE INDEX requires_by_req ON requires (req_id, task_id);

CREATE TABLE attempts (
    task_id  bigint  NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt  integer NOT NULL,
    state    text    NOT NULL CHECK (state IN ('Succeeded', 'Failed', 'Killed', 'Lost',
                                               'Returned')),
    worker   text,
    jobid    text,
    started  double precision,
    finished double precision,
    exitcode integer,
    message  text,
    PRIMARY KEY (task_id, attempt)
);

-- a row per requirement of a task that has not (or no longer) Succeeded
CREATE VIEW unmet_requires AS
    SELECT r.task_id, r.req_id, p.state AS req_state
    FROM requires r LEFT JOIN tasks p ON p.id = r.req_id
    WHERE p.state IS NULL OR p.state <> 'Succeeded';

INSERT INTO qdo_schema (one, application, version) VALUES (1, 'qdo', 3);

-- name: grant_to_users
-- `qdo admin init-db`: what the members of {group} may do with this schema's tables.
-- Which rows they reach is up to the policies (migrations/0006_isolation.sql): their
-- own queues, and those shared with them.  Nobody but the owner may change a task's
-- id, queue or payload, a queue's owner, name or channel, or last_task_id (only through
-- qdo_lock_ids/qdo_used_ids).
GRANT USAGE ON SCHEMA {schema} TO {group};
GRANT SELECT ON qdo_schema, unmet_requires, queue_counts, queue_counts_now TO {group};
GRANT SELECT, INSERT, DELETE ON queues, tasks, requires, attempts, jobs, shares, calls, results,
    agents TO {group};
GRANT SELECT, INSERT ON queue_count_changes TO {group};
GRANT UPDATE (state, max_retries, max_lost, kind) ON queues TO {group};
GRANT UPDATE (state, priority, exitcode, message, attempts, started, finished, worker, jobid,
              log, lease_expires, lease_token, timeout, max_retries, failures, lost, signature)
    ON tasks TO {group};
GRANT UPDATE (state, worker, jobid, started, finished, exitcode, message, cpu, rss, log)
    ON attempts TO {group};
GRANT UPDATE (mode) ON shares TO {group};
GRANT UPDATE (slots, hand, jobid, seen) ON agents TO {group};
GRANT USAGE ON SEQUENCE queues_id_seq TO {group};
GRANT EXECUTE ON FUNCTION qdo_lock_ids(), qdo_used_ids(), qdo_fold_counts(bigint),
    qdo_count_added(bigint, text, bigint) TO {group};
