// The SQL of PgTaskStore: every statement agentcron runs on its tables, named (the name it is
// prepared under) and commented. Parameters are $1…$N; no statement has a '$' inside a string
// or a body (pgbouncer mode inlines the parameters textually). To add a query: a Statement here,
// a method on TaskStore (task_store.hpp) with a params struct and a result struct, its
// implementation in pg_task_store.cpp, and the same method on the fake in tests/support/.
#pragma once

#include <cstddef>

namespace agentcron::pg {

// A statement of the store: the name it is prepared under and its SQL. `hash_by_id`: it joins a
// batch of outcomes to their tasks by id. A queue table's statistics are always stale (ANALYZE
// saw the tasks pending; now a thousand are running), so the planner believes the batch's rows
// match almost nothing and joins them in a nested loop — a quadratic join that made a
// 500-task completion cost 60 ms instead of 4. Such statements find their rows through the
// primary key (`id = ANY(ids)`) and run with nested loops off, which leaves a hash join.
//
// `generic_plan`: it runs with plan_cache_mode = force_generic_plan, index scans only. PostgreSQL plans a prepared
// statement afresh for each call while that looks cheaper than its generic plan, and the claim's
// custom plans never did: planning cost more than running it for one due task (0.5 of 0.9 ms).
// The generic plan has the same shape — the recursive priority walk and the due index's ranges
// make it — and the integration test checks its buffers.
constexpr const char* kGenericPlanSql =
    "SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off";

struct Statement {
  const char* name;
  const char* sql;
  bool hash_by_id = false;
  bool generic_plan = false;
  const char* label = nullptr;  // its name in metrics, when not `name` (claim_statement())
};

constexpr Statement kNow{"agentcron_now", "SELECT (extract(epoch FROM now()) * 1000000)::bigint"};

// Claims up to $2 due tasks of the kinds $1, highest priority first, then the oldest, then the
// lowest id — its cost bounded by the tasks it takes, whatever else waits. The due index is led by
// kind, then priority, then scheduled_for (migration 0009), and the statement never reads past
// what it takes:
// - Tasks waiting in the future: a priority's due range ends at now(), and the statement skips
//   from one priority to the next below it (`prios`: one index probe per kind taken, a loose
//   index scan), reading each priority's due range in turn. Its cost grows with the distinct
//   priorities of pending tasks (a probe each when the claim comes back short): a handful is the
//   intended use.
// - Tasks of other kinds — paused fleet-wide (agentcron.paused_kinds, left out of `kinds`), or
//   with no handler here — are never read: each kind taken has its own range of the index
//   (@DUE@, below; claim_statement() writes one range per slot of the kinds array).
// The nested loop over `prios` keeps the priority order. The rows locked are the rows taken, but
// for a shortfall under contention with several kinds (below) and the per-kind limits:
//
// $6/$7 name the kinds this worker limits (`[handlers.<kind>] concurrency`) and the slots each
// has free now: of the rows found, at most that many of such a kind are taken (in due order); the
// rest stay pending, unlocked as the statement ends. Without limits that step is skipped (a
// one-time filter on the parameters).
//
// The rows locked are updated through the primary key, `id = ANY(array)`: one index probe each,
// whatever the planner expects — the generic plan (below) expects LIMIT $2 to let 100,000 rows
// through, and joined them to the table by hashing all of it. (Not by ctid: a row another
// transaction changed after the statement's snapshot is locked in its new version, which a TID
// scan does not see, so the claim would come back short and the poller take it for "no more
// due".) The claim runs with index scans only (no bitmap heap scan, no sequential scan): the
// generic plan costs LIMIT $2 as a tenth of the rows, and a large, churned due range must not
// tip it into reading and sorting the whole range.
//
// kClaim's @DUE@: the due rows of the kinds taken, in due order, locked. For one kind, its range
// of the due index at each priority in turn, locked as read and as the outer LIMIT pulls them:
constexpr const char* kClaimOneKindSql = R"SQL(
  SELECT d.id, d.kind, prios.p AS priority, d.scheduled_for FROM prios CROSS JOIN LATERAL (
    SELECT id, kind, scheduled_for FROM agentcron.agent_tasks
    WHERE kind = (SELECT k FROM kinds)[1] AND priority = prios.p AND status = 'pending' AND approval = 'approved'
      AND scheduled_for <= now()
    ORDER BY scheduled_for, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
  ) d
  WHERE prios.p IS NOT NULL
  LIMIT $2)SQL";
