// FakeTaskStore: the TaskStore in memory, for unit tests of the services (poller, completer,
// rescuer, janitor, lease keeper). Each method keeps the guards its SQL has (status, lease holder,
// claim token, due order, dedup keys); the database's clock is a value the test moves; and any
// method can be made to fail on its next calls. Thread-safe: services call it from their threads.
#pragma once
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "agentcron/retry.hpp"
#include "agentcron/task_store.hpp"

namespace agentcron::testing {

class FakeTaskStore final : public TaskStore {
 public:
  struct Row {
    std::int64_t id = 0;
    std::string kind = "noop";
    std::string payload = "{}";
    std::optional<std::string> agent_id;
    std::string status = "pending";
    bool approved = true;
    int priority = 0;
    SysTime scheduled_for{};
    std::optional<std::string> cron;
    std::string timezone = "UTC";
    int attempts = 0;
    int max_attempts = 5;
    std::optional<int> timeout_ms;
    std::optional<std::string> dedup_key;
    std::string locked_by;
    SysTime locked_until{};
    std::int64_t claim_token = 0;
    SysTime occurrence{};
    std::string last_error;
    std::string result;
    std::optional<SysTime> finished_at;
  };
  struct Run {
    std::int64_t task_id = 0;
    int attempt = 0;
    std::string worker;
    std::string outcome;
    std::string error;
  };

  // --- what a test arranges and reads ---
  SysTime now_value() const {
    std::lock_guard lock(mu_);
    return clock_;
  }
  void advance(Millis d) {
    std::lock_guard lock(mu_);
    clock_ += d;
  }
  // Adds a row (scheduled now unless it says otherwise); returns its id.
  std::int64_t add(Row r) {
    std::lock_guard lock(mu_);
    r.id = ++last_id_;
    if (r.scheduled_for == SysTime{}) r.scheduled_for = clock_;
    rows_[r.id] = r;
    return r.id;
  }
  Row row(std::int64_t id) const {
    std::lock_guard lock(mu_);
    return rows_.at(id);
  }
  // Changes a row as another worker or an operator would.
  template <class F>
  void change(std::int64_t id, F&& f) {
    std::lock_guard lock(mu_);
    f(rows_.at(id));
  }
  std::size_t count(const std::string& status) const {
    std::lock_guard lock(mu_);
    return static_cast<std::size_t>(
        std::count_if(rows_.begin(), rows_.end(), [&](const auto& kv) { return kv.second.status == status; }));
  }
  std::vector<Run> runs() const {
    std::lock_guard lock(mu_);
    return runs_;
  }
  std::vector<std::pair<std::string, std::string>> notifications() const {
    std::lock_guard lock(mu_);
    return notifications_;
  }
  // The next `times` calls of `method` ("claim_due", "complete_many", …) throw `error`.
  void fail(const std::string& method, const DatabaseError& error, int times = 1) {
    std::lock_guard lock(mu_);
    for (int i = 0; i < times; ++i) failures_[method].push_back(error);
  }
  // How many rows each claim asked for, in order.
  std::vector<int> claim_limits() const {
    std::lock_guard lock(mu_);
    return claim_limits_;
  }
  int calls(const std::string& method) const {
    std::lock_guard lock(mu_);
    auto it = calls_.find(method);
    return it == calls_.end() ? 0 : it->second;
  }

