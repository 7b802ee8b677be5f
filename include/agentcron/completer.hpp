// Completer: turns finished runs into their next state (succeeded, pending for a retry or the
// next fire time, failed) and writes them in batches — a completion statement, then a release
// statement for released tasks — retrying transient database errors; no outcome is dropped
// while the process lives.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "agentcron/executor.hpp"
#include "agentcron/retry.hpp"
#include "agentcron/task_store.hpp"

namespace agentcron {

class FlowControl;
class Logger;
struct Telemetry;

struct CompleterOptions {
  std::string worker;                                  // locked_by of our tasks
  Backoff task_retry;                                  // delay of a failed task's next attempt
  Backoff db_retry{std::chrono::milliseconds(100), std::chrono::seconds(10), 2};  // of a failed write
  // Gathering before a write: at most this long, and only while more outcomes are on their way.
  Millis flush_interval = std::chrono::milliseconds(2);
  int max_batch = 1000;                                // most outcomes in one statement
  Telemetry* telemetry = nullptr;  // when set: each written run's duration, by kind and outcome
  void validate() const;
};

struct CompleterStats {
  std::uint64_t succeeded = 0;
  std::uint64_t retried = 0;
  std::uint64_t failed = 0;
  std::uint64_t released = 0;
  std::uint64_t write_errors = 0;
  std::uint64_t not_recorded = 0;  // outcomes that matched no row: the task had moved on
  std::uint64_t gathers = 0;       // times the writer waited for outcomes still coming
  std::uint64_t after_stop = 0;    // outcomes that came after stop() wrote the last ones: lost
};

// One write of up to max_batch outcomes (run_once).
struct CompleterRound {
  std::size_t taken = 0;  // outcomes taken from the queue
  bool ok = true;         // false: a transient failure put them back, to be tried again
};

class Completer {
 public:
  // `flow`, when given, hears how many outcomes are unwritten and says how many are still coming
  // (the writer gathers while some are); it must outlive the completer. Without one, some are
  // always coming: the writer gathers for flush_interval.
  Completer(CompleterOptions options, TaskStore& store, Logger& log, FlowControl* flow = nullptr);
  ~Completer();
  Completer(const Completer&) = delete;
  Completer& operator=(const Completer&) = delete;

  // The writer thread: it gathers outcomes and writes them (run_once) until stopped.
  void start();
  // The writer stops after its current write; idempotent, safe before start. A start() after it
  // starts a new writer (stop() does not: it ends the completer for good).
  void request_stop();
  void wait();
  // One write on the caller's thread (it waits while the writer thread writes).
  CompleterRound run_once();

  // Thread-safe; never blocks on the database.
  void add(FinishedRun&& run);
  // Writes everything added so far, retrying transient errors until `deadline`. True when
  // nothing is left unwritten.
  bool flush(std::chrono::steady_clock::time_point deadline);
  // Shutdown: stops the writer thread, then flushes what is left (bounded by `deadline`).
  bool stop(std::chrono::steady_clock::time_point deadline);

  CompleterStats stats() const;
  std::size_t pending() const;
  // Called (without locks held) with the claims whose outcomes were written (or given up for
  // good) after each write: the backlog shrank, and those tasks may run again.
  void set_on_written(std::function<void(const std::vector<ClaimRef>&)> cb) { on_written_ = std::move(cb); }
  // Asked (without locks held) about an outcome that matched no row: the token of a claim of the
  // task this worker got again since (see Executor::unrecorded), under which the outcome is to be
  // written again; nullopt: none. Unset: never.
  void set_redelivered(std::function<std::optional<std::int64_t>(const Task&)> cb) { redelivered_ = std::move(cb); }

  // The next state of a finished run (pure: tests call it directly). `db_now` is the
  // database's clock; `rng` feeds the retry jitter.
  static Completion decide(const FinishedRun& run, const Backoff& task_retry, SysTime db_now, std::mt19937_64& rng);

 private:
  void loop(std::stop_token st);
  bool write_completions(std::vector<FinishedRun> runs);
  bool write_releases(std::vector<FinishedRun> runs);
  // After a refused write: puts `runs` back at the front — to be retried, written one by one,
  // or replaced by a plain failure — or gives up on a lone run nothing smaller can replace.
  // Returns false when the error is transient.
  bool put_back(std::vector<FinishedRun> runs, const DatabaseError& e);
  void announce_written(const std::vector<ClaimRef>& claims);
  void report_locked();  // tells flow_ how many outcomes are unwritten: queued or being written (mu_ held)
  bool none_coming() const;  // no handler is left whose outcome is still to come
  // Logs a written outcome and says what it was, for the counts.
  enum class Written { succeeded, retried, failed };
  Written log_written(const Completion& c, const Task& t);

  CompleterOptions options_;
  TaskStore& store_;
  Logger& log_;
  mutable std::mutex mu_;
  std::condition_variable_any cv_;
  std::deque<FinishedRun> queue_;
  std::mutex write_mu_;  // one writer at a time (the loop, or flush())
  std::mt19937_64 rng_{std::random_device{}()};
  CompleterStats stats_;
  std::size_t isolate_ = 0;  // after a refused batch: this many writes of one run each
  std::size_t in_flight_ = 0;  // taken by the write under way (write_mu_ held), counted as unwritten
  std::atomic<bool> stopped_{false};
  bool closed_ = false;  // under mu_: stop() wrote the last outcomes; add() keeps no more
  std::function<void(const std::vector<ClaimRef>&)> on_written_;
  std::function<std::optional<std::int64_t>(const Task&)> redelivered_;
  FlowControl* flow_;
  std::jthread thread_;
};

}  // namespace agentcron