// For several kinds a locked scan is no longer ordered, so their ranges cannot be merged as they
// are locked. Each kind's range (one per slot of the kinds array: "@" is the slot's number, and
// the slots past the array's end read nothing) is read up to three times (@QUOTA@ adds the CTEs):
// 1. `quota`: the first $2 due rows across priorities and kinds, in due order — each priority's
//    ranges merged unlocked (a Merge Append, one row ahead per kind, from the index alone) —
//    counted per kind and priority.
// 2. `taken`: at each priority with a quota, each kind's range locked as read (FOR UPDATE SKIP
//    LOCKED) up to its quota. Uncontended, the rows locked are exactly the first $2 in due order,
//    and nothing more is locked. A row another claim holds is skipped and its kind's next row
//    taken instead.
// 3. `more`, only when `taken` fell short of the quota (another claim held the rows a kind's
//    quota counted, and the kind had no more): the shortfall taken from the priorities in turn,
//    each kind's range locked up to the shortfall past the rows taken, and the first kept, so that
//    a claim does not come back short — which tells the poller nothing more is due — while rows
//    of other kinds or lower priorities are due. Up to (kinds − 1) × the shortfall rows are locked
//    and left, for the statement's duration.
// (Locking the merged rows one by one instead was tried and dropped: a row another claim took after
// this statement's snapshot is passed over only after a locked walk of its update chain, and such
// a claim fell behind a faster one, stepped over everything it took, and came back empty after
// 300 ms with 10,000 tasks due. So was locking $2 rows of each kind and keeping the first $2: the
// rows locked and not taken are skipped by other claims meanwhile, which take lower priorities.)
constexpr const char* kClaimQuotaSql = R"SQL(
), quota AS (
  SELECT kind, priority, count(*) AS n FROM (
    SELECT c.kind, prios.p AS priority FROM prios CROSS JOIN LATERAL (
      SELECT kind FROM (@RANGES@) r ORDER BY scheduled_for, id LIMIT $2) c
    WHERE prios.p IS NOT NULL
    LIMIT $2) f
  GROUP BY kind, priority
), taken AS MATERIALIZED (
  SELECT t.id, t.kind, q.priority, t.scheduled_for FROM (SELECT DISTINCT priority FROM quota) q
  CROSS JOIN LATERAL (@LOCKED@) t
), short AS MATERIALIZED (
  SELECT greatest((SELECT coalesce(sum(n), 0) FROM quota) - (SELECT count(*) FROM taken), 0) AS n)SQL";
constexpr const char* kClaimMergeSql = R"SQL(
  SELECT id, kind, priority, scheduled_for FROM taken
  UNION ALL
  (SELECT d.id, d.kind, prios.p, d.scheduled_for FROM prios CROSS JOIN LATERAL (
     SELECT * FROM (@MORE@) m ORDER BY scheduled_for, id LIMIT (SELECT n FROM short)) d
   WHERE prios.p IS NOT NULL
   LIMIT (SELECT n FROM short)))SQL";
// One kind's due range: unlocked (@RANGES@), locked up to its quota (@LOCKED@), and locked up to
// the shortfall, past the rows taken (@MORE@; not read at all without a shortfall).
constexpr const char* kClaimRangeSql =
    "SELECT * FROM (SELECT kind, scheduled_for, id FROM agentcron.agent_tasks WHERE kind = (SELECT k FROM kinds)[@] "
    "AND priority = prios.p AND status = 'pending' AND approval = 'approved' AND scheduled_for <= now() "
    "ORDER BY scheduled_for, id) r@";
