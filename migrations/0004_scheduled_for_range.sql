-- scheduled_for within the range agentcron can schedule: 1900-01-01 to 2200-01-01 UTC.
--
-- A row outside it (±infinity, or a year the worker's clock cannot hold) once failed every claim
-- of its kind: the claim returns scheduled_for as microseconds since the epoch, and
-- `extract(epoch FROM '-infinity')::bigint` is an error for the whole statement. Such rows that
-- are live now end failed with the reason (their scheduled_for moved to the nearest end of the
-- range, the original kept in last_error); finished ones only get the nearest end. From here on
-- the constraint refuses them at insert. The claim clamps the value as well, for a database
-- whose constraint someone dropped.
UPDATE agentcron.agent_tasks
SET last_error = CASE WHEN status IN ('pending', 'running')
                      THEN 'scheduled_for ' || scheduled_for::text ||
                           ' is outside the range agentcron can schedule (1900-01-01 to 2200-01-01 UTC); failed by migration 0004'
                      ELSE last_error END,
    finished_at = CASE WHEN status IN ('pending', 'running') THEN now() ELSE finished_at END,
    status = CASE WHEN status IN ('pending', 'running') THEN 'failed' ELSE status END,
    locked_by = NULL, locked_until = NULL,
    scheduled_for = CASE WHEN scheduled_for < '1900-01-01 00:00:00+00' THEN '1900-01-01 00:00:00+00'::timestamptz
                         ELSE '2199-12-31 00:00:00+00'::timestamptz END,
    updated_at = now()
WHERE NOT (scheduled_for >= '1900-01-01 00:00:00+00' AND scheduled_for < '2200-01-01 00:00:00+00');

-- NOT VALID: new rows are checked from here on, and adding it holds its ACCESS EXCLUSIVE lock only
-- for this migration's short transaction. Migration 0006 validates the existing rows in a
-- transaction of its own, under a lock that lets claims go on.
ALTER TABLE agentcron.agent_tasks ADD CONSTRAINT agent_tasks_scheduled_for_range
  CHECK (scheduled_for >= '1900-01-01 00:00:00+00' AND scheduled_for < '2200-01-01 00:00:00+00') NOT VALID;
