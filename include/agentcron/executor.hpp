// Executor: `concurrency` slots running handlers with no database connection held. Every
// exception, timeout or cancellation of a handler becomes that task's outcome and nothing else's.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "agentcron/duration.hpp"
#include "agentcron/task.hpp"

namespace agentcron {

class FlowControl;
class HandlerRegistry;
class Logger;

struct ExecutorOptions {
  int concurrency = 8;                               // slots
  Millis task_timeout = std::chrono::minutes(5);     // unless the row's timeout_ms says otherwise
  // Hold a task's id from submit() until forget() says its outcome is written, not only until
  // its handler returns: a claim re-delivered meanwhile is refused (see submit()).
  bool hold_until_forgotten = false;
  // The claim's lease (scheduler.lease). When set, a task whose lease was not renewed in time is
  // fenced off: `fence_margin` before the lease would run out (counted from its claim or its last
  // renewal, see renewed()), its handler is told to stop, and the task is released once it has —
  // before another worker can rescue and start it. The margin must cover a handler's stopping (an
  // exec program's kill_after). 0: no fencing.
  Millis lease{0};
  Millis fence_margin{0};  // default: a tenth of the lease
  // At most this many tasks of a kind queued or running at once ([handlers.<kind>] concurrency):
  // the poller claims only what kind_room() leaves.
  std::map<std::string, int> kind_limits{};
  // Slot threads beyond the first few are added one a millisecond while tasks wait: once the oldest
  // has waited a millisecond if handlers that have run that long hold all but a few threads
  // (handlers that block — or run on the CPU that long: the rule cannot tell them apart), and once
  // it has waited `grow_after` whatever the handlers do (handlers that block for less, and also a
  // queue held up by a busy CPU for that long).
  Millis grow_after{10};
  void validate() const;
};

// One finished run, handed to the completer.
struct FinishedRun {
  Task task;
  TaskOutcome outcome;
  SysTime started_at{};
  SysTime finished_at{};
  std::optional<std::pair<std::string, std::string>> notify;  // (channel, payload) on success
  bool refused = false;  // the database refused the handler's own outcome; this is its replacement
};
using OutcomeSink = std::function<void(FinishedRun&&)>;

class Executor {
 public:
  // `flow`, when given, hears of every change of the slots (it must outlive the executor).
  Executor(ExecutorOptions options, const HandlerRegistry& handlers, OutcomeSink sink, Logger& log,
           FlowControl* flow = nullptr);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Slots not running (or about to run) a handler. A timed-out handler that has not returned
  // yet still holds its slot.
  int free_slots() const;
  int threads() const;  // slot threads started so far
  int busy() const;
  // Outcomes still to come: handlers queued or running, less those being handed over right now.
  int outcomes_coming() const;
  // The kinds with a limit and how many more of each may start now.
  std::vector<std::pair<std::string, int>> kind_room() const;
  // Starts the tasks; beyond free_slots() they queue for the next free slot. A task whose id
  // this executor still holds (its handler has not returned, or, with hold_until_forgotten, its
  // outcome is not written yet) is refused and left to the copy already running: after a
  // database crash loses a claim's commit, the next claim hands out the same tasks again.
  // Returns how many tasks were accepted.
  int submit(std::vector<Task> tasks);
  // The outcomes of `claims` are written (or given up): those tasks may be claimed and run again.
  // A claim of one refused meanwhile under another token is live, and runs now.
  void forget(const std::vector<ClaimRef>& claims);
  // The outcome of the run of `ran` matched no row. When this executor refused a claim of it
  // meanwhile at the same attempt of the same occurrence (the database had lost the claim the
  // outcome belongs to and handed the task out again, to this worker), returns that claim's
  // token: the same outcome written under it finishes the task (the id stays held until then).
  // A claim at another attempt or occurrence came after the outcome did land (a commit reported
  // in doubt): it is a run of its own, and runs. Otherwise the id is let go of, like forget().
  std::optional<std::int64_t> unrecorded(const Task& ran);
  // Waits until at least `n` slots are free (or idle), `deadline` passes or `cut` is requested.
  bool wait_free(int n, std::chrono::steady_clock::time_point deadline, std::stop_token cut = {});
  // The claims whose leases this worker must keep: queued, running, or finished with the outcome
  // not written yet (with hold_until_forgotten).
  std::vector<ClaimRef> held_claims() const;
  // The leases of `claims` were lost (an extend matched no row: rescued, or changed under us), or
  // their tasks were cancelled (NOTIFY agentcron_cancel). Those still held under that very claim
  // have their handlers asked to stop and their outcomes dropped: the row is someone else's now,
  // or finished. Returns how many handlers were told so.
  enum class Loss { lease, cancelled };
  int lose(const std::vector<ClaimRef>& claims, Loss why = Loss::lease);
  std::uint64_t cancelled() const;  // tasks stopped by a cancel
  // Shutdown has begun: nothing new starts (a claim refused earlier is not run either).
  void close();
  // The leases of `ids` were renewed by a statement sent at `sent`: they hold until sent + lease.
  void renewed(const std::vector<std::int64_t>& ids, std::chrono::steady_clock::time_point sent);
  std::uint64_t leases_lost() const;
  // Waits until every slot is free, `deadline` passes or `cut` is requested; true when idle.
  bool wait_idle(std::chrono::steady_clock::time_point deadline, std::stop_token cut = {});
  // Shutdown past the grace: tasks not started yet are released (back to pending, attempt not
  // counted) at once; every running handler is asked to stop, and its task is released once the
  // handler has returned — never before, so that no other worker can start it beside the running
  // copy. A handler that ignores its stop keeps its task (and its lease) for as long as it runs.
  // Returns how many tasks were cancelled.
  int cancel_all(const std::string& why);
  // Whether every slot's thread has returned from its handler (false: some handler ignores stop).
  bool all_handlers_returned() const;
  void set_concurrency(int n);

