// The worker (see worker.hpp). Shutdown order matters: stop claiming, let running tasks finish
// within the grace (leases still extended), cancel and release the rest, flush every outcome,
// then close the pool so that no connection and no running task of ours is left behind.
#include "agentcron/worker.hpp"

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <random>
#include <thread>

#include "agentcron/completer.hpp"
#include "agentcron/executor.hpp"
#include "agentcron/flow_control.hpp"
#include "agentcron/cron.hpp"
#include "agentcron/log.hpp"
#include "agentcron/migrator.hpp"
#include "agentcron/poller.hpp"
#include "agentcron/pool.hpp"
#include "agentcron/janitor.hpp"
#include "agentcron/lease_keeper.hpp"
#include "agentcron/rescuer.hpp"
#include "agentcron/retry.hpp"
#include "agentcron/systemd_notify.hpp"
#include "agentcron/pg_task_store.hpp"
#include "agentcron/schedule_syncer.hpp"

namespace agentcron {

// host:pid:suffix. In containers every worker may be pid 1 on a hostname shared by a fleet's
// replicas (or reused after a restart): the random suffix keeps locked_by unique, so that one
// worker's outcomes and releases never match another's tasks.
std::string default_worker_id() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "unknown");
  std::random_device rd;
  char suffix[9];
  std::snprintf(suffix, sizeof suffix, "%08x", static_cast<unsigned>(rd()));
  return std::string(host) + ":" + std::to_string(::getpid()) + ":" + suffix;
}

struct Worker::Services {
  SteadyClock clock;
  std::unique_ptr<ConnectionPool> pool;
  std::unique_ptr<PgTaskStore> store;
  std::unique_ptr<CircuitBreaker> breaker;
  // Before the services that report to it, so that it outlives them.
  std::unique_ptr<FlowControl> flow;
  std::unique_ptr<Completer> completer;
  std::unique_ptr<Poller> poller;
  std::unique_ptr<Executor> executor;
  std::unique_ptr<LeaseKeeper> lease_keeper;  // runs until every task is settled
  // The maintenance services (not in `once`) stop at once: the rescuer, the janitor, the schedule
  // sync, and the queue sampler of /metrics.
  std::unique_ptr<Rescuer> rescuer;
  std::unique_ptr<Janitor> janitor;
  std::unique_ptr<ScheduleSyncer> schedules;
  std::unique_ptr<Periodic> queue_sampler;
  template <class F>
  void for_maintenance(F f) {
    if (rescuer) f(*rescuer);
    if (janitor) f(*janitor);
    if (schedules) f(*schedules);
    if (queue_sampler) f(*queue_sampler);
  }
};

Worker::Worker(Config config, HandlerRegistry handlers, Logger& log, std::string worker_id)
    : config_(std::move(config)), handlers_(std::move(handlers)), log_(log), id_(std::move(worker_id)) {}

Worker::~Worker() {
  if (notifier_) {  // first: its rounds read s_ under mu_
    notifier_->request_stop();
    notifier_->wait();
  }
  if (s_) shutdown_services();
  if (metrics_) metrics_->stop();
}

void Worker::request_shutdown(int count) {
  shutdown_requests_ = std::max(shutdown_requests_.load(), count);
  stop_claiming_.request_stop();
  if (count >= 2) {
    log_.warn("second signal: skipping the shutdown grace");
    skip_grace_.request_stop();
  } else {
    log_.info("shutdown requested: no new tasks will be claimed", {{"grace_ms", static_cast<std::int64_t>(config_.shutdown.grace.count())}});
  }
  std::lock_guard lock(mu_);
  if (s_ && s_->poller) s_->poller->request_stop();
  cv_.notify_all();
}

