// LeaseKeeper: the leases of every task this worker holds are extended in one statement.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

#include "agentcron/duration.hpp"

namespace agentcron {

class Executor;
class Logger;
class TaskStore;

struct LeaseKeeperResult {
  std::int64_t extended = 0;
  int lost = 0;  // handlers stopped because their task's extend matched no row
};

// Extends the leases of every task this worker holds — queued, running, or finished with its
// outcome not written yet — in one statement. A running task whose extend matches no row has
// lost its lease (it was rescued, or changed under us): its handler is stopped and its outcome
// dropped. Runs every lease/3, and again within a second after a failure.
class LeaseKeeper {
 public:
  LeaseKeeper(TaskStore& store, Executor& executor, std::string worker, Millis lease, Logger& log)
      : store_(store), executor_(executor), worker_(std::move(worker)), lease_(lease), log_(log) {}
  LeaseKeeperResult run_once();
  Millis interval() const { return lease_ / 3; }
  Millis retry_interval() const { return std::min<Millis>(std::chrono::seconds(1), lease_ / 10); }

 private:
  TaskStore& store_;
  Executor& executor_;
  std::string worker_;
  Millis lease_;
  Logger& log_;
};

}  // namespace agentcron
