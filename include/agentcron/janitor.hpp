// Janitor: finished tasks past their retention are deleted, in small batches.
#pragma once
#include <chrono>
#include <cstdint>
#include <stop_token>

#include "agentcron/duration.hpp"
#include "agentcron/periodic.hpp"

namespace agentcron {

class Logger;
class TaskStore;

struct JanitorOptions {
  Millis succeeded = std::chrono::hours(24 * 7);  // retention.succeeded
  Millis failed = std::chrono::hours(24 * 30);    // retention.failed
  int batch = 500;                                // rows per statement
  int max_batches = 20;                           // per round: the rest waits for the next
  Millis interval = std::chrono::minutes(5);      // between rounds
  void validate() const;
};

struct JanitorResult {
  std::int64_t deleted = 0;       // tasks
  std::int64_t runs_deleted = 0;  // task_runs rows past the longer retention
  int batches = 0;  // statements sent
};

class Janitor {
 public:
  Janitor(JanitorOptions options, TaskStore& store, Logger& log);
  JanitorResult run_once(std::stop_token stop = {});
  void start() { periodic_.start(); }
  void request_stop() { periodic_.request_stop(); }
  void wait() { periodic_.wait(); }

 private:
  JanitorOptions options_;
  TaskStore& store_;
  Logger& log_;
  Periodic periodic_;  // last: joined before the members its rounds use go away
};

}  // namespace agentcron
