// TaskStore: the queries on agentcron's tasks as an interface, with the parameters and results of
// each — what the poller, executor's helpers, completer and maintenance services depend on.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "agentcron/duration.hpp"
#include "agentcron/task.hpp"

namespace agentcron {

struct ClaimParams {
  int limit = 50;
  std::vector<std::string> kinds;  // claim only these
  std::string worker;
  Millis lease = std::chrono::seconds(60);
  // A payload larger than this (as JSON text) is not fetched: its task comes back with a defect.
  int max_payload_bytes = 1 << 20;
  // Kinds with a concurrency limit and the slots each has free: at most that many of the kind.
  std::vector<std::pair<std::string, int>> kind_room{};
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
  // The counts of pending, succeeded, failed and cancelled are the planner's estimates (a large
  // table: counting it would cost a scan of it). Running tasks are always counted.
  bool estimated = false;
  std::int64_t due_now = 0;
  bool due_capped = false;  // due_now is a lower bound: counting stopped there
  std::optional<double> oldest_due_seconds;
  std::int64_t server_connections = 0;     // all backends of client connections
  std::int64_t agentcron_connections = 0;  // of those, agentcron's
  std::int64_t max_connections = 0;
};

// What one janitor statement deleted: finished tasks past their retention, and runs past the
// longer retention (those of recurring tasks too, which never finish).
struct FinishedDeleted {
  std::int64_t tasks = 0;
  std::int64_t runs = 0;
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

// A notification: its channel and payload.
struct Notification {
  std::string channel;
  std::string payload;
};

// A LISTEN on a connection of its own, held for as long as the subscription lives.
class Subscription {
 public:
  virtual ~Subscription() = default;
  // Waits up to `timeout` for notifications and returns those that arrived (none: the wait timed
  // out). `wake_fd`, when >= 0, ends the wait early when it becomes readable. Throws
  // DatabaseError when the connection broke: the subscription is then dead, and a new one is needed.
  virtual std::vector<Notification> wait(Millis timeout, int wake_fd = -1) = 0;
};

// Every query the services run on the tasks, one method per query: the PostgreSQL
// implementation is PgTaskStore (pg_task_store.hpp); tests use an in-memory fake
// (tests/support/fake_task_store.hpp). Every method throws DatabaseError, and nothing else.
class TaskStore {
 public:
  virtual ~TaskStore() = default;

  // Claims due tasks of `kinds` in due order (priority, scheduled_for, id), skipping rows another
  // claim holds. Each gets attempts+1, a lease and a new claim token.
  virtual std::vector<Task> claim_due(const ClaimParams& p) = 0;
  // Writes outcomes with their task_runs rows. Returns the ids of the tasks updated (a task no
  // longer running under the outcome's claim is left alone).
  virtual std::vector<std::int64_t> complete_many(const std::vector<Completion>& outcomes, const std::string& worker) = 0;
  // Back to pending without counting the attempt (shutdown), each only while under its claim.
  virtual std::int64_t release_many(const std::vector<ClaimRef>& claims, const std::string& worker,
                                    const std::string& why) = 0;
  // Extends the leases of `claims` held by `worker` to now() + lease. Returns the ids extended.
  virtual std::vector<std::int64_t> extend_leases(const std::vector<ClaimRef>& claims, const std::string& worker,
                                                  Millis lease) = 0;
  // Returns running tasks whose lease expired to pending (or failed when attempts ran out);
  // recurring tasks whose attempts ran out are counted, left for reschedule_expired.
  virtual RescueResult rescue_expired(int limit) = 0;
  virtual std::vector<ExpiredRecurring> expired_recurring(int limit) = 0;
  virtual RescueResult reschedule_expired(const std::vector<Reschedule>& tasks) = 0;
  // Deletes finished tasks older than their retention and runs older than the longer one, at most
  // `limit` of each.
  virtual FinishedDeleted delete_finished(Millis succeeded_after, Millis failed_after, int limit) = 0;
  virtual EnqueueResult enqueue(const EnqueueParams& p) = 0;
  virtual QueueStatus status() = 0;
  // The database's clock.
  virtual SysTime now() = 0;
  // LISTEN on `channels` (not in pgbouncer mode, where nothing session-scoped lasts).
  virtual std::unique_ptr<Subscription> subscribe(const std::vector<std::string>& channels) = 0;
  // Whether the database takes the store's writes: false from a write that failed for any
  // reason DatabaseError::says_database_unwell counts (a lost connection, a timeout, a read-only
  // server, a refused role or a missing table — not a refused value or a lock conflict) until a
  // write succeeds; reads do not count. Readiness reads it when a round has nothing to claim.
  virtual bool answering() const { return true; }
};

}  // namespace agentcron
