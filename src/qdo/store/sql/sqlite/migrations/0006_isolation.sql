-- Version 6: PostgreSQL's row-level security, for a database that users share.  A SQLite
-- file is one user's (qdo creates it readable by its owner alone), so here only the
-- version moves.

UPDATE qdo_schema SET version = 6;
