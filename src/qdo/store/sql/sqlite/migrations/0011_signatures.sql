-- Version 11: a Failed or Killed task's signature (qdo.failures): what went wrong, with
-- the numbers taken out, so that `qdo why` and the dashboard group failures in SQL.  It
-- is set when a task fails or is killed, and cleared when it leaves those states; the
-- index holds only the tasks that have one.
--
-- Tasks that failed before keep their message as it is (numbers and all): this SQL
-- cannot take numbers out.

ALTER TABLE tasks ADD COLUMN signature TEXT;
UPDATE tasks SET signature = state || ' exit ' || coalesce(CAST(exitcode AS TEXT), '-') || ': '
                             || coalesce(substr(message, 1, 160), '(no message)')
WHERE state = 'Failed' OR state = 'Killed';
CREATE INDEX tasks_by_signature ON tasks (queue_id, signature, id) WHERE signature IS NOT NULL;

UPDATE qdo_schema SET version = 11;
