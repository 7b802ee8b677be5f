-- The occurrence a task's current attempts belong to: its scheduled time when first claimed.
--
-- An http handler's Idempotency-Key must name one occurrence of a task, but a recurring task
-- resets its attempts at every fire, and a retry moves scheduled_for: neither the id and attempt
-- nor scheduled_for say which occurrence an attempt serves. A first attempt's claim sets
-- occurrence_at to scheduled_for; later attempts keep it (a retry, a rescue), and a release takes
-- the attempt back without moving scheduled_for; a recurring task's next fire resets attempts to
-- 0 (and empties the column), so its claim starts a new occurrence — even when a worker of an
-- older version wrote that fire. A nullable column without a default: adding it rewrites nothing.
ALTER TABLE agentcron.agent_tasks ADD COLUMN occurrence_at timestamptz;