// Only the reloadable fields of config_ change, and only under mu_: every other field is fixed
// from construction on and read freely; the reloadable ones are read under mu_ (see scheduler()).
void Worker::reload(const Config& next) {
  // Only once READY=1 went out: a reload while the database is awaited must not say it.
  bool announce = notifier_started_ && claimed_once();
  if (announce) notify_systemd("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(
                                                                              std::chrono::steady_clock::now().time_since_epoch()).count()));
  struct Reloaded {
    bool announce;
    ~Reloaded() {
      if (announce) notify_systemd("READY=1");
    }
  } reloaded{announce};
  std::lock_guard lock(mu_);
  Config merged = apply_reloadable(config_, next);
  if (auto level = parse_log_level(merged.log.level)) log_.set_level(*level);
  if (s_ && s_->poller)
    s_->poller->reconfigure(CronSchedule::parse(merged.scheduler.schedule), TimeZone::locate(merged.scheduler.timezone),
                            merged.scheduler.batch_size);
  if (s_ && s_->executor) s_->executor->set_concurrency(merged.scheduler.concurrency);
  // The file's schedules, synced on the syncer's thread (no database statement on this one).
  if (s_ && s_->schedules) s_->schedules->update(next);
  config_.scheduler = merged.scheduler;
  config_.log.level = merged.log.level;
  // Kept even before the services exist (a SIGHUP while the database is awaited): start_services
  // hands the syncer the file as it is when they do.
  config_.schedules = next.schedules;
  config_.schedules_declared = next.schedules_declared;
  log_.info("configuration reloaded", {{"schedule", merged.scheduler.schedule},
                                        {"batch_size", merged.scheduler.batch_size},
                                        {"concurrency", merged.scheduler.concurrency},
                                        {"log_level", merged.log.level}});
}

SchedulerConfig Worker::scheduler() const {
  std::lock_guard lock(mu_);
  return config_.scheduler;
}

ExitCode Worker::start_services(const WorkerRunOptions& opts, bool one_shot) {
  if (handlers_.empty()) log_.warn("no [handlers.<kind>] configured: this worker claims nothing");
  if (std::size_t n = handlers_.kinds().size(); n > kManyKinds)
    log_.warn(std::string("this worker claims many kinds; ") + kManyKindsAdvice, {{"kinds", static_cast<std::int64_t>(n)}});
  auto s = std::make_unique<Services>();
  Config c;
  {
    std::lock_guard lock(mu_);  // a SIGHUP may be changing the reloadable parts
    c = config_;
  }
  s->pool = std::make_unique<ConnectionPool>(PoolOptions::from_config(c, id_), log_);
  StoreOptions store_options = StoreOptions::from_config(c);
  store_options.telemetry = &telemetry_;
  s->store = std::make_unique<PgTaskStore>(*s->pool, store_options, log_);
  s->breaker = std::make_unique<CircuitBreaker>(c.retry.breaker_threshold, c.retry.breaker_cooldown, s->clock, &log_);
  if (auto stop = wait_for_database(*s, c, one_shot)) return *stop;
  if (auto stop = check_schema(*s, opts)) return *stop;
  // The schedules first, before the first claim could find their tasks.
  s->schedules = std::make_unique<ScheduleSyncer>(ScheduleSyncerOptions{}, c, *s->store, log_);
  s->schedules->run_once();
  if (one_shot) s->schedules.reset();  // `once` syncs at start only
  wire_task_flow(*s, c, one_shot);
  start_maintenance(*s, c, one_shot);
  std::lock_guard lock(mu_);
  s_ = std::move(s);
  // A SIGHUP while starting changed the schedules after the start's sync read them: sync again.
  if (s_->schedules && (config_.schedules != c.schedules || config_.schedules_declared != c.schedules_declared))
    s_->schedules->update(config_);
  return ExitCode::ok;
}

std::optional<ExitCode> Worker::wait_for_database(Services& s, const Config& c, bool one_shot) {
  // `run` waits for the database as long as it takes (one log line per attempt), `once` gives up
  // after a few attempts with exit 69. A shutdown meanwhile ends the wait: ok, nothing started.
  std::mt19937_64 rng{std::random_device{}()};
  Backoff connect_backoff{c.retry.base_delay, std::min<Millis>(c.retry.max_delay, std::chrono::seconds(30)), 2};
  for (int attempt = 1;; ++attempt) {
    try {
      s.store->now();
      if (attempt > 1) log_.info("database is reachable", {{"attempts", attempt}});
      return std::nullopt;
    } catch (const DatabaseError& e) {
      bool give_up = (one_shot && attempt >= 3) || e.error_class() == ErrorClass::permanent;
      Millis delay = connect_backoff.delay(attempt, rng);
      // systemd: starting takes longer than TimeoutStartSec would allow; say why.
      notify_systemd("EXTEND_TIMEOUT_USEC=" + std::to_string((delay + std::chrono::seconds(30)).count() * 1000) +
                     "\nSTATUS=waiting for the database (attempt " + std::to_string(attempt) + ")");
      log_.warn("database unavailable", {{"attempt", attempt},
                                         {"database", s.pool->options().redacted},
                                         {"sqlstate", e.sqlstate()},
                                         {"error", e.what()},
                                         {"retry_in_ms", give_up ? std::int64_t{-1} : static_cast<std::int64_t>(delay.count())}});
      if (give_up) {
        log_.error("giving up: database unavailable", {{"database", s.pool->options().redacted}});
        return ExitCode::unavailable;
      }
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, delay, [&] { return shutdown_requests_ > 0; })) return ExitCode::ok;
    }
  }
}

