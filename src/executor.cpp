// The executor (see executor.hpp). Slot threads are persistent; a supervisor thread enforces
// deadlines by asking handlers to stop. A task's outcome is settled exactly once: by its slot
// when the handler returns (after a timeout or a cancellation too), or by cancel_all for a task
// that never started.
#include "agentcron/executor.hpp"

#include <algorithm>
#include <cctype>

#include "agentcron/cron.hpp"
#include "agentcron/flow_control.hpp"
#include "agentcron/handlers/handler.hpp"
#include "agentcron/log.hpp"
#include "agentcron/service.hpp"

namespace agentcron {
namespace {

// The JSON type of a payload from its first character: rows must carry an object.
std::string_view json_type(const std::string& s) {
  auto it = std::find_if(s.begin(), s.end(), [](unsigned char c) { return !std::isspace(c); });
  if (it == s.end()) return "nothing";
  switch (*it) {
    case '{': return "object";
    case '[': return "array";
    case '"': return "string";
    case 't':
    case 'f': return "boolean";
    case 'n': return "null";
    default: return "number";
  }
}

}  // namespace

void ExecutorOptions::validate() const {
  require_option(concurrency > 0, "executor", "concurrency must be > 0");
  require_option(task_timeout > Millis(0), "executor", "task_timeout must be > 0");
  // A margin beyond half the lease is cut to half of it (fence_after).
  require_option(lease >= Millis(0) && fence_margin >= Millis(0), "executor", "lease and fence_margin must be >= 0");
  require_option(grow_after > Millis(0), "executor", "grow_after must be > 0");
  for (const auto& [kind, limit] : kind_limits)
    require_option(limit > 0, "executor", "the concurrency of kind \"" + kind + "\" must be > 0");
}

Executor::Executor(ExecutorOptions options, const HandlerRegistry& handlers, OutcomeSink sink, Logger& log,
                   FlowControl* flow)
    : options_(validated(options)), handlers_(handlers), sink_(std::move(sink)), log_(log), capacity_(options.concurrency),
      flow_(flow) {
  {
    std::lock_guard lock(mu_);
    for (const auto& [kind, limit] : options_.kind_limits) kind_busy_[kind] = 0;
    report_locked();
  }
  supervisor_ = std::jthread([this](std::stop_token st) { supervise(st); });
}

void Executor::grow_locked(int limit) {
  // Slot threads start on demand, never more than the capacity: at once only for tasks no idle
  // thread can take (and no more than `limit`); beyond that the supervisor adds one a
  // millisecond while tasks wait behind handlers that block, or have waited grow_after
  // (supervise()). Quick handlers drain a batch with a few threads; slow ones get a thread each
  // within milliseconds.
  int want = std::min(limit, static_cast<int>(queue_.size()) - idle_threads_);
  while (want-- > 0 && static_cast<int>(slots_.size()) < capacity_) {
    ++idle_threads_;  // idle from its creation: it will take a waiting task as soon as it runs
    slots_.emplace_back([this](std::stop_token st) { slot_loop(st); });
  }
}

bool Executor::starved_locked() const {
  return !queue_.empty() && idle_threads_ == 0 && static_cast<int>(slots_.size()) < capacity_;
}

Executor::~Executor() {
  cancel_all("executor destroyed");
  supervisor_.request_stop();
  for (auto& s : slots_) s.request_stop();
  work_cv_.notify_all();
  state_cv_.notify_all();
  supervisor_cv_.notify_all();
  // A handler that ignores its stop token would block this join forever: the worker exits the
  // process itself in that case (see Worker::shutdown).
}

int Executor::free_slots() const {
  std::lock_guard lock(mu_);
  return std::max(0, capacity_ - busy_);
}

int Executor::threads() const {
  std::lock_guard lock(mu_);
  return static_cast<int>(slots_.size());
}

int Executor::busy() const {
  std::lock_guard lock(mu_);
  return busy_;
}

int Executor::outcomes_coming() const {
  std::lock_guard lock(mu_);
  return busy_ - delivering_;
}

void Executor::enqueue_locked(Task t, std::chrono::steady_clock::time_point renewed) {
  Hold& hold = held_[t.id];
  hold.token = t.claim_token;
  hold.renewed = std::max(renewed, t.claimed_steady);
  auto r = std::make_shared<Running>();
  r->limit = t.timeout_ms ? Millis(*t.timeout_ms) : options_.task_timeout;
  if (options_.lease > Millis(0)) {
    r->fence_at = fence_after(hold.renewed);
    if (r->fence_at < supervisor_wake_at_) {  // an earlier deadline than the supervisor sleeps to
      ++generation_;
      supervisor_cv_.notify_all();
    }
  }
  r->task = std::move(t);
  running_[r->task.id] = r;
  busy_kind_locked(r->task.kind, +1);
  r->queued_at = std::chrono::steady_clock::now();
  queue_.push_back(std::move(r));
  ++busy_;
  report_locked();
}

void Executor::busy_kind_locked(const std::string& kind, int delta) {
  auto it = kind_busy_.find(kind);
  if (it == kind_busy_.end()) return;
  it->second += delta;
  if (delta < 0 && flow_) flow_->kind_freed(kind, options_.kind_limits.at(kind) - it->second, options_.kind_limits.at(kind));
}

std::vector<std::pair<std::string, int>> Executor::kind_room() const {
  std::lock_guard lock(mu_);
  std::vector<std::pair<std::string, int>> room;
  room.reserve(kind_busy_.size());
  for (const auto& [kind, busy] : kind_busy_) room.emplace_back(kind, std::max(0, options_.kind_limits.at(kind) - busy));
  return room;
}

void Executor::report_locked() {
  if (flow_) flow_->executor_state(capacity_, busy_, delivering_);
}

int Executor::submit(std::vector<Task> tasks) {
  if (tasks.empty()) return 0;
  int accepted = 0;
  std::vector<std::int64_t> refused;
  {
    std::lock_guard lock(mu_);
    if (closing_) return 0;  // shutting down: the claim's leases expire and the rescuer returns them
    for (auto& t : tasks) {
      // Never a second copy of a task this worker runs: the running copy's outcome finishes it.
      if (auto hold = held_.find(t.id); hold != held_.end()) {
        // The row now carries the new claim's token: the running copy's outcome, lease
        // extensions and release must name it — and should the copy's outcome land before this
        // claim was made, the claim is run once the copy is done (release_hold_locked).
        hold->second.token = t.claim_token;
        hold->second.renewed = std::max(hold->second.renewed, t.claimed_steady);  // the new claim's lease
        if (auto r = running_.find(t.id); r != running_.end()) {
          r->second->task.claim_token = t.claim_token;
          if (options_.lease > Millis(0)) r->second->fence_at = std::max(r->second->fence_at, fence_after(t.claimed_steady));
        }
        refused.push_back(t.id);
        hold->second.redelivery = std::move(t);
        continue;
      }
      enqueue_locked(std::move(t));
      ++accepted;
    }
    grow_locked(std::max(0, kEagerThreads - static_cast<int>(slots_.size())));
    if (starved_locked()) supervisor_cv_.notify_all();
  }
  for (std::int64_t id : refused)
    log_.warn("claimed a task this worker still holds (its last run is finishing, or the database lost a "
              "claim's commit); leaving it to the running copy",
              {{"task_id", id}});
  for (int i = 0; i < accepted; ++i) work_cv_.notify_one();
  return accepted;
}

void Executor::forget(const std::vector<ClaimRef>& claims) {
  std::lock_guard lock(mu_);
  for (const ClaimRef& c : claims) {
    if (auto it = held_.find(c.id); it != held_.end()) it->second.written = c.token;
    release_hold_locked(c.id, false, true);
  }
}

std::optional<std::int64_t> Executor::unrecorded(const Task& ran) {
  std::lock_guard lock(mu_);
  std::int64_t id = ran.id;
  auto it = held_.find(id);
  if (it != held_.end() && it->second.redelivery && it->second.redelivery->attempt == ran.attempt &&
      it->second.redelivery->occurrence == ran.occurrence) {
    // The outcome found the row pending (its claim lost) and then claimed again by us: the same
    // outcome under the new claim finishes it, without a second run.
    std::int64_t token = it->second.redelivery->claim_token;
    it->second.redelivery.reset();
    return token;
  }
  release_hold_locked(id, false, true);
  return std::nullopt;
}

void Executor::release_hold_locked(std::int64_t id, bool handler_done, bool outcome_done) {
  auto it = held_.find(id);
  if (it == held_.end()) return;
  it->second.handler_done |= handler_done;
  it->second.outcome_done |= outcome_done;
  if (!it->second.handler_done || !it->second.outcome_done) return;
  std::optional<Task> next = std::move(it->second.redelivery);
  std::optional<std::int64_t> written = it->second.written;
  auto renewed = it->second.renewed;  // renewals since the refused claim were of its token
  held_.erase(it);
  // A refused claim whose token the written outcome carried was finished by it (the database had
  // lost the earlier claim); any other is a claim made after that outcome landed.
  if (!next || closing_ || (written && *written == next->claim_token)) return;
  // The row was claimed again (after a zero-delay retry, a release or the next fire landed) while
  // the last run was finishing: that claim is live and ours, so it runs now.
  enqueue_locked(std::move(*next), renewed);
  grow_locked(std::max(0, kEagerThreads - static_cast<int>(slots_.size())));
  if (starved_locked()) supervisor_cv_.notify_all();
  work_cv_.notify_one();
}

std::vector<ClaimRef> Executor::held_claims() const {
  std::lock_guard lock(mu_);
  std::vector<ClaimRef> claims;
  claims.reserve(held_.size());
  for (const auto& [id, hold] : held_)
    if (!hold.outcome_done) claims.push_back({id, hold.token});
  return claims;
}

int Executor::lose(const std::vector<ClaimRef>& claims, Loss why) {
  std::unique_lock lock(mu_);
  int lost = 0;
  for (const ClaimRef& c : claims) {
    auto it = running_.find(c.id);
    if (it == running_.end() || it->second->settled) continue;  // finished: its write will not match
    std::shared_ptr<Running> r = it->second;
    // Another claim of ours since the extend was sent, or told already: nothing to do.
    if (r->task.claim_token != c.token || r->stopped == Running::Stopped::lease_lost) continue;
    ++lost;
    ++(why == Loss::cancelled ? cancelled_ : leases_lost_);
    // A claim refused meanwhile under this very token is the claim that is lost: never run it.
    if (auto h = held_.find(c.id); h != held_.end()) h->second.written = c.token;
    if (r->started_at == SysTime{}) {
      // Never started: it leaves the queue unrun (its slot sees it settled), with no outcome.
      r->settled = true;
      running_.erase(it);
      release_hold_locked(c.id, false, true);
      if (why == Loss::cancelled)
        log_.warn("dropped a task that was cancelled before its handler started",
                  {{"task_id", c.id}, {"kind", r->task.kind}, {"attempt", r->task.attempt}});
    } else {
      r->stopped = Running::Stopped::lease_lost;
      r->loss = why;
      r->stop.request_stop();
    }
  }
  lock.unlock();
  state_cv_.notify_all();
  return lost;
}

std::chrono::steady_clock::time_point Executor::fence_after(std::chrono::steady_clock::time_point renewed) const {
  Millis margin = options_.fence_margin > Millis(0) ? options_.fence_margin : options_.lease / 10;
  return renewed + options_.lease - std::min(margin, options_.lease / 2);
}

void Executor::close() {
  std::lock_guard lock(mu_);
  closing_ = true;
}

void Executor::renewed(const std::vector<std::int64_t>& ids, std::chrono::steady_clock::time_point sent) {
  if (options_.lease <= Millis(0)) return;
  std::lock_guard lock(mu_);
  for (std::int64_t id : ids) {
    if (auto h = held_.find(id); h != held_.end()) h->second.renewed = std::max(h->second.renewed, sent);
    if (auto it = running_.find(id); it != running_.end()) it->second->fence_at = fence_after(sent);
  }
}

std::uint64_t Executor::cancelled() const {
  std::lock_guard lock(mu_);
  return cancelled_;
}

std::uint64_t Executor::leases_lost() const {
  std::lock_guard lock(mu_);
  return leases_lost_;
}

bool Executor::wait_idle(std::chrono::steady_clock::time_point deadline, std::stop_token cut) {
  std::unique_lock lock(mu_);
  return state_cv_.wait_until(lock, cut, deadline, [&] { return running_.empty() && busy_ == 0 && delivering_ == 0; });
}

bool Executor::wait_free(int n, std::chrono::steady_clock::time_point deadline, std::stop_token cut) {
  std::unique_lock lock(mu_);
  return state_cv_.wait_until(lock, cut, deadline,
                              [&] { return capacity_ - busy_ >= n || (running_.empty() && delivering_ == 0); });
}

bool Executor::all_handlers_returned() const {
  std::lock_guard lock(mu_);
  return busy_ == 0;
}

void Executor::set_concurrency(int n) {
  std::lock_guard lock(mu_);
  capacity_ = n;
  report_locked();
  if (starved_locked()) supervisor_cv_.notify_all();
  // Surplus threads stay idle; free_slots() keeps busy_ under the new capacity.
}

void Executor::settle(const std::shared_ptr<Running>& r, TaskOutcome outcome, std::unique_lock<std::mutex>& lock) {
  // Callers walk lists gathered under the lock, which settle() drops: another may have settled
  // one of them meanwhile (lose(), cancel_all()), and a second outcome, or the erase of a newer
  // run of the same id, must not follow.
  if (r->settled) return;
  r->settled = true;
  running_.erase(r->task.id);
  if (!options_.hold_until_forgotten) release_hold_locked(r->task.id, false, true);
  FinishedRun run{r->task, std::move(outcome), r->started_at, std::chrono::system_clock::now(), std::nullopt};
  if (run.outcome.kind == TaskOutcome::Kind::succeeded)
    if (Handler* h = handlers_.find(r->task.kind)) run.notify = h->completion_notify(r->task);
  if (run.started_at == SysTime{}) run.started_at = run.finished_at;
  // Outside the lock (the sink takes its own), but counted: idle means every outcome handed over.
  ++delivering_;
  report_locked();
  lock.unlock();
  sink_(std::move(run));
  lock.lock();
  --delivering_;
  report_locked();
  state_cv_.notify_all();
}

int Executor::cancel_all(const std::string& why) {
  std::unique_lock lock(mu_);
  closing_ = true;
  int cancelled = 0;
  std::vector<std::shared_ptr<Running>> queued;
  for (auto& [id, r] : running_) {
    if (r->settled) continue;
    ++cancelled;
    if (r->started_at == SysTime{}) {
      queued.push_back(r);  // never started: nothing runs it, it may go back at once
    } else if (r->stopped == Running::Stopped::no) {  // a timeout stays a retry; a lost lease is not ours
      r->stopped = Running::Stopped::cancelled;
      r->cancel_reason = why;
      r->stop.request_stop();  // released by its slot once the handler has returned
    }
  }
  for (auto& q : queue_) {
    release_hold_locked(q->task.id, true, false);
    busy_kind_locked(q->task.kind, -1);
    --busy_;
  }
  queue_.clear();
  report_locked();
  for (auto& r : queued) settle(r, TaskOutcome::released(why), lock);
  lock.unlock();
  state_cv_.notify_all();
  return cancelled;
}

TaskOutcome Executor::stopped_outcome(const Running& r, TaskOutcome returned) {
  if (r.stopped == Running::Stopped::cancelled) return TaskOutcome::released(r.cancel_reason);
  // Timed out. A handler that noticed its own deadline says so, with what it knows (an exec
  // program's output tail); anything else it returned after the stop request does not count.
  if (returned.kind != TaskOutcome::Kind::succeeded && !returned.cancelled &&
      returned.message.rfind("timed out after ", 0) == 0)
    return returned;
  return TaskOutcome::retry("timed out after " + format_duration(r.limit));
}

TaskOutcome Executor::run_one(Running& r) {
  const Task& t = r.task;
  if (!t.defect.empty()) return TaskOutcome::failure(t.defect);
  Handler* h = handlers_.find(t.kind);
  if (!h) return TaskOutcome::failure("no handler for kind \"" + t.kind + "\" in this worker");
  if (auto type = json_type(t.payload); type != "object")
    return TaskOutcome::failure("payload must be a JSON object, got " + std::string(type));
  if (t.cron) {
    try {
      CronSchedule::parse(*t.cron);
      TimeZone::locate(t.timezone);
    } catch (const CronError& e) {
      return TaskOutcome::failure(e.what());
    }
  }
  HandlerContext ctx{r.stop.get_token(), r.deadline, r.limit};
  // The one place that catches broadly: whatever a handler throws is this task's outcome.
  try {
    return h->run(t, ctx);
  } catch (const std::exception& e) {
    log_.error("handler threw", {{"task_id", t.id}, {"kind", t.kind}, {"attempt", t.attempt}, {"error", e.what()}});
    return TaskOutcome::retry(std::string("handler threw: ") + e.what());
  } catch (...) {
    log_.error("handler threw a non-standard exception", {{"task_id", t.id}, {"kind", t.kind}, {"attempt", t.attempt}});
    return TaskOutcome::retry("handler threw a non-standard exception");
  }
}

void Executor::slot_loop(std::stop_token st) {
  std::unique_lock lock(mu_);
  // A thread counts as idle from its creation and from the moment it finishes a task (under the
  // same lock that frees the slot), so submit() never starts a thread an idle one would serve.
  while (true) {
    bool got = work_cv_.wait(lock, st, [&] { return !queue_.empty(); });
    --idle_threads_;
    if (!got) return;
    std::shared_ptr<Running> r = std::move(queue_.front());
    queue_.pop_front();
    if (r->settled) {  // cancelled before it started
      release_hold_locked(r->task.id, true, false);
      busy_kind_locked(r->task.kind, -1);
      --busy_;
      report_locked();
      ++idle_threads_;
      continue;
    }
    r->started_at = std::chrono::system_clock::now();
    r->began = std::chrono::steady_clock::now();
    r->deadline = r->began + r->limit;  // the clock starts at the slot
    bool earlier = r->deadline < supervisor_wake_at_;  // an earlier deadline than it sleeps to
    if (earlier) ++generation_;
    // Or this was the last idle thread while tasks still wait: the supervisor may add threads.
    bool wake_supervisor = earlier || starved_locked();
    lock.unlock();
    if (wake_supervisor) supervisor_cv_.notify_all();
    r->in_handler.store(true, std::memory_order_relaxed);
    TaskOutcome outcome = run_one(*r);
    r->in_handler.store(false, std::memory_order_relaxed);  // before the lock: waiting for it is not the handler's
    lock.lock();
    // Only now, with the handler returned, may its retry or release be written.
    if (r->stopped == Running::Stopped::lease_lost) {
      // The row is someone else's now: no outcome of ours may touch it.
      r->settled = true;
      running_.erase(r->task.id);
      release_hold_locked(r->task.id, false, true);
      log_.warn(r->loss == Loss::cancelled ? "stopped a task that was cancelled; its outcome is dropped"
                                           : "dropped the outcome of a task whose lease was lost",
                {{"task_id", r->task.id}, {"kind", r->task.kind}, {"attempt", r->task.attempt}});
    } else if (r->stopped != Running::Stopped::no) {
      outcome = stopped_outcome(*r, std::move(outcome));
    }
    if (!r->settled) settle(r, std::move(outcome), lock);
    release_hold_locked(r->task.id, true, false);
    busy_kind_locked(r->task.kind, -1);
    --busy_;
    report_locked();  // the flow control wakes the poller when this slot makes a claim worthwhile
    ++idle_threads_;
    lock.unlock();
    state_cv_.notify_all();
    lock.lock();
  }
}

void Executor::supervise(std::stop_token st) {
  std::unique_lock lock(mu_);
  while (!st.stop_requested()) {
    auto now = std::chrono::steady_clock::now();
    auto earliest = std::chrono::steady_clock::time_point::max();
    std::vector<std::shared_ptr<Running>> expired;
    std::vector<std::shared_ptr<Running>> unrenewed;
    int blocked = 0;  // slot threads in a handler's call for kGrowAfter or longer
    for (auto& [id, r] : running_) {
      if (r->in_handler.load(std::memory_order_relaxed) && now - r->began >= kGrowAfter) ++blocked;
      if (r->settled || r->fenced || r->stopped == Running::Stopped::lease_lost) continue;
      // A lease that could not be renewed in time (the database is unreachable): fence the task
      // off before its lease expires and another worker's rescuer hands it out again.
      if (r->fence_at <= now) {
        unrenewed.push_back(r);
        continue;
      }
      earliest = std::min(earliest, r->fence_at);
      // Not started: its clock starts at the slot. Already told to stop: its slot settles it.
      if (r->started_at == SysTime{} || r->stopped != Running::Stopped::no) continue;
      if (r->deadline <= now) expired.push_back(r);
      else earliest = std::min(earliest, r->deadline);
    }
    for (auto& r : unrenewed) {
      // Stopped, then released once the handler has returned — a release guarded by the claim's
      // token, so it lands only if the lease is still ours when the database answers again.
      r->fenced = true;
      log_.warn("could not renew the task's lease before it ran out; stopping its handler",
                {{"task_id", r->task.id}, {"kind", r->task.kind}, {"attempt", r->task.attempt}});
      if (r->started_at == SysTime{}) {
        settle(r, TaskOutcome::released("its lease could not be renewed"), lock);
      } else if (r->stopped == Running::Stopped::no || r->stopped == Running::Stopped::timed_out) {
        r->stopped = Running::Stopped::cancelled;
        r->cancel_reason = "its lease could not be renewed";
        r->stop.request_stop();
      }
    }
    if (!unrenewed.empty()) continue;
    for (auto& r : expired) {
      // The outcome waits for the handler to return: its task keeps its lease until then.
      r->stopped = Running::Stopped::timed_out;
      r->stop.request_stop();
      log_.warn("task timed out; stopping its handler", {{"task_id", r->task.id}, {"kind", r->task.kind}, {"attempt", r->task.attempt}});
    }
    // Tasks wait and no thread is idle. A thread more helps only if the threads there are held up
    // in handlers that block (a child process, an http call), so one is added a millisecond while
    // the oldest task has waited a millisecond and fewer than kEagerThreads threads are free of
    // such a call — or once it has waited options_.grow_after, whatever the handlers do (handlers
    // that block for less than a millisecond). Quick handlers keep every thread busy while a batch
    // drains in a fraction of a millisecond, and on a loaded machine a thread that waits for a
    // core looks busy too: adding a thread whenever tasks waited (or had waited a millisecond)
    // gave a drain of no-op tasks 26 to 161 threads from run to run, each with its stack and
    // malloc arena (up to 2 MiB more peak RSS), and nothing done sooner. Counting the blocked
    // threads, not asking whether any handler blocks, keeps one long handler beside such a drain
    // from doing the same. (A drain whose oldest task waits grow_after still grows; with batches
    // of 500 quick tasks it rarely does.)
    watching_growth_ = starved_locked();
    if (watching_growth_) {
      auto waited = now - queue_.front()->queued_at;
      int moving = static_cast<int>(slots_.size()) - blocked;
      if ((waited >= kGrowAfter && moving < kEagerThreads) || waited >= options_.grow_after) {
        grow_locked(1);
        work_cv_.notify_one();
      }
      earliest = std::min(earliest, now + kGrowAfter);
    }
    supervisor_wake_at_ = earliest;
    std::uint64_t seen = generation_;
    // A slot that left the queue starved wakes it, unless it already means to look again.
    supervisor_cv_.wait_until(lock, st, earliest, [&] {
      return generation_ != seen || (!watching_growth_ && starved_locked());
    });
  }
}

}  // namespace agentcron
