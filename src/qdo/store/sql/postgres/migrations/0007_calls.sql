-- Version 7: durable futures (qdo.executor): see sqlite/migrations/0007_calls.sql.
-- On PostgreSQL two transactions may commit their results out of seq order: a
-- watcher that follows seq also looks, now and then, at the states of the calls it
-- waits for (qdo.executor), so a result written late is never missed for good.

ALTER TABLE queues ADD COLUMN kind text NOT NULL DEFAULT 'shell'
    CHECK (kind IN ('shell', 'calls'));

CREATE TABLE calls (
    task_id  bigint PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    queue_id bigint NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    call_key text   NOT NULL,
    call     bytea  NOT NULL,
    UNIQUE (queue_id, call_key)
);

CREATE TABLE results (
    seq      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue_id bigint  NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    task_id  bigint  NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    item     integer NOT NULL CHECK (item >= -1),
    ok       boolean NOT NULL,
    data     bytea   NOT NULL,
    UNIQUE (task_id, item)
);
CREATE INDEX results_by_queue ON results (queue_id, seq);

-- a shared database: a call and its results go with their queue, as a task does
ALTER TABLE calls ENABLE ROW LEVEL SECURITY;
ALTER TABLE results ENABLE ROW LEVEL SECURITY;
CREATE POLICY see ON calls FOR SELECT USING (queue_id IN (SELECT id FROM queues));
CREATE POLICY add ON calls FOR INSERT WITH CHECK (queue_id IN (SELECT w FROM qdo_writable() w));
CREATE POLICY remove ON calls FOR DELETE USING (queue_id IN (SELECT w FROM qdo_writable() w));
CREATE POLICY see ON results FOR SELECT USING (queue_id IN (SELECT id FROM queues));
CREATE POLICY add ON results FOR INSERT WITH CHECK (
    queue_id IN (SELECT w FROM qdo_writable() w));
CREATE POLICY remove ON results FOR DELETE USING (
    queue_id IN (SELECT w FROM qdo_writable() w));

UPDATE qdo_schema SET version = 7;
