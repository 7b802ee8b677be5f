// The periodic maintenance services: Rescuer (expired leases back to pending), Janitor (old
// finished tasks deleted in small batches) and LeaseKeeper (our running tasks' leases extended
// in one statement every lease/3). Each has run_once() for tests and runs on a Periodic thread.
#pragma once
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

// Runs `job` every `interval` on its own thread until stopped. The job's DatabaseErrors are
// logged (it runs again at the next interval); other exceptions are bugs and propagate.
class Periodic {
 public:
  Periodic(std::string name, Millis interval, std::function<void()> job, Logger& log);
  ~Periodic();
  void start();
  void request_stop();
  void wait();

 private:
  std::string name_;
  Millis interval_;
  std::function<void()> job_;
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
  RescuerResult run_once();

 private:
  TaskStore& store_;
  Logger& log_;
  int batch_;
};

class Janitor {
 public:
  Janitor(TaskStore& store, Millis succeeded, Millis failed, Logger& log, int batch = 500, int max_batches = 20)
      : store_(store), succeeded_(succeeded), failed_(failed), log_(log), batch_(batch), max_batches_(max_batches) {}
  std::int64_t run_once();  // rows deleted

 private:
  TaskStore& store_;
  Millis succeeded_, failed_;
  Logger& log_;
  int batch_, max_batches_;
};

class LeaseKeeper {
 public:
  LeaseKeeper(TaskStore& store, Executor& executor, std::string worker, Millis lease)
      : store_(store), executor_(executor), worker_(std::move(worker)), lease_(lease) {}
  std::int64_t run_once();  // leases extended

 private:
  TaskStore& store_;
  Executor& executor_;
  std::string worker_;
  Millis lease_;
};

}  // namespace agentcron
