-- The due index, led by kind.
--
-- agent_tasks_due_idx held every kind's due rows in one order (priority, scheduled_for, id), so a
-- claim that takes only some kinds — one paused fleet-wide, or one this worker has no handler
-- for — stepped over every due row of the others on each call: pausing a kind with a backlog of a
-- million made every claim of every worker read a million rows (180 ms). Led by kind, the index
-- gives each kind's due rows in due order; the claim reads, for each priority, the range of each
-- kind it takes (src/pg_statements.hpp) and never the rows of the others. `status` and `doctor`
-- walk the kinds and priorities present the same way.
--
-- Building the index reads the whole table, which waits meanwhile. On a large table, build it
-- first without blocking anything, then migrate (docs/operations.md):
--   CREATE INDEX CONCURRENTLY agent_tasks_kind_due_idx ON agentcron.agent_tasks
--     (kind, priority DESC, scheduled_for, id) WHERE status = 'pending' AND approval = 'approved';
-- Once that build has finished, this migration finds the index and only swaps the names. An
-- index of that name that is not this one — invalid, as a failed concurrent build leaves it, or
-- defined otherwise — is dropped and built here.
--
-- The table's exclusive lock first, once: taken later, on top of the share lock an index build
-- holds, it could deadlock with an application's transaction. A lock it cannot have at once fails
-- the migration (to be run again) rather than queue every claim behind it.
SET LOCAL lock_timeout = '5s';
LOCK TABLE agentcron.agent_tasks IN ACCESS EXCLUSIVE MODE;
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_index i
             WHERE i.indexrelid = to_regclass('agentcron.agent_tasks_kind_due_idx')
               AND NOT (i.indisvalid AND i.indrelid = 'agentcron.agent_tasks'::regclass
                        AND pg_get_indexdef(i.indexrelid) LIKE '%(kind, priority DESC, scheduled_for, id) WHERE ((status = ''pending''::text) AND (approval = ''approved''::text))')) THEN
    DROP INDEX agentcron.agent_tasks_kind_due_idx;
  END IF;
END $$;
CREATE INDEX IF NOT EXISTS agent_tasks_kind_due_idx ON agentcron.agent_tasks (kind, priority DESC, scheduled_for, id)
  WHERE status = 'pending' AND approval = 'approved';
DROP INDEX agentcron.agent_tasks_due_idx;
ALTER INDEX agentcron.agent_tasks_kind_due_idx RENAME TO agent_tasks_due_idx;

-- The kinds and priorities that have pending, approved tasks, found by a loose index scan of the
-- due index: one probe per pair, whatever else the table holds. `status` and `doctor` count due
-- tasks pair by pair through it.
CREATE FUNCTION agentcron.due_index_pairs(OUT kind text, OUT priority smallint) RETURNS SETOF record
LANGUAGE sql STABLE AS $$
WITH RECURSIVE ks(k) AS (
  (SELECT t.kind FROM agentcron.agent_tasks t WHERE t.status = 'pending' AND t.approval = 'approved'
   ORDER BY t.kind LIMIT 1)
  UNION ALL
  SELECT (SELECT t.kind FROM agentcron.agent_tasks t
          WHERE t.status = 'pending' AND t.approval = 'approved' AND t.kind > ks.k ORDER BY t.kind LIMIT 1)
  FROM ks WHERE ks.k IS NOT NULL
), kp(k, p) AS (
  SELECT ks.k, (SELECT t.priority FROM agentcron.agent_tasks t
                WHERE t.status = 'pending' AND t.approval = 'approved' AND t.kind = ks.k
                ORDER BY t.priority DESC LIMIT 1)
  FROM ks WHERE ks.k IS NOT NULL
  UNION ALL
  SELECT kp.k, (SELECT t.priority FROM agentcron.agent_tasks t
                WHERE t.status = 'pending' AND t.approval = 'approved' AND t.kind = kp.k AND t.priority < kp.p
                ORDER BY t.priority DESC LIMIT 1)
  FROM kp WHERE kp.p IS NOT NULL
)
SELECT k, p FROM kp WHERE p IS NOT NULL
$$;
GRANT EXECUTE ON FUNCTION agentcron.due_index_pairs() TO PUBLIC;
