-- The finished index, led by status.
--
-- agent_tasks_finished_idx held every finished task by finished_at alone. The janitor deletes
-- succeeded tasks after 7 days and failed or cancelled ones after 30 (retention.*), so its scan
-- of "finished before 7 days ago" stepped over every failed and cancelled task of the 7 to 30
-- days it keeps, on every statement: a million kept failures cost each statement 160 ms, and its
-- time grew with them without bound. Led by status, each status's expired range is read alone
-- (and `tasks purge --status` reads its status's only).
--
-- Building the index reads the whole table, which waits meanwhile. On a large table, build it
-- first without blocking anything, then migrate (docs/operations.md):
--   CREATE INDEX CONCURRENTLY agent_tasks_finished_status_idx ON agentcron.agent_tasks
--     (status, finished_at) WHERE status IN ('succeeded', 'failed', 'cancelled');
-- Once that build has finished, this migration finds the index and only swaps the names. An
-- index of that name that is not this one — invalid, as a failed concurrent build leaves it, or
-- defined otherwise — is dropped and built here.
--
-- The table's exclusive lock first, once (as 0009): a lock it cannot have within 5 s fails the
-- migration, to be run again, rather than queue every claim behind it.
SET LOCAL lock_timeout = '5s';
LOCK TABLE agentcron.agent_tasks IN ACCESS EXCLUSIVE MODE;
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_index i
             WHERE i.indexrelid = to_regclass('agentcron.agent_tasks_finished_status_idx')
               AND NOT (i.indisvalid AND NOT i.indisunique AND i.indrelid = 'agentcron.agent_tasks'::regclass
                        AND pg_get_indexdef(i.indexrelid) LIKE '%(status, finished_at) WHERE (status = ANY (ARRAY[''succeeded''::text, ''failed''::text, ''cancelled''::text]))')) THEN
    DROP INDEX agentcron.agent_tasks_finished_status_idx;
  END IF;
END $$;
CREATE INDEX IF NOT EXISTS agent_tasks_finished_status_idx ON agentcron.agent_tasks (status, finished_at)
  WHERE status IN ('succeeded', 'failed', 'cancelled');
DROP INDEX agentcron.agent_tasks_finished_idx;
ALTER INDEX agentcron.agent_tasks_finished_status_idx RENAME TO agent_tasks_finished_idx;
