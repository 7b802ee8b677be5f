// All of agentcron's SQL (see task_store.hpp). Every method is one short transaction:
//   BEGIN; SET LOCAL <the query class's timeouts>   (one round trip)
//   <the statement>                                 (one round trip, prepared unless pgbouncer)
//   COMMIT                                          (one round trip)
// A statement the server does not cancel in time is cancelled by the client watchdog and its
// connection discarded.
#include "agentcron/task_store.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <condition_variable>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "agentcron/log.hpp"
#include "agentcron/retry.hpp"
#include "agentcron/statement_watchdog.hpp"
#include "connection.hpp"

namespace agentcron {

namespace {

std::string one_line(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  for (auto& c : s)
    if (c == '\n') c = ' ';
  return s;
}

// An array literal for a text[]/bigint[]/… parameter; nullopt elements are NULL.
template <class T, class F>
std::string array_literal(const std::vector<T>& items, F&& element) {
  std::string out = "{";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += ',';
    std::optional<std::string> v = element(items[i]);
    if (!v) {
      out += "NULL";
      continue;
    }
    out += '"';
    for (char c : *v) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

std::string iso(SysTime t) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  return std::to_string(us / 1'000'000) + "." + std::to_string(1'000'000 + (us % 1'000'000)).substr(1);
}

SysTime from_epoch_us(std::int64_t us) { return SysTime(std::chrono::microseconds(us)); }

const char* status_text(Completion::Status s) {
  switch (s) {
    case Completion::Status::succeeded: return "succeeded";
    case Completion::Status::pending: return "pending";
    case Completion::Status::failed: return "failed";
  }
  return "failed";
}

// The SET LOCALs that start every transaction of a query class.
std::string set_local(const QueryTimeouts& t, bool hash_by_id = false) {
  return "SET LOCAL statement_timeout = " + std::to_string(t.statement.count()) +
         "; SET LOCAL lock_timeout = " + std::to_string(t.lock.count()) +
         "; SET LOCAL idle_in_transaction_session_timeout = " + std::to_string(t.idle_in_transaction.count()) +
         (t.async_commit ? "; SET LOCAL synchronous_commit = off" : "") +
         (hash_by_id ? "; SET LOCAL enable_nestloop = off; " : "; ");
}

// Runs `body` on a pooled connection, translating libpqxx errors into DatabaseError; a broken
// connection is discarded. `implicit`: the body sends one multi-statement query, which PostgreSQL
// runs as one implicit transaction (timeouts, statement and commit in a single round trip);
// otherwise the body runs between BEGIN (with the timeouts) and COMMIT, and an error during the
// COMMIT is in doubt.
template <class Body>
auto in_transaction(ConnectionPool& pool, StatementWatchdog& watchdog, const QueryTimeouts& t, Millis grace,
                    const char* what, bool implicit, Body&& body) {
  Lease lease = pool.acquire();
  Connection& c = lease.connection();
  std::string stage = implicit ? "statement" : "begin";
  try {
    WatchedStatement watch(watchdog, t.statement + grace,
                           {[&pool, &c] { pool.cancel(c); }, [&c] { ::shutdown(c.raw().sock(), SHUT_RDWR); }});
    pqxx::nontransaction tx(c.raw());
    if (!implicit) tx.exec("BEGIN; " + set_local(t));
    stage = "statement";
    auto result = body(tx, c);
    if (!implicit) {
      stage = "commit";
      tx.exec("COMMIT");
    }
    return result;
  } catch (const pqxx::sql_error& e) {
    std::string state = e.sqlstate();
    if (c.poisoned) {
      lease.discard();
    } else if (!implicit) {
      try {
        pqxx::nontransaction rb(c.raw());
        rb.exec("ROLLBACK");
      } catch (const pqxx::failure&) {
        lease.discard();
      }
    }  // an implicit transaction ended with its error: the connection is idle again
    if (state.empty()) state = c.poisoned ? "57014" : "";
    ErrorClass cls = state.empty() ? ErrorClass::permanent : classify_sqlstate(state);
    throw DatabaseError(std::string(what) + ": " + one_line(e.what()), state, cls);
  } catch (const pqxx::broken_connection& e) {
    lease.discard();
    // Never retry here: the commit may have happened. (Every write of the task store is guarded
    // by the lease holder and attempt, so the callers that do retry cannot apply one twice.)
    ErrorClass cls = stage == "commit" ? ErrorClass::in_doubt : ErrorClass::transient;
    throw DatabaseError(std::string(what) + ": connection lost" + (stage == "commit" ? " during COMMIT" : "") + ": " +
                            one_line(e.what()),
                        "08006", cls);
  } catch (const pqxx::in_doubt_error& e) {
    lease.discard();
    throw DatabaseError(std::string(what) + ": " + one_line(e.what()), "08006", ErrorClass::in_doubt);
  } catch (const pqxx::failure& e) {
    lease.discard();
    throw DatabaseError(std::string(what) + ": " + one_line(e.what()), "", ErrorClass::transient);
  } catch (const DatabaseError&) {
    throw;
  } catch (const std::exception& e) {
    // Not the server's word: the client refused the statement's values (libpq will not quote
    // invalid UTF-8) or could not read its result. Sending it again changes nothing. Whether the
    // connection is mid-statement is unknown, so it goes.
    lease.discard();
    throw DatabaseError(std::string(what) + ": " + one_line(e.what()), "", ErrorClass::permanent);
  }
}

// A statement of the store: the name it is prepared under and its SQL. `hash_by_id`: it joins a
// batch of outcomes to their tasks by id. A queue table's statistics are always stale (ANALYZE
// saw the tasks pending; now a thousand are running), so the planner believes the batch's rows
// match almost nothing and joins them in a nested loop — a quadratic join that made a
// 500-task completion cost 60 ms instead of 4. Such statements find their rows through the
// primary key (`id = ANY(ids)`) and run with nested loops off, which leaves a hash join.
struct Statement {
  const char* name;
  const char* sql;
  bool hash_by_id = false;
};

// SQL literals of statement parameters. libpq's quoting stops at a NUL byte, which would cut
// the value short without a word; PostgreSQL text cannot hold one anyway: refused here.
std::string literal(pqxx::transaction_base& tx, const std::string& v) {
  if (v.find('\0') != std::string::npos)
    throw std::invalid_argument("a text value holds a NUL byte, which PostgreSQL cannot store");
  return tx.quote(v);
}
template <class I, class = std::enable_if_t<std::is_integral_v<I>>>
std::string literal(pqxx::transaction_base&, I v) {
  return std::to_string(v);
}
template <class T>
std::string literal(pqxx::transaction_base& tx, const std::optional<T>& v) {
  return v ? literal(tx, *v) : std::string("NULL");
}

// `sql` with $1…$N replaced by the literals (our statements have no $ in strings or bodies).
std::string inline_params(const char* sql, const std::vector<std::string>& lits) {
  std::string out;
  for (const char* p = sql; *p;) {
    if (*p == '$' && std::isdigit(static_cast<unsigned char>(p[1]))) {
      std::size_t n = 0;
      ++p;
      while (std::isdigit(static_cast<unsigned char>(*p))) n = n * 10 + static_cast<std::size_t>(*p++ - '0');
      out += "(" + lits.at(n - 1) + ")";
    } else {
      out += *p++;
    }
  }
  return out;
}

// Runs one statement as a whole transaction in one round trip: the query class's SET LOCALs,
// then EXECUTE of the statement prepared (once per connection, by SQL PREPARE) — or, in
// pgbouncer mode, the statement itself with its parameters inlined: nothing session-scoped.
template <class... Args>
pqxx::result run(pqxx::transaction_base& tx, Connection& c, bool pgbouncer, const QueryTimeouts& t, const Statement& s,
                 Args&&... args) {
  const char* name = s.name;
  const char* sql = s.sql;
  std::vector<std::string> lits{literal(tx, args)...};
  if (pgbouncer) return tx.exec(set_local(t, s.hash_by_id) + inline_params(sql, lits));
  std::string q = set_local(t, s.hash_by_id);
  bool first_use = !c.prepared.count(name);
  // PREPARE analyses the statement and so takes its locks: it runs under the same timeouts.
  if (first_use) q += std::string("PREPARE ") + name + " AS " + sql + "; ";
  q += "EXECUTE " + std::string(name);
  if (!lits.empty()) {
    q += "(";
    for (std::size_t i = 0; i < lits.size(); ++i) q += (i ? ", " : "") + lits[i];
    q += ")";
  }
  // Should this first use fail, whether the statement got prepared is unknown: the connection
  // is then discarded rather than guessed about.
  if (first_use) c.poisoned = true;
  pqxx::result r = tx.exec(q);
  if (first_use) {
    c.poisoned = false;
    c.prepared.insert(name);
  }
  return r;
}

// A bigint[] result ("{1,2,3}", or NULL for none) as its ids.
std::vector<std::int64_t> id_array(const pqxx::field& f) {
  std::vector<std::int64_t> ids;
  if (f.is_null()) return ids;
  const char* p = f.c_str();
  while (*p) {
    if (*p == '-' || std::isdigit(static_cast<unsigned char>(*p))) {
      char* end = nullptr;
      ids.push_back(std::strtoll(p, &end, 10));
      p = end;
    } else {
      ++p;
    }
  }
  return ids;
}

std::optional<std::string> opt_text(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<std::string>();
}

// A claimed row as a Task. A field this process cannot represent does not fail the claim (the
// row is claimed already, and so are the good rows beside it): the task carries the reason as
// its defect and the executor fails it alone.
Task task_from_row(const pqxx::row& row, std::chrono::steady_clock::time_point sent) {
  Task t;
  t.id = row[0].as<std::int64_t>();
  t.claim_token = row[13].as<std::int64_t>();
  t.claimed_at = from_epoch_us(row[10].as<std::int64_t>());
  t.claimed_steady = sent;
  t.kind = row[2].as<std::string>();
  try {
    t.agent_id = opt_text(row[1]);
    if (row[3].is_null())
      throw std::length_error("the payload is " + row[12].as<std::string>() +
                              " bytes, more than executor.max_payload_bytes allows; it was not read");
    t.payload = row[3].as<std::string>();
    t.attempt = row[4].as<int>();
    t.max_attempts = row[5].as<int>();
    t.cron = opt_text(row[6]);
    t.timezone = row[7].as<std::string>();
    if (!row[8].is_null()) t.timeout_ms = row[8].as<int>();
    t.scheduled_for = from_epoch_us(row[9].as<std::int64_t>());
    t.occurrence = from_epoch_us(row[14].as<std::int64_t>());
  } catch (const std::length_error& e) {
    t.defect = e.what();
  } catch (const std::exception& e) {
    t.defect = std::string("the task's row could not be read: ") + e.what();
  }
  return t;
}

constexpr Statement kNow{"agentcron_now", "SELECT (extract(epoch FROM now()) * 1000000)::bigint"};

constexpr Statement kClaim{"agentcron_claim", R"SQL(
WITH due AS (
  SELECT id FROM agentcron.agent_tasks
  WHERE status = 'pending' AND approval = 'approved' AND scheduled_for <= now() AND kind = ANY($1::text[])
  ORDER BY priority DESC, scheduled_for, id
  LIMIT $2
  FOR UPDATE SKIP LOCKED
)
UPDATE agentcron.agent_tasks t
SET status = 'running', attempts = t.attempts + 1, locked_by = $3,
    locked_until = now() + $4::bigint * interval '1 millisecond', updated_at = now(),
    claim_token = nextval('agentcron.claim_tokens'),
    occurrence_at = CASE WHEN t.attempts = 0 THEN t.scheduled_for ELSE coalesce(t.occurrence_at, t.scheduled_for) END
FROM due WHERE t.id = due.id
RETURNING t.id, t.agent_id, t.kind, CASE WHEN octet_length(t.payload::text) <= $5 THEN t.payload::text END, t.attempts, t.max_attempts, t.cron, t.timezone, t.timeout_ms,
          (extract(epoch FROM least(greatest(t.scheduled_for, '1900-01-01 UTC'), '2200-01-01 UTC')) * 1000000)::bigint,
          (extract(epoch FROM now()) * 1000000)::bigint, t.priority, octet_length(t.payload::text), t.claim_token,
          (extract(epoch FROM least(greatest(t.occurrence_at, '1900-01-01 UTC'), '2200-01-01 UTC')) * 1000000)::bigint
)SQL"};

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

constexpr Statement kDeleteFinished{"agentcron_janitor", R"SQL(
WITH doomed AS (
  SELECT id FROM agentcron.agent_tasks
  WHERE (status = 'succeeded' AND finished_at < now() - $1::bigint * interval '1 millisecond')
     OR (status IN ('failed', 'cancelled') AND finished_at < now() - $2::bigint * interval '1 millisecond')
  LIMIT $3
  FOR UPDATE SKIP LOCKED
), gone AS (
  DELETE FROM agentcron.agent_tasks t USING doomed WHERE t.id = doomed.id RETURNING 1
), old_runs AS (
  DELETE FROM agentcron.task_runs r
  WHERE r.id IN (SELECT id FROM agentcron.task_runs
                 WHERE finished_at < now() - greatest($1::bigint, $2::bigint) * interval '1 millisecond'
                 LIMIT $3)
  RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM old_runs)
)SQL"};

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

constexpr Statement kStatus{"agentcron_status", R"SQL(
SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'running'),
       count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status = 'failed'),
       count(*) FILTER (WHERE status = 'cancelled'),
       count(*) FILTER (WHERE status = 'pending' AND approval = 'approved' AND scheduled_for <= now()),
       extract(epoch FROM now() - min(scheduled_for)
               FILTER (WHERE status = 'pending' AND approval = 'approved' AND scheduled_for <= now()))::double precision,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'
                                              AND application_name LIKE 'agentcron%'),
       current_setting('max_connections')::bigint
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

}  // namespace

