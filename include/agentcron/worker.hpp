// Worker: builds the services of design.md's flow from a Config (pool, task store, executor,
// completer, poller, rescuer, janitor, lease keeper), runs them, and shuts them down in order.
#pragma once
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>

#include "agentcron/completer.hpp"
#include "agentcron/config.hpp"
#include "agentcron/exit_code.hpp"
#include "agentcron/handlers/handler.hpp"
#include "agentcron/metrics.hpp"
#include "agentcron/telemetry.hpp"
#include "agentcron/poller.hpp"

namespace agentcron {

class PgTaskStore;

class Logger;
class SystemdNotifier;

// hostname:pid — unique among the workers on one database, readable in pg_stat_activity.
std::string default_worker_id();

// How long a shutdown may take at most, with the database gone at the worst moment: the claim in
// flight, the drain (shutdown.grace + the handlers' stop time), the flush (the writer's write in
// flight or the flush window, whichever is longer, then one more write — a write being a
// completion statement and a release statement), the lease renewal's last statement, and the
// pool's close.
// One statement against a silent database is pool_timeout + connect_timeout + its timeout + two
// client graces (5 s: the watchdog's cancel, then its cut). docs/operations.md has the formula;
// packaging/agentcron.service's TimeoutStopSec is this for the defaults, with a margin.
Millis shutdown_budget(const Config& c);
Millis handler_stop_time(const Config& c);  // the longest exec kill_after, and a second
Millis flush_window(const Config& c);       // max(2 × timeouts.update, 5 s)
inline constexpr Millis kPoolCloseTime = std::chrono::seconds(5);

struct WorkerRunOptions {
  bool migrate = false;     // apply pending migrations first
  bool drain = false;       // once: until nothing is due
  int max_tasks = 0;        // once: at most this many (0: one batch, or no limit with drain)
};

struct WorkerStats {
  PollerStats poller;
  CompleterStats completer;
};

class Worker {
 public:
  Worker(Config config, HandlerRegistry handlers, Logger& log, std::string worker_id = default_worker_id());
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // `agentcron run`: until shutdown. ok, or unavailable when the database cannot be used (a
  // missing schema, a permanent error).
  ExitCode run(const WorkerRunOptions& opts = {});
  // `agentcron once`: ok (all succeeded or nothing due), task_failed, or unavailable (the
  // database is unreachable, or outcomes could not be written).
  ExitCode once(const WorkerRunOptions& opts);

  // From the signal thread: 1 = drain within the grace, 2 or more = skip the grace.
  void request_shutdown(int count);
  // SIGHUP: applies the reloadable settings of `next` (log level, schedule, batch size, concurrency).
  void reload(const Config& next);

  const std::string& id() const { return id_; }
  // Live while running; after shutdown, the final counts.
  WorkerStats stats() const;
  // What /metrics and /readyz report (see metrics.hpp). Thread-safe, at any time.
  MetricsSnapshot metrics() const;
  Readiness readiness() const;
  // The port /metrics is served on; 0 when metrics.listen is off or could not be bound.
  int metrics_port() const;

 private:
  struct Services;
  // ok once the services run; otherwise why they could not start (or ok with no services, when
  // shutdown was requested while waiting for the database).
  ExitCode start_services(const WorkerRunOptions& opts, bool one_shot);
  // The steps of start_services(); each of the first two returns why the worker does not start.
  std::optional<ExitCode> wait_for_database(Services& s, const Config& c, bool one_shot);
  std::optional<ExitCode> check_schema(Services& s, const WorkerRunOptions& opts);
  PollerOptions poller_options(const Config& c, bool one_shot) const;
  void wire_task_flow(Services& s, const Config& c, bool one_shot);
  void start_maintenance(Services& s, const Config& c, bool one_shot);
  CompleterStats shutdown_services();  // returns the outcome counts
  SchedulerConfig scheduler() const;   // the reloadable section as it is now
  // How long writing the remaining outcomes may take: a few retries of an update.
  std::chrono::steady_clock::time_point flush_deadline() const;

  Config config_;
  HandlerRegistry handlers_;
  Logger& log_;
  std::string id_;
  std::unique_ptr<Services> s_;
  std::unique_ptr<MetricsServer> metrics_;
  // systemd: READY=1 after the first claim, the watchdog pings while the poller goes round, STATUS=.
  void start_systemd_notifier();
  bool claimed_once() const;  // a claim round reached the database (mu_ not held)
  std::string status_line() const;
  Millis watchdog_{0};  // WatchdogSec, when systemd set one (run only)
  std::unique_ptr<SystemdNotifier> notifier_;
  std::atomic<bool> notifier_started_{false};
  WorkerStats final_stats_;
  mutable std::mutex mu_;
  mutable Telemetry telemetry_;  // histograms and error counters of the services, for /metrics
  // The queue gauges' last sample, under queue_mu_ (taken before mu_, never after).
  static constexpr std::chrono::seconds kQueueSampleEvery{5};
  void sample_queue();                      // a scrape: asks the sampler when the sample is stale
  void take_queue_sample(PgTaskStore& store);  // the sampler's thread
  mutable std::mutex queue_mu_;
  QueueStatus queue_;
  std::chrono::steady_clock::time_point queue_sampled_{};
  std::chrono::steady_clock::time_point queue_tried_{};
  std::condition_variable cv_;
  std::atomic<int> shutdown_requests_{0};
  std::stop_source skip_grace_;     // the second signal
  std::stop_source stop_claiming_;  // the first signal: ends `once --drain`'s waits at once
  bool one_shot_ = false;           // once(): a shutdown that leaves outcomes unwritten exits 69
  bool outcomes_lost_ = false;      // shutdown left outcomes unwritten (the database was gone)
};

}  // namespace agentcron
