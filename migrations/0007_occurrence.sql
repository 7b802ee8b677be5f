-- The occurrence a task's current attempts belong to: its scheduled time when first claimed.
--
-- An http handler's Idempotency-Key must name one occurrence of a task, but a recurring task
-- resets its attempts at every fire, and a retry moves scheduled_for: neither the id and attempt
-- nor scheduled_for say which occurrence an attempt serves. The claim fills occurrence_at from
-- scheduled_for when it is empty; a retry, a release or a rescue keeps it; a recurring task's
-- next fire empties it again. A nullable column without a default: adding it rewrites nothing.
ALTER TABLE agentcron.agent_tasks ADD COLUMN occurrence_at timestamptz;