StoreOptions StoreOptions::from_config(const Config& c) {
  StoreOptions o;
  o.claim = {c.timeouts.claim, c.timeouts.lock, c.timeouts.idle_in_transaction, !c.scheduler.durable_claims};
  o.update = {c.timeouts.update, c.timeouts.lock, c.timeouts.idle_in_transaction};
  o.pgbouncer = c.database.pgbouncer;
  return o;
}

TaskStore::TaskStore(ConnectionPool& pool, StoreOptions options, Logger& log)
    : pool_(pool), options_(std::move(options)), log_(log), watchdog_(std::make_unique<StatementWatchdog>(log, options_.client_grace)) {}

TaskStore::~TaskStore() = default;

std::vector<Task> TaskStore::claim_due(const ClaimParams& p) {
  if (p.limit <= 0 || p.kinds.empty()) return {};
  std::string kinds = array_literal(p.kinds, [](const std::string& k) { return std::optional<std::string>(k); });
  // The lease starts at the database's now(), inside the statement: this process counts it from
  // before sending, so that its own view of the lease never outlasts the database's.
  auto sent = std::chrono::steady_clock::now();
  return in_transaction(pool_, *watchdog_, options_.claim, options_.client_grace, "claim due tasks", true,
                        [&](pqxx::transaction_base& tx, Connection& c) {
                          pqxx::result r = run(tx, c, options_.pgbouncer, options_.claim, kClaim, kinds, p.limit,
                                               p.worker, static_cast<std::int64_t>(p.lease.count()),
                                               p.max_payload_bytes);
                          std::vector<Task> tasks;
                          tasks.reserve(r.size());
                          for (const auto& row : r) tasks.push_back(task_from_row(row, sent));
                          return tasks;
                        });
}

