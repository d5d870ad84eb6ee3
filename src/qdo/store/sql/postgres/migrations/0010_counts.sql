-- Version 10: each queue's count of tasks by state, kept as states change: see
-- sqlite/migrations/0010_counts.sql.
--
-- Here many agents change one queue at once, and one row per count would make every
-- claim and report wait for the others' commits.  So a statement that changes states
-- appends what it changed to queue_count_changes (a statement-level trigger, one row per
-- queue and state it touched), which nobody updates; a read adds them to queue_counts;
-- qdo_fold_counts moves them into queue_counts now and then.

CREATE TABLE queue_counts (
    queue_id bigint NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    state    text   NOT NULL,
    n        bigint NOT NULL,
    PRIMARY KEY (queue_id, state)
);

CREATE TABLE queue_count_changes (
    queue_id bigint NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    state    text   NOT NULL,
    n        bigint NOT NULL
);
CREATE INDEX queue_count_changes_by_queue ON queue_count_changes (queue_id);

-- what the counts are now: what reads (a queue's rows of each, a condition on queue_id
-- reaching both; as the role that queries it, policies and all)
CREATE VIEW queue_counts_now WITH (security_invoker = true) AS
    SELECT queue_id, state, n FROM queue_counts
    UNION ALL SELECT queue_id, state, n FROM queue_count_changes;

-- Move a queue's changes into its counts.  Two at once: the second waits for the rows
-- the first deletes, then skips them; ON CONFLICT adds to the count the first left.
CREATE FUNCTION qdo_fold_counts(q bigint) RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT
    AS $$
    WITH moved AS (DELETE FROM queue_count_changes WHERE queue_id = q RETURNING state, n)
    INSERT INTO queue_counts (queue_id, state, n)
    SELECT q, state, sum(n) FROM moved GROUP BY state ORDER BY state
    ON CONFLICT (queue_id, state) DO UPDATE SET n = queue_counts.n + excluded.n $$;

-- (SECURITY DEFINER: they write the tables whoever changed the tasks; the tasks' own
-- policies have already decided who may)
CREATE FUNCTION qdo_count_changed() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
    AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        -- the same rows before and after: what each (queue, state) gained or lost
        INSERT INTO queue_count_changes (queue_id, state, n)
        SELECT queue_id, state, sum(d) FROM (
            SELECT queue_id, state, -1 AS d FROM old_rows
            UNION ALL SELECT queue_id, state, 1 FROM new_rows) c
        GROUP BY queue_id, state HAVING sum(d) <> 0;
    ELSE
        -- (a queue deleted with its tasks takes its counts along)
        INSERT INTO queue_count_changes (queue_id, state, n)
        SELECT queue_id, state, -count(*) FROM old_rows
        WHERE queue_id IN (SELECT id FROM queues)
        GROUP BY queue_id, state;
    END IF;
    -- one statement in 64 or so folds its queues: a read then adds up a few dozen rows
    IF random() < 1.0 / 64 THEN
        PERFORM qdo_fold_counts(q) FROM (SELECT DISTINCT queue_id AS q FROM old_rows) o;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER queue_counts_change AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qdo_count_changed();
CREATE TRIGGER queue_counts_delete AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qdo_count_changed();

-- a shared database: counts go with their queue; a new task is counted by the role that
-- adds it (counts_add), in queues it may change
ALTER TABLE queue_counts ENABLE ROW LEVEL SECURITY;
ALTER TABLE queue_count_changes ENABLE ROW LEVEL SECURITY;
CREATE POLICY see ON queue_counts FOR SELECT USING (queue_id IN (SELECT id FROM queues));
CREATE POLICY see ON queue_count_changes FOR SELECT USING (queue_id IN (SELECT id FROM queues));
CREATE POLICY add ON queue_count_changes FOR INSERT
    WITH CHECK (queue_id IN (SELECT w FROM qdo_writable() w));

-- new tasks, counted by the statement that adds them (as the role that adds them)
CREATE FUNCTION qdo_count_added(q bigint, s text, k bigint) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT
    AS $$
BEGIN
    INSERT INTO queue_count_changes (queue_id, state, n) VALUES (q, s, k);
    IF random() < 1.0 / 64 THEN
        PERFORM qdo_fold_counts(q);
    END IF;
END $$;

-- `qdo fsck --repair`: count again, as the tables' owner (SHARE: nobody changes a task
-- meanwhile)
CREATE FUNCTION qdo_recount() RETURNS void
    LANGUAGE sql VOLATILE SET search_path FROM CURRENT
    AS $$
    LOCK TABLE tasks IN SHARE MODE;
    DELETE FROM queue_count_changes;
    DELETE FROM queue_counts;
    INSERT INTO queue_counts (queue_id, state, n)
    SELECT queue_id, state, count(*) FROM tasks GROUP BY queue_id, state $$;

SELECT qdo_recount();

REVOKE ALL ON FUNCTION qdo_fold_counts(bigint), qdo_count_added(bigint, text, bigint),
    qdo_recount() FROM PUBLIC;

UPDATE qdo_schema SET version = 10;