 private:
  struct Running {
    Task task;
    std::stop_source stop;
    Millis limit{0};                                   // the handler's time limit
    std::chrono::steady_clock::time_point deadline{};  // set when a slot starts it
    std::chrono::steady_clock::time_point fence_at = std::chrono::steady_clock::time_point::max();  // lease
    SysTime started_at{};
    std::chrono::steady_clock::time_point queued_at{};  // when it joined the queue
    std::chrono::steady_clock::time_point began{};      // when its handler was called (by a slot)
    // From the call until the handler returns: a slot waiting for mu_ or handing its outcome over
    // is not in its handler, and counts as free to take the next task.
    std::atomic<bool> in_handler{false};
    bool settled = false;  // its outcome was handed to the sink (by its slot, or by cancel_all if queued)
    // Why its stop was requested: its deadline passed, or shutdown cancelled it. The outcome is
    // decided when the handler returns.
    enum class Stopped { no, timed_out, cancelled, lease_lost } stopped = Stopped::no;
    Loss loss = Loss::lease;  // with Stopped::lease_lost: why
    bool fenced = false;  // stopped because its lease could not be renewed (released once stopped)
    std::string cancel_reason;
  };
  // The outcome of a run whose handler returned after being told to stop.
  static TaskOutcome stopped_outcome(const Running& r, TaskOutcome returned);
  std::chrono::steady_clock::time_point fence_after(std::chrono::steady_clock::time_point renewed) const;
  struct Hold {
    bool handler_done = false;  // the handler returned, or never started
    bool outcome_done = false;  // the outcome is written (or settled, without hold_until_forgotten)
    std::optional<Task> redelivery;  // a claim of it refused while it was held (the latest)
    std::int64_t token = 0;          // the claim on the row: the last one handed to us
    std::optional<std::int64_t> written;  // the claim whose outcome forget() reported written
    std::chrono::steady_clock::time_point renewed{};  // when its lease was last renewed (sent)
  };
  // Queues `t` for a slot, holding its id (mu_ held); its lease was last renewed at `renewed`
  // if that is later than its claim.
  void enqueue_locked(Task t, std::chrono::steady_clock::time_point renewed = {});
  // Marks a held id's handler and/or outcome done, and lets go of it when both are (mu_ held). A
  // claim of it refused meanwhile is a claim of the row as it is now: that task is queued then.
  void release_hold_locked(std::int64_t id, bool handler_done, bool outcome_done);
  void slot_loop(std::stop_token st);
  void grow_locked(int limit);   // starts up to `limit` slot threads for waiting tasks (mu_ held)
  bool starved_locked() const;   // tasks wait, no thread is idle, and more threads are allowed
  static constexpr int kEagerThreads = 4;  // threads a submit may start at once
  // How long the oldest queued task waits, and a handler runs before its thread counts as blocked,
  // before the supervisor adds a thread for handlers that block (options_.grow_after: whatever the
  // handlers do).
  static constexpr std::chrono::milliseconds kGrowAfter{1};
  void supervise(std::stop_token st);
  void settle(const std::shared_ptr<Running>& r, TaskOutcome outcome, std::unique_lock<std::mutex>& lock);
  TaskOutcome run_one(Running& r);
  void busy_kind_locked(const std::string& kind, int delta);  // a limited kind's count (mu_ held)
  void report_locked();  // tells flow_ the slots as they are now (mu_ held)

  ExecutorOptions options_;
  const HandlerRegistry& handlers_;
  OutcomeSink sink_;
  Logger& log_;
  mutable std::mutex mu_;
  std::condition_variable_any work_cv_;        // slot threads: a task was queued
  std::condition_variable_any state_cv_;       // waiters: a task settled, a slot freed
  std::condition_variable_any supervisor_cv_;  // the supervisor: an earlier deadline, or starved slots
  std::chrono::steady_clock::time_point supervisor_wake_at_ = std::chrono::steady_clock::time_point::max();
  // Starved when the supervisor last looked: it looks again within kGrowAfter, unwoken.
  bool watching_growth_ = false;
  std::deque<std::shared_ptr<Running>> queue_;
  std::map<std::int64_t, std::shared_ptr<Running>> running_;  // queued or running, by task id
  std::map<std::int64_t, Hold> held_;  // every id submitted and not yet let go of
  int capacity_;
  int busy_ = 0;  // queued + running handlers
  std::map<std::string, int> kind_busy_;  // of them, per limited kind
  std::uint64_t generation_ = 0;  // bumped when a handler starts: the supervisor re-reads deadlines
  int delivering_ = 0;            // outcomes settled but not yet handed to the sink
  std::uint64_t leases_lost_ = 0;
  std::uint64_t cancelled_ = 0;
  bool closing_ = false;  // cancel_all ran: nothing new starts
  int idle_threads_ = 0;          // slot threads waiting for work
  FlowControl* flow_;
  std::vector<std::jthread> slots_;  // started on demand, up to capacity_
  std::jthread supervisor_;
};

}  // namespace agentcron