  // --- TaskStore ---
  bool answering() const override { return answering_; }
  std::vector<Task> claim_due(const ClaimParams& p) override {
    std::lock_guard lock(mu_);
    claim_limits_.push_back(p.limit);
    enter("claim_due", p.limit > 0 && !p.kinds.empty());
    if (p.limit <= 0 || p.kinds.empty()) return {};
    std::vector<Row*> due;
    for (auto& [id, r] : rows_)
      if (r.status == "pending" && r.approved && r.scheduled_for <= clock_ &&
          std::find(p.kinds.begin(), p.kinds.end(), r.kind) != p.kinds.end())
        due.push_back(&r);
    std::sort(due.begin(), due.end(), [](const Row* a, const Row* b) {
      return std::tie(b->priority, a->scheduled_for, a->id) < std::tie(a->priority, b->scheduled_for, b->id);
    });
    if (due.size() > static_cast<std::size_t>(p.limit)) due.resize(static_cast<std::size_t>(p.limit));
    // At most a limited kind's free slots of it, in due order (kClaim's `picked`).
    std::map<std::string, int> room(p.kind_room.begin(), p.kind_room.end());
    std::erase_if(due, [&](const Row* r) {
      auto it = room.find(r->kind);
      return it != room.end() && it->second-- <= 0;
    });
    std::vector<Task> out;
    for (Row* r : due) {
      if (r->attempts == 0 || r->occurrence == SysTime{}) r->occurrence = r->scheduled_for;
      r->status = "running";
      ++r->attempts;
      r->locked_by = p.worker;
      r->locked_until = clock_ + p.lease;
      r->claim_token = ++last_token_;
      out.push_back(task_of(*r, p.max_payload_bytes));
    }
    return out;
  }

  std::vector<std::int64_t> complete_many(const std::vector<Completion>& outs, const std::string& worker) override {
    std::lock_guard lock(mu_);
    enter("complete_many", !outs.empty());
    std::vector<std::int64_t> done;
    for (const Completion& o : outs) {
      Row* r = held(o.id, o.claim_token, worker);
      if (!r) continue;
      r->status = o.status == Completion::Status::succeeded ? "succeeded"
                  : o.status == Completion::Status::failed  ? "failed"
                                                            : "pending";
      if (o.retry_delay) r->scheduled_for = clock_ + *o.retry_delay;
      else if (o.run_at) r->scheduled_for = *o.run_at;
      if (o.reset_attempts) {
        r->attempts = 0;
        r->occurrence = SysTime{};
      }
      r->last_error = o.error;
      r->result = o.result;
      unlock_row(*r);
      if (r->status != "pending") r->finished_at = clock_;
      if (!o.run_outcome.empty()) runs_.push_back({o.id, o.attempt, worker, o.run_outcome, o.error});
      if (!o.notify_channel.empty()) notifications_.emplace_back(o.notify_channel, o.notify_payload);
      done.push_back(o.id);
    }
    return done;
  }

  std::int64_t release_many(const std::vector<ClaimRef>& claims, const std::string& worker, const std::string&) override {
    std::lock_guard lock(mu_);
    enter("release_many", !claims.empty());
    std::int64_t n = 0;
    for (const ClaimRef& c : claims) {
      Row* r = held(c.id, c.token, worker);
      if (!r) continue;
      r->status = "pending";
      r->attempts = std::max(r->attempts - 1, 0);
      unlock_row(*r);
      ++n;
    }
    return n;
  }

  std::vector<std::int64_t> extend_leases(const std::vector<ClaimRef>& claims, const std::string& worker,
                                          Millis lease) override {
    std::lock_guard lock(mu_);
    enter("extend_leases", !claims.empty());
    std::vector<std::int64_t> ids;
    for (const ClaimRef& c : claims)
      if (Row* r = held(c.id, c.token, worker)) {
        r->locked_until = clock_ + lease;
        ids.push_back(c.id);
      }
    return ids;
  }

  RescueResult rescue_expired(int limit) override {
    std::lock_guard lock(mu_);
    enter("rescue_expired");
    RescueResult out;
    for (Row* r : expired(limit, false)) {
      std::string worker = r->locked_by;
      bool spent = r->attempts >= r->max_attempts;
      r->status = spent ? "failed" : "pending";
      r->last_error = "lease expired: worker " + worker + " stopped renewing it";
      unlock_row(*r);
      if (spent) r->finished_at = clock_;
      runs_.push_back({r->id, r->attempts, worker, "rescued", "lease expired"});
      ++(spent ? out.to_failed : out.to_pending);
    }
    out.recurring_left = static_cast<std::int64_t>(expired(1 << 30, true).size());
    return out;
  }

