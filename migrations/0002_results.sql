-- What a handler returned on success (an http handler's response body, truncated): on the task
-- for a one-off task, whose row is its record, and on the run for a recurring one.
ALTER TABLE agentcron.agent_tasks ADD COLUMN result text;
ALTER TABLE agentcron.task_runs ADD COLUMN result text;
