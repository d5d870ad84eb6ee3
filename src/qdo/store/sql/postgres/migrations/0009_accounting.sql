-- Version 9: what each attempt used: see sqlite/migrations/0009_accounting.sql.

ALTER TABLE attempts ADD COLUMN cpu double precision CHECK (cpu >= 0);
ALTER TABLE attempts ADD COLUMN rss bigint CHECK (rss >= 0);

UPDATE qdo_schema SET version = 9;
