-- Version 10: how many tasks each queue has in each state, kept as the states change,
-- so that `qdo status`, `qdo list`, the dashboard and the agents' summaries read six
-- rows instead of counting the queue (a second per five million tasks before).
--
-- A state change and a deletion are counted by the triggers below, whichever statement
-- makes them.  A new task is counted by the statement that adds it (counts_add): a row
-- trigger on insert would cost loads 40% more, one upsert per task.  `qdo fsck` counts
-- the tasks again and compares (check_counts); `qdo fsck --repair` writes what it found.

CREATE TABLE queue_counts (
    queue_id INTEGER NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    state    TEXT    NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (queue_id, state)
) WITHOUT ROWID;

-- every queue has its six rows from the start: the triggers then only update
-- what the counts are now (on PostgreSQL also the changes not folded in yet): what reads
CREATE VIEW queue_counts_now AS SELECT queue_id, state, n FROM queue_counts;

CREATE TRIGGER queue_counts_rows AFTER INSERT ON queues
BEGIN
    INSERT INTO queue_counts (queue_id, state, n)
    VALUES (NEW.id, 'Waiting', 0), (NEW.id, 'Pending', 0), (NEW.id, 'Running', 0),
           (NEW.id, 'Succeeded', 0), (NEW.id, 'Failed', 0), (NEW.id, 'Killed', 0);
END;

CREATE TRIGGER queue_counts_change AFTER UPDATE OF state ON tasks
WHEN OLD.state <> NEW.state
BEGIN
    UPDATE queue_counts SET n = n - 1 WHERE queue_id = OLD.queue_id AND state = OLD.state;
    UPDATE queue_counts SET n = n + 1 WHERE queue_id = NEW.queue_id AND state = NEW.state;
END;

CREATE TRIGGER queue_counts_delete AFTER DELETE ON tasks
BEGIN
    UPDATE queue_counts SET n = n - 1 WHERE queue_id = OLD.queue_id AND state = OLD.state;
END;

INSERT INTO queue_counts (queue_id, state, n)
SELECT q.id, s.state, (SELECT count(*) FROM tasks t WHERE t.queue_id = q.id AND t.state = s.state)
FROM queues q,
     (SELECT 'Waiting' AS state UNION ALL SELECT 'Pending' UNION ALL SELECT 'Running'
      UNION ALL SELECT 'Succeeded' UNION ALL SELECT 'Failed' UNION ALL SELECT 'Killed') s;

UPDATE qdo_schema SET version = 10;
