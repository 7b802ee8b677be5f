// The poller (see poller.hpp).
#include "agentcron/poller.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <random>

#include "agentcron/executor.hpp"
#include "agentcron/flow_control.hpp"
#include "agentcron/log.hpp"
#include "agentcron/telemetry.hpp"
#include "agentcron/service.hpp"
#include "agentcron/task_store.hpp"

namespace agentcron {

void PollerOptions::validate() const {
  require_option(batch_size > 0 && max_batches_per_tick > 0, "poller", "batch_size and max_batches_per_tick must be > 0");
  require_option(lease > Millis(0), "poller", "lease must be > 0");
  require_option(max_payload_bytes > 0, "poller", "max_payload_bytes must be > 0");
  require_option(tick_jitter >= 0 && tick_jitter < 1, "poller", "tick_jitter must be in [0, 1)");
  require_option(heartbeat >= Millis(0), "poller", "heartbeat must be >= 0");
}

Poller::Poller(PollerOptions options, TaskStore& store, Executor& executor, FlowControl& flow, CircuitBreaker& breaker,
               Logger& log)
    : options_(validated(std::move(options))), store_(store), executor_(executor), flow_(flow), breaker_(breaker), log_(log) {
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  flow_.set_batch_size(options_.batch_size);
  flow_.set_wake([this] { wake(); });
}

Poller::~Poller() {
  flow_.set_wake(nullptr);  // returns once no wake-up is under way
  request_stop();
  wait();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

ClaimParams Poller::claim_params() const {
  std::lock_guard lock(mu_);
  ClaimParams p;
  p.kinds = options_.kinds;
  p.worker = options_.worker;
  p.lease = options_.lease;
  p.max_payload_bytes = options_.max_payload_bytes;
  return p;
}

Poller::Claimed Poller::claim(ClaimParams& p, int n) {
  heartbeats_.fetch_add(1, std::memory_order_relaxed);  // a round of many claims is progress too
  p.limit = n;
  // Kinds at their concurrency limit are not claimed; the others at most up to it.
  std::vector<std::string> full;
  p.kind_room.clear();
  for (auto& [kind, room] : executor_.kind_room()) {
    if (room <= 0) full.push_back(kind);
    else p.kind_room.emplace_back(kind, room);
  }
  // A limited kind's slot freed while this claim runs must not be undone by its "nothing more".
  std::uint64_t freed = flow_.freed_generation();
  ClaimParams q = p;  // p keeps every kind for the next claim of the round
  std::erase_if(q.kinds, [&](const std::string& k) { return std::find(full.begin(), full.end(), k) != full.end(); });
  if (q.kinds.empty()) {  // every kind at its limit: a slot of one frees first, and wakes the poller
    flow_.set_held_back(std::move(full));
    return {0, 0, true, false};
  }
  // Every kind of this claim limited: it takes at most their free slots, and the rows it would lock
  // beyond them (up to the whole batch) only make other workers' claims skip them and come back
  // short. So it asks for no more than those slots.
  int room_of_kinds = 0;
  bool all_limited = std::all_of(q.kinds.begin(), q.kinds.end(), [&](const std::string& k) {
    auto it = std::find_if(p.kind_room.begin(), p.kind_room.end(), [&](const auto& kr) { return kr.first == k; });
    if (it == p.kind_room.end()) return false;
    room_of_kinds += it->second;
    return true;
  });
  if (all_limited) q.limit = std::min(q.limit, room_of_kinds);
  if (!breaker_.allow()) throw BreakerOpen("database circuit breaker is open; claim skipped");
  std::vector<Task> tasks;
  try {
    tasks = store_.claim_due(q);
    breaker_.record_success();
  } catch (const DatabaseError& e) {
    // Every failed claim counts: the claim is one fixed statement, so a permanent error (a
    // read-only server, a missing table) is the database refusing, and hammering it helps nobody.
    breaker_.record_failure(e.sqlstate());
    throw;
  } catch (const std::exception&) {
    breaker_.record_failure();  // never leave a probe unanswered
    throw;
  }
  for (const auto& t : tasks) {
    log_.debug("claimed task", {{"task_id", t.id}, {"kind", t.kind}, {"attempt", t.attempt}});
    if (options_.telemetry)
      options_.telemetry->pickup_lag.observe(prom_label("kind", t.kind),
                                             std::max(0.0, std::chrono::duration<double>(t.claimed_at - t.scheduled_for).count()));
  }
  int got = static_cast<int>(tasks.size());
  // A limited kind this claim filled up may have held back rows of other kinds behind it: a
  // claim without it is worth sending.
  bool limited = false;
  for (const auto& [kind, room] : p.kind_room) {
    int taken = static_cast<int>(std::count_if(tasks.begin(), tasks.end(), [&](const Task& t) { return t.kind == kind; }));
    if (taken >= room) {
      limited = true;
      full.push_back(kind);
    }
  }
  flow_.set_held_back(std::move(full));
  // Before the tasks can finish (a quick handler may, before submit() returns): a slot freed by
  // this batch must see that more is due, or its wake-up is lost until the next tick.
  flow_.set_more_due(got == n || (limited && got > 0) || flow_.freed_generation() != freed);
  // Counted as the executor accepts them: a task it already runs is not claimed twice.
  int accepted = executor_.submit(std::move(tasks));
  std::lock_guard lock(mu_);
  ++stats_.claims;
  stats_.claimed += static_cast<std::uint64_t>(accepted);
  stats_.redelivered += static_cast<std::uint64_t>(got - accepted);
  stats_.largest_claim = std::max(stats_.largest_claim, got);
  return {got, accepted, limited && got > 0, true};
}

TickResult Poller::run_once(int max_tasks) {
  TickResult r;
  ClaimParams p = claim_params();
  int batch_size, max_batches;
  bool reached = false;
  {
    std::lock_guard lock(mu_);
    batch_size = options_.batch_size;
    max_batches = options_.max_batches_per_tick;
  }
  while (r.batches < max_batches) {
    int n = std::min({batch_size, flow_.room(), max_tasks - r.claimed});
    // No room: no claim, and "more due" stays as the last claim left it.
    if (n <= 0) break;
    auto [got, accepted, limited, sent] = claim(p, n);
    reached = reached || sent;
    ++r.batches;
    r.more_due = got == n || limited;
    r.claimed += accepted;
    if (got < n && !limited) break;
    if (got == 0) break;  // every kind at its limit
  }
  // A round that sent no claim (no room, every kind at its limit) proves nothing about the
  // database: it counts as completed only while the database takes the worker's writes
  // (TaskStore::answering). During an outage the outcomes that cannot be written fill the room, and
  // readiness must not stay green on rounds that never leave the process.
  if (!reached && !store_.answering()) return r;
  last_tick_ns_ = std::chrono::steady_clock::now().time_since_epoch().count();
  return r;
}

CronSchedule::Time Poller::tick_after(const CronSchedule& schedule, const TimeZone& zone, CronSchedule::Time now,
                                      double jitter) {
  CronSchedule::Time fire = schedule.next(now, zone);
  if (jitter <= 0) return fire;
  auto gap = schedule.next(fire, zone) - fire;
  auto spread = std::min<CronSchedule::Time::duration>(std::chrono::seconds(1), gap / 10);
  return fire + std::chrono::duration_cast<CronSchedule::Time::duration>(spread * std::min(jitter, 0.999));
}

void Poller::tick_safely() {
  {
    std::lock_guard lock(mu_);
    ++stats_.ticks;
  }
  try {
    run_once();  // each claim tells the flow control whether more is due
  } catch (const DatabaseError& e) {
    flow_.set_more_due(false);
    std::lock_guard lock(mu_);
    ++stats_.errors;
    log_.warn("claiming due tasks failed; will try again at the next tick",
              {{"sqlstate", e.sqlstate()}, {"error", e.what()}});
  } catch (const std::exception& e) {
    // Whatever else went wrong is this round's error, never the end of the poller's thread.
    flow_.set_more_due(false);
    std::lock_guard lock(mu_);
    ++stats_.errors;
    log_.error("a claim round failed; will try again at the next tick", {{"error", e.what()}});
  }
}

void Poller::start() {
  if (thread_.joinable()) return;
  thread_ = std::jthread([this](std::stop_token st) { loop(st); });
}

void Poller::request_stop() {
  thread_.request_stop();
  wake();
}

void Poller::wait() {
  if (thread_.joinable()) thread_.join();
}

void Poller::wake() {
  if (wake_fd_ >= 0) {
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
  }
}

void Poller::reconfigure(const CronSchedule& schedule, const TimeZone& zone, int batch_size) {
  {
    std::lock_guard lock(mu_);
    options_.schedule = schedule;
    options_.zone = zone;
    options_.batch_size = batch_size;
  }
  flow_.set_batch_size(batch_size);
  wake();
}

PollerStats Poller::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

std::chrono::steady_clock::time_point Poller::last_tick() const {
  return std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(last_tick_ns_.load()));
}

// The poller thread's LISTEN agentcron_due connection: opened when wanted, opened again after a
// backoff when it fails or breaks; meanwhile the poller follows its schedule only.
class PollerListener {
 public:
  enum class Woke { timeout, notified, lost };

