// The SQL of the administrative commands (`tasks`, `kinds`, `schedules`) and of the schedule
// sync: like pg_statements.hpp, every statement named and commented, parameters $1…$N and no '$'
// inside a string. Listings return one column, `row`, a JSON object per row (row_to_json), which
// the CLI prints as a table or as JSON. The state changes go through the migration's functions
// (agentcron.cancel_task, retry_task, decide_task): the CLI and applications share one meaning.
#pragma once
#include "pg_statements.hpp"

namespace agentcron::pg::admin {

// `tasks list`: the newest first, by status and kind when given; $3 rows at most.
constexpr Statement kListTasks{"agentcron_admin_list_tasks", R"SQL(
SELECT row_to_json(x)::text AS row FROM (
  SELECT id, kind, status, approval, priority, attempts, max_attempts,
         to_char(scheduled_for AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS scheduled_for,
         cron, agent_id, locked_by,
         left(regexp_replace(coalesce(last_error, ''), '[[:space:]]+', ' ', 'g'), 200) AS last_error
  FROM agentcron.agent_tasks
  WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR kind = $2)
  ORDER BY id DESC
  LIMIT $3
) x
)SQL"};

// `tasks show`: the whole row.
constexpr Statement kShowTask{"agentcron_admin_show_task", R"SQL(
SELECT row_to_json(t)::text AS row FROM agentcron.agent_tasks t WHERE t.id = $1::bigint
)SQL"};

// `tasks show`: its runs, the newest first (at most $2).
constexpr Statement kTaskRuns{"agentcron_admin_task_runs", R"SQL(
SELECT row_to_json(r)::text AS row FROM (
  SELECT id, attempt, outcome, worker, started_at, finished_at, error, result
  FROM agentcron.task_runs WHERE task_id = $1::bigint ORDER BY id DESC LIMIT $2
) r
)SQL"};

constexpr Statement kCancelTask{"agentcron_admin_cancel", "SELECT agentcron.cancel_task($1::bigint, $2::text)"};
constexpr Statement kRetryTask{"agentcron_admin_retry", "SELECT agentcron.retry_task($1::bigint)"};
constexpr Statement kDecideTask{"agentcron_admin_decide", "SELECT agentcron.decide_task($1::bigint, $2::text)"};

// `tasks purge`: one batch of finished tasks of a status older than $2 ms (and their runs, by
// the foreign key's cascade), through the finished index.
constexpr Statement kPurgeBatch{"agentcron_admin_purge", R"SQL(
WITH doomed AS (
  SELECT id FROM agentcron.agent_tasks
  WHERE status = $1 AND status IN ('succeeded', 'failed', 'cancelled')
    AND finished_at < now() - $2::bigint * interval '1 millisecond'
  LIMIT $3
  FOR UPDATE SKIP LOCKED
), gone AS (
  DELETE FROM agentcron.agent_tasks t USING doomed WHERE t.id = doomed.id RETURNING 1
)
SELECT count(*) FROM gone
)SQL"};

constexpr Statement kPauseKind{"agentcron_admin_pause_kind", R"SQL(
INSERT INTO agentcron.paused_kinds (kind) VALUES ($1) ON CONFLICT (kind) DO NOTHING RETURNING kind
)SQL"};
constexpr Statement kResumeKind{"agentcron_admin_resume_kind", R"SQL(
WITH gone AS (DELETE FROM agentcron.paused_kinds WHERE kind = $1 RETURNING kind)
SELECT kind, pg_notify('agentcron_due', '') FROM gone
)SQL"};
constexpr Statement kListPausedKinds{"agentcron_admin_paused_kinds", R"SQL(
SELECT row_to_json(p)::text AS row FROM (
  SELECT kind, to_char(paused_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS paused_at
  FROM agentcron.paused_kinds ORDER BY kind
) p
)SQL"};

// --- schedules ---

// The live task (pending or running) carrying a schedule: found by its dedup key, which the
// partial unique index keeps to one.

// `schedules list`: each schedule, its next fire (the carrying task's time while pending) in UTC
// and in the schedule's zone, and its last run.
constexpr Statement kListSchedules{"agentcron_admin_list_schedules", R"SQL(
SELECT row_to_json(x)::text AS row FROM (
  SELECT s.name, s.cron, s.timezone, s.kind, s.enabled, s.paused, t.id AS task_id, t.status AS task_status,
         CASE WHEN t.status = 'pending' THEN to_char(t.scheduled_for AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') END AS next_fire_utc,
         CASE WHEN t.status = 'pending' THEN to_char(t.scheduled_for AT TIME ZONE s.timezone, 'YYYY-MM-DD"T"HH24:MI:SS') END AS next_fire_local,
         to_char(r.finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS last_run, r.outcome AS last_outcome
  FROM agentcron.schedules s
  LEFT JOIN agentcron.agent_tasks t
    ON t.dedup_key = 'schedule:' || s.name AND t.dedup_key IS NOT NULL AND t.status IN ('pending', 'running')
  LEFT JOIN LATERAL (SELECT finished_at, outcome FROM agentcron.task_runs
                     WHERE task_id = coalesce(t.id, s.task_id) ORDER BY id DESC LIMIT 1) r ON true
  ORDER BY s.name
) x
)SQL"};

// The schedules that should have a carrying task (the periodic sync's, from the database).
constexpr Statement kActiveSchedules{"agentcron_admin_active_schedules", R"SQL(
SELECT name, cron, timezone FROM agentcron.schedules WHERE enabled AND NOT paused ORDER BY name
)SQL"};

// A schedule's definition (for resume and the sync's first fires).
constexpr Statement kScheduleDefinition{"agentcron_admin_schedule_definition", R"SQL(
SELECT name, cron, timezone, enabled, paused FROM agentcron.schedules WHERE name = $1
)SQL"};

// `schedules run-now`: the pending occurrence becomes due now (the regular one after it still
// comes: the next fire is computed from the run). Returns the task id, or nothing.
constexpr Statement kRunScheduleNow{"agentcron_admin_run_schedule_now", R"SQL(
WITH moved AS (
  UPDATE agentcron.agent_tasks t SET scheduled_for = now(), updated_at = now()
  WHERE t.dedup_key = 'schedule:' || $1 AND t.dedup_key IS NOT NULL AND t.status = 'pending'
  RETURNING t.id, t.approval
)
SELECT id, (SELECT count(*) FROM (SELECT pg_notify('agentcron_due', '') FROM moved WHERE approval = 'approved') n)
FROM moved
)SQL"};

// The schedule sync and `schedules pause|resume` run these in one transaction under the
// schedules' advisory lock (kScheduleLockKey).

// The file's schedules, inserted or updated where they differ. Returns each changed name and
// whether it was new.
constexpr Statement kUpsertSchedules{"agentcron_sync_upsert", R"SQL(
INSERT INTO agentcron.schedules AS s (name, cron, timezone, kind, payload, priority, max_attempts, enabled)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::smallint[], $7::int[], $8::boolean[])
ON CONFLICT (name) DO UPDATE SET
  cron = excluded.cron, timezone = excluded.timezone, kind = excluded.kind, payload = excluded.payload,
  priority = excluded.priority, max_attempts = excluded.max_attempts, enabled = excluded.enabled, updated_at = now()
WHERE (s.cron, s.timezone, s.kind, s.payload, s.priority, s.max_attempts, s.enabled)
      IS DISTINCT FROM (excluded.cron, excluded.timezone, excluded.kind, excluded.payload, excluded.priority,
                        excluded.max_attempts, excluded.enabled)
RETURNING s.name, (s.xmax = 0) AS inserted
)SQL"};

// Schedules no longer in the file are disabled, never deleted. Returns their names.
constexpr Statement kDisableMissingSchedules{"agentcron_sync_disable_missing", R"SQL(
UPDATE agentcron.schedules SET enabled = false, updated_at = now()
WHERE enabled AND name <> ALL($1::text[])
RETURNING name
)SQL"};

// Sets or clears a schedule's pause. Returns its name, or nothing when there is no such schedule.
constexpr Statement kSetSchedulePaused{"agentcron_admin_pause_schedule", R"SQL(
UPDATE agentcron.schedules SET paused = $2::boolean, updated_at = now() WHERE name = $1 RETURNING name
)SQL"};

// The carrying tasks of disabled or paused schedules are cancelled as agentcron.cancel_task would
// (a running one's handler is stopped through agentcron_cancel), skipping a row that finished
// meanwhile instead of failing the sync. Returns how many.
constexpr Statement kCancelInactiveSchedules{"agentcron_sync_cancel_inactive", R"SQL(
WITH live AS (
  SELECT t.id, t.status, t.claim_token, s.name, s.paused FROM agentcron.schedules s
  JOIN agentcron.agent_tasks t ON t.dedup_key = 'schedule:' || s.name AND t.dedup_key IS NOT NULL
                              AND t.status IN ('pending', 'running')
  WHERE NOT (s.enabled AND NOT s.paused)
  FOR UPDATE OF t
), gone AS (
  UPDATE agentcron.agent_tasks t
  SET status = 'cancelled', finished_at = now(), updated_at = now(), locked_until = NULL,
      scheduled_for = CASE WHEN live.status = 'running' THEN greatest(t.scheduled_for, t.locked_until) ELSE t.scheduled_for END,
      locked_by = CASE WHEN live.status = 'running' THEN t.locked_by END,
      last_error = 'schedule ' || live.name || CASE WHEN live.paused THEN ' was paused' ELSE ' was disabled' END
  FROM live WHERE t.id = live.id AND t.status IN ('pending', 'running')
  RETURNING t.id
), stopped AS (
  SELECT pg_notify('agentcron_cancel', live.id::text || ':' || coalesce(live.claim_token, 0)::text)
  FROM live JOIN gone ON gone.id = live.id WHERE live.status = 'running'
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM stopped)
)SQL"};

// Pending carrying tasks whose schedule changed take the new definition, and move to the new first
// fire ($2, epoch seconds, by name $1) when the cron or zone changed. A running one is left alone:
// its run computes the next fire from the schedule it was claimed with, and the sync after that
// run (every minute) corrects it. Returns how many.
constexpr Statement kUpdateScheduleTasks{"agentcron_sync_update_tasks", R"SQL(
WITH f AS (SELECT * FROM unnest($1::text[], $2::double precision[]) AS f(name, first_fire)),
upd AS (
  UPDATE agentcron.agent_tasks t SET
    scheduled_for = CASE WHEN (t.cron, t.timezone) IS DISTINCT FROM (s.cron, s.timezone)
                         THEN to_timestamp(f.first_fire) ELSE t.scheduled_for END,
    cron = s.cron, timezone = s.timezone, kind = s.kind, payload = s.payload, priority = s.priority,
    max_attempts = s.max_attempts, updated_at = now()
  FROM agentcron.schedules s JOIN f ON f.name = s.name
  WHERE t.dedup_key = 'schedule:' || s.name AND t.dedup_key IS NOT NULL AND t.status = 'pending'
    AND s.enabled AND NOT s.paused
    AND (t.cron, t.timezone, t.kind, t.payload, t.priority, t.max_attempts)
        IS DISTINCT FROM (s.cron, s.timezone, s.kind, s.payload, s.priority, s.max_attempts)
  RETURNING t.id
)
SELECT count(*) FROM upd
)SQL"};

// Active schedules without a live carrying task get one, at their first fire ($2 by name $1);
// the schedule remembers it (task_id: its history stays findable once it has finished). Returns
// the names given a task.
constexpr Statement kCreateScheduleTasks{"agentcron_sync_create_tasks", R"SQL(
WITH f AS (SELECT * FROM unnest($1::text[], $2::double precision[]) AS f(name, first_fire)),
need AS (
  SELECT s.*, f.first_fire FROM agentcron.schedules s JOIN f ON f.name = s.name
  WHERE s.enabled AND NOT s.paused
    AND NOT EXISTS (SELECT 1 FROM agentcron.agent_tasks t
                    WHERE t.dedup_key = 'schedule:' || s.name AND t.dedup_key IS NOT NULL
                      AND t.status IN ('pending', 'running'))
), ins AS (
  INSERT INTO agentcron.agent_tasks (kind, payload, scheduled_for, cron, timezone, priority, max_attempts, dedup_key)
  SELECT kind, payload, to_timestamp(first_fire), cron, timezone, priority, max_attempts, 'schedule:' || name FROM need
  ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL AND status IN ('pending', 'running') DO NOTHING
  RETURNING id, dedup_key
)
UPDATE agentcron.schedules s SET task_id = ins.id FROM ins WHERE ins.dedup_key = 'schedule:' || s.name
RETURNING s.name
)SQL"};

// `doctor`: everything its checks read, in one statement of bounded cost (catalog views, the
// lease index, up to 10,000 due rows of each kind), as one JSON object. $1 is
// database.application_name: workers connect as "$1/<worker id>" (cut at 63 bytes by the
// server), the CLI as "$1/cli:<pid>".
constexpr Statement kDoctor{"agentcron_doctor", R"SQL(
SELECT json_build_object(
  'max_connections', current_setting('max_connections')::int,
  'superuser_reserved', current_setting('superuser_reserved_connections')::int,
  'is_superuser', (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
  'datconnlimit', (SELECT datconnlimit FROM pg_database WHERE datname = current_database()),
  'rolconnlimit', (SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user),
  'server_connections', (SELECT count(*) FROM pg_stat_activity
                         WHERE backend_type = 'client backend' OR (backend_type IS NULL AND usesysid IS NOT NULL)),
  'database_connections', (SELECT count(*) FROM pg_stat_activity
                           WHERE (backend_type = 'client backend' OR (backend_type IS NULL AND usesysid IS NOT NULL))
                             AND datname = current_database()),
  'role_connections', (SELECT count(*) FROM pg_stat_activity
                       WHERE (backend_type = 'client backend' OR (backend_type IS NULL AND usesysid IS NOT NULL))
                         AND usename = current_user),
  'hidden_connections', (SELECT count(*) FROM pg_stat_activity WHERE backend_type IS NULL AND usesysid IS NOT NULL),
  'by_application', (SELECT coalesce(json_agg(x), '[]') FROM (
      SELECT CASE WHEN left(application_name, length($1) + 1) = $1 || '/'
                  THEN $1 || CASE WHEN substr(application_name, length($1) + 2, 4) = 'cli:' THEN ' cli' ELSE ' workers' END
                  ELSE coalesce(nullif(application_name, ''), '(none)') END AS application,
             count(*) AS connections
      FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10) x),
  'workers', (SELECT coalesce(json_agg(w), '[]') FROM (
      SELECT substr(application_name, length($1) + 2) AS worker, count(*) AS connections
      FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname = current_database()
        AND left(application_name, length($1) + 1) = $1 || '/' AND substr(application_name, length($1) + 2, 4) <> 'cli:'
      GROUP BY 1 ORDER BY 1 LIMIT 200) w),
  'server_port', inet_server_port(),
  'in_recovery', pg_is_in_recovery(),
  'default_read_only', current_setting('default_transaction_read_only'),
  'statement_timeout_ms', (SELECT setting::bigint FROM pg_settings WHERE name = 'statement_timeout'),
  'lock_timeout_ms', (SELECT setting::bigint FROM pg_settings WHERE name = 'lock_timeout'),
  'idle_in_transaction_ms', (SELECT setting::bigint FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout'),
  'idle_session_ms', (SELECT setting::bigint FROM pg_settings WHERE name = 'idle_session_timeout'),
  'db_epoch', extract(epoch FROM clock_timestamp()),
  'live_tuples', (SELECT n_live_tup FROM pg_stat_user_tables WHERE relid = 'agentcron.agent_tasks'::regclass),
  'dead_tuples', (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'agentcron.agent_tasks'::regclass),
  'last_vacuum', (SELECT greatest(last_vacuum, last_autovacuum) FROM pg_stat_user_tables
                  WHERE relid = 'agentcron.agent_tasks'::regclass),
  'table_bytes', pg_total_relation_size('agentcron.agent_tasks'),
  'due_index_bytes', pg_relation_size('agentcron.agent_tasks_due_idx'),
  'invalid_indexes', (SELECT coalesce(json_agg(c.relname), '[]') FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                      WHERE i.indrelid IN ('agentcron.agent_tasks'::regclass, 'agentcron.task_runs'::regclass)
                        AND NOT (i.indisvalid AND i.indisready)),
  'due_kinds', (WITH kp(k, p) AS (SELECT kind, priority FROM agentcron.due_index_pairs()),
        ks(k) AS (SELECT DISTINCT k FROM kp)
      SELECT coalesce(json_agg(k), '[]') FROM (
        SELECT ks.k AS kind, d.n AS due, extract(epoch FROM now() - o.at) AS oldest_seconds
        FROM ks CROSS JOIN LATERAL (
          SELECT count(*) AS n FROM (
            SELECT 1 FROM kp CROSS JOIN LATERAL (
              SELECT 1 FROM agentcron.agent_tasks
              WHERE status = 'pending' AND approval = 'approved' AND kind = kp.k AND priority = kp.p
                AND scheduled_for <= now() LIMIT 10000) x
            WHERE kp.k = ks.k LIMIT 10000) y) d
        CROSS JOIN LATERAL (
          SELECT min(m.at) AS at FROM kp CROSS JOIN LATERAL (
            SELECT min(scheduled_for) AS at FROM agentcron.agent_tasks
            WHERE status = 'pending' AND approval = 'approved' AND kind = kp.k AND priority = kp.p
              AND scheduled_for <= now()) m
          WHERE kp.k = ks.k) o
        WHERE d.n > 0
        ORDER BY 3 DESC LIMIT 50) k),
  'paused_kinds', (SELECT coalesce(json_agg(kind), '[]') FROM agentcron.paused_kinds),
  'expired_leases', (SELECT count(*) FROM agentcron.agent_tasks WHERE locked_until IS NOT NULL
                     AND locked_until < now() - interval '1 minute' AND status = 'running'),
  'oldest_expired_seconds', (SELECT extract(epoch FROM now() - min(locked_until)) FROM agentcron.agent_tasks
                             WHERE locked_until IS NOT NULL AND locked_until < now() - interval '1 minute'
                               AND status = 'running')
)::text
)SQL"};

// The schedules' advisory lock: 'agcs' in ASCII (the migrations hold 'agcr').
constexpr long long kScheduleLockKey = 1634165619;

}  // namespace agentcron::pg::admin