constexpr const char* kClaimLockedSql =
    "SELECT * FROM (SELECT id, kind, scheduled_for FROM agentcron.agent_tasks WHERE kind = (SELECT k FROM kinds)[@] "
    "AND priority = q.priority AND status = 'pending' AND approval = 'approved' AND scheduled_for <= now() "
    "ORDER BY scheduled_for, id "
    "LIMIT (SELECT coalesce(max(n), 0) FROM quota WHERE kind = (SELECT k FROM kinds)[@] AND priority = q.priority) "
    "FOR UPDATE SKIP LOCKED) k@";
constexpr const char* kClaimMoreSql =
    "SELECT * FROM (SELECT id, kind, scheduled_for FROM agentcron.agent_tasks WHERE kind = (SELECT k FROM kinds)[@] "
    "AND priority = prios.p AND status = 'pending' AND approval = 'approved' AND scheduled_for <= now() "
    "AND id <> ALL(ARRAY(SELECT id FROM taken)) ORDER BY scheduled_for, id LIMIT (SELECT n FROM short) "
    "FOR UPDATE SKIP LOCKED) m@";

constexpr Statement kClaim{"agentcron_claim", R"SQL(
WITH RECURSIVE kinds(k) AS (
  SELECT array(SELECT unnest($1::text[]) EXCEPT SELECT kind FROM agentcron.paused_kinds)
), prios(p) AS (
  SELECT (SELECT max(x.priority) FROM unnest((SELECT k FROM kinds)) u(k) CROSS JOIN LATERAL (
            SELECT priority FROM agentcron.agent_tasks
            WHERE status = 'pending' AND approval = 'approved' AND kind = u.k
            ORDER BY priority DESC LIMIT 1) x)
  UNION ALL
  SELECT (SELECT max(x.priority) FROM unnest((SELECT k FROM kinds)) u(k) CROSS JOIN LATERAL (
            SELECT priority FROM agentcron.agent_tasks
            WHERE status = 'pending' AND approval = 'approved' AND kind = u.k AND priority < prios.p
            ORDER BY priority DESC LIMIT 1) x)
  FROM prios WHERE prios.p IS NOT NULL@QUOTA@
), due AS (@DUE@
), picked AS (
  SELECT id FROM due WHERE cardinality($6::text[]) = 0
  UNION ALL
  SELECT x.id FROM (
    SELECT id, kind, row_number() OVER (PARTITION BY kind ORDER BY priority DESC, scheduled_for, id) AS rn FROM due
  ) x LEFT JOIN unnest($6::text[], $7::int[]) AS l(kind, room) ON l.kind = x.kind
  WHERE cardinality($6::text[]) > 0 AND (l.room IS NULL OR x.rn <= l.room)
)
UPDATE agentcron.agent_tasks t
SET status = 'running', attempts = t.attempts + 1, locked_by = $3,
    locked_until = now() + $4::bigint * interval '1 millisecond', updated_at = now(),
    claim_token = nextval('agentcron.claim_tokens'),
    occurrence_at = CASE WHEN t.attempts = 0 THEN t.scheduled_for ELSE coalesce(t.occurrence_at, t.scheduled_for) END
WHERE t.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING t.id, t.agent_id, t.kind, CASE WHEN octet_length(t.payload::text) <= $5 THEN t.payload::text END, t.attempts, t.max_attempts, t.cron, t.timezone, t.timeout_ms,
          (extract(epoch FROM least(greatest(t.scheduled_for, '1900-01-01 UTC'), '2200-01-01 UTC')) * 1000000)::bigint,
          (extract(epoch FROM now()) * 1000000)::bigint, t.priority, octet_length(t.payload::text), t.claim_token,
          (extract(epoch FROM least(greatest(t.occurrence_at, '1900-01-01 UTC'), '2200-01-01 UTC')) * 1000000)::bigint
)SQL", false, true};

// kClaim for a kinds array of `kinds` elements: @DUE@ written out for a power of two of slots at
// least that many (the slots past the array's end read nothing), so that a worker prepares at most
// a few variants as its kinds at their limit come and go. Built once per slot count, kept for the
// process's life; prepared as agentcron_claim (one slot) or agentcron_claim_<slots>, and labelled
// agentcron_claim in metrics either way.
const Statement& claim_statement(std::size_t kinds);

