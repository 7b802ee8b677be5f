// The completer (see completer.hpp).
#include "agentcron/completer.hpp"

#include <algorithm>

#include "agentcron/cron.hpp"
#include "agentcron/flow_control.hpp"
#include "agentcron/log.hpp"
#include "agentcron/telemetry.hpp"
#include "agentcron/service.hpp"
#include "agentcron/utf8.hpp"

namespace agentcron {
namespace {

// A handler's message on its way to a text column: valid UTF-8 without NUL bytes, at most 8 KiB
// cut on a character boundary. A handler's bytes are not worth losing the row over.
std::string clean(const std::string& s) { return bounded_utf8(s, 8192); }

// An exception from building or sending a write that is not the database's answer.
DatabaseError client_refusal(const std::exception& e) {
  return DatabaseError(std::string("could not write task outcomes: ") + e.what(), "", ErrorClass::permanent);
}

}  // namespace

void CompleterOptions::validate() const {
  require_option(!worker.empty(), "completer", "worker must not be empty");
  require_option(max_batch > 0, "completer", "max_batch must be > 0");
  require_option(flush_interval >= Millis(0), "completer", "flush_interval must be >= 0");
}

Completer::Completer(CompleterOptions options, TaskStore& store, Logger& log, FlowControl* flow)
    : options_(validated(std::move(options))), store_(store), log_(log), flow_(flow) {}

void Completer::start() {
  if (thread_.joinable() || stopped_) return;
  thread_ = std::jthread([this](std::stop_token st) { loop(st); });
}

void Completer::request_stop() {
  thread_.request_stop();
  cv_.notify_all();
}

void Completer::wait() {
  if (thread_.joinable()) thread_.join();
}

// Stopped once already (as the worker does before it closes the pool): nothing more to write, and
// the collaborators its callbacks reach may be gone by now.
Completer::~Completer() {
  if (!stopped_) stop(std::chrono::steady_clock::now() + std::chrono::seconds(5));
}

Completion Completer::decide(const FinishedRun& run, const Backoff& task_retry, SysTime db_now, std::mt19937_64& rng) {
  const Task& t = run.task;
  const TaskOutcome& o = run.outcome;
  Completion c;
  c.id = t.id;
  c.claim_token = t.claim_token;
  c.attempt = t.attempt;
  c.started_at = run.started_at;
  c.finished_at = run.finished_at;

  // A recurring task's next fire time, strictly in the future of the database clock: missed
  // occurrences coalesce into the run that just happened.
  NextFire fire;
  if (t.cron) fire = next_fire(*t.cron, t.timezone, db_now);
  auto to_next_fire = [&] {
    c.status = Completion::Status::pending;
    c.run_at = fire.at;
    c.reset_attempts = true;
  };

  if (o.kind == TaskOutcome::Kind::succeeded) {
    if (fire.at) {
      to_next_fire();
      c.run_outcome = "succeeded";
    } else if (t.cron) {
      c.status = Completion::Status::failed;  // ran, but its schedule is broken: nothing to come back to
      c.error = fire.error;
      c.run_outcome = "failed";
    } else {
      c.status = Completion::Status::succeeded;  // a one-off task's own row is its record
    }
    c.result = clean(o.message);  // what the handler returned, e.g. a JSON response body
    if (run.notify) {
      c.notify_channel = run.notify->first;
      c.notify_payload = run.notify->second;
    }
    return c;
  }

  c.error = clean(o.message.empty() ? "failed" : o.message);
  if (!fire.error.empty()) c.error = fire.error;
  bool attempts_left = t.attempt < t.max_attempts;
  if (o.kind == TaskOutcome::Kind::retry && attempts_left && fire.error.empty()) {
    Millis delay = task_retry.delay(t.attempt, rng);
    // An endpoint's Retry-After is honoured up to retry.max_delay: a reply cannot park a task
    // for years (or past the range scheduled_for accepts).
    if (o.retry_not_before && *o.retry_not_before > db_now)
      delay = std::max(delay, std::min(std::chrono::ceil<Millis>(*o.retry_not_before - db_now), task_retry.max));
    // A recurring task retries only while the retry comes before its next fire time.
    if (!fire.at || db_now + delay < *fire.at) {
      c.status = Completion::Status::pending;
      c.retry_delay = delay;
      c.run_outcome = "retry";
      return c;
    }
  }
  c.run_outcome = "failed";
  if (fire.at) to_next_fire();
  else c.status = Completion::Status::failed;
  return c;
}

void Completer::add(FinishedRun&& run) {
  // The executor stops counting an outcome as coming before it hands it over (delivering), so the
  // last handler's add sees none coming and wakes the gathering writer.
  bool last = none_coming();
  bool wake;
  {
    std::lock_guard lock(mu_);
    if (closed_) {
      // A handler that ignored its stop and returned after shutdown wrote the last outcomes. Its
      // task is still running under this worker's lease; the lease expires and the rescuer takes it.
      ++stats_.after_stop;
      log_.error("a task outcome came after the last write at shutdown (its handler returned late); it is not "
                 "written, and the task is rescued once its lease expires",
                 {{"task_id", run.task.id}, {"kind", run.task.kind}, {"attempt", run.task.attempt}});
      return;
    }
    queue_.push_back(std::move(run));
    report_locked();
    // The writer needs waking to start gathering, when a full batch is ready, or when this was
    // the last outcome it was gathering for.
    wake = last || queue_.size() == 1 || queue_.size() >= static_cast<std::size_t>(options_.max_batch);
  }
  if (wake) cv_.notify_all();
}

std::size_t Completer::pending() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

CompleterStats Completer::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

CompleterRound Completer::run_once() {
  std::lock_guard writer(write_mu_);
  std::vector<FinishedRun> runs, releases;
  std::size_t n;
  {
    std::lock_guard lock(mu_);
    std::size_t limit = isolate_ > 0 ? 1 : static_cast<std::size_t>(options_.max_batch);
    if (isolate_ > 0) --isolate_;
    n = std::min<std::size_t>(queue_.size(), limit);
    if (n == 0) return {};
    for (std::size_t i = 0; i < n; ++i) {
      (queue_.front().outcome.cancelled ? releases : runs).push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    // Still unwritten while the statement runs: the room they take is freed when it returns (a
    // failed write puts them back in the queue first), not when they leave the queue.
    in_flight_ = n;
  }
  struct Landed {  // whatever the write did, even if it threw
    Completer& c;
    ~Landed() {
      std::lock_guard lock(c.mu_);
      c.in_flight_ = 0;
      c.report_locked();
    }
  } landed{*this};
  // Each group is written and, should the database refuse it, put back on its own: a release
  // that fails does not send the completions beside it again.
  CompleterRound round{n, true};
  round.ok = write_completions(std::move(runs));
  round.ok = write_releases(std::move(releases)) && round.ok;
  return round;
}

bool Completer::write_completions(std::vector<FinishedRun> runs) {
  if (runs.empty()) return true;
  std::vector<Completion> completions;
  std::vector<std::int64_t> written;
  try {
    completions.reserve(runs.size());
    for (const auto& run : runs) completions.push_back(decide(run, options_.task_retry, run.task.db_now(), rng_));
    written = store_.complete_many(completions, options_.worker);
  } catch (const DatabaseError& e) {
    return put_back(std::move(runs), e);
  } catch (const std::exception& e) {
    // Not the database's answer, yet these runs must not vanish (their ids would stay held and
    // their leases renewed for ever): handled as values that cannot be written.
    return put_back(std::move(runs), client_refusal(e));
  }
  std::sort(written.begin(), written.end());
  std::uint64_t ok = 0, retried = 0, failed = 0, stale = 0;
  std::vector<ClaimRef> done;
  std::vector<FinishedRun> again;
  for (std::size_t i = 0; i < completions.size(); ++i) {
    const Completion& c = completions[i];
    const Task& t = runs[i].task;
    if (!std::binary_search(written.begin(), written.end(), t.id)) {
      if (std::optional<std::int64_t> token = redelivered_ ? redelivered_(t) : std::nullopt) {
        // The database lost this run's claim and has since handed the task to us again, at the
        // same attempt: the same outcome under the new claim finishes it, without a second run.
        log_.info("writing a task outcome again: the database had lost the task's claim",
                  {{"task_id", t.id}, {"kind", t.kind}, {"attempt", t.attempt}});
        runs[i].task.claim_token = *token;
        again.push_back(std::move(runs[i]));
        continue;
      }
      // Not a success, nor a failure: the row moved on without this outcome.
      ++stale;
      log_.warn("task outcome not recorded: the task is no longer running under this worker's lease "
                "(cancelled, rescued after its lease expired, its claim lost in a database crash, or changed "
                "meanwhile)",
                {{"task_id", t.id}, {"kind", t.kind}, {"attempt", t.attempt}});
      continue;
    }
    done.push_back(t.claim());
    const char* outcome = "succeeded";
    switch (log_written(c, t)) {
      case Written::succeeded: ++ok; break;
      case Written::retried: ++retried; outcome = "retried"; break;
      case Written::failed: ++failed; outcome = "failed"; break;
    }
    if (options_.telemetry && runs[i].started_at != SysTime{})
      options_.telemetry->task_duration.observe(
          prom_label("kind", t.kind) + "," + prom_label("outcome", outcome),
          std::max(0.0, std::chrono::duration<double>(runs[i].finished_at - runs[i].started_at).count()));
  }
  {
    std::lock_guard lock(mu_);
    stats_.succeeded += ok;
    stats_.retried += retried;
    stats_.failed += failed;
    stats_.not_recorded += stale;
    for (auto& run : again) queue_.push_back(std::move(run));
    report_locked();
  }
  announce_written(done);
  return true;
}

Completer::Written Completer::log_written(const Completion& c, const Task& t) {
  if (c.run_outcome == "retry") {
    log_.warn("task failed, will retry", {{"task_id", t.id},
                                          {"kind", t.kind},
                                          {"attempt", t.attempt},
                                          {"error", c.error},
                                          {"retry_in_ms", static_cast<std::int64_t>(c.retry_delay->count())}});
    return Written::retried;
  }
  if (c.status == Completion::Status::failed || c.run_outcome == "failed") {
    log_.error("task failed", {{"task_id", t.id}, {"kind", t.kind}, {"attempt", t.attempt}, {"error", c.error}});
    return Written::failed;
  }
  log_.info("task succeeded", {{"task_id", t.id}, {"kind", t.kind}, {"attempt", t.attempt}});
  return Written::succeeded;
}

bool Completer::write_releases(std::vector<FinishedRun> runs) {
  if (runs.empty()) return true;
  std::vector<ClaimRef> claims;
  for (const auto& run : runs) claims.push_back(run.task.claim());
  try {
    store_.release_many(claims, options_.worker, "shutdown");
  } catch (const DatabaseError& e) {
    return put_back(std::move(runs), e);
  } catch (const std::exception& e) {
    return put_back(std::move(runs), client_refusal(e));
  }
  {
    std::lock_guard lock(mu_);
    stats_.released += claims.size();
  }
  announce_written(claims);
  return true;
}

bool Completer::put_back(std::vector<FinishedRun> runs, const DatabaseError& e) {
  std::vector<ClaimRef> given_up;
  // Anything but a refusal of these very values is retried: transient errors, in-doubt commits
  // (every outcome is guarded by its claim, so a repeat is harmless), and permanent errors of the
  // whole database (read-only after a failover, a revoked privilege) that an operator may fix.
  // Outcomes are never dropped while the process lives unless the database refuses them.
  bool retry_later = !e.refuses_values();
  {
    std::lock_guard lock(mu_);
    ++stats_.write_errors;
    if (retry_later) {
      log_.warn("writing task outcomes failed; will retry", {{"count", static_cast<std::int64_t>(runs.size())},
                                                             {"sqlstate", e.sqlstate()},
                                                             {"error", e.what()}});
    } else if (runs.size() > 1) {
      // A permanent error in a batch: write the runs one by one so one bad row fails alone.
      log_.warn("a batch of task outcomes was refused; writing them one by one",
                {{"count", static_cast<std::int64_t>(runs.size())}, {"sqlstate", e.sqlstate()}, {"error", e.what()}});
      isolate_ += runs.size();
    } else if (FinishedRun& run = runs.front(); !run.refused && !run.outcome.cancelled) {
      // This one outcome is refused for good (a data error, a constraint): the task ends failed
      // with the database's reason, written without what was refused (its NOTIFY, its result).
      log_.error("the database refused a task outcome; recording the task as failed with the reason",
                 {{"task_id", run.task.id}, {"kind", run.task.kind}, {"attempt", run.task.attempt},
                  {"sqlstate", e.sqlstate()}, {"error", e.what()}});
      run.outcome = TaskOutcome::failure(std::string("the database refused this run's outcome: ") + e.what());
      run.notify.reset();
      run.refused = true;
      ++isolate_;
    } else {
      // Even the plain failure (or the release) was refused: nothing smaller is left to write.
      // The task keeps its lease until the lease expires and the rescuer takes it.
      log_.error("could not record a task outcome", {{"task_id", run.task.id},
                                                     {"kind", run.task.kind},
                                                     {"attempt", run.task.attempt},
                                                     {"sqlstate", e.sqlstate()},
                                                     {"error", e.what()}});
      given_up.push_back(run.task.claim());
      runs.clear();
    }
    for (auto it = runs.rbegin(); it != runs.rend(); ++it) queue_.push_front(std::move(*it));
    report_locked();
  }
  if (!given_up.empty()) announce_written(given_up);
  return !retry_later;
}

void Completer::report_locked() {
  if (flow_) flow_->unwritten(queue_.size() + in_flight_);
}

bool Completer::none_coming() const { return flow_ && flow_->outcomes_coming() <= 0; }

void Completer::announce_written(const std::vector<ClaimRef>& claims) {
  if (on_written_) on_written_(claims);
}

bool Completer::flush(std::chrono::steady_clock::time_point deadline) {
  int attempt = 0;
  while (true) {
    if (pending() == 0) {
      // The queue is empty, but the background writer may still be writing the last batch it
      // took: its lock is held for the whole write. Once it is free, look again (a failed write
      // puts its batch back).
      std::lock_guard writer(write_mu_);
      if (pending() == 0) return true;
      continue;
    }
    if (run_once().ok) {
      attempt = 0;
      continue;
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
        options_.db_retry.cap(++attempt), deadline - std::chrono::steady_clock::now()));
  }
}

bool Completer::stop(std::chrono::steady_clock::time_point deadline) {
  stopped_ = true;
  request_stop();
  wait();
  bool ok = flush(deadline);
  {
    std::lock_guard lock(mu_);
    closed_ = true;
  }
  // One that came while the first flush ended. Not after a failed flush: its deadline has passed,
  // and the shutdown budget allows no further write (what is left is reported below).
  if (ok) ok = flush(deadline);
  if (!ok)
    log_.error("task outcomes left unwritten at exit; their leases will expire and the rescuer will rerun them",
               {{"count", static_cast<std::int64_t>(pending())}});
  return ok;
}

void Completer::loop(std::stop_token st) {
  int attempt = 0;
  while (!st.stop_requested()) {
    {
      std::unique_lock lock(mu_);
      if (!cv_.wait(lock, st, [&] { return !queue_.empty(); })) return;
      // Gather a little: many outcomes in one statement beat one statement each. But not when no
      // handler is left to finish: a worker running one task at a time would wait every time.
      auto gathered = [&] { return queue_.size() >= static_cast<std::size_t>(options_.max_batch) || none_coming(); };
      if (!gathered()) {
        ++stats_.gathers;
        cv_.wait_for(lock, st, options_.flush_interval, gathered);
      }
    }
    bool written = false;
    try {
      written = run_once().ok;
    } catch (const std::exception& e) {
      // Not the database's refusal (run_once handles those): e.g. memory ran out. The writer
      // thread lives on and tries again after a backoff.
      log_.error("writing task outcomes failed", {{"error", e.what()}});
    }
    if (written) {
      attempt = 0;
      continue;
    }
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, st, options_.db_retry.cap(++attempt), [] { return false; });
  }
}

}  // namespace agentcron
