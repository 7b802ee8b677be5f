// Poller: on each tick of the schedule (and on NOTIFY agentcron_due) claims due tasks in batches
// of at most batch_size, never more than the flow control's room (free slots less unwritten
// outcomes), until a batch comes back short or max_batches_per_tick is reached. Missed ticks
// coalesce into one; the flow control wakes it early when room frees up while more is due.
#pragma once
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agentcron/cron.hpp"
#include "agentcron/retry.hpp"
#include "agentcron/task_store.hpp"

namespace agentcron {

class Executor;
class FlowControl;
class Logger;
struct Telemetry;
class PollerListener;

struct PollerOptions {
  CronSchedule schedule = CronSchedule::parse("*/5 * * * * *");
  TimeZone zone = TimeZone::utc();
  int batch_size = 50;
  int max_batches_per_tick = 20;
  bool listen = true;
  Millis lease = std::chrono::seconds(60);
  std::string worker;
  std::vector<std::string> kinds;
  int max_payload_bytes = 1 << 20;  // larger payloads are not fetched (ClaimParams)
  double tick_jitter = 0;           // 0 ≤ j < 1: this worker's place within a tick's spread (tick_after)
  Backoff reconnect{std::chrono::seconds(1), std::chrono::seconds(30), 2};  // of the LISTEN connection
  // When set, the poller's thread wakes at least this often between ticks and counts a
  // heartbeat (heartbeats()): the systemd watchdog's proof that it is not stuck. 0: no cap.
  Millis heartbeat{0};
  // When set, each claimed task's pickup lag (claim − scheduled time) is recorded there.
  Telemetry* telemetry = nullptr;
  void validate() const;
};

struct TickResult {
  int claimed = 0;
  int batches = 0;
  bool more_due = false;  // the last batch came back full: more is probably due
};

struct PollerStats {
  std::uint64_t ticks = 0;
  std::uint64_t claims = 0;
  std::uint64_t claimed = 0;
  std::uint64_t redelivered = 0;  // claimed again while this worker still ran them (refused)
  int largest_claim = 0;
  std::uint64_t notifications = 0;
  std::uint64_t errors = 0;
};

class Poller {
 public:
  // `flow` must outlive the poller: the poller reports "more due" to it and is woken by it.
  Poller(PollerOptions options, TaskStore& store, Executor& executor, FlowControl& flow, CircuitBreaker& breaker,
         Logger& log);
  ~Poller();
  // When the round after `now` starts: the schedule's next fire time, later by `jitter` of the
  // smaller of one second and a tenth of the gap to the fire after it — so that a fleet on one
  // schedule spreads its claims instead of sending them all in the same millisecond.
  static CronSchedule::Time tick_after(const CronSchedule& schedule, const TimeZone& zone, CronSchedule::Time now,
                                       double jitter);
  Poller(const Poller&) = delete;
  Poller& operator=(const Poller&) = delete;

  // One tick: claims as described above, at most `max_tasks` in all. DatabaseErrors propagate.
  TickResult run_once(int max_tasks = INT_MAX);

  // `once` without --drain: one claim of up to `n` tasks, handed to the executor whatever its
  // free slots (it queues them). Returns how many were claimed. DatabaseErrors propagate.
  int claim_batch(int n);

  void start();
  void request_stop();  // stops claiming; idempotent, safe before start
  void wait();
  // SIGHUP: the reloadable settings.
  void reconfigure(const CronSchedule& schedule, const TimeZone& zone, int batch_size);

  PollerStats stats() const;
  // steady_clock time of the last completed tick (readiness): one that sent a claim, or one with
  // nothing to claim while the database took the store's writes (TaskStore::answering).
  std::chrono::steady_clock::time_point last_tick() const;
  bool listening() const { return listening_; }
  // Grows each time the poller's thread goes round its loop (see PollerOptions::heartbeat).
  std::uint64_t heartbeats() const { return heartbeats_.load(std::memory_order_relaxed); }

 private:
  void loop(std::stop_token st);
  // Waits for the next tick, a notification (true), or a wake-up.
  bool wait_for_tick(const std::stop_token& st, PollerListener& listener, CronSchedule::Time next_tick);
  void wake();
  void tick_safely();
  ClaimParams claim_params() const;
  struct Claimed {
    int got = 0;       // rows the claim returned
    int accepted = 0;  // of them, handed to the executor (not already running here)
    bool limited = false;  // a kind's concurrency limit held rows back: more may be due
    bool sent = false;     // the claim statement went to the database (and succeeded)
  };
  // One claim statement of up to `n` tasks (through the breaker), handed to the executor.
  Claimed claim(ClaimParams& p, int n);

  PollerOptions options_;
  TaskStore& store_;
  Executor& executor_;
  FlowControl& flow_;
  CircuitBreaker& breaker_;
  Logger& log_;
  mutable std::mutex mu_;  // options_ (reconfigure) and stats_
  PollerStats stats_;
  std::atomic<bool> listening_{false};
  std::atomic<std::int64_t> last_tick_ns_{0};
  std::atomic<std::uint64_t> heartbeats_{0};
  int wake_fd_ = -1;  // eventfd: wake() and request_stop() end a wait early
  std::jthread thread_;
};

// `once --drain`: claims through `poller` until `limit` tasks were claimed, a claim comes back
// empty with nothing left running, or `stop` is requested. Between claims it waits for
// `want_free` slots; when there is no room at all, for one, then `make_room()` (write the
// outcomes that take the room). Returns how many tasks were claimed. DatabaseErrors propagate.
int drain(Poller& poller, Executor& executor, int limit, int want_free, const std::stop_token& stop,
          const std::function<void()>& make_room);

}  // namespace agentcron