constexpr Statement kComplete{"agentcron_complete", R"SQL(
WITH o AS (
  SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::bigint[], $5::double precision[], $6::bool[],
                       $7::text[], $8::text[], $9::double precision[], $10::double precision[], $11::text[], $12::text[],
                       $14::text[], $15::bigint[])
    AS o(id, attempt, status, delay_ms, run_at, reset_attempts, error, run_outcome, started_at, finished_at,
         channel, note, result, claim_token)
), upd AS (
  UPDATE agentcron.agent_tasks t SET
    status = o.status,
    scheduled_for = CASE WHEN o.delay_ms IS NOT NULL THEN now() + o.delay_ms * interval '1 millisecond'
                         WHEN o.run_at IS NOT NULL THEN to_timestamp(o.run_at)
                         ELSE t.scheduled_for END,
    attempts = CASE WHEN o.reset_attempts THEN 0 ELSE t.attempts END,
    occurrence_at = CASE WHEN o.reset_attempts THEN NULL ELSE t.occurrence_at END,
    last_error = NULLIF(o.error, ''),
    result = NULLIF(o.result, ''),
    locked_by = NULL, locked_until = NULL, updated_at = now(),
    finished_at = CASE WHEN o.status IN ('succeeded', 'failed') THEN now() END
  FROM o
  WHERE t.id = ANY($1::bigint[]) AND t.id = o.id AND t.status = 'running' AND t.locked_by = $13
    AND t.claim_token = o.claim_token
  RETURNING t.id
), runs AS (
  INSERT INTO agentcron.task_runs (task_id, attempt, worker, started_at, finished_at, outcome, error, result)
  SELECT o.id, o.attempt, $13, to_timestamp(o.started_at), to_timestamp(o.finished_at), o.run_outcome,
         NULLIF(o.error, ''), NULLIF(o.result, '')
  FROM o JOIN upd ON upd.id = o.id WHERE o.run_outcome <> ''
  RETURNING 1
), notes AS (
  SELECT pg_notify(o.channel, o.note) FROM o JOIN upd ON upd.id = o.id WHERE o.channel <> ''
)
SELECT (SELECT array_agg(id) FROM upd), (SELECT count(*) FROM runs), (SELECT count(*) FROM notes)
)SQL", true};

// The common batch in a lean statement: every outcome a one-off task's success with nothing to
// keep but the row itself (no result, no error, no task_runs row, no NOTIFY). Exactly what
// kComplete writes for such outcomes, from two arrays instead of fourteen and without its
// CTEs: 500 outcomes cost 6 ms instead of 10 (docs/performance.md).
constexpr Statement kSucceed{"agentcron_succeed", R"SQL(
UPDATE agentcron.agent_tasks t
SET status = 'succeeded', last_error = NULL, result = NULL, locked_by = NULL, locked_until = NULL,
    updated_at = now(), finished_at = now()
FROM unnest($1::bigint[], $2::bigint[]) AS o(id, claim_token)
WHERE t.id = ANY($1::bigint[]) AND t.id = o.id AND t.status = 'running' AND t.locked_by = $3
  AND t.claim_token = o.claim_token
RETURNING t.id
)SQL", true};

// Released and rescued tasks are due again at once: like an insert, they wake the listening
// workers (one NOTIFY per statement), so that another worker takes them now, not at its next tick.
constexpr Statement kRelease{"agentcron_release", R"SQL(
WITH rel AS (
  UPDATE agentcron.agent_tasks t
  SET status = 'pending', attempts = greatest(t.attempts - 1, 0), locked_by = NULL, locked_until = NULL,
      updated_at = now()
  FROM unnest($1::bigint[], $3::bigint[]) AS c(id, claim_token)
  WHERE t.id = ANY($1::bigint[]) AND t.id = c.id AND t.claim_token = c.claim_token AND t.status = 'running'
    AND t.locked_by = $2
  RETURNING t.approval, t.scheduled_for
), woken AS (
  SELECT pg_notify('agentcron_due', '')
  FROM (SELECT FROM rel WHERE approval = 'approved' AND scheduled_for <= now() LIMIT 1) due
)
SELECT (SELECT count(*) FROM rel), (SELECT count(*) FROM woken)
)SQL", true};

