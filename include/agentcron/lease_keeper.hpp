// LeaseKeeper: the leases of every task this worker holds are extended in one statement.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>

#include "agentcron/duration.hpp"
#include "agentcron/periodic.hpp"

namespace agentcron {

class Executor;
class Logger;
class TaskStore;

struct LeaseKeeperOptions {
  std::string worker;                        // locked_by of our tasks
  Millis lease = std::chrono::seconds(60);   // scheduler.lease
  Millis interval() const { return lease / 3; }
  // After a failed round: again within a second (a lease must not run out over one lost packet).
  Millis retry_interval() const { return std::min<Millis>(std::chrono::seconds(1), lease / 10); }
  void validate() const;
};

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
  LeaseKeeper(LeaseKeeperOptions options, TaskStore& store, Executor& executor, Logger& log);
  LeaseKeeperResult run_once();
  void start() { periodic_.start(); }
  void request_stop() { periodic_.request_stop(); }
  void wait() { periodic_.wait(); }

 private:
  LeaseKeeperOptions options_;
  TaskStore& store_;
  Executor& executor_;
  Logger& log_;
  Periodic periodic_;  // last: joined before the members its rounds use go away
};

}  // namespace agentcron
