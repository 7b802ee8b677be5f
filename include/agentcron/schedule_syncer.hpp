// ScheduleSyncer: keeps agentcron.schedules in step with the configuration's [schedules.<name>]
// tables — at start (run_once, on the caller's thread) and at once after update() (SIGHUP, on its
// own thread). Only a file that declares [schedules] (even an empty table) syncs: a worker whose
// file has none leaves the table alone, so workers split by kind, or a one-off `once` with a
// local file, change nothing. In between, every `interval`, it maintains the database's own
// schedules (maintain_schedules): a carrying task that was cancelled or failed is recreated, one
// whose schedule changed while it ran is moved — without touching the schedules themselves, so
// workers with different files do not undo each other every minute.
#pragma once
#include <mutex>
#include <vector>

#include "agentcron/admin.hpp"
#include "agentcron/config.hpp"
#include "agentcron/periodic.hpp"

namespace agentcron {

class Logger;
class PgTaskStore;

struct ScheduleSyncerOptions {
  Millis interval = std::chrono::minutes(1);
  void validate() const;
};

class ScheduleSyncer {
 public:
  ScheduleSyncer(ScheduleSyncerOptions options, const Config& config, PgTaskStore& store, Logger& log);
  // One sync, its changes logged; a failure is logged too (the schedules stay as they were, and
  // the next tick syncs the file again).
  // Returns what it did, nullopt when the file declares no schedules or the sync failed.
  std::optional<ScheduleSync> run_once();
  // The periodic round: the file's sync when update() asked for one, else maintain_schedules.
  std::optional<ScheduleSync> tick();
  // SIGHUP: the new file's schedules, synced now on the syncer's thread.
  void update(const Config& config);
  void start() { periodic_.start(); }
  void request_stop() { periodic_.request_stop(); }
  void wait() { periodic_.wait(); }

 private:
  ScheduleSyncerOptions options_;
  PgTaskStore& store_;
  Logger& log_;
  std::mutex mu_;  // schedules_ and declared_
  std::vector<ScheduleConfig> schedules_;
  bool declared_ = false;
  bool file_pending_ = false;  // update() asked for a sync of the file, or the last one failed
  void failed();
  Periodic periodic_;  // last: joined before the members its runs use go away
};

}  // namespace agentcron