std::optional<ExitCode> Worker::check_schema(Services& s, const WorkerRunOptions& opts) {
  try {
    Migrator migrator(*s.store, log_);
    if (opts.migrate) migrator.migrate();
    std::vector<MigrationState> states = migrator.status();
    for (const auto& m : states) {
      if (m.changed) {  // first: a changed file is the worse news (and what `migrate` says)
        log_.error("refusing to run: an applied migration changed since it was applied",
                   {{"migration", migration_file_name(m.version, m.name)}});
        return ExitCode::data_error;
      }
    }
    for (const auto& m : states) {
      if (!m.applied) {
        log_.error("the database schema is not migrated; run `agentcron migrate` (or pass --migrate)",
                   {{"pending", migration_file_name(m.version, m.name)}});
        return ExitCode::unavailable;
      }
    }
  } catch (const MigrationChanged& e) {
    log_.error("refusing to run: an applied migration changed", {{"error", e.what()}});
    return ExitCode::data_error;
  } catch (const DatabaseError& e) {
    log_.error("checking migrations failed", {{"sqlstate", e.sqlstate()}, {"error", e.what()}});
    return ExitCode::unavailable;
  }
  return std::nullopt;
}

PollerOptions Worker::poller_options(const Config& c, bool one_shot) const {
  PollerOptions popts;
  popts.schedule = CronSchedule::parse(c.scheduler.schedule);
  popts.zone = TimeZone::locate(c.scheduler.timezone);
  popts.batch_size = c.scheduler.batch_size;
  popts.max_batches_per_tick = c.scheduler.max_batches_per_tick;
  // LISTEN needs a session of its own: not through pgbouncer, and not when it would take the
  // only connection there is.
  popts.listen = c.scheduler.listen && !c.database.pgbouncer && c.database.connection_limit >= 2 && !one_shot;
  if (c.scheduler.listen && !popts.listen && !one_shot)
    log_.info("LISTEN is off (pgbouncer mode or connection_limit 1): polling on the schedule only");
  popts.lease = c.scheduler.lease;
  popts.worker = id_;
  popts.kinds = handlers_.kinds();
  popts.max_payload_bytes = c.executor.max_payload_bytes;
  popts.telemetry = &telemetry_;
  std::mt19937_64 rng{std::random_device{}()};
  popts.tick_jitter = std::uniform_real_distribution<double>(0, 1)(rng);
  // Four beats per watchdog interval; the notifier looks every half interval.
  if (watchdog_ > Millis(0) && !one_shot) popts.heartbeat = std::max(Millis(1), watchdog_ / 4);
  return popts;
}