constexpr Statement kExtend{"agentcron_extend", R"SQL(
UPDATE agentcron.agent_tasks t
SET locked_until = now() + $3::bigint * interval '1 millisecond'
FROM unnest($1::bigint[], $4::bigint[]) AS c(id, claim_token)
WHERE t.id = ANY($1::bigint[]) AND t.id = c.id AND t.claim_token = c.claim_token AND t.status = 'running'
  AND t.locked_by = $2
RETURNING t.id
)SQL", true};

// Expired recurring tasks whose attempts are spent go to their next fire time, which only the
// cron engine knows: this statement leaves them running and counts them (the last column), and
// the rescuer moves them with kExpiredRecurring and kRescheduleExpired.
constexpr Statement kRescue{"agentcron_rescue", R"SQL(
WITH expired AS (
  SELECT id, locked_by AS old_worker, attempts AS old_attempts FROM agentcron.agent_tasks
  WHERE status = 'running' AND locked_until < now() AND NOT (cron IS NOT NULL AND attempts >= max_attempts)
  ORDER BY locked_until
  LIMIT $1
  FOR UPDATE SKIP LOCKED
), upd AS (
  UPDATE agentcron.agent_tasks t SET
    status = CASE WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'pending' END,
    last_error = 'lease expired: worker ' || coalesce(e.old_worker, '?') || ' stopped renewing it',
    locked_by = NULL, locked_until = NULL, updated_at = now(),
    finished_at = CASE WHEN t.attempts >= t.max_attempts THEN now() END
  FROM expired e WHERE t.id = e.id
  RETURNING t.id, t.status, t.approval, t.scheduled_for, e.old_worker, e.old_attempts
), runs AS (
  INSERT INTO agentcron.task_runs (task_id, attempt, worker, finished_at, outcome, error)
  SELECT id, old_attempts, old_worker, now(), 'rescued', 'lease expired' FROM upd
  RETURNING 1
), woken AS (
  SELECT pg_notify('agentcron_due', '')
  FROM (SELECT FROM upd WHERE status = 'pending' AND approval = 'approved' AND scheduled_for <= now() LIMIT 1) due
)
SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'failed'),
       (SELECT count(*) FROM runs), (SELECT count(*) FROM woken),
       (SELECT count(*) FROM agentcron.agent_tasks
        WHERE status = 'running' AND locked_until < now() AND cron IS NOT NULL AND attempts >= max_attempts)
FROM upd
)SQL"};

constexpr Statement kExpiredRecurring{"agentcron_expired_recurring", R"SQL(
SELECT id, cron, timezone, (extract(epoch FROM now()) * 1000000)::bigint FROM agentcron.agent_tasks
WHERE status = 'running' AND locked_until < now() AND cron IS NOT NULL AND attempts >= max_attempts
ORDER BY locked_until
LIMIT $1
)SQL"};

