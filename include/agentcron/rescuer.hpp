// The periodic maintenance services: Rescuer (expired leases back to pending), Janitor (old
// finished tasks deleted in small batches) and LeaseKeeper (our running tasks' leases extended
// in one statement every lease/3). Each has run_once() for tests and runs on a Periodic thread.
#pragma once
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "agentcron/duration.hpp"

namespace agentcron {

class Executor;
class Logger;
class TaskStore;

// Runs `job` at a fixed rate, every `interval` from the start of the last run (a slow run is not
// followed by a full interval of waiting), on its own thread until stopped. A run that throws is
// logged and tried again after `retry` (a quick retry; default: the interval). The job gets the
// stop token: a job of several statements checks it between them, so that a stop waits for one
// statement at most (the shutdown budget counts on it).
class Periodic {
 public:
  using Job = std::function<void(std::stop_token)>;
  Periodic(std::string name, Millis interval, Job job, Logger& log, Millis retry = Millis(0));
  ~Periodic();
  void start();
  void request_stop();
  void wait();

 private:
  std::string name_;
  Millis interval_;
  Millis retry_;
  Job job_;
  Logger& log_;
  std::mutex mu_;
  std::condition_variable_any cv_;
  std::jthread thread_;
};

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
