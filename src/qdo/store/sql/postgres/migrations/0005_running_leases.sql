-- Version 5 (PostgreSQL only): an index of the leases of Running tasks, so that looking
-- for expired leases (every agent's loop, every status) reads a few index entries, not
-- the whole table.

CREATE INDEX tasks_running_leases ON tasks (queue_id, lease_expires) WHERE state = 'Running';

UPDATE qdo_schema SET version = 5;