std::vector<std::int64_t> TaskStore::complete_many(const std::vector<Completion>& outs, const std::string& worker) {
  if (outs.empty()) return {};
  using C = Completion;
  auto text = [](auto f) { return [f](const C& c) { return std::optional<std::string>(f(c)); }; };
  std::string ids = array_literal(outs, text([](const C& c) { return std::to_string(c.id); }));
  std::string attempts = array_literal(outs, text([](const C& c) { return std::to_string(c.attempt); }));
  std::string statuses = array_literal(outs, text([](const C& c) { return std::string(status_text(c.status)); }));
  std::string delays = array_literal(outs, [](const C& c) -> std::optional<std::string> {
    if (!c.retry_delay) return std::nullopt;
    return std::to_string(c.retry_delay->count());
  });
  std::string run_ats = array_literal(outs, [](const C& c) -> std::optional<std::string> {
    if (!c.run_at) return std::nullopt;
    return iso(*c.run_at);
  });
  std::string resets = array_literal(outs, text([](const C& c) { return std::string(c.reset_attempts ? "t" : "f"); }));
  std::string errors = array_literal(outs, text([](const C& c) { return c.error; }));
  std::string run_outcomes = array_literal(outs, text([](const C& c) { return c.run_outcome; }));
  std::string started = array_literal(outs, text([](const C& c) { return iso(c.started_at); }));
  std::string finished = array_literal(outs, text([](const C& c) { return iso(c.finished_at); }));
  std::string channels = array_literal(outs, text([](const C& c) { return c.notify_channel; }));
  std::string notes = array_literal(outs, text([](const C& c) { return c.notify_payload; }));
  std::string results = array_literal(outs, text([](const C& c) { return c.result; }));
  std::string tokens = array_literal(outs, text([](const C& c) { return std::to_string(c.claim_token); }));
  return in_transaction(pool_, *watchdog_, options_.update, options_.client_grace, "complete tasks", true,
                        [&](pqxx::transaction_base& tx, Connection& c) {
                          pqxx::result r = run(tx, c, options_.pgbouncer, options_.update, kComplete, ids,
                                               attempts, statuses, delays, run_ats, resets, errors, run_outcomes,
                                               started, finished, channels, notes, worker, results, tokens);
                          return id_array(r[0][0]);
                        });
}