  PollerListener(TaskStore& store, Executor& executor, Logger& log, Backoff reconnect, std::atomic<bool>& listening,
                 bool wanted)
      : store_(store), executor_(executor), log_(log), reconnect_(reconnect), listening_(listening), wanted_(wanted) {}

  void ensure() {
    if (!wanted_ || sub_ || std::chrono::steady_clock::now() < retry_at_) return;
    try {
      sub_ = store_.subscribe({"agentcron_due", "agentcron_cancel"});
      listening_ = true;
      if (failures_ > 0) log_.info("LISTEN connection restored");
      failures_ = 0;
    } catch (const DatabaseError& e) {
      failed("LISTEN agentcron_due failed; polling on the schedule only until it is back", e);
    }
  }

  // Waits up to `wait` for a notification (or, without a connection, for `wake_fd` alone).
  Woke wait(Millis wait, int wake_fd) {
    if (!sub_) {
      pollfd p{wake_fd, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(0, wait.count())));
      return Woke::timeout;
    }
    try {
      bool due = false;
      std::vector<ClaimRef> cancelled;
      for (const Notification& n : sub_->wait(wait, wake_fd)) {
        if (n.channel == "agentcron_due") due = true;
        else if (auto claim = parse_cancel(n.payload)) cancelled.push_back(*claim);
      }
      // agentcron.cancel_task names the claim it cancelled: the handler running it (here, if
      // anywhere) stops now, not at the next lease renewal, and its outcome is dropped.
      if (!cancelled.empty()) {
        int stopped = executor_.lose(cancelled, Executor::Loss::cancelled);
        if (stopped > 0) log_.info("cancelled tasks: their handlers were told to stop", {{"count", stopped}});
      }
      return due ? Woke::notified : Woke::timeout;
    } catch (const DatabaseError& e) {
      failed("LISTEN connection lost; polling on the schedule only until it is back", e);
      return Woke::lost;
    }
  }

