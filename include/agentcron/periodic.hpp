// Periodic: runs a maintenance job at a fixed rate on a thread of its own (the lease keeper, the
// rescuer and the janitor run on one each).
#pragma once
#include <condition_variable>
#include <functional>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>

#include "agentcron/duration.hpp"

namespace agentcron {

class Logger;

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
  // The next run starts now instead of at its time (asked before start(), the first run is at once).
  void run_now();

 private:
  std::string name_;
  Millis interval_;
  Millis retry_;
  Job job_;
  Logger& log_;
  std::mutex mu_;
  std::condition_variable_any cv_;
  bool now_ = false;  // run_now() asked, under mu_
  std::jthread thread_;
};

}  // namespace agentcron
