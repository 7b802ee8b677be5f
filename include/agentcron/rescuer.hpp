// Rescuer: running tasks whose lease expired (their worker died or stalled) go back to pending,
// to failed when their attempts are spent, or — recurring ones — to their next fire time.
#pragma once
#include <cstdint>
#include <stop_token>

namespace agentcron {

class Logger;
class TaskStore;

struct RescuerResult {
  std::int64_t to_pending = 0;
  std::int64_t to_failed = 0;
};

class Rescuer {
 public:
  Rescuer(TaskStore& store, Logger& log, int batch = 500) : store_(store), log_(log), batch_(batch) {}
  RescuerResult run_once(std::stop_token stop = {});

 private:
  TaskStore& store_;
  Logger& log_;
  int batch_;
};

}  // namespace agentcron