  // How long a wait may last before LISTEN is to be tried again.
  Millis until_retry() const {
    if (!wanted_ || sub_) return Millis::max();
    return std::chrono::ceil<Millis>(retry_at_ - std::chrono::steady_clock::now()) + Millis(1);
  }
  bool retry_due() const { return wanted_ && !sub_ && std::chrono::steady_clock::now() >= retry_at_; }

 private:
  void failed(const char* what, const DatabaseError& e) {
    sub_.reset();
    listening_ = false;
    Millis backoff = reconnect_.delay(++failures_, rng_);
    retry_at_ = std::chrono::steady_clock::now() + backoff;
    log_.warn(what, {{"attempt", failures_},
                     {"sqlstate", e.sqlstate()},
                     {"error", e.what()},
                     {"retry_in_ms", static_cast<std::int64_t>(backoff.count())}});
  }

  // "<id>:<claim token>" as agentcron.cancel_task sends it; anything else is ignored.
  static std::optional<ClaimRef> parse_cancel(const std::string& payload) {
    ClaimRef c;
    auto colon = payload.find(':');
    if (colon == std::string::npos) return std::nullopt;
    auto [p1, e1] = std::from_chars(payload.data(), payload.data() + colon, c.id);
    auto [p2, e2] = std::from_chars(payload.data() + colon + 1, payload.data() + payload.size(), c.token);
    if (e1 != std::errc() || e2 != std::errc() || p1 != payload.data() + colon || p2 != payload.data() + payload.size())
      return std::nullopt;
    return c;
  }

