// SignalWatcher: SIGINT, SIGTERM and SIGHUP are blocked in every thread (block_signals() runs
// before any thread starts) and read from a signalfd by one thread, which hands each signal to
// its callback (shutdown requests; SIGHUP re-reads the configuration).
#pragma once
#include <atomic>
#include <functional>
#include <thread>

namespace agentcron {

// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread; threads started later inherit it.
void block_signals();

class SignalWatcher {
 public:
  // on_terminate gets the count of SIGINT/SIGTERM so far (1: drain, 2: skip the grace).
  SignalWatcher(std::function<void(int)> on_terminate, std::function<void()> on_reload);
  ~SignalWatcher();
  void start();
  void stop();
  int terminations() const { return terminations_; }

 private:
  std::function<void(int)> on_terminate_;
  std::function<void()> on_reload_;
  std::atomic<int> terminations_{0};
  int signal_fd_ = -1;
  int stop_fd_ = -1;
  std::jthread thread_;
};

}  // namespace agentcron
