// run_worker_until: runs a Worker on a thread until a condition holds (or a deadline passes),
// then shuts it down as a SIGTERM would and waits for it.
#pragma once
#include <chrono>
#include <functional>
#include <thread>

#include "agentcron/worker.hpp"
#include "support/test_db.hpp"

namespace agentcron::testing {

// Returns whether `done` held before `timeout`.
inline bool run_worker_until(Worker& worker, const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  std::thread runner([&] { worker.run(); });
  bool ok = eventually(done, timeout);
  worker.request_shutdown(1);
  runner.join();
  return ok;
}

}  // namespace agentcron::testing