namespace {
// The ids and tokens of `claims` as two array literals.
std::pair<std::string, std::string> claim_arrays(const std::vector<ClaimRef>& claims) {
  auto field = [&](auto member) {
    return array_literal(claims, [member](const ClaimRef& c) { return std::optional<std::string>(std::to_string(c.*member)); });
  };
  return {field(&ClaimRef::id), field(&ClaimRef::token)};
}
}  // namespace

std::int64_t TaskStore::release_many(const std::vector<ClaimRef>& claims, const std::string& worker,
                                     const std::string& why) {
  if (claims.empty()) return 0;
  auto [ids, tokens] = claim_arrays(claims);
  auto n = in_transaction(pool_, *watchdog_, options_.update, options_.client_grace, "release tasks", true,
                          [&](pqxx::transaction_base& tx, Connection& c) {
                            return run(tx, c, options_.pgbouncer, options_.update, kRelease, ids, worker, tokens)[0][0]
                                .as<std::int64_t>();
                          });
  log_.info("released tasks back to pending", {{"count", n}, {"reason", why}});
  return n;
}

std::vector<std::int64_t> TaskStore::extend_leases(const std::vector<ClaimRef>& claims, const std::string& worker,
                                                   Millis lease) {
  if (claims.empty()) return {};
  auto [ids, tokens] = claim_arrays(claims);
  return in_transaction(pool_, *watchdog_, options_.update, options_.client_grace, "extend leases", true,
                        [&](pqxx::transaction_base& tx, Connection& c) {
                          std::vector<std::int64_t> extended;
                          for (const auto& row : run(tx, c, options_.pgbouncer, options_.update, kExtend, ids, worker,
                                                     static_cast<std::int64_t>(lease.count()), tokens))
                            extended.push_back(row[0].as<std::int64_t>());
                          return extended;
                        });
}

