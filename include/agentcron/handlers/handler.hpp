// Handler and HandlerRegistry: what runs a task of a given kind, and the map from kinds to
// handlers (from [handlers.<kind>] in the config, or registered by an embedding program).
#pragma once
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

#include "agentcron/duration.hpp"
#include "agentcron/task.hpp"

namespace agentcron {

struct Config;
class Logger;

// What a running handler may look at: when it must be done, and a stop token that is requested
// at its timeout or when shutdown cancels it. A handler should return soon after a stop request.
struct HandlerContext {
  std::stop_token stop;
  std::chrono::steady_clock::time_point deadline;
  Millis limit{0};  // the time limit `deadline` comes from, for messages ("timed out after …")
};

class Handler {
 public:
  virtual ~Handler() = default;
  // Runs one task. Returns its outcome; an exception is turned by the executor into a failed
  // attempt (retried while attempts last), but a handler that knows better returns
  // TaskOutcome::retry or ::failure.
  virtual TaskOutcome run(const Task& task, const HandlerContext& ctx) = 0;
  // A notification to send in the transaction that records the task's success: (channel, payload).
  virtual std::optional<std::pair<std::string, std::string>> completion_notify(const Task&) const {
    return std::nullopt;
  }
};

// Appends `"task_id":…,"agent_id":…,"kind":"…"` (no braces): how every handler names a task
// in the JSON it sends.
void append_task_identity(std::string& out, const Task& task);

// The `notify` handler of design.md: succeeds at once, and the completing transaction sends
// pg_notify(channel, '{"task_id":…,"agent_id":…,"kind":…}') so the application picks the task up.
class NotifyHandler final : public Handler {
 public:
  explicit NotifyHandler(std::string channel = "agentcron_ready") : channel_(std::move(channel)) {}
  TaskOutcome run(const Task& task, const HandlerContext& ctx) override;
  std::optional<std::pair<std::string, std::string>> completion_notify(const Task& task) const override;

 private:
  std::string channel_;
};

// A claim probes the due index once for each kind it takes (and each priority present): with more
// kinds than this, a claim costs milliseconds — 19 ms and 36 MiB of a backend's memory at 100
// kinds, against 2.5 ms at 10 (docs/performance.md, "Scale"). The worker and `doctor` say so.
inline constexpr std::size_t kManyKinds = 32;
inline constexpr const char* kManyKindsAdvice =
    "every claim probes the due index once for each kind it takes (about 19 ms a claim at 100 kinds): "
    "split the kinds across workers' configurations, a few dozen at most each";

class HandlerRegistry {
 public:
  void add(std::string kind, std::shared_ptr<Handler> handler);
  Handler* find(const std::string& kind) const;
  std::vector<std::string> kinds() const;  // the kinds this worker claims, sorted
  bool empty() const { return handlers_.empty(); }

  // The handlers of [handlers.<kind>] tables. Throws ConfigError naming an unset ${VAR} of a header.
  static HandlerRegistry from_config(const Config& config, Logger& log);

 private:
  std::map<std::string, std::shared_ptr<Handler>> handlers_;
};

}  // namespace agentcron
