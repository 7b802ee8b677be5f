-- agentcron schema: agent tasks, their runs, and the NOTIFY that wakes idle workers.
CREATE SCHEMA IF NOT EXISTS agentcron;

CREATE TABLE agentcron.agent_tasks (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  agent_id      text,
  kind          text NOT NULL CHECK (length(kind) BETWEEN 1 AND 200),
  payload       jsonb NOT NULL DEFAULT '{}',
  status        text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
  approval      text NOT NULL DEFAULT 'approved'
                CHECK (approval IN ('pending', 'approved', 'rejected')),
  priority      smallint NOT NULL DEFAULT 0,
  scheduled_for timestamptz NOT NULL DEFAULT now(),
  cron          text,
  timezone      text NOT NULL DEFAULT 'UTC',
  attempts      int NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  max_attempts  int NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
  timeout_ms    int CHECK (timeout_ms IS NULL OR timeout_ms > 0),
  last_error    text,
  locked_by     text,
  locked_until  timestamptz,
  dedup_key     text,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  finished_at   timestamptz,
  CHECK (status <> 'running' OR (locked_by IS NOT NULL AND locked_until IS NOT NULL))
);

-- Exactly the due order: highest priority first, then oldest scheduled_for, then id, over the
-- rows that can become due. The claim query walks this index and stops at the first
-- scheduled_for in the future of each priority.
CREATE INDEX agent_tasks_due_idx ON agentcron.agent_tasks (priority DESC, scheduled_for, id)
  WHERE status = 'pending' AND approval = 'approved';

-- The rescuer's scan: running tasks by lease expiry.
CREATE INDEX agent_tasks_lease_idx ON agentcron.agent_tasks (locked_until)
  WHERE status = 'running';

-- The janitor's scan: finished tasks by age.
CREATE INDEX agent_tasks_finished_idx ON agentcron.agent_tasks (finished_at)
  WHERE status IN ('succeeded', 'failed', 'cancelled');

-- A dedup key is unique among live (pending or running) tasks only.
CREATE UNIQUE INDEX agent_tasks_dedup_idx ON agentcron.agent_tasks (dedup_key)
  WHERE dedup_key IS NOT NULL AND status IN ('pending', 'running');

CREATE TABLE agentcron.task_runs (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  task_id     bigint NOT NULL REFERENCES agentcron.agent_tasks (id) ON DELETE CASCADE,
  attempt     int NOT NULL,
  worker      text,
  started_at  timestamptz,
  finished_at timestamptz NOT NULL DEFAULT now(),
  outcome     text NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'retry', 'rescued', 'released')),
  error       text
);
CREATE INDEX task_runs_task_idx ON agentcron.task_runs (task_id);
CREATE INDEX task_runs_finished_idx ON agentcron.task_runs (finished_at);

-- One NOTIFY per inserting statement, however many rows, and only when one of them is due now.
CREATE FUNCTION agentcron.notify_due() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM new_rows
             WHERE status = 'pending' AND approval = 'approved' AND scheduled_for <= now()) THEN
    PERFORM pg_notify('agentcron_due', '');
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER agent_tasks_notify_due
  AFTER INSERT ON agentcron.agent_tasks
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION agentcron.notify_due();