// The task flow: poller → executor → completer. How much the poller may claim, and when it
// claims early, is the flow control's to say: the executor and the completer report their counts
// to it. What returns to the executor is the written claims (it may forget those tasks) and the
// question whether an outcome that matched no row belongs to a claim it got again.
void Worker::wire_task_flow(Services& s, const Config& c, bool one_shot) {
  s.flow = std::make_unique<FlowControl>();
  CompleterOptions copts;
  copts.worker = id_;
  copts.task_retry = Backoff{c.retry.base_delay, c.retry.max_delay, c.retry.factor};
  copts.telemetry = &telemetry_;
  s.completer = std::make_unique<Completer>(copts, *s.store, log_, s.flow.get());
  Completer* completer = s.completer.get();
  ExecutorOptions eopts{c.scheduler.concurrency, c.executor.task_timeout, true, c.scheduler.lease,
                        std::max<Millis>(c.scheduler.lease / 10, handler_stop_time(c))};
  for (const auto& h : c.handlers)
    if (h.concurrency > 0) eopts.kind_limits[h.kind] = h.concurrency;
  s.executor = std::make_unique<Executor>(eopts, handlers_, [completer](FinishedRun&& r) { completer->add(std::move(r)); },
                                          log_, s.flow.get());
  s.poller = std::make_unique<Poller>(poller_options(c, one_shot), *s.store, *s.executor, *s.flow, *s.breaker, log_);
  Executor* executor = s.executor.get();
  completer->set_on_written([executor](const std::vector<ClaimRef>& written) { executor->forget(written); });
  completer->set_redelivered([executor](const Task& ran) { return executor->unrecorded(ran); });
  completer->start();  // once its callbacks are set
}

void Worker::start_maintenance(Services& s, const Config& c, bool one_shot) {
  s.lease_keeper = std::make_unique<LeaseKeeper>(LeaseKeeperOptions{id_, c.scheduler.lease}, *s.store, *s.executor, log_);
  if (!one_shot) {
    // Runs only when a scrape asks (run_now); the interval is a formality.
    PgTaskStore* store = s.store.get();
    s.queue_sampler = std::make_unique<Periodic>(
        "sampling the queue for /metrics", std::chrono::hours(24 * 365),
        [this, store](std::stop_token) { take_queue_sample(*store); }, log_);
    RescuerOptions ropts;
    ropts.interval = std::min<Millis>(std::chrono::seconds(30), std::max<Millis>(c.scheduler.lease / 2, Millis(500)));
    s.rescuer = std::make_unique<Rescuer>(ropts, *s.store, log_);
    JanitorOptions jopts;
    jopts.succeeded = c.retention.succeeded;
    jopts.failed = c.retention.failed;
    s.janitor = std::make_unique<Janitor>(jopts, *s.store, log_);
  }
  s.lease_keeper->start();
  s.for_maintenance([](auto& service) { service.start(); });
}

// The phases, and the terms of shutdown_budget() they answer to:
//   claim    the poller's claim in flight ends (no claim, and so no task, after it);
//   drain    the grace, then cancelled handlers stop — while the maintenance jobs' last
//            statements run out beside them;
//   flush    the completer's writer stops and what is left is written until the flush window
//            closes — with leases still renewed, so that no task is rescued meanwhile;
//   renewal  the lease renewal's last statement;
//   close    the pool says goodbye to the server.
CompleterStats Worker::shutdown_services() {
  Services& s = *s_;
  s.poller->request_stop();
  s.for_maintenance([](auto& service) { service.request_stop(); });
  notify_systemd("STOPPING=1");
  s.poller->wait();
  s.executor->close();  // no claim after this one, and no refused claim started later either
  int running = s.executor->busy();
  if (running > 0) {
    log_.info("waiting for running tasks", {{"running", running}, {"grace_ms", static_cast<std::int64_t>(config_.shutdown.grace.count())}});
    auto deadline = std::chrono::steady_clock::now() + config_.shutdown.grace;
    if (!s.executor->wait_idle(deadline, skip_grace_.get_token())) {
      int n = s.executor->cancel_all("released at shutdown: the grace ran out");
      log_.warn("grace over: stopping unfinished tasks; each goes back to pending once its handler has stopped",
                {{"count", n}});
    }
  }
  // Cancelled exec handlers need up to kill_after to stop their process groups; their tasks are
  // released only then, and their leases are extended until then.
  bool handlers_done = s.executor->wait_idle(std::chrono::steady_clock::now() + handler_stop_time(config_)) &&
                       s.executor->all_handlers_returned();
  s.for_maintenance([](auto& service) { service.wait(); });
  outcomes_lost_ = !s.completer->stop(flush_deadline());
  s.lease_keeper->request_stop();
  s.lease_keeper->wait();
  s.pool->close(std::chrono::steady_clock::now() + kPoolCloseTime);
  auto st = s.completer->stats();
  log_.info("stopped", {{"succeeded", static_cast<std::int64_t>(st.succeeded)},
                        {"failed", static_cast<std::int64_t>(st.failed)},
                        {"retried", static_cast<std::int64_t>(st.retried)},
                        {"released", static_cast<std::int64_t>(st.released)}});
  if (!handlers_done && s.executor->busy() > 0) {
    // A handler ignores its stop token: its task stays running (never released beside a live
    // handler) until its lease expires; every other outcome is written. The thread cannot be
    // joined, so leave now rather than hang.
    log_.warn("a handler did not return after cancellation; exiting without waiting for it (its task "
              "is rescued when its lease expires)");
    log_.flush();
    std::fflush(nullptr);
    // `once` never says 0 while an outcome of its batch is unwritten.
    ::_exit(to_int(one_shot_ ? ExitCode::unavailable : ExitCode::ok));
  }
  // Every handler has returned now: one that returned after the last write lost its outcome.
  st = s.completer->stats();
  if (st.after_stop > 0) outcomes_lost_ = true;
  std::lock_guard lock(mu_);
  final_stats_ = WorkerStats{s.poller->stats(), st};
  s_.reset();
  return st;
}

