// TaskStore: every SQL statement agentcron runs, one method per query, each one round trip in a
// short transaction that starts with its query class's timeouts. The only place with SQL.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agentcron/config.hpp"
#include "agentcron/pool.hpp"
#include "agentcron/task.hpp"

namespace agentcron {

class Logger;
class StatementWatchdog;

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

  static StoreOptions from_config(const Config& c);
};

struct ClaimParams {
  int limit = 50;
  std::vector<std::string> kinds;  // claim only these
  std::string worker;
  Millis lease = std::chrono::seconds(60);
  // A payload larger than this (as JSON text) is not fetched: its task comes back with a defect.
  int max_payload_bytes = 1 << 20;
};

// The final state of a run, decided by the completer.
struct Completion {
  std::int64_t id = 0;
  std::int64_t claim_token = 0;           // the claim it finishes (guards against a stale outcome)
  int attempt = 0;                        // the attempt that ran (for its task_runs row)
  enum class Status { succeeded, pending, failed } status = Status::succeeded;
  std::optional<Millis> retry_delay;      // pending: run again at db now() + this
  std::optional<SysTime> run_at;          // pending: run again at this time (recurring)
  bool reset_attempts = false;            // recurring task's next occurrence
  std::string error;                      // last_error ("" clears it)
  std::string run_outcome;                // task_runs.outcome, "" for no run row
  SysTime started_at{};
  SysTime finished_at{};
  std::string result;                     // a handler's result on success (response body), "" for none
  std::string notify_channel;             // notify handler: pg_notify in the same transaction
  std::string notify_payload;
};

struct EnqueueParams {
  std::string kind;
  std::string payload = "{}";
  std::optional<std::string> agent_id;
  std::optional<SysTime> at;          // default now()
  std::optional<Millis> in;           // now() + this
  std::optional<std::string> cron;
  std::string timezone = "UTC";
  int priority = 0;
  int max_attempts = 5;
  std::optional<int> timeout_ms;
  std::optional<std::string> dedup_key;
  std::string approval = "approved";
};

struct EnqueueResult {
  std::int64_t id = 0;
  bool deduplicated = false;  // a live task with the same dedup_key existed; its id is returned
};

struct QueueStatus {
  std::vector<std::pair<std::string, std::int64_t>> by_status;  // all five statuses, in order
  std::int64_t due_now = 0;
  std::optional<double> oldest_due_seconds;
  std::int64_t server_connections = 0;     // all backends of client connections
  std::int64_t agentcron_connections = 0;  // of those, agentcron's
  std::int64_t max_connections = 0;
};

struct RescueResult {
  std::int64_t to_pending = 0;
  std::int64_t to_failed = 0;
  // Expired recurring tasks with their attempts spent, left running by rescue_expired(): their
  // next fire time needs the cron engine (see Rescuer::run_once).
  std::int64_t recurring_left = 0;
};

// An expired recurring task whose attempts are spent, with the database's clock.
struct ExpiredRecurring {
  std::int64_t id = 0;
  std::string cron;
  std::string timezone;
  SysTime db_now{};
};

// Where such a task goes: pending at `next_fire` with its attempts reset, or, without one (its
// schedule is broken), failed with `error`.
struct Reschedule {
  std::int64_t id = 0;
  std::optional<SysTime> next_fire;
  std::string error;
};

struct AppliedMigration {
  int version = 0;
  std::string name;
  std::string checksum;
  std::string applied_at;
};

class TaskStore {
 public:
  TaskStore(ConnectionPool& pool, StoreOptions options, Logger& log);
  ~TaskStore();
  TaskStore(const TaskStore&) = delete;
  TaskStore& operator=(const TaskStore&) = delete;

  // Claims due tasks of `kinds` in due order: one UPDATE … FROM (SELECT … FOR UPDATE SKIP
  // LOCKED) RETURNING. Each gets attempts+1 and a lease.
  std::vector<Task> claim_due(const ClaimParams& p);
  // Writes many outcomes in one statement, with their task_runs rows. Returns the ids of the
  // tasks updated (a task no longer running under the outcome's claim is left alone).
  std::vector<std::int64_t> complete_many(const std::vector<Completion>& outcomes, const std::string& worker);
  // Back to pending without counting the attempt (shutdown), each only while under its claim.
  std::int64_t release_many(const std::vector<ClaimRef>& claims, const std::string& worker, const std::string& why);
  // Extends the leases of `claims` held by `worker` to now() + lease. Returns the ids extended.
  std::vector<std::int64_t> extend_leases(const std::vector<ClaimRef>& claims, const std::string& worker, Millis lease);
  // Returns running tasks whose lease expired to pending (or failed when attempts ran out).
  RescueResult rescue_expired(int limit);
  std::vector<ExpiredRecurring> expired_recurring(int limit);
  RescueResult reschedule_expired(const std::vector<Reschedule>& tasks);
  // Deletes finished tasks older than the retention, at most `limit` rows. Returns rows deleted.
  std::int64_t delete_finished(Millis succeeded_after, Millis failed_after, int limit);
  EnqueueResult enqueue(const EnqueueParams& p);
  QueueStatus status();
  SysTime now();

  // Migrations: applies one under a transaction-level advisory lock (safe to run concurrently,
  // and through pgbouncer); returns false when it was already applied with the same checksum,
  // throws when it was applied with another.
  bool apply_migration(int version, const std::string& name, const std::string& sql, const std::string& checksum);
  std::vector<AppliedMigration> applied_migrations();

  // LISTEN agentcron_due on a dedicated lease (not in pgbouncer mode). The lease stays out of
  // the pool's circulation for as long as the caller holds it.
  void listen(Lease& lease, const std::string& channel);
  // Waits up to `timeout` for a notification on a listening lease; true when one arrived.
  // Throws DatabaseError when the connection broke.
  // `wake_fd`, when >= 0, ends the wait early when it becomes readable (false is returned).
  bool wait_notification(Lease& lease, Millis timeout, int wake_fd = -1);

  ConnectionPool& pool() { return pool_; }

 private:
  ConnectionPool& pool_;
  StoreOptions options_;
  Logger& log_;
  std::unique_ptr<StatementWatchdog> watchdog_;
};

}  // namespace agentcron
