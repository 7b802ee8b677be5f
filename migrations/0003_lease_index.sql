-- The rescuer's index keyed on the lease itself rather than on status = 'running'.
--
-- A queue table's statistics are always stale: ANALYZE saw the tasks pending, and a moment later
-- a thousand of them are running. With `WHERE status = 'running'` as its predicate, this index
-- matched every statement that checks a task is still running (completions, releases, lease
-- extensions), and the planner, believing it held about one row, walked all running tasks for
-- each of them — a 500-task completion took 60 ms instead of 4. `locked_until IS NOT NULL` holds
-- for exactly the running tasks (claims set it; completions, releases and rescues clear it) and is
-- implied by the rescuer's `locked_until < now()`, but by no status check.
DROP INDEX agentcron.agent_tasks_lease_idx;
CREATE INDEX agent_tasks_lease_idx ON agentcron.agent_tasks (locked_until)
  WHERE locked_until IS NOT NULL;