std::chrono::steady_clock::time_point Worker::flush_deadline() const {
  return std::chrono::steady_clock::now() + flush_window(config_);
}

namespace {

// One statement against a database that does not answer: a wait for a pooled connection, a
// connect attempt, the statement's own timeout, then the watchdog's cancel and, a grace later,
// its cut of the socket.
Millis statement_bound(const Config& c, Millis statement) {
  Millis grace = StoreOptions{}.client_grace;
  return c.database.pool_timeout + c.database.connect_timeout + statement + 2 * grace;
}

}  // namespace

Millis handler_stop_time(const Config& c) {
  Millis t = std::chrono::seconds(1);
  // An exec program may ignore its stop for kill_after; an http request in its connect or TLS
  // handshake is not interruptible either, so every handler's kill_after (5 s unless set) counts.
  for (const auto& h : c.handlers) t = std::max(t, h.kill_after + std::chrono::seconds(1));
  return t;
}

Millis flush_window(const Config& c) { return std::max<Millis>(c.timeouts.update * 2, std::chrono::seconds(5)); }

Millis shutdown_budget(const Config& c) {
  Millis update = statement_bound(c, c.timeouts.update);
  Millis write = 2 * update;  // one write of the completer: its completions, then its releases
  Millis claim = statement_bound(c, c.timeouts.claim);
  Millis drain = std::max(c.shutdown.grace + handler_stop_time(c), update);  // maintenance overlaps the grace
  // The writer's write in flight, overlapping the flush window, then the last write started
  // just before the window closed.
  Millis flush = std::max(write, flush_window(c)) + write;
  return claim + drain + flush + update + kPoolCloseTime;  // + the renewal's last statement, the pool's goodbye
}

WorkerStats Worker::stats() const {
  std::lock_guard lock(mu_);
  if (s_) return WorkerStats{s_->poller->stats(), s_->completer->stats()};
  return final_stats_;
}

MetricsSnapshot Worker::metrics() const {
  MetricsSnapshot m;
  {
    std::lock_guard queue_lock(queue_mu_);  // before mu_, as sample_queue() takes them
    if (queue_sampled_ != std::chrono::steady_clock::time_point{}) {
      m.queue = queue_;
      m.queue_sample_age_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - queue_sampled_).count();
    }
  }
  std::lock_guard lock(mu_);
  m.worker = id_;
  m.connection_limit = config_.database.connection_limit;
  m.concurrency = config_.scheduler.concurrency;
  if (!s_) {
    m.poller = final_stats_.poller;
    m.completer = final_stats_.completer;
    return m;
  }
  m.poller = s_->poller->stats();
  m.completer = s_->completer->stats();
  m.pool = s_->pool->stats();
  m.running = s_->executor->busy();
  m.leases_lost = s_->executor->leases_lost();
  m.outcomes_unwritten = s_->completer->pending();
  auto last = s_->poller->last_tick();
  if (last != std::chrono::steady_clock::time_point{})
    m.seconds_since_tick = std::chrono::duration<double>(std::chrono::steady_clock::now() - last).count();
  CircuitBreaker::State breaker = s_->breaker->state();
  m.circuit_open = breaker == CircuitBreaker::State::open;
  m.circuit_state = breaker == CircuitBreaker::State::open        ? "open"
                    : breaker == CircuitBreaker::State::half_open ? "half_open"
                                                                  : "closed";
  m.listening = s_->poller->listening();
  m.cancelled = s_->executor->cancelled();
  if (s_->rescuer) m.rescued = s_->rescuer->rescued();
  m.telemetry = &telemetry_;
  return m;
}

