// PgTaskStore: the TaskStore on PostgreSQL, and the migrations' queries. Every method is one
// round trip in a short transaction that starts with its query class's timeouts; the statements
// themselves live in src/pg_statements.hpp, the only place with agentcron's SQL.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "agentcron/config.hpp"
#include "agentcron/pool.hpp"
#include "agentcron/task_store.hpp"

namespace agentcron {

class Logger;
class StatementWatchdog;
struct Telemetry;
namespace pg {
struct Statement;
}

// The per-transaction timeouts of one query class.
struct QueryTimeouts {
  Millis statement = std::chrono::seconds(10);
  Millis lock = std::chrono::seconds(2);
  Millis idle_in_transaction = std::chrono::seconds(30);
  // Commit without waiting for the WAL flush. Only for claims: a claim lost in a server crash
  // leaves its tasks pending, to run again — exactly what a rescue does — while the handler
  // starts a WAL flush sooner. Outcomes are always written durably.
  bool async_commit = false;
};

struct StoreOptions {
  QueryTimeouts claim{std::chrono::seconds(15)};
  QueryTimeouts update{};
  bool pgbouncer = false;   // no named prepared statements
  // The client cancels a statement (and discards its connection) this long after the server
  // should have: the server's own statement_timeout did not answer, so the network is suspect.
  Millis client_grace = std::chrono::seconds(5);
  // When set, every statement's duration and every failure's SQLSTATE class are recorded there.
  Telemetry* telemetry = nullptr;

  static StoreOptions from_config(const Config& c);
};

struct AppliedMigration {
  int version = 0;
  std::string name;
  std::string checksum;
  std::string applied_at;
};

// A statement's result as text: the columns' names and each row's values (NULL as nullopt).
struct TextRows {
  std::vector<std::string> columns;
  std::vector<std::vector<std::optional<std::string>>> rows;
};

class PgTaskStore final : public TaskStore {
 public:
  PgTaskStore(ConnectionPool& pool, StoreOptions options, Logger& log);
  ~PgTaskStore() override;
  PgTaskStore(const PgTaskStore&) = delete;
  PgTaskStore& operator=(const PgTaskStore&) = delete;

  // Claims due tasks of `kinds` in due order: one UPDATE … FROM (SELECT … FOR UPDATE SKIP
  // LOCKED) RETURNING. Each gets attempts+1 and a lease.
  std::vector<Task> claim_due(const ClaimParams& p) override;
  // Writes many outcomes in one statement, with their task_runs rows. Returns the ids of the
  // tasks updated (a task no longer running under the outcome's claim is left alone).
  std::vector<std::int64_t> complete_many(const std::vector<Completion>& outcomes, const std::string& worker) override;
  // Back to pending without counting the attempt (shutdown), each only while under its claim.
  std::int64_t release_many(const std::vector<ClaimRef>& claims, const std::string& worker, const std::string& why) override;
  // Extends the leases of `claims` held by `worker` to now() + lease. Returns the ids extended.
  std::vector<std::int64_t> extend_leases(const std::vector<ClaimRef>& claims, const std::string& worker, Millis lease) override;
  // Returns running tasks whose lease expired to pending (or failed when attempts ran out).
  RescueResult rescue_expired(int limit) override;
  std::vector<ExpiredRecurring> expired_recurring(int limit) override;
  RescueResult reschedule_expired(const std::vector<Reschedule>& tasks) override;
  FinishedDeleted delete_finished(Millis succeeded_after, Millis failed_after, int limit) override;
  EnqueueResult enqueue(const EnqueueParams& p) override;
  QueueStatus status() override;
  SysTime now() override;

  // Migrations: applies one under a transaction-level advisory lock (safe to run concurrently,
  // and through pgbouncer); returns false when it was already applied with the same checksum,
  // throws when it was applied with another.
  bool apply_migration(int version, const std::string& name, const std::string& sql, const std::string& checksum);
  std::vector<AppliedMigration> applied_migrations();

  std::unique_ptr<Subscription> subscribe(const std::vector<std::string>& channels) override;
  bool answering() const override { return answering_.load(std::memory_order_relaxed); }

  // One statement of the administrative commands (src/admin_statements.hpp) with its parameters
  // as text (nullopt: NULL), in the update class's timeouts; its result as text.
  TextRows query(const char* what, const pg::Statement& s, const std::vector<std::optional<std::string>>& params);
  // Several statements in one transaction (BEGIN … COMMIT, the update class's timeouts) under the
  // transaction-level advisory lock `lock_key`: each `steps` call runs one statement through the
  // callback it is given and reads its result.
  using StepRunner = std::function<TextRows(const pg::Statement&, const std::vector<std::optional<std::string>>&)>;
  void locked_transaction(const char* what, std::int64_t lock_key, const std::function<void(const StepRunner&)>& steps);

  ConnectionPool& pool() { return pool_; }

 private:
  template <class Read, class... Args>
  auto execute(const char* what, const QueryTimeouts& t, const pg::Statement& s, Read&& read, const Args&... args);

  ConnectionPool& pool_;
  StoreOptions options_;
  Logger& log_;
  std::unique_ptr<StatementWatchdog> watchdog_;
  std::atomic<bool> answering_{true};
};

}  // namespace agentcron
