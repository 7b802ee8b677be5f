-- Every claim of a task gets its own token, stored on the row and checked by every outcome,
-- lease extension and release of that claim.
--
-- The lease holder and the attempt number did not identify a claim: a recurring task resets its
-- attempts at every fire, so an outcome sent again after an in-doubt commit could finish the next
-- occurrence, claimed by the same worker at the same attempt. A sequence makes tokens unique
-- across workers without coordination.
CREATE SEQUENCE agentcron.claim_tokens;
ALTER TABLE agentcron.agent_tasks ADD COLUMN claim_token bigint;