  std::vector<ExpiredRecurring> expired_recurring(int limit) override {
    std::lock_guard lock(mu_);
    enter("expired_recurring");
    std::vector<ExpiredRecurring> out;
    for (Row* r : expired(limit, true)) out.push_back({r->id, *r->cron, r->timezone, clock_});
    return out;
  }

  RescueResult reschedule_expired(const std::vector<Reschedule>& moves) override {
    std::lock_guard lock(mu_);
    enter("reschedule_expired", !moves.empty());
    RescueResult out;
    for (const Reschedule& m : moves) {
      auto it = rows_.find(m.id);
      if (it == rows_.end()) continue;
      Row& r = it->second;
      if (r.status != "running" || !(r.locked_until < clock_) || !r.cron || r.attempts < r.max_attempts) continue;
      std::string worker = r.locked_by;
      runs_.push_back({r.id, r.attempts, worker, "rescued", "lease expired"});
      r.last_error = m.next_fire ? "lease expired: worker " + worker + " stopped renewing it" : m.error;
      unlock_row(r);
      if (m.next_fire) {
        r.status = "pending";
        r.attempts = 0;
        r.scheduled_for = *m.next_fire;
        r.occurrence = SysTime{};
        ++out.to_pending;
      } else {
        r.status = "failed";
        r.finished_at = clock_;
        ++out.to_failed;
      }
    }
    return out;
  }

  // Tasks only: the fake's runs carry no finish time (the janitor's runs are tested on PostgreSQL).
  FinishedDeleted delete_finished(Millis succeeded_after, Millis failed_after, int limit) override {
    std::lock_guard lock(mu_);
    enter("delete_finished");
    std::int64_t n = 0;
    for (auto it = rows_.begin(); it != rows_.end() && n < limit;) {
      const Row& r = it->second;
      bool old = r.finished_at && ((r.status == "succeeded" && *r.finished_at < clock_ - succeeded_after) ||
                                   ((r.status == "failed" || r.status == "cancelled") && *r.finished_at < clock_ - failed_after));
      if (old) {
        it = rows_.erase(it);
        ++n;
      } else {
        ++it;
      }
    }
    return {n, 0};
  }

  EnqueueResult enqueue(const EnqueueParams& p) override {
    std::lock_guard lock(mu_);
    enter("enqueue");
    if (p.dedup_key)
      for (const auto& [id, r] : rows_)
        if (r.dedup_key == p.dedup_key && (r.status == "pending" || r.status == "running")) return {id, true};
    Row r;
    r.id = ++last_id_;
    r.kind = p.kind;
    r.payload = p.payload;
    r.agent_id = p.agent_id;
    r.scheduled_for = p.at ? *p.at : p.in ? clock_ + *p.in : clock_;
    r.cron = p.cron;
    r.timezone = p.timezone;
    r.priority = p.priority;
    r.max_attempts = p.max_attempts;
    r.timeout_ms = p.timeout_ms;
    r.dedup_key = p.dedup_key;
    r.approved = p.approval == "approved";
    rows_[r.id] = r;
    return {r.id, false};
  }

  QueueStatus status() override {
    std::lock_guard lock(mu_);
    enter("status");
    QueueStatus s;
    for (const char* name : {"pending", "running", "succeeded", "failed", "cancelled"}) {
      std::int64_t n = 0;
      for (const auto& [id, r] : rows_) n += r.status == name;
      s.by_status.emplace_back(name, n);
    }
    return s;
  }

  SysTime now() override {
    std::lock_guard lock(mu_);
    enter("now");
    return clock_;
  }