RescueResult TaskStore::rescue_expired(int limit) {
  return in_transaction(pool_, *watchdog_, options_.update, options_.client_grace, "rescue expired leases", true,
                        [&](pqxx::transaction_base& tx, Connection& c) {
                          auto r = run(tx, c, options_.pgbouncer, options_.update, kRescue, limit);
                          return RescueResult{r[0][0].as<std::int64_t>(), r[0][1].as<std::int64_t>(),
                                              r[0][4].as<std::int64_t>()};
                        });
}

std::vector<ExpiredRecurring> TaskStore::expired_recurring(int limit) {
  return in_transaction(pool_, *watchdog_, options_.update, options_.client_grace, "list expired recurring tasks", true,
                        [&](pqxx::transaction_base& tx, Connection& c) {
                          std::vector<ExpiredRecurring> out;
                          for (const auto& row : run(tx, c, options_.pgbouncer, options_.update, kExpiredRecurring, limit))
                            out.push_back(ExpiredRecurring{row[0].as<std::int64_t>(), row[1].as<std::string>(),
                                                           row[2].as<std::string>(),
                                                           from_epoch_us(row[3].as<std::int64_t>())});
                          return out;
                        });
}

RescueResult TaskStore::reschedule_expired(const std::vector<Reschedule>& tasks) {
  if (tasks.empty()) return {};
  using R = Reschedule;
  std::string ids = array_literal(tasks, [](const R& t) { return std::optional<std::string>(std::to_string(t.id)); });
  std::string fires = array_literal(tasks, [](const R& t) -> std::optional<std::string> {
    if (!t.next_fire) return std::nullopt;
    return iso(*t.next_fire);
  });
  std::string errors = array_literal(tasks, [](const R& t) -> std::optional<std::string> {
    if (t.next_fire) return std::nullopt;
    return t.error;
  });
  return in_transaction(pool_, *watchdog_, options_.update, options_.client_grace, "reschedule expired recurring tasks",
                        true, [&](pqxx::transaction_base& tx, Connection& c) {
                          auto r = run(tx, c, options_.pgbouncer, options_.update, kRescheduleExpired, ids, fires, errors);
                          return RescueResult{r[0][0].as<std::int64_t>(), r[0][1].as<std::int64_t>()};
                        });
}

