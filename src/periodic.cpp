// The fixed-rate runner of the maintenance jobs (see periodic.hpp).
#include "agentcron/periodic.hpp"

#include <algorithm>

#include "agentcron/log.hpp"
#include "agentcron/retry.hpp"

namespace agentcron {

Periodic::Periodic(std::string name, Millis interval, Job job, Logger& log, Millis retry)
    : name_(std::move(name)), interval_(interval), retry_(retry > Millis(0) ? retry : interval), job_(std::move(job)),
      log_(log) {}

Periodic::~Periodic() {
  request_stop();
  wait();
}

void Periodic::start() {
  if (thread_.joinable()) return;
  thread_ = std::jthread([this](std::stop_token st) {
    auto next = std::chrono::steady_clock::now() + interval_;
    while (!st.stop_requested()) {
      {
        std::unique_lock lock(mu_);
        cv_.wait_until(lock, st, next, [this] { return now_; });
        if (st.stop_requested()) return;
        now_ = false;
      }
      auto started = std::chrono::steady_clock::now();
      next = started + interval_;  // a fixed rate: the next run is due an interval after this one started
      try {
        job_(st);
      } catch (const DatabaseError& e) {
        next = std::min(next, std::chrono::steady_clock::now() + retry_);
        log_.warn(name_ + " failed; will run again", {{"sqlstate", e.sqlstate()}, {"error", e.what()},
                                                       {"retry_in_ms", static_cast<std::int64_t>(retry_.count())}});
      } catch (const std::exception& e) {
        // Any other failure is this round's error, never the end of the thread (std::terminate).
        next = std::min(next, std::chrono::steady_clock::now() + retry_);
        log_.error(name_ + " failed; will run again", {{"error", e.what()}});
      }
    }
  });
}

void Periodic::request_stop() {
  thread_.request_stop();
  cv_.notify_all();
}

void Periodic::run_now() {
  {
    std::lock_guard lock(mu_);
    now_ = true;
  }
  cv_.notify_all();
}

void Periodic::wait() {
  if (thread_.joinable()) thread_.join();
}

}  // namespace agentcron