// The queue gauges come from the database: at most one sample (kStatus, bounded whatever the
// table's size) every kQueueSampleEvery, taken on the sampler's thread when /metrics is scraped —
// nothing when nobody looks, and a scrape never waits for the database. A failed sample keeps the
// last one (its age tells).
void Worker::sample_queue() {
  std::lock_guard queue_lock(queue_mu_);
  auto now = std::chrono::steady_clock::now();
  if (queue_tried_ != std::chrono::steady_clock::time_point{} && now - queue_tried_ < kQueueSampleEvery) return;
  queue_tried_ = now;
  std::lock_guard lock(mu_);
  if (s_ && s_->queue_sampler) s_->queue_sampler->run_now();
}

void Worker::take_queue_sample(PgTaskStore& store) {
  QueueStatus q;
  try {
    q = store.status();
  } catch (const DatabaseError& e) {
    log_.debug("sampling the queue for /metrics failed", {{"sqlstate", e.sqlstate()}, {"error", e.what()}});
    return;
  }
  std::lock_guard queue_lock(queue_mu_);
  queue_ = std::move(q);
  queue_sampled_ = std::chrono::steady_clock::now();
}

Readiness Worker::readiness() const {
  std::lock_guard lock(mu_);
  if (shutdown_requests_ > 0) return {false, "shutting down"};
  if (!s_) return {false, "starting: waiting for the database"};
  if (s_->breaker->state() == CircuitBreaker::State::open)
    return {false, "the database keeps failing: claims are paused (circuit breaker open)"};
  if (s_->breaker->state() == CircuitBreaker::State::half_open)
    return {false, "the database kept failing: a probe claim is testing it (circuit breaker half-open)"};
  auto last = s_->poller->last_tick();
  if (last == std::chrono::steady_clock::time_point{}) return {false, "starting: no claim round has completed yet"};
  // The round after the last completed one is due at the schedule's next fire time after it; it
  // may take up to the claim's statement timeout, and a few seconds more.
  auto now = std::chrono::system_clock::now();
  auto last_wall = now - std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::steady_clock::now() - last);
  auto due = CronSchedule::parse(config_.scheduler.schedule).next(last_wall, TimeZone::locate(config_.scheduler.timezone));
  auto slack = config_.timeouts.claim + std::chrono::seconds(5);
  if (now > due + slack) {
    auto ago = std::chrono::duration_cast<std::chrono::seconds>(now - last_wall).count();
    return {false, "no claim round has completed for " + std::to_string(ago) +
                       " s: the database is unreachable or too slow (scheduler.schedule \"" + config_.scheduler.schedule + "\")"};
  }
  return {true, ""};
}

int Worker::metrics_port() const {
  std::lock_guard lock(mu_);
  return metrics_ ? metrics_->port() : 0;
}

ExitCode Worker::run(const WorkerRunOptions& opts) {
  // First: /healthz answers while the worker waits for its database, and /readyz says so.
  if (!config_.metrics.listen.empty()) {
    auto server = std::make_unique<MetricsServer>(
        MetricsServer::Sources{[this] {
                                 sample_queue();
                                 return render_metrics(metrics());
                               },
                               [this] { return readiness(); }},
        log_);
    if (server->start(config_.metrics.listen)) {
      std::lock_guard lock(mu_);
      metrics_ = std::move(server);
    }
  }
  start_systemd_notifier();
  ExitCode rc = start_services(opts, false);
  if (rc != ExitCode::ok || !s_) {
    if (notifier_) notifier_->request_stop();
    return rc;
  }
  SchedulerConfig sc = scheduler();
  log_.info("worker started", {{"worker", id_},
                               {"schedule", sc.schedule},
                               {"concurrency", sc.concurrency},
                               {"batch_size", sc.batch_size},
                               {"connection_limit", config_.database.connection_limit}});
  s_->poller->start();
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return shutdown_requests_ > 0; });
  }
  if (notifier_) {  // no watchdog pings while stopping (systemd stops the watchdog there too)
    notifier_->request_stop();
    notifier_->wait();
  }
  shutdown_services();  // /readyz says "shutting down" meanwhile
  if (metrics_) metrics_->stop();
  return ExitCode::ok;
}