std::int64_t TaskStore::delete_finished(Millis succeeded_after, Millis failed_after, int limit) {
  return in_transaction(pool_, *watchdog_, options_.update, options_.client_grace, "delete finished tasks", true,
                        [&](pqxx::transaction_base& tx, Connection& c) {
                          auto r = run(tx, c, options_.pgbouncer, options_.update, kDeleteFinished,
                                       static_cast<std::int64_t>(succeeded_after.count()),
                                       static_cast<std::int64_t>(failed_after.count()), limit);
                          return r[0][0].as<std::int64_t>();
                        });
}

EnqueueResult TaskStore::enqueue(const EnqueueParams& p) {
  std::optional<std::string> at;
  if (p.at) at = iso(*p.at);
  std::optional<std::int64_t> in;
  if (p.in) in = p.in->count();
  // A concurrent enqueue with the same dedup key may commit between this statement's snapshot
  // and its insert: the insert then yields to it, yet the snapshot cannot see its row, and the
  // statement returns nothing. Sent again, with a new snapshot, it finds that row.
  for (int round = 1;; ++round) {
    std::optional<EnqueueResult> r =
        in_transaction(pool_, *watchdog_, options_.update, options_.client_grace, "enqueue task", true,
                       [&](pqxx::transaction_base& tx, Connection& c) -> std::optional<EnqueueResult> {
                         auto rows = run(tx, c, options_.pgbouncer, options_.update, kEnqueue, p.agent_id, p.kind,
                                         p.payload, at, in, p.cron, p.timezone, p.priority, p.max_attempts,
                                         p.timeout_ms, p.dedup_key, p.approval);
                         if (rows.empty()) return std::nullopt;
                         return EnqueueResult{rows[0][0].as<std::int64_t>(), rows[0][1].as<bool>()};
                       });
    if (r) return *r;
    if (round == 5)  // the live task with this key came and went five times over: give up honestly
      throw DatabaseError("enqueue task: the task with dedup key \"" + p.dedup_key.value_or("") +
                              "\" kept changing under concurrent enqueues; try again",
                          "40001", ErrorClass::transient);
  }
}

QueueStatus TaskStore::status() {
  return in_transaction(pool_, *watchdog_, options_.update, options_.client_grace, "queue status", true,
                        [&](pqxx::transaction_base& tx, Connection& c) {
                          auto row = run(tx, c, options_.pgbouncer, options_.update, kStatus)[0];
                          QueueStatus s;
                          const char* names[] = {"pending", "running", "succeeded", "failed", "cancelled"};
                          for (int i = 0; i < 5; ++i) s.by_status.emplace_back(names[i], row[i].as<std::int64_t>());
                          s.due_now = row[5].as<std::int64_t>();
                          if (!row[6].is_null()) s.oldest_due_seconds = row[6].as<double>();
                          s.server_connections = row[7].as<std::int64_t>();
                          s.agentcron_connections = row[8].as<std::int64_t>();
                          s.max_connections = row[9].as<std::int64_t>();
                          return s;
                        });
}

