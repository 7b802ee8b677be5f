// Rescuer: running tasks whose lease expired (their worker died or stalled) go back to pending,
// to failed when their attempts are spent, or — recurring ones — to their next fire time.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <stop_token>

#include "agentcron/duration.hpp"
#include "agentcron/periodic.hpp"

namespace agentcron {

class Logger;
class TaskStore;

struct RescuerOptions {
  int batch = 500;                              // rows per statement
  Millis interval = std::chrono::seconds(30);  // between rounds
  void validate() const;
};

struct RescuerResult {
  std::int64_t to_pending = 0;
  std::int64_t to_failed = 0;
};

class Rescuer {
 public:
  Rescuer(RescuerOptions options, TaskStore& store, Logger& log);
  // One round: batches until one comes back short or `stop` is requested (checked between them).
  RescuerResult run_once(std::stop_token stop = {});
  void start() { periodic_.start(); }
  void request_stop() { periodic_.request_stop(); }
  void wait() { periodic_.wait(); }
  // Tasks rescued so far (to pending or failed), for agentcron_tasks_rescued_total.
  std::int64_t rescued() const { return rescued_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> rescued_{0};
  RescuerOptions options_;
  TaskStore& store_;
  Logger& log_;
  Periodic periodic_;  // last: joined before the members its rounds use go away
};

}  // namespace agentcron
