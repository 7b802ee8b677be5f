// Rescuer, Janitor, LeaseKeeper and the Periodic runner (see rescuer.hpp).
#include "agentcron/rescuer.hpp"

#include <algorithm>

#include "agentcron/cron.hpp"
#include "agentcron/executor.hpp"
#include "agentcron/log.hpp"
#include "agentcron/retry.hpp"
#include "agentcron/task_store.hpp"

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
        if (cv_.wait_until(lock, st, next, [] { return false; }) || st.stop_requested()) return;
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

void Periodic::wait() {
  if (thread_.joinable()) thread_.join();
}

RescuerResult Rescuer::run_once(std::stop_token stop) {
  RescuerResult total;
  std::int64_t recurring_left = 0;
  while (true) {
    RescueResult r = store_.rescue_expired(batch_);
    total.to_pending += r.to_pending;
    total.to_failed += r.to_failed;
    recurring_left = r.recurring_left;
    if (r.to_pending + r.to_failed < batch_ || stop.stop_requested()) break;
  }
  // A recurring task whose attempts are spent waits for its next fire time, as after a failed run.
  while (recurring_left > 0 && !stop.stop_requested()) {
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

std::int64_t Janitor::run_once(std::stop_token stop) {
  std::int64_t total = 0;
  for (int i = 0; i < max_batches_ && !stop.stop_requested(); ++i) {
    std::int64_t n = store_.delete_finished(succeeded_, failed_, batch_);
    total += n;
    if (n < batch_) break;
  }
  if (total > 0) log_.info("deleted finished tasks past their retention", {{"count", total}});
  return total;
}

LeaseKeeperResult LeaseKeeper::run_once() {
  std::vector<ClaimRef> held = executor_.held_claims();
  auto sent = std::chrono::steady_clock::now();  // the database's new lease starts after this
  std::vector<std::int64_t> extended = store_.extend_leases(held, worker_, lease_);
  executor_.renewed(extended, sent);
  std::sort(extended.begin(), extended.end());
  std::vector<ClaimRef> missing;
  for (const ClaimRef& c : held)
    if (!std::binary_search(extended.begin(), extended.end(), c.id)) missing.push_back(c);
  LeaseKeeperResult r{static_cast<std::int64_t>(extended.size()), executor_.lose(missing)};
  if (r.lost > 0)
    log_.warn("lost the lease of running tasks (rescued or changed by someone else); stopped their handlers",
              {{"count", r.lost}});
  return r;
}

}  // namespace agentcron
