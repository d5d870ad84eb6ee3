-- Version 12: each attempt's log.  Task output goes to segment files, a record per
-- attempt (qdo.logs); the attempt's row says where its record is (SEGMENT#OFFSET,LENGTH),
-- so every attempt's output can be read, each at once.  NULL: it printed nothing, or it
-- ran before this version (its task's log is the file of them all).

ALTER TABLE attempts ADD COLUMN log TEXT;

UPDATE qdo_schema SET version = 12;
