// PgTaskStore (see pg_task_store.hpp): each method one statement of pg_statements.hpp, run by
// execute() as one implicit transaction in a single round trip — the query class's SET LOCAL
// timeouts, then EXECUTE of the prepared statement (or, in pgbouncer mode, the statement with its
// parameters inlined) and its commit. Only the migrations run BEGIN … COMMIT. A statement the server does not cancel in time is cancelled by the client
// watchdog and its connection discarded.
#include "agentcron/pg_task_store.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cstdlib>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "agentcron/log.hpp"
#include "agentcron/telemetry.hpp"
#include "pg_execution.hpp"

namespace agentcron {

using namespace pg;

StoreOptions StoreOptions::from_config(const Config& c) {
  StoreOptions o;
  o.claim = {c.timeouts.claim, c.timeouts.lock, c.timeouts.idle_in_transaction, !c.scheduler.durable_claims};
  o.update = {c.timeouts.update, c.timeouts.lock, c.timeouts.idle_in_transaction};
  o.pgbouncer = c.database.pgbouncer;
  return o;
}

PgTaskStore::PgTaskStore(ConnectionPool& pool, StoreOptions options, Logger& log)
    : pool_(pool), options_(std::move(options)), log_(log), watchdog_(std::make_unique<StatementWatchdog>(log, options_.client_grace)) {}

PgTaskStore::~PgTaskStore() = default;

namespace {
// Whether a statement writes: only writes tell whether the database takes the worker's work (a
// read-only server after a failover still answers the queue gauges' reads).
bool writes(const Statement& s) {
  return &s != &kStatus && &s != &kStatusCounts && &s != &kNow && &s != &kExpiredRecurring;
}

// Whether a failure counts against the database (DatabaseError::says_database_unwell); a pool
// busy in this process does not.
bool database_unwell(const DatabaseError& e) {
  return !dynamic_cast<const PoolTimeout*>(&e) && e.says_database_unwell();
}
}  // namespace

// Every query method: its statement as one implicit transaction of query class `t` (timeouts,
// statement and commit in one round trip), its result read by `read` inside it — so that a value
// that cannot be read is a DatabaseError like any other.
template <class Read, class... Args>
auto PgTaskStore::execute(const char* what, const QueryTimeouts& t, const Statement& s, Read&& read, const Args&... args) {
  auto body = [&] {
    try {
      auto result = in_transaction(pool_, *watchdog_, t, options_.client_grace, what, true,
                                   [&](pqxx::transaction_base& tx, Connection& c) {
                                     return read(run(tx, c, options_.pgbouncer, t, s, args...));
                                   });
      if (writes(s)) answering_.store(true, std::memory_order_relaxed);
      return result;
    } catch (const DatabaseError& e) {
      if (writes(s) && database_unwell(e)) answering_.store(false, std::memory_order_relaxed);
      throw;
    }
  };
  Telemetry* telemetry = options_.telemetry;
  if (!telemetry) return body();
  // The wait for a pooled connection counts: it is part of what the statement cost its caller.
  auto start = std::chrono::steady_clock::now();
  try {
    auto result = body();
    telemetry->statement_duration.observe(prom_label("statement", s.label ? s.label : s.name),
                                          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    return result;
  } catch (const DatabaseError& e) {
    telemetry->database_errors.add(prom_label("class", e.sqlstate().size() >= 2 ? e.sqlstate().substr(0, 2) : "none"));
    throw;
  }
}

const Statement& pg::claim_statement(std::size_t kinds) {
  struct Built {
    std::string name, sql;
    Statement statement;
  };
  static std::mutex mutex;
  static std::map<std::size_t, std::unique_ptr<Built>> built;
  std::size_t slots = std::bit_ceil(std::max<std::size_t>(kinds, 1));
  std::lock_guard lock(mutex);
  auto& b = built[slots];
  if (!b) {
    auto replace_all = [](std::string text, const std::string& from, const std::string& to) {
      for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
        text.replace(at, from.size(), to);
      return text;
    };
    std::string quota, due = kClaimOneKindSql;
    if (slots > 1) {
      auto each_slot = [&](const char* sql) {
        std::string all;
        for (std::size_t i = 1; i <= slots; ++i) all += (i > 1 ? " UNION ALL " : "") + replace_all(sql, "@", std::to_string(i));
        return all;
      };
      quota = replace_all(replace_all(kClaimQuotaSql, "@RANGES@", each_slot(kClaimRangeSql)), "@LOCKED@",
                          each_slot(kClaimLockedSql));
      due = replace_all(kClaimMergeSql, "@MORE@", each_slot(kClaimMoreSql));
    }
    b = std::make_unique<Built>();
    b->name = slots == 1 ? std::string(kClaim.name) : std::string(kClaim.name) + "_" + std::to_string(slots);
    b->sql = replace_all(replace_all(kClaim.sql, "@QUOTA@", quota), "@DUE@", due);
    b->statement = Statement{b->name.c_str(), b->sql.c_str(), kClaim.hash_by_id, kClaim.generic_plan, kClaim.name};
  }
  return b->statement;
}

std::vector<Task> PgTaskStore::claim_due(const ClaimParams& p) {
  if (p.limit <= 0 || p.kinds.empty()) return {};
  std::string kinds = array_literal(p.kinds, [](const std::string& k) { return std::optional<std::string>(k); });
  // The lease starts at the database's now(), inside the statement: this process counts it from
  // before sending, so that its own view of the lease never outlasts the database's.
  auto sent = std::chrono::steady_clock::now();
  auto read = [&](const pqxx::result& r) {
    std::vector<Task> tasks;
    tasks.reserve(r.size());
    for (const auto& row : r) tasks.push_back(task_from_row(row, sent));
    return tasks;
  };
  std::string limited = array_literal(p.kind_room, [](const auto& k) { return std::optional<std::string>(k.first); });
  std::string room =
      array_literal(p.kind_room, [](const auto& k) { return std::optional<std::string>(std::to_string(k.second)); });
  return execute("claim due tasks", options_.claim, claim_statement(p.kinds.size()), read, kinds, p.limit, p.worker,
                 static_cast<std::int64_t>(p.lease.count()), p.max_payload_bytes, limited, room);
}

namespace {
// An outcome that is nothing but a one-off task's success: kSucceed writes it.
bool plain_success(const Completion& c) {
  return c.status == Completion::Status::succeeded && !c.retry_delay && !c.run_at && !c.reset_attempts &&
         c.error.empty() && c.run_outcome.empty() && c.result.empty() && c.notify_channel.empty();
}
}  // namespace

std::vector<std::int64_t> PgTaskStore::complete_many(const std::vector<Completion>& outs, const std::string& worker) {
  if (outs.empty()) return {};
  using C = Completion;
  auto text = [](auto f) { return [f](const C& c) { return std::optional<std::string>(f(c)); }; };
  std::string ids = array_literal(outs, text([](const C& c) { return std::to_string(c.id); }));
  std::string tokens = array_literal(outs, text([](const C& c) { return std::to_string(c.claim_token); }));
  if (std::all_of(outs.begin(), outs.end(), plain_success))
    return execute("complete tasks", options_.update, kSucceed, [](const pqxx::result& r) {
      std::vector<std::int64_t> done;
      done.reserve(r.size());
      for (const auto& row : r) done.push_back(row[0].as<std::int64_t>());
      return done;
    }, ids, tokens, worker);
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
  return execute("complete tasks", options_.update, kComplete, [](const pqxx::result& r) { return id_array(r[0][0]); },
                 ids, attempts, statuses, delays, run_ats, resets, errors, run_outcomes, started, finished, channels,
                 notes, worker, results, tokens);
}

namespace {
// The first column of the first row as a count.
std::int64_t first_count(const pqxx::result& r) { return r[0][0].as<std::int64_t>(); }

// The ids and tokens of `claims` as two array literals.
std::pair<std::string, std::string> claim_arrays(const std::vector<ClaimRef>& claims) {
  auto field = [&](auto member) {
    return array_literal(claims, [member](const ClaimRef& c) { return std::optional<std::string>(std::to_string(c.*member)); });
  };
  return {field(&ClaimRef::id), field(&ClaimRef::token)};
}
}  // namespace

std::int64_t PgTaskStore::release_many(const std::vector<ClaimRef>& claims, const std::string& worker,
                                     const std::string& why) {
  if (claims.empty()) return 0;
  auto [ids, tokens] = claim_arrays(claims);
  auto n = execute("release tasks", options_.update, kRelease, first_count, ids, worker, tokens);
  log_.info("released tasks back to pending", {{"count", n}, {"reason", why}});
  return n;
}

std::vector<std::int64_t> PgTaskStore::extend_leases(const std::vector<ClaimRef>& claims, const std::string& worker,
                                                   Millis lease) {
  if (claims.empty()) return {};
  auto [ids, tokens] = claim_arrays(claims);
  auto read = [](const pqxx::result& r) {
    std::vector<std::int64_t> extended;
    for (const auto& row : r) extended.push_back(row[0].as<std::int64_t>());
    return extended;
  };
  return execute("extend leases", options_.update, kExtend, read, ids, worker, static_cast<std::int64_t>(lease.count()),
                 tokens);
}

RescueResult PgTaskStore::rescue_expired(int limit) {
  auto read = [](const pqxx::result& r) {
    return RescueResult{r[0][0].as<std::int64_t>(), r[0][1].as<std::int64_t>(), r[0][4].as<std::int64_t>()};
  };
  return execute("rescue expired leases", options_.update, kRescue, read, limit);
}

std::vector<ExpiredRecurring> PgTaskStore::expired_recurring(int limit) {
  auto read = [](const pqxx::result& r) {
    std::vector<ExpiredRecurring> out;
    for (const auto& row : r)
      out.push_back(ExpiredRecurring{row[0].as<std::int64_t>(), row[1].as<std::string>(), row[2].as<std::string>(),
                                     from_epoch_us(row[3].as<std::int64_t>())});
    return out;
  };
  return execute("list expired recurring tasks", options_.update, kExpiredRecurring, read, limit);
}

RescueResult PgTaskStore::reschedule_expired(const std::vector<Reschedule>& tasks) {
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
  auto read = [](const pqxx::result& r) { return RescueResult{r[0][0].as<std::int64_t>(), r[0][1].as<std::int64_t>()}; };
  return execute("reschedule expired recurring tasks", options_.update, kRescheduleExpired, read, ids, fires, errors);
}

FinishedDeleted PgTaskStore::delete_finished(Millis succeeded_after, Millis failed_after, int limit) {
  auto read = [](const pqxx::result& r) {
    return FinishedDeleted{r[0][0].as<std::int64_t>(), r[0][1].as<std::int64_t>()};
  };
  return execute("delete finished tasks", options_.update, kDeleteFinished, read,
                 static_cast<std::int64_t>(succeeded_after.count()), static_cast<std::int64_t>(failed_after.count()),
                 limit);
}

EnqueueResult PgTaskStore::enqueue(const EnqueueParams& p) {
  std::optional<std::string> at;
  if (p.at) at = iso(*p.at);
  std::optional<std::int64_t> in;
  if (p.in) in = p.in->count();
  // A concurrent enqueue with the same dedup key may commit between this statement's snapshot
  // and its insert: the insert then yields to it, yet the snapshot cannot see its row, and the
  // statement returns nothing. Sent again, with a new snapshot, it finds that row.
  for (int round = 1;; ++round) {
    auto read = [](const pqxx::result& rows) -> std::optional<EnqueueResult> {
      if (rows.empty()) return std::nullopt;
      return EnqueueResult{rows[0][0].as<std::int64_t>(), rows[0][1].as<bool>()};
    };
    std::optional<EnqueueResult> r =
        execute("enqueue task", options_.update, kEnqueue, read, p.agent_id, p.kind, p.payload, at, in, p.cron,
                p.timezone, p.priority, p.max_attempts, p.timeout_ms, p.dedup_key, p.approval);
    if (r) return *r;
    if (round == 5)  // the live task with this key came and went five times over: give up honestly
      throw DatabaseError("enqueue task: the task with dedup key \"" + p.dedup_key.value_or("") +
                              "\" kept changing under concurrent enqueues; try again",
                          "40001", ErrorClass::transient);
  }
}

namespace {
// Due tasks are counted up to this many; a table of at most this many rows (by the
// planner's statistics) is counted exactly. Both keep `status` to a few milliseconds at 10 million.
constexpr std::int64_t kDueCountCap = 10000;
constexpr std::int64_t kExactCountRows = 100000;
}  // namespace

QueueStatus PgTaskStore::status() {
  std::int64_t table_rows = 0;
  std::int64_t running = 0;
  std::int64_t estimates[4] = {};  // pending, succeeded, failed, cancelled
  auto read = [&](const pqxx::result& r) {
    const auto& row = r[0];
    QueueStatus q;
    running = row[0].as<std::int64_t>();
    q.due_now = row[1].as<std::int64_t>();
    q.due_capped = !row[2].is_null() && row[2].as<bool>();
    if (!row[3].is_null()) q.oldest_due_seconds = row[3].as<double>();
    table_rows = row[4].as<std::int64_t>();
    for (int i = 0; i < 4; ++i) estimates[i] = row[5 + i].as<std::int64_t>();
    q.server_connections = row[9].as<std::int64_t>();
    q.agentcron_connections = row[10].as<std::int64_t>();
    q.max_connections = row[11].as<std::int64_t>();
    return q;
  };
  QueueStatus q = execute("queue status", options_.update, kStatus, read, kDueCountCap);
  // Statistics say the table is small (or it was never analyzed): count it.
  q.estimated = table_rows > kExactCountRows;
  if (!q.estimated)
    execute("queue status counts", options_.update, kStatusCounts, [&](const pqxx::result& r) {
      for (int i = 0; i < 4; ++i) estimates[i] = r[0][i].as<std::int64_t>();
      return 0;
    });
  q.by_status = {{"pending", estimates[0]}, {"running", running}, {"succeeded", estimates[1]},
                 {"failed", estimates[2]}, {"cancelled", estimates[3]}};
  return q;
}

SysTime PgTaskStore::now() {
  return execute("read database clock", options_.update, kNow,
                 [](const pqxx::result& r) { return from_epoch_us(r[0][0].as<std::int64_t>()); });
}

bool PgTaskStore::apply_migration(int version, const std::string& name, const std::string& sql,
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

std::vector<AppliedMigration> PgTaskStore::applied_migrations() {
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

// Collects the notifications of one channel into the subscription's list.
class Collector final : public pqxx::notification_receiver {
 public:
  Collector(pqxx::connection_base& c, const std::string& channel, std::vector<Notification>& sink)
      : pqxx::notification_receiver(c, channel), sink_(sink) {}
  void operator()(const std::string& payload, int) override {
    // A flood of notifications must not grow without bound: a wake-up counts once however many
    // came (its payload is empty), and past this many unread, the rest are dropped (a lost cancel
    // is caught by the next lease renewal).
    if (payload.empty()) {
      if (woken_) return;
      woken_ = true;
    }
    if (sink_.size() < 10000) sink_.push_back({channel(), payload});
  }
  void clear() { woken_ = false; }

 private:
  std::vector<Notification>& sink_;
  bool woken_ = false;  // an empty notification of this channel is in sink_
};

// LISTEN on a lease kept out of the pool's circulation for as long as the subscription lives.
class PgSubscription final : public Subscription {
 public:
  PgSubscription(Lease lease, const std::vector<std::string>& channels) : lease_(std::move(lease)) {
    Connection& c = lease_.connection();
    try {
      for (const auto& channel : channels) c.listeners.push_back(std::make_unique<Collector>(c.raw(), channel, got_));
      // libpqxx 6.4 registers a receiver even when its LISTEN met a broken connection (it
      // swallows the error, meaning to listen again on a reconnect this project never makes),
      // and sends no LISTEN at all on a closed one: either leaves the connection closed. (No
      // query after the LISTENs: pg_stat_activity shows the listener by its last statement.)
      if (!c.raw().is_open()) throw pqxx::broken_connection("the connection closed under LISTEN");
    } catch (const pqxx::broken_connection& e) {
      c.listeners.clear();
      lease_.discard();
      throw DatabaseError("listen: connection lost: " + one_line(e.what()), "08006", ErrorClass::transient);
    } catch (const pqxx::sql_error& e) {
      c.listeners.clear();
      throw DatabaseError("listen: " + one_line(e.what()), e.sqlstate(), classify_sqlstate(e.sqlstate()));
    } catch (...) {
      // No receiver may outlive got_, which goes with this half-built subscription.
      c.listeners.clear();
      lease_.discard();
      throw;
    }
  }
  ~PgSubscription() override {
    if (lease_.valid()) lease_.connection().listeners.clear();
  }

  std::vector<Notification> wait(Millis timeout, int wake_fd) override {
    Connection& c = lease_.connection();
    try {
      got_.clear();
      for (auto& l : c.listeners) static_cast<Collector*>(l.get())->clear();
      // A closed connection reads as "no notifications" and its socket (-1) as never ready.
      if (!c.raw().is_open() || c.raw().sock() < 0) throw pqxx::broken_connection("connection closed");
      c.raw().get_notifs();
      if (!got_.empty()) return std::move(got_);
      pollfd fds[2] = {{c.raw().sock(), POLLIN, 0}, {wake_fd, POLLIN, 0}};
      int n = ::poll(fds, wake_fd >= 0 ? 2 : 1, static_cast<int>(std::min<std::int64_t>(timeout.count(), 1 << 30)));
      if (n > 0 && (fds[0].revents & (POLLIN | POLLERR | POLLHUP))) {
        c.raw().get_notifs();
        if (!c.raw().is_open()) throw pqxx::broken_connection("connection closed");
      }
      return std::move(got_);
    } catch (const pqxx::broken_connection& e) {
      c.listeners.clear();
      lease_.discard();
      throw DatabaseError("listen: connection lost: " + one_line(e.what()), "08006", ErrorClass::transient);
    }
  }

 private:
  std::vector<Notification> got_;  // before lease_: the receivers (on the connection) point here
  Lease lease_;
};

}  // namespace

std::unique_ptr<Subscription> PgTaskStore::subscribe(const std::vector<std::string>& channels) {
  return std::make_unique<PgSubscription>(pool_.acquire(), channels);
}

namespace {
TextRows text_rows(const pqxx::result& r) {
  TextRows out;
  for (pqxx::row::size_type i = 0; i < r.columns(); ++i) out.columns.emplace_back(r.column_name(i));
  out.rows.reserve(r.size());
  for (const auto& row : r) {
    std::vector<std::optional<std::string>> values;
    values.reserve(row.size());
    for (const auto& f : row) values.push_back(opt_text(f));
    out.rows.push_back(std::move(values));
  }
  return out;
}

std::vector<std::string> literals(pqxx::transaction_base& tx, const std::vector<std::optional<std::string>>& params) {
  std::vector<std::string> lits;
  lits.reserve(params.size());
  for (const auto& p : params) lits.push_back(literal(tx, p));
  return lits;
}
}  // namespace

TextRows PgTaskStore::query(const char* what, const Statement& s, const std::vector<std::optional<std::string>>& params) {
  return in_transaction(pool_, *watchdog_, options_.update, options_.client_grace, what, true,
                        [&](pqxx::transaction_base& tx, Connection& c) {
                          return text_rows(run_literals(tx, c, options_.pgbouncer, options_.update, s, literals(tx, params)));
                        });
}

void PgTaskStore::locked_transaction(const char* what, std::int64_t lock_key,
                                     const std::function<void(const StepRunner&)>& steps) {
  in_transaction(pool_, *watchdog_, options_.update, options_.client_grace, what, false,
                 [&](pqxx::transaction_base& tx, Connection&) {
                   tx.exec("SELECT pg_advisory_xact_lock(" + std::to_string(lock_key) + ")");
                   // Inlined literals, not prepared: the steps run once per sync, and PgBouncer
                   // in transaction mode keeps nothing session-scoped.
                   steps([&](const Statement& s, const std::vector<std::optional<std::string>>& params) {
                     return text_rows(tx.exec(inline_params(s.sql, literals(tx, params))));
                   });
                   return 0;
                 });
}

}  // namespace agentcron
