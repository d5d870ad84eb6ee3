-- Version 8: the live agents of each queue: see sqlite/migrations/0008_agents.sql.

CREATE TABLE agents (
    worker   text    NOT NULL,
    queue_id bigint  NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    host     text    NOT NULL,
    slots    integer NOT NULL CHECK (slots >= 1),
    hand     integer NOT NULL CHECK (hand >= 1),
    jobid    text,
    started  double precision NOT NULL,
    seen     double precision NOT NULL,
    PRIMARY KEY (queue_id, worker)
);

-- a shared database: an agent's row goes with its queue, as a task does
ALTER TABLE agents ENABLE ROW LEVEL SECURITY;
CREATE POLICY see ON agents FOR SELECT USING (queue_id IN (SELECT id FROM queues));
CREATE POLICY add ON agents FOR INSERT WITH CHECK (queue_id IN (SELECT w FROM qdo_writable() w));
CREATE POLICY change ON agents FOR UPDATE USING (queue_id IN (SELECT w FROM qdo_writable() w));
CREATE POLICY remove ON agents FOR DELETE USING (queue_id IN (SELECT w FROM qdo_writable() w));

UPDATE qdo_schema SET version = 8;
