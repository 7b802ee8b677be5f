// Task and TaskOutcome: a claimed task as the executor sees it, and a handler's result as a value.
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace agentcron {

using SysTime = std::chrono::system_clock::time_point;

// One claim of one task: its id and the token the claim stored on the row. Every outcome,
// extension and release names the claim it belongs to, so it can change nothing else.
struct ClaimRef {
  std::int64_t id = 0;
  std::int64_t token = 0;
};

// A task claimed by this worker: its row's fields after the claim (attempts already counts this
// run) and the database's clock at the claim.
struct Task {
  std::int64_t id = 0;
  std::optional<std::string> agent_id;
  std::string kind;
  std::string payload = "{}";  // JSON text, as stored
  std::int64_t claim_token = 0;  // this claim's token (agent_tasks.claim_token)
  int attempt = 1;             // this run's attempt number (attempts after the claim)
  int max_attempts = 5;
  std::optional<std::string> cron;
  std::string timezone = "UTC";
  std::optional<int> timeout_ms;
  SysTime scheduled_for{};
  // The occurrence this attempt serves: scheduled_for when the occurrence was first claimed (a
  // retry moves scheduled_for, not this; a recurring task's next fire starts a new occurrence).
  SysTime occurrence{};
  SysTime claimed_at{};        // database now() at the claim
  std::chrono::steady_clock::time_point claimed_steady{};  // this process's clock when the claim was sent
  // Why this row cannot run, found when it was read (a value the worker cannot represent): the
  // executor fails it at once with this reason instead of running it.
  std::string defect;

  ClaimRef claim() const { return {id, claim_token}; }

  // The database's clock now, estimated from the claim (due-ness is the database's call).
  SysTime db_now() const {
    return claimed_at + std::chrono::duration_cast<SysTime::duration>(std::chrono::steady_clock::now() - claimed_steady);
  }
};

// What a handler says about one run. A value, never an exception.
struct TaskOutcome {
  enum class Kind { succeeded, retry, failed };
  Kind kind = Kind::succeeded;
  std::string message;                  // error text or a short result note
  std::optional<SysTime> retry_not_before;  // e.g. from Retry-After
  bool cancelled = false;               // stopped by shutdown: release, do not count the attempt

  static TaskOutcome success(std::string note = {}) { return {Kind::succeeded, std::move(note), std::nullopt, false}; }
  // A failure that may succeed on a later attempt (retried while attempts last).
  static TaskOutcome retry(std::string why, std::optional<SysTime> not_before = std::nullopt) {
    return {Kind::retry, std::move(why), not_before, false};
  }
  // A failure no retry can fix.
  static TaskOutcome failure(std::string why) { return {Kind::failed, std::move(why), std::nullopt, false}; }
  static TaskOutcome released(std::string why) { return {Kind::retry, std::move(why), std::nullopt, true}; }
};

}  // namespace agentcron
