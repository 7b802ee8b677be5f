-- Operating agentcron: a SQL API for applications, kinds paused fleet-wide, named schedules.
--
-- Applications add, cancel and retry tasks with one function call each instead of raw INSERTs and
-- UPDATEs that must know the states (docs/sql-api.md); `agentcron tasks` calls the same functions,
-- so the CLI and the application cannot disagree on what a cancel or a retry is.

-- A kind listed here is claimed by no worker until it is removed (`agentcron kinds pause|resume`).
CREATE TABLE agentcron.paused_kinds (
  kind      text PRIMARY KEY,
  paused_at timestamptz NOT NULL DEFAULT now()
);

-- Named schedules, declared as [schedules.<name>] in the configuration and synced by every worker
-- at start and on SIGHUP. Each enabled, unpaused schedule is carried by one recurring task
-- (`task_id`, dedup key 'schedule:<name>'): a fire is a claim of that one row, so a fleet runs
-- it once per fire. `enabled` follows the file (a schedule removed from it is disabled, never
-- deleted); `paused` is the operator's (`agentcron schedules pause|resume`).
CREATE TABLE agentcron.schedules (
  name         text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
  cron         text NOT NULL,
  timezone     text NOT NULL DEFAULT 'UTC',
  kind         text NOT NULL CHECK (length(kind) BETWEEN 1 AND 200),
  payload      jsonb NOT NULL DEFAULT '{}',
  priority     smallint NOT NULL DEFAULT 0,
  max_attempts int NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
  enabled      boolean NOT NULL DEFAULT true,
  paused       boolean NOT NULL DEFAULT false,
  task_id      bigint,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Adds a task and returns its id. With a dedup_key, a live (pending or running) task with that
-- key is returned instead of adding another. The insert trigger wakes the workers when it is due.
CREATE FUNCTION agentcron.add_task(
  kind         text,
  payload      jsonb DEFAULT '{}',
  run_at       timestamptz DEFAULT now(),
  priority     int DEFAULT 0,
  max_attempts int DEFAULT 5,
  dedup_key    text DEFAULT NULL,
  agent_id     text DEFAULT NULL,
  cron         text DEFAULT NULL,
  timezone     text DEFAULT 'UTC',
  timeout_ms   int DEFAULT NULL,
  approval     text DEFAULT 'approved'
) RETURNS bigint LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  new_id bigint;
BEGIN
  IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
    RAISE EXCEPTION 'agentcron.add_task: payload must be a JSON object, got %', coalesce(jsonb_typeof(payload), 'null')
      USING ERRCODE = '22023';
  END IF;
  -- A concurrent add with the same key may commit between the insert's check and our look-up;
  -- each statement of a function sees a new snapshot, so the loop ends with one or the other.
  LOOP
    INSERT INTO agentcron.agent_tasks AS t (kind, payload, scheduled_for, priority, max_attempts, dedup_key,
                                            agent_id, cron, timezone, timeout_ms, approval)
    VALUES (add_task.kind, add_task.payload, coalesce(add_task.run_at, now()), add_task.priority,
            add_task.max_attempts, add_task.dedup_key, add_task.agent_id, add_task.cron,
            coalesce(add_task.timezone, 'UTC'), add_task.timeout_ms, add_task.approval)
    ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL AND status IN ('pending', 'running') DO NOTHING
    RETURNING t.id INTO new_id;
    IF new_id IS NOT NULL THEN
      RETURN new_id;
    END IF;
    SELECT t.id INTO new_id FROM agentcron.agent_tasks t
    WHERE t.dedup_key = add_task.dedup_key AND t.status IN ('pending', 'running');
    IF new_id IS NOT NULL THEN
      RETURN new_id;
    END IF;
  END LOOP;
END
$$;

-- Cancels a pending or running task: it ends `cancelled` (with finished_at, so the janitor
-- deletes it after retention.failed) and is never retried. A running task's worker hears
-- NOTIFY agentcron_cancel ('<id>:<claim token>'), stops its handler and drops its outcome.
-- Returns true when it cancelled the task, false when it was cancelled already; an unknown id
-- (SQLSTATE P0002) or a finished task (55000) is an error.
CREATE FUNCTION agentcron.cancel_task(task_id bigint, reason text DEFAULT 'cancelled')
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  was text;
  token bigint;
BEGIN
  SELECT t.status, t.claim_token INTO was, token FROM agentcron.agent_tasks t WHERE t.id = task_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no task %', task_id USING ERRCODE = 'P0002';
  END IF;
  IF was = 'cancelled' THEN
    RETURN false;
  END IF;
  IF was NOT IN ('pending', 'running') THEN
    RAISE EXCEPTION 'task % is %; only a pending or running task can be cancelled', task_id, was
      USING ERRCODE = '55000';
  END IF;
  -- A running task keeps its lease holder, and its time moves to the lease's end: retry_task does
  -- not let it run again before the worker that ran it has surely stopped it (a worker without
  -- LISTEN notices at its next lease renewal).
  UPDATE agentcron.agent_tasks t
  SET status = 'cancelled', finished_at = now(), updated_at = now(),
      locked_by = CASE WHEN was = 'running' THEN t.locked_by END, locked_until = NULL,
      scheduled_for = CASE WHEN was = 'running' THEN greatest(t.scheduled_for, t.locked_until) ELSE t.scheduled_for END,
      last_error = left(coalesce(reason, 'cancelled'), 8192)
  WHERE t.id = task_id;
  IF was = 'running' THEN
    PERFORM pg_notify('agentcron_cancel', task_id::text || ':' || coalesce(token, 0)::text);
  END IF;
  RETURN true;
END
$$;

-- Runs a failed or cancelled task again, now: pending, attempts reset, finished_at cleared. An
-- unknown id (P0002), a task in another state or a rejected one (55000), or a live task holding
-- the same dedup key (23505) is an error.
CREATE FUNCTION agentcron.retry_task(task_id bigint) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  was text;
  decided text;
BEGIN
  SELECT t.status, t.approval INTO was, decided FROM agentcron.agent_tasks t WHERE t.id = task_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no task %', task_id USING ERRCODE = 'P0002';
  END IF;
  IF decided = 'rejected' THEN
    RAISE EXCEPTION 'task % was rejected; a rejected task is never run', task_id USING ERRCODE = '55000';
  END IF;
  IF was NOT IN ('failed', 'cancelled') THEN
    RAISE EXCEPTION 'task % is %; only a failed or cancelled task can be retried', task_id, was
      USING ERRCODE = '55000';
  END IF;
  BEGIN
    -- Cancelled while running (locked_by kept): not before that run's lease would have ended.
    UPDATE agentcron.agent_tasks t
    SET status = 'pending', attempts = 0, finished_at = NULL, occurrence_at = NULL, claim_token = NULL,
        scheduled_for = CASE WHEN t.locked_by IS NOT NULL THEN greatest(now(), t.scheduled_for) ELSE now() END,
        locked_by = NULL, updated_at = now()
    WHERE t.id = task_id;
  EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'task % cannot be retried: a live task holds its dedup key', task_id USING ERRCODE = '23505';
  END;
  PERFORM pg_notify('agentcron_due', '') FROM agentcron.agent_tasks t
  WHERE t.id = task_id AND t.approval = 'approved' AND t.scheduled_for <= now();
  RETURN true;
END
$$;

-- Approves or rejects a task waiting for approval (approval = 'pending'). An approved task is
-- due at once when its time has come, and wakes the workers like an insert; a rejected one ends
-- `cancelled`. Returns false when the task had that approval already.
CREATE FUNCTION agentcron.decide_task(task_id bigint, decision text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  was text;
  st text;
BEGIN
  IF decision IS NULL OR decision NOT IN ('approved', 'rejected') THEN
    RAISE EXCEPTION 'decision must be approved or rejected, got %', decision USING ERRCODE = '22023';
  END IF;
  SELECT t.approval, t.status INTO was, st FROM agentcron.agent_tasks t WHERE t.id = task_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no task %', task_id USING ERRCODE = 'P0002';
  END IF;
  IF was = decision THEN
    RETURN false;
  END IF;
  IF was <> 'pending' OR st <> 'pending' THEN
    RAISE EXCEPTION 'task % is % with approval %; only a pending task awaiting approval can be decided',
      task_id, st, was USING ERRCODE = '55000';
  END IF;
  IF decision = 'approved' THEN
    UPDATE agentcron.agent_tasks t SET approval = 'approved', updated_at = now() WHERE t.id = task_id;
    PERFORM pg_notify('agentcron_due', '') FROM agentcron.agent_tasks t
    WHERE t.id = task_id AND t.scheduled_for <= now();
  ELSE
    UPDATE agentcron.agent_tasks t
    SET approval = 'rejected', status = 'cancelled', finished_at = now(), updated_at = now(), last_error = 'rejected'
    WHERE t.id = task_id;
  END IF;
  RETURN true;
END
$$;
