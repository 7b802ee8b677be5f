// Rescuer, Janitor, LeaseKeeper and the Periodic runner (see rescuer.hpp).
#include "agentcron/rescuer.hpp"

#include "agentcron/cron.hpp"
#include "agentcron/executor.hpp"
#include "agentcron/log.hpp"
#include "agentcron/retry.hpp"
#include "agentcron/task_store.hpp"

namespace agentcron {

Periodic::Periodic(std::string name, Millis interval, std::function<void()> job, Logger& log)
    : name_(std::move(name)), interval_(interval), job_(std::move(job)), log_(log) {}

Periodic::~Periodic() {
  request_stop();
  wait();
}

void Periodic::start() {
  if (thread_.joinable()) return;
  thread_ = std::jthread([this](std::stop_token st) {
    while (!st.stop_requested()) {
      {
        std::unique_lock lock(mu_);
        if (cv_.wait_for(lock, st, interval_, [] { return false; }) || st.stop_requested()) return;
      }
      try {
        job_();
      } catch (const DatabaseError& e) {
        log_.warn(name_ + " failed; will run again", {{"sqlstate", e.sqlstate()}, {"error", e.what()}});
      } catch (const std::exception& e) {
        // Any other failure is this round's error, never the end of the thread (std::terminate).
        log_.error(name_ + " failed; will run again", {{"error", e.what()}});
      }
    }
  });
}

void Periodic::request_stop() {
  thread_.request_stop();
  cv_.notify_all();
}

void Periodic::wait() {
  if (thread_.joinable()) thread_.join();
}

RescuerResult Rescuer::run_once() {
  RescuerResult total;
  std::int64_t recurring_left = 0;
  while (true) {
    RescueResult r = store_.rescue_expired(batch_);
    total.to_pending += r.to_pending;
    total.to_failed += r.to_failed;
    recurring_left = r.recurring_left;
    if (r.to_pending + r.to_failed < batch_) break;
  }
  // A recurring task whose attempts are spent waits for its next fire time, as after a failed run.
  while (recurring_left > 0) {
    std::vector<Reschedule> moves;
    for (const ExpiredRecurring& e : store_.expired_recurring(batch_)) {
      NextFire fire = next_fire(e.cron, e.timezone, e.db_now);
      moves.push_back(Reschedule{e.id, fire.at, std::move(fire.error)});
    }
    RescueResult r = store_.reschedule_expired(moves);
    total.to_pending += r.to_pending;
    total.to_failed += r.to_failed;
    // Fewer than a batch listed, or none moved (another rescuer holds them): done for this round.
    if (static_cast<int>(moves.size()) < batch_ || r.to_pending + r.to_failed == 0) break;
  }
  if (total.to_pending + total.to_failed > 0)
    log_.warn("rescued tasks whose worker stopped renewing their lease",
              {{"to_pending", total.to_pending}, {"to_failed", total.to_failed}});
  return total;
}

std::int64_t Janitor::run_once() {
  std::int64_t total = 0;
  for (int i = 0; i < max_batches_; ++i) {
    std::int64_t n = store_.delete_finished(succeeded_, failed_, batch_);
    total += n;
    if (n < batch_) break;
  }
  if (total > 0) log_.info("deleted finished tasks past their retention", {{"count", total}});
  return total;
}

std::int64_t LeaseKeeper::run_once() {
  return store_.extend_leases(executor_.running_ids(), worker_, lease_);
}

}  // namespace agentcron