  std::unique_ptr<Subscription> subscribe(const std::vector<std::string>&) override {
    std::lock_guard lock(mu_);
    enter("subscribe");
    return std::make_unique<QuietSubscription>();
  }

 private:
  // A subscription no notification ever reaches: waits only for the wake-up descriptor.
  class QuietSubscription final : public Subscription {
   public:
    std::vector<Notification> wait(Millis timeout, int wake_fd) override {
      pollfd p{wake_fd, POLLIN, 0};
      ::poll(&p, wake_fd >= 0 ? 1 : 0, static_cast<int>(timeout.count()));
      return {};
    }
  };

  // `sends`: whether PgTaskStore would send a statement for this call (it sends none for an
  // empty batch), and so learn whether the database answers.
  void enter(const std::string& method, bool sends = true) {
    ++calls_[method];
    auto it = failures_.find(method);
    if (it != failures_.end() && !it->second.empty()) {
      DatabaseError e = it->second.front();
      it->second.pop_front();
      if (writes(method) && e.says_database_unwell()) answering_ = false;  // as PgTaskStore
      throw e;
    }
    if (sends && writes(method)) answering_ = true;
  }
  static bool writes(const std::string& method) {
    return method != "status" && method != "now" && method != "expired_recurring" && method != "subscribe";
  }
  Row* held(std::int64_t id, std::int64_t token, const std::string& worker) {
    auto it = rows_.find(id);
    if (it == rows_.end()) return nullptr;
    Row& r = it->second;
    return r.status == "running" && r.locked_by == worker && r.claim_token == token ? &r : nullptr;
  }
  static void unlock_row(Row& r) {
    r.locked_by.clear();
    r.locked_until = SysTime{};
  }
  // Running rows whose lease ran out, oldest lease first: the recurring ones with their attempts
  // spent (`recurring`), or all the others.
  std::vector<Row*> expired(int limit, bool recurring) {
    std::vector<Row*> out;
    for (auto& [id, r] : rows_) {
      bool spent_recurring = r.cron && r.attempts >= r.max_attempts;
      if (r.status == "running" && r.locked_until < clock_ && spent_recurring == recurring) out.push_back(&r);
    }
    std::sort(out.begin(), out.end(), [](const Row* a, const Row* b) { return a->locked_until < b->locked_until; });
    if (out.size() > static_cast<std::size_t>(limit)) out.resize(static_cast<std::size_t>(limit));
    return out;
  }
  Task task_of(const Row& r, int max_payload_bytes) const {
    Task t;
    t.id = r.id;
    t.kind = r.kind;
    t.agent_id = r.agent_id;
    t.claim_token = r.claim_token;
    t.attempt = r.attempts;
    t.max_attempts = r.max_attempts;
    t.cron = r.cron;
    t.timezone = r.timezone;
    t.timeout_ms = r.timeout_ms;
    t.scheduled_for = r.scheduled_for;
    t.occurrence = r.occurrence;
    t.claimed_at = clock_;
    t.claimed_steady = std::chrono::steady_clock::now();
    if (r.payload.size() > static_cast<std::size_t>(max_payload_bytes))
      t.defect = "the payload is " + std::to_string(r.payload.size()) +
                 " bytes, more than executor.max_payload_bytes allows; it was not read";
    else
      t.payload = r.payload;
    return t;
  }

  mutable std::mutex mu_;
  SysTime clock_ = SysTime(std::chrono::seconds(1'700'000'000));
  std::map<std::int64_t, Row> rows_;
  std::vector<int> claim_limits_;
  std::vector<Run> runs_;
  std::vector<std::pair<std::string, std::string>> notifications_;
  std::map<std::string, std::deque<DatabaseError>> failures_;
  std::atomic<bool> answering_{true};
  std::map<std::string, int> calls_;
  std::int64_t last_id_ = 0;
  std::int64_t last_token_ = 0;
};

}  // namespace agentcron::testing
