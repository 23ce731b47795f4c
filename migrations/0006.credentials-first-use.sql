-- depends: 0005.jobs
-- An enrolled machine may not be taken over by registering its machine id again. A repeat
-- registration is a retry after a lost response only while the agent has never used its
-- credentials; this mark says when it first did (its first renewal or agent request), written
-- once, before that request is answered, under the agent row's lock that registration
-- also takes: a use and a repeat registration are always ordered one way or the other.
ALTER TABLE agents ADD COLUMN credentials_used_at timestamptz;
-- Agents enrolled before this migration have used their credentials if they were ever seen
-- or renewed.
UPDATE agents a SET credentials_used_at = COALESCE(a.last_seen_at, a.created_at)
 WHERE a.last_seen_at IS NOT NULL
    OR EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.agent_id = a.id AND t.consumed_at IS NOT NULL);
