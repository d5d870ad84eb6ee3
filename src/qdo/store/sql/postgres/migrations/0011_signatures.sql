-- Version 11: a Failed or Killed task's signature: see sqlite/migrations/0011_signatures.sql.

ALTER TABLE tasks ADD COLUMN signature text;
UPDATE tasks SET signature = state || ' exit ' || coalesce(CAST(exitcode AS text), '-') || ': '
                             || coalesce(substr(message, 1, 160), '(no message)')
WHERE state = 'Failed' OR state = 'Killed';
CREATE INDEX tasks_by_signature ON tasks (queue_id, signature, id) WHERE signature IS NOT NULL;

UPDATE qdo_schema SET version = 11;
