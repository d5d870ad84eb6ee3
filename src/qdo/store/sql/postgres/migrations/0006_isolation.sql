-- Version 6 (PostgreSQL only): the database itself keeps users apart.
--
-- Row-level security is on for every table that holds a user's data.  The role that
-- owns the tables (whoever created the schema) is not subject to it, so a private
-- database, where every user connects as that one role, works as before: qdo's
-- `owner` column tells users apart there.  On a shared database (`qdo admin init-db`)
-- each user connects as a role of their own, and these policies decide what each role
-- may read and change: its own queues, and those shared with it (the `shares` table).
--
-- Other rules a role cannot get around, even with plain SQL:
--   * ids come from qdo_schema.last_task_id, which only the functions below change
--     (a role can read it, not write it): a new task's id lies within 2^31 above it;
--   * notifications go to a channel named by a random token kept in the queue's row,
--     which only roles that may read the queue see (LISTEN itself has no permissions);
--   * a share names its queue's owner, held to it by a foreign key.

ALTER TABLE queues ADD COLUMN channel text NOT NULL
    DEFAULT 'qdo_' || replace(gen_random_uuid()::text, '-', '');
ALTER TABLE queues ADD CONSTRAINT queues_id_owner UNIQUE (id, owner);

CREATE TABLE shares (
    queue_id bigint NOT NULL,
    owner    text   NOT NULL,
    grantee  text   NOT NULL,
    mode     text   NOT NULL CHECK (mode IN ('read', 'write')),
    PRIMARY KEY (queue_id, grantee),
    FOREIGN KEY (queue_id, owner) REFERENCES queues (id, owner) ON DELETE CASCADE
);
CREATE INDEX shares_by_grantee ON shares (grantee, queue_id);

-- The lock that orders adds, and the record of the ids they used: the only ways to
-- change last_task_id (SECURITY DEFINER: they run as the tables' owner).
CREATE FUNCTION qdo_lock_ids() RETURNS bigint
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT
    AS $$ SELECT last_task_id FROM qdo_schema WHERE one = 1 FOR UPDATE $$;
CREATE FUNCTION qdo_used_ids() RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT
    AS $$ UPDATE qdo_schema SET last_task_id = greatest(last_task_id, coalesce(
              (SELECT max(id) FROM tasks), 0)) WHERE one = 1 $$;
REVOKE ALL ON FUNCTION qdo_lock_ids(), qdo_used_ids() FROM PUBLIC;

-- the queues the current role may change: its own, and those shared with it for writing
-- (a plain SQL function: the planner inlines it into the policies that use it)
CREATE FUNCTION qdo_writable() RETURNS SETOF bigint
    LANGUAGE sql STABLE
    AS $$ SELECT id FROM queues WHERE owner = current_user
          UNION ALL
          SELECT queue_id FROM shares WHERE grantee = current_user AND mode = 'write' $$;

-- the view reads the tables as the role that queries it, policies and all
ALTER VIEW unmet_requires SET (security_invoker = true);

ALTER TABLE queues ENABLE ROW LEVEL SECURITY;
ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE requires ENABLE ROW LEVEL SECURITY;
ALTER TABLE attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE shares ENABLE ROW LEVEL SECURITY;

-- shares: the owner's to give and take; the grantee sees its own
CREATE POLICY see ON shares FOR SELECT USING (owner = current_user OR grantee = current_user);
CREATE POLICY give ON shares FOR INSERT WITH CHECK (owner = current_user);
CREATE POLICY change ON shares FOR UPDATE USING (owner = current_user);
CREATE POLICY take ON shares FOR DELETE USING (owner = current_user);

-- queues: yours, and those shared with you (to read) or for writing (to change)
CREATE POLICY see ON queues FOR SELECT
    USING (owner = current_user OR id IN (SELECT queue_id FROM shares
                                          WHERE grantee = current_user));
CREATE POLICY make ON queues FOR INSERT WITH CHECK (owner = current_user);
CREATE POLICY change ON queues FOR UPDATE
    USING (owner = current_user OR id IN (SELECT queue_id FROM shares
                                          WHERE grantee = current_user AND mode = 'write'));
CREATE POLICY remove ON queues FOR DELETE USING (owner = current_user);

-- tasks: those of the queues you may see; changed only in queues you may change
CREATE POLICY see ON tasks FOR SELECT USING (queue_id IN (SELECT id FROM queues));
CREATE POLICY add ON tasks FOR INSERT WITH CHECK (
    queue_id IN (SELECT w FROM qdo_writable() w)
    AND id > (SELECT last_task_id FROM qdo_schema WHERE one = 1)
    AND id <= (SELECT last_task_id FROM qdo_schema WHERE one = 1) + 2147483648);
CREATE POLICY change ON tasks FOR UPDATE USING (
    queue_id IN (SELECT w FROM qdo_writable() w));
CREATE POLICY remove ON tasks FOR DELETE USING (
    queue_id IN (SELECT id FROM queues WHERE owner = current_user));

-- a task's requirements, attempts and jobs go with its queue
CREATE POLICY see ON requires FOR SELECT USING (task_id IN (SELECT id FROM tasks));
CREATE POLICY add ON requires FOR INSERT WITH CHECK (task_id IN (
    SELECT id FROM tasks WHERE queue_id IN (SELECT w FROM qdo_writable() w)));
CREATE POLICY remove ON requires FOR DELETE USING (task_id IN (
    SELECT id FROM tasks WHERE queue_id IN (SELECT w FROM qdo_writable() w)));

CREATE POLICY see ON attempts FOR SELECT USING (task_id IN (SELECT id FROM tasks));
CREATE POLICY add ON attempts FOR INSERT WITH CHECK (task_id IN (
    SELECT id FROM tasks WHERE queue_id IN (SELECT w FROM qdo_writable() w)));
CREATE POLICY change ON attempts FOR UPDATE USING (task_id IN (
    SELECT id FROM tasks WHERE queue_id IN (SELECT w FROM qdo_writable() w)));
CREATE POLICY remove ON attempts FOR DELETE USING (task_id IN (
    SELECT id FROM tasks WHERE queue_id IN (SELECT w FROM qdo_writable() w)));

CREATE POLICY see ON jobs FOR SELECT USING (queue_id IN (SELECT id FROM queues));
CREATE POLICY add ON jobs FOR INSERT WITH CHECK (
    queue_id IN (SELECT w FROM qdo_writable() w));

UPDATE qdo_schema SET version = 6;