SysTime TaskStore::now() {
  return in_transaction(pool_, *watchdog_, options_.update, options_.client_grace, "read database clock", true,
                        [&](pqxx::transaction_base& tx, Connection& c) {
                          auto r = run(tx, c, options_.pgbouncer, options_.update, kNow);
                          return from_epoch_us(r[0][0].as<std::int64_t>());
                        });
}

bool TaskStore::apply_migration(int version, const std::string& name, const std::string& sql,
                                const std::string& checksum) {
  // Migrations may run long and wait for a concurrent migrate's lock: generous limits.
  QueryTimeouts t{std::chrono::minutes(10), std::chrono::minutes(2), std::chrono::minutes(10)};
  return in_transaction(pool_, *watchdog_, t, options_.client_grace, "migrate", false,
                        [&](pqxx::transaction_base& tx, Connection&) {
                          tx.exec(kMigrationLockSql);
                          tx.exec(kMigrationTableSql);
                          auto r = tx.exec_params("SELECT checksum FROM agentcron.schema_migrations WHERE version = $1",
                                                  version);
                          if (!r.empty()) {
                            if (r[0][0].as<std::string>() != checksum)
                              throw MigrationChanged("migration " + name + " (version " + std::to_string(version) +
                                                     ") has changed since it was applied: checksum " + checksum +
                                                     " differs from the applied " + r[0][0].as<std::string>());
                            return false;
                          }
                          tx.exec(sql);
                          tx.exec_params("INSERT INTO agentcron.schema_migrations (version, name, checksum) "
                                         "VALUES ($1, $2, $3)",
                                         version, name, checksum);
                          return true;
                        });
}

std::vector<AppliedMigration> TaskStore::applied_migrations() {
  return in_transaction(pool_, *watchdog_, options_.update, options_.client_grace, "list migrations", false,
                        [&](pqxx::transaction_base& tx, Connection&) {
                          std::vector<AppliedMigration> out;
                          if (tx.exec("SELECT to_regclass('agentcron.schema_migrations') IS NULL")[0][0].as<bool>())
                            return out;
                          for (const auto& row : tx.exec("SELECT version, name, checksum, applied_at::text "
                                                         "FROM agentcron.schema_migrations ORDER BY version"))
                            out.push_back({row[0].as<int>(), row[1].as<std::string>(), row[2].as<std::string>(),
                                           row[3].as<std::string>()});
                          return out;
                        });
}

namespace {
class FlagReceiver final : public pqxx::notification_receiver {
 public:
  FlagReceiver(pqxx::connection_base& c, const std::string& channel) : pqxx::notification_receiver(c, channel) {}
  void operator()(const std::string&, int) override { ++count; }
  int count = 0;
};
}  // namespace

void TaskStore::listen(Lease& lease, const std::string& channel) {
  Connection& c = lease.connection();
  try {
    c.listener = std::make_unique<FlagReceiver>(c.raw(), channel);
  } catch (const pqxx::broken_connection& e) {
    lease.discard();
    throw DatabaseError("listen: connection lost: " + one_line(e.what()), "08006", ErrorClass::transient);
  } catch (const pqxx::sql_error& e) {
    throw DatabaseError("listen: " + one_line(e.what()), e.sqlstate(), classify_sqlstate(e.sqlstate()));
  }
}

bool TaskStore::wait_notification(Lease& lease, Millis timeout, int wake_fd) {
  Connection& c = lease.connection();
  auto* receiver = static_cast<FlagReceiver*>(c.listener.get());
  try {
    receiver->count = 0;
    c.raw().get_notifs();
    if (receiver->count > 0) return true;
    pollfd fds[2] = {{c.raw().sock(), POLLIN, 0}, {wake_fd, POLLIN, 0}};
    int n = ::poll(fds, wake_fd >= 0 ? 2 : 1, static_cast<int>(std::min<std::int64_t>(timeout.count(), 1 << 30)));
    if (n > 0 && (fds[0].revents & (POLLIN | POLLERR | POLLHUP))) {
      c.raw().get_notifs();
      if (!c.raw().is_open()) throw pqxx::broken_connection("connection closed");
    }
    return receiver->count > 0;
  } catch (const pqxx::broken_connection& e) {
    c.listener.reset();
    lease.discard();
    throw DatabaseError("listen: connection lost: " + one_line(e.what()), "08006", ErrorClass::transient);
  }
}

}  // namespace agentcron