void Worker::start_systemd_notifier() {
  if (!systemd_notify_enabled()) return;
  watchdog_ = systemd_watchdog_interval();
  // One claim against a database that does not answer may take this long without a heartbeat.
  Millis claim = statement_bound(config_, config_.timeouts.claim);
  if (watchdog_ > Millis(0) && watchdog_ <= claim)
    log_.warn("WatchdogSec is not above the longest claim: a slow database would get the service restarted",
              {{"watchdog_ms", static_cast<std::int64_t>(watchdog_.count())},
               {"longest_claim_ms", static_cast<std::int64_t>(claim.count())}});
  SystemdNotifierOptions o;
  o.watchdog = watchdog_;
  SystemdNotifierSources sources{[this] { return claimed_once(); },
                                 [this]() -> std::uint64_t {
                                   std::lock_guard lock(mu_);
                                   return s_ ? s_->poller->heartbeats() : 0;
                                 },
                                 [this] { return status_line(); }};
  notifier_ = std::make_unique<SystemdNotifier>(o, std::move(sources), log_);
  notifier_->start();
  notifier_started_ = true;  // reload() (the signal thread) reads this, never notifier_ itself
}

bool Worker::claimed_once() const {
  std::lock_guard lock(mu_);
  // Never once shutdown began: no READY=1 after STOPPING=1.
  return shutdown_requests_ == 0 && s_ && s_->poller->last_tick() != std::chrono::steady_clock::time_point{};
}

std::string Worker::status_line() const {
  WorkerStats st = stats();
  int running = 0;
  {
    std::lock_guard lock(mu_);
    if (s_) running = s_->executor->busy();
  }
  return "running " + std::to_string(running) + ", claimed " + std::to_string(st.poller.claimed) + ", succeeded " +
         std::to_string(st.completer.succeeded) + ", retried " + std::to_string(st.completer.retried) + ", failed " +
         std::to_string(st.completer.failed);
}

ExitCode Worker::once(const WorkerRunOptions& opts) {
  one_shot_ = true;
  ExitCode rc = start_services(opts, true);
  if (rc != ExitCode::ok || !s_) return rc;
  Services& s = *s_;
  const SchedulerConfig sc = scheduler();
  int limit = opts.max_tasks > 0 ? opts.max_tasks : (opts.drain ? INT_MAX : sc.batch_size);
  int claimed = 0;
  bool failed_db = false;
  try {
    if (opts.drain) {
      // The first signal ends every wait there at once: no claim after it.
      int want_free = std::max(1, std::min(sc.batch_size, sc.concurrency) / 2);
      claimed = drain(*s.poller, *s.executor, limit, want_free, stop_claiming_.get_token(),
                      [&] { s.completer->flush(flush_deadline()); });
    } else {
      claimed = s.poller->claim_batch(std::min(limit, sc.batch_size));
    }
  } catch (const DatabaseError& e) {
    log_.error("claiming failed", {{"sqlstate", e.sqlstate()}, {"error", e.what()}});
    failed_db = true;
  }
  // Run what was claimed to the end, unless a signal asks to stop (then the grace applies).
  s.executor->wait_idle(std::chrono::steady_clock::time_point::max(), stop_claiming_.get_token());
  log_.info("once: claimed tasks", {{"claimed", claimed}});
  CompleterStats st = shutdown_services();
  // Never 0 when the batch's outcomes did not all reach the database: those tasks will run again
  // after their leases expire, and a script must not take the batch as done.
  if (failed_db || outcomes_lost_) {
    if (outcomes_lost_) log_.error("once: task outcomes could not be written; exiting 69");
    return ExitCode::unavailable;
  }
  return st.failed + st.retried > 0 ? ExitCode::task_failed : ExitCode::ok;
}

}  // namespace agentcron
