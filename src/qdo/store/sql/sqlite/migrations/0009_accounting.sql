-- Version 9: what each attempt used: CPU time (user + system, seconds) and peak
-- resident memory (bytes), measured by the agent that ran it (NULL where it could not:
-- attempts from before, lost ones, tasks handed back unrun).

ALTER TABLE attempts ADD COLUMN cpu REAL CHECK (cpu >= 0);
ALTER TABLE attempts ADD COLUMN rss INTEGER CHECK (rss >= 0);

UPDATE qdo_schema SET version = 9;
