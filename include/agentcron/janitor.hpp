// Janitor: finished tasks past their retention are deleted, in small batches.
#pragma once
#include <cstdint>
#include <stop_token>

#include "agentcron/duration.hpp"

namespace agentcron {

class Logger;
class TaskStore;

class Janitor {
 public:
  Janitor(TaskStore& store, Millis succeeded, Millis failed, Logger& log, int batch = 500, int max_batches = 20)
      : store_(store), succeeded_(succeeded), failed_(failed), log_(log), batch_(batch), max_batches_(max_batches) {}
  std::int64_t run_once(std::stop_token stop = {});  // rows deleted

 private:
  TaskStore& store_;
  Millis succeeded_, failed_;
  Logger& log_;
  int batch_, max_batches_;
};

}  // namespace agentcron
