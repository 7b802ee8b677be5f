-- Validates migration 0004's constraint on the rows that were there before it (0004 repaired
-- them). VALIDATE CONSTRAINT scans the table under SHARE UPDATE EXCLUSIVE, which claims and
-- outcome writes do not wait for; it runs alone so that 0004's ACCESS EXCLUSIVE lock was held only
-- for an instant.
ALTER TABLE agentcron.agent_tasks VALIDATE CONSTRAINT agent_tasks_scheduled_for_range;
