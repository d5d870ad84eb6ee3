-- Version 5: PostgreSQL's index of the leases of Running tasks.  SQLite's tasks_by_state
-- already finds them (queue, state), so here only the version moves.

UPDATE qdo_schema SET version = 5;
