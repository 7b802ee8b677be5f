// Rescuing expired leases (see rescuer.hpp).
#include "agentcron/rescuer.hpp"

#include "agentcron/cron.hpp"
#include "agentcron/log.hpp"
#include "agentcron/service.hpp"
#include "agentcron/task_store.hpp"

namespace agentcron {

void RescuerOptions::validate() const {
  require_option(batch > 0, "rescuer", "batch must be > 0");
  require_option(interval > Millis(0), "rescuer", "interval must be > 0");
}

Rescuer::Rescuer(RescuerOptions options, TaskStore& store, Logger& log)
    : options_(validated(std::move(options))),
      store_(store),
      log_(log),
      periodic_("rescuing expired leases", options_.interval, [this](std::stop_token st) { run_once(st); }, log) {}

RescuerResult Rescuer::run_once(std::stop_token stop) {
  const int batch = options_.batch;
  RescuerResult total;
  std::int64_t recurring_left = 0;
  while (true) {
    RescueResult r = store_.rescue_expired(batch);
    total.to_pending += r.to_pending;
    total.to_failed += r.to_failed;
    recurring_left = r.recurring_left;
    if (r.to_pending + r.to_failed < batch || stop.stop_requested()) break;
  }
  // A recurring task whose attempts are spent waits for its next fire time, as after a failed run.
  while (recurring_left > 0 && !stop.stop_requested()) {
    std::vector<Reschedule> moves;
    for (const ExpiredRecurring& e : store_.expired_recurring(batch)) {
      NextFire fire = next_fire(e.cron, e.timezone, e.db_now);
      moves.push_back(Reschedule{e.id, fire.at, std::move(fire.error)});
    }
    RescueResult r = store_.reschedule_expired(moves);
    total.to_pending += r.to_pending;
    total.to_failed += r.to_failed;
    // Fewer than a batch listed, or none moved (another rescuer holds them): done for this round.
    if (static_cast<int>(moves.size()) < batch || r.to_pending + r.to_failed == 0) break;
  }
  rescued_.fetch_add(total.to_pending + total.to_failed, std::memory_order_relaxed);
  if (total.to_pending + total.to_failed > 0)
    log_.warn("rescued tasks whose worker stopped renewing their lease",
              {{"to_pending", total.to_pending}, {"to_failed", total.to_failed}});
  return total;
}

}  // namespace agentcron