// Guarded like kRescue's own choice: a lease renewed or a task rescued by another worker since
// kExpiredRecurring looked is left alone. No next fire time (a broken schedule): failed.
constexpr Statement kRescheduleExpired{"agentcron_reschedule_expired", R"SQL(
WITH v AS (
  SELECT * FROM unnest($1::bigint[], $2::double precision[], $3::text[]) AS v(id, next_fire, error)
), expired AS (
  SELECT t.id, t.locked_by AS old_worker, t.attempts AS old_attempts, v.next_fire, v.error
  FROM agentcron.agent_tasks t JOIN v ON v.id = t.id
  WHERE t.status = 'running' AND t.locked_until < now() AND t.cron IS NOT NULL AND t.attempts >= t.max_attempts
  FOR UPDATE OF t SKIP LOCKED
), upd AS (
  UPDATE agentcron.agent_tasks t SET
    status = CASE WHEN e.next_fire IS NULL THEN 'failed' ELSE 'pending' END,
    attempts = CASE WHEN e.next_fire IS NULL THEN t.attempts ELSE 0 END,
    occurrence_at = CASE WHEN e.next_fire IS NULL THEN t.occurrence_at END,
    scheduled_for = coalesce(to_timestamp(e.next_fire), t.scheduled_for),
    last_error = coalesce(e.error, 'lease expired: worker ' || coalesce(e.old_worker, '?') || ' stopped renewing it'),
    locked_by = NULL, locked_until = NULL, updated_at = now(),
    finished_at = CASE WHEN e.next_fire IS NULL THEN now() END
  FROM expired e WHERE t.id = e.id
  RETURNING t.id, t.status, e.old_worker, e.old_attempts
), runs AS (
  INSERT INTO agentcron.task_runs (task_id, attempt, worker, finished_at, outcome, error)
  SELECT id, old_attempts, old_worker, now(), 'rescued', 'lease expired' FROM upd
  RETURNING 1
)
SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'failed'), (SELECT count(*) FROM runs)
FROM upd
)SQL"};

// Deletes up to $3 finished tasks past their retention ($1 ms for succeeded ones, $2 for failed
// and cancelled ones), and up to $3 runs past the longer one (a recurring task's runs too: the
// task itself never finishes). Each status's expired range of the finished index, led by status
// (migration 0010), is read on its own — succeeded first, the rest up to the batch — so the
// tasks kept (a failure of 10 days ago under a 30-day retention) are never stepped over. Its
// generic plan, index scans only: planned for unknown retentions, the failed range looked like the
// whole table and got a sequential scan (160 ms over a million kept failures). The rows found are
// deleted through the primary key, `id = ANY(array)`, one probe each, as the claim updates its
// own: joined with `IN`, the generic plan hashed them against the whole of task_runs' key.
constexpr Statement kDeleteFinished{"agentcron_janitor", R"SQL(
WITH succeeded AS (
  SELECT id FROM agentcron.agent_tasks
  WHERE status = 'succeeded' AND finished_at < now() - $1::bigint * interval '1 millisecond'
  LIMIT $3
  FOR UPDATE SKIP LOCKED
), failed AS (
  SELECT id FROM agentcron.agent_tasks
  WHERE status IN ('failed', 'cancelled') AND finished_at < now() - $2::bigint * interval '1 millisecond'
  LIMIT $3 - (SELECT count(*) FROM succeeded)
  FOR UPDATE SKIP LOCKED
), gone AS (
  DELETE FROM agentcron.agent_tasks t
  WHERE t.id = ANY(ARRAY(SELECT id FROM succeeded UNION ALL SELECT id FROM failed))
  RETURNING 1
), old_runs AS (
  DELETE FROM agentcron.task_runs r
  WHERE r.id = ANY(ARRAY(SELECT id FROM agentcron.task_runs
                         WHERE finished_at < now() - greatest($1::bigint, $2::bigint) * interval '1 millisecond'
                         LIMIT $3))
  RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM old_runs)
)SQL", false, true};

constexpr Statement kEnqueue{"agentcron_enqueue", R"SQL(
WITH ins AS (
  INSERT INTO agentcron.agent_tasks (agent_id, kind, payload, scheduled_for, cron, timezone, priority,
                                     max_attempts, timeout_ms, dedup_key, approval)
  VALUES ($1, $2, $3::jsonb,
          CASE WHEN $4::double precision IS NOT NULL THEN to_timestamp($4::double precision)
               ELSE now() + coalesce($5::bigint, 0) * interval '1 millisecond' END,
          $6, $7, $8, $9, $10, $11, $12)
  ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL AND status IN ('pending', 'running') DO NOTHING
  RETURNING id
)
SELECT id, false FROM ins
UNION ALL
SELECT id, true FROM agentcron.agent_tasks
WHERE $11::text IS NOT NULL AND dedup_key = $11 AND status IN ('pending', 'running') AND NOT EXISTS (SELECT 1 FROM ins)
LIMIT 1
)SQL"};

