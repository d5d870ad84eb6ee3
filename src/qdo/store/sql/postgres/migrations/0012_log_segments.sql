-- Version 12: each attempt's log: see sqlite/migrations/0012_log_segments.sql.

ALTER TABLE attempts ADD COLUMN log text;

UPDATE qdo_schema SET version = 12;
