// The schedule sync service (see schedule_syncer.hpp).
#include "agentcron/schedule_syncer.hpp"

#include <utility>

#include "agentcron/log.hpp"
#include "agentcron/retry.hpp"
#include "agentcron/service.hpp"

namespace agentcron {

void ScheduleSyncerOptions::validate() const {
  require_option(interval > Millis(0), "schedule syncer", "interval must be > 0");
}

ScheduleSyncer::ScheduleSyncer(ScheduleSyncerOptions options, const Config& config, PgTaskStore& store, Logger& log)
    : options_(validated(std::move(options))),
      store_(store),
      log_(log),
      schedules_(config.schedules),
      declared_(config.schedules_declared),
      periodic_("syncing the schedules", options_.interval, [this](std::stop_token) { tick(); }, log) {}

void ScheduleSyncer::update(const Config& config) {
  {
    std::lock_guard lock(mu_);
    schedules_ = config.schedules;
    declared_ = config.schedules_declared;
    file_pending_ = true;
  }
  periodic_.run_now();
}

std::optional<ScheduleSync> ScheduleSyncer::tick() {
  bool file;
  {
    std::lock_guard lock(mu_);
    if (!declared_) return std::nullopt;
    file = std::exchange(file_pending_, false);
  }
  if (file) return run_once();
  try {
    ScheduleSync r = maintain_schedules(store_);
    if (!r.started.empty() || r.tasks_cancelled > 0 || r.tasks_updated > 0)
      log_.info("schedules maintained", {{"started", static_cast<std::int64_t>(r.started.size())},
                                         {"tasks_updated", r.tasks_updated},
                                         {"tasks_cancelled", r.tasks_cancelled}});
    return r;
  } catch (const DatabaseError& e) {
    log_.warn("maintaining the schedules failed; will try again", {{"sqlstate", e.sqlstate()}, {"error", e.what()}});
  }
  return std::nullopt;
}

// The file's sync did not happen (the database down at start, the schedules' lock held by many
// workers starting at once): the next round syncs the file again, not only maintains.
void ScheduleSyncer::failed() {
  std::lock_guard lock(mu_);
  file_pending_ = true;
}

std::optional<ScheduleSync> ScheduleSyncer::run_once() {
  std::vector<ScheduleConfig> schedules;
  {
    std::lock_guard lock(mu_);
    if (!declared_) return std::nullopt;
    schedules = schedules_;
  }
  auto names = [](const std::vector<std::string>& v) {
    std::string out;
    for (const auto& n : v) out += (out.empty() ? "" : ", ") + n;
    return out;
  };
  try {
    ScheduleSync r = sync_schedules(store_, schedules);
    for (const auto& name : r.disabled)
      log_.warn("schedule is no longer in the configuration: disabled, not deleted (its history is kept)",
                {{"schedule", name}});
    if (!r.created.empty() || !r.changed.empty() || !r.started.empty() || r.tasks_cancelled > 0 || r.tasks_updated > 0)
      log_.info("schedules synced", {{"created", names(r.created)},
                                     {"changed", names(r.changed)},
                                     {"started", names(r.started)},
                                     {"tasks_updated", r.tasks_updated},
                                     {"tasks_cancelled", r.tasks_cancelled}});
    return r;
  } catch (const DatabaseError& e) {
    // The database unreachable, or the schedules' lock held: the next round syncs again. A
    // refusal (a missing privilege, a value) would refuse every round, and the rounds' own
    // maintenance of the schedules in the database is worth keeping meanwhile.
    if (e.is_transient()) failed();
    log_.error(e.is_transient()
                   ? "syncing the schedules failed; they stay as they were until the next round tries again"
                   : "syncing the schedules failed; they stay as they were until the file is synced again (SIGHUP)",
               {{"sqlstate", e.sqlstate()}, {"error", e.what()}});
  } catch (const std::exception& e) {
    log_.error("syncing the schedules failed; they stay as they were until the file is synced again (SIGHUP)",
               {{"error", e.what()}});
  }
  return std::nullopt;
}

}  // namespace agentcron