// The queue at a glance, in a bounded number of buffers whatever the table's size: running
// tasks through the lease index; due tasks counted through the due index, kind by kind and
// priority by priority (agentcron.due_index_pairs(), migration 0009: one probe per pair), up to
// $1 in all; the oldest due task (one probe per pair); the table's size and each status's share as
// the planner's statistics have them (kStatusCounts counts exactly when the table is small).
constexpr Statement kStatus{"agentcron_status", R"SQL(
WITH kp(k, p) AS (
  SELECT kind, priority FROM agentcron.due_index_pairs()
), due AS (
  SELECT count(*) AS n FROM (
    SELECT 1 FROM kp CROSS JOIN LATERAL (
      SELECT 1 FROM agentcron.agent_tasks WHERE status = 'pending' AND approval = 'approved' AND kind = kp.k
        AND priority = kp.p AND scheduled_for <= now() LIMIT $1) x
    LIMIT $1) y
), oldest AS (
  SELECT min(o.at) AS at FROM kp CROSS JOIN LATERAL (
    SELECT min(scheduled_for) AS at FROM agentcron.agent_tasks
    WHERE status = 'pending' AND approval = 'approved' AND kind = kp.k AND priority = kp.p AND scheduled_for <= now()) o
), size AS (
  SELECT greatest(c.reltuples, 0)::bigint AS n FROM pg_class c WHERE c.oid = 'agentcron.agent_tasks'::regclass
), share AS (
  SELECT v.status, v.freq
  FROM pg_stats s, unnest(s.most_common_vals::text::text[], s.most_common_freqs) AS v(status, freq)
  WHERE s.schemaname = 'agentcron' AND s.tablename = 'agent_tasks' AND s.attname = 'status'
)
SELECT (SELECT count(*) FROM agentcron.agent_tasks WHERE locked_until IS NOT NULL AND status = 'running'),
       (SELECT n FROM due),
       (SELECT n FROM due) >= $1,
       extract(epoch FROM now() - (SELECT at FROM oldest))::double precision,
       (SELECT n FROM size),
       (SELECT round(coalesce(sum(freq) FILTER (WHERE status = 'pending'), 0) * (SELECT n FROM size))::bigint FROM share),
       (SELECT round(coalesce(sum(freq) FILTER (WHERE status = 'succeeded'), 0) * (SELECT n FROM size))::bigint FROM share),
       (SELECT round(coalesce(sum(freq) FILTER (WHERE status = 'failed'), 0) * (SELECT n FROM size))::bigint FROM share),
       (SELECT round(coalesce(sum(freq) FILTER (WHERE status = 'cancelled'), 0) * (SELECT n FROM size))::bigint FROM share),
       (SELECT count(*) FROM pg_stat_activity
        WHERE backend_type = 'client backend' OR (backend_type IS NULL AND usesysid IS NOT NULL)),
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'
                                              AND application_name LIKE 'agentcron%'),
       current_setting('max_connections')::bigint
)SQL"};

// Exact counts by status: a scan of the whole table, sent only when it is small (kStatus's size).
constexpr Statement kStatusCounts{"agentcron_status_counts", R"SQL(
SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'succeeded'),
       count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'cancelled')
FROM agentcron.agent_tasks
)SQL"};

// Migrations take a transaction-level advisory lock (pgbouncer-safe), so concurrent `migrate`
// runs apply each migration once. The key is arbitrary but fixed: 'agcr' in ASCII.
constexpr const char* kMigrationLockSql = "SELECT pg_advisory_xact_lock(1634165618)";
constexpr const char* kMigrationTableSql = R"SQL(
CREATE SCHEMA IF NOT EXISTS agentcron;
CREATE TABLE IF NOT EXISTS agentcron.schema_migrations (
  version    int PRIMARY KEY,
  name       text NOT NULL,
  checksum   text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
)
)SQL";

}  // namespace agentcron::pg