  TaskStore& store_;
  Executor& executor_;
  Logger& log_;
  Backoff reconnect_;
  std::atomic<bool>& listening_;
  bool wanted_;
  std::unique_ptr<Subscription> sub_;
  int failures_ = 0;
  std::chrono::steady_clock::time_point retry_at_ = std::chrono::steady_clock::now();
  std::mt19937_64 rng_{std::random_device{}()};
};

void Poller::loop(std::stop_token st) {
  bool wanted;
  {
    std::lock_guard lock(mu_);
    wanted = options_.listen;
  }
  PollerListener listener(store_, executor_, log_, options_.reconnect, listening_, wanted);
  // LISTEN first, then claim what is due and follow the schedule: nothing inserted between the
  // two goes unnoticed, and the connection the first claim prepares its statement on stays in
  // the pool for the next claim instead of becoming the listener.
  listener.ensure();
  tick_safely();
  while (!st.stop_requested()) {
    CronSchedule::Time next_tick;
    {
      std::lock_guard lock(mu_);
      next_tick = tick_after(options_.schedule, options_.zone, std::chrono::system_clock::now(), options_.tick_jitter);
    }
    listener.ensure();
    bool notified = wait_for_tick(st, listener, next_tick);
    if (st.stop_requested()) break;
    if (notified || std::chrono::system_clock::now() >= next_tick || flow_.more_due()) tick_safely();
  }
  listening_ = false;
}

bool Poller::wait_for_tick(const std::stop_token& st, PollerListener& listener, CronSchedule::Time next_tick) {
  while (!st.stop_requested()) {
    heartbeats_.fetch_add(1, std::memory_order_relaxed);
    auto now = std::chrono::system_clock::now();
    if (now >= next_tick) return false;
    // At most ~12 days a wait (poll() takes an int of milliseconds): a monthly schedule waits again.
    Millis wait = std::min({std::chrono::ceil<Millis>(next_tick - now), listener.until_retry(), Millis(1 << 30)});
    if (options_.heartbeat > Millis(0)) wait = std::min(wait, options_.heartbeat);
    PollerListener::Woke woke = listener.wait(wait, wake_fd_);
    if (woke == PollerListener::Woke::lost) return false;
    std::uint64_t drained;
    bool woken = ::read(wake_fd_, &drained, sizeof drained) > 0;
    if (woke == PollerListener::Woke::notified) {
      std::lock_guard lock(mu_);
      ++stats_.notifications;
      return true;
    }
    if (woken || listener.retry_due()) return false;  // more due, a stop, reconfigured, or LISTEN again
  }
  return false;
}

int Poller::claim_batch(int n) {
  ClaimParams p = claim_params();
  return claim(p, n).got;
}

int drain(Poller& poller, Executor& executor, int limit, int want_free, const std::stop_token& stop,
          const std::function<void()>& make_room) {
  int claimed = 0;
  while (!stop.stop_requested() && claimed < limit) {
    TickResult r = poller.run_once(limit - claimed);
    claimed += r.claimed;
    if (r.batches == 0) {
      // No room (slots busy, or outcomes not yet written): make room, then claim again.
      executor.wait_free(1, std::chrono::steady_clock::time_point::max(), stop);
      make_room();
      continue;
    }
    if (r.claimed == 0) {  // a claim came back empty: nothing (more) is due
      if (executor.busy() == 0) break;
      executor.wait_idle(std::chrono::steady_clock::time_point::max(), stop);
      continue;
    }
    executor.wait_free(want_free, std::chrono::steady_clock::time_point::max(), stop);
  }
  return claimed;
}

}  // namespace agentcron
