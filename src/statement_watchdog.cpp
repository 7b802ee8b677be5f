// The statement watchdog (see statement_watchdog.hpp).
#include "agentcron/statement_watchdog.hpp"

#include <vector>

#include "agentcron/log.hpp"

namespace agentcron {

StatementWatchdog::StatementWatchdog(Logger& log, Millis grace) : log_(log), grace_(grace) {
  thread_ = std::jthread([this](std::stop_token st) { loop(st); });
}

StatementWatchdog::~StatementWatchdog() {
  thread_.request_stop();
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::unique_lock lock(mu_);
  acted_.wait(lock, [&] { return in_flight_ == 0; });  // actions still running reach into *this
}

std::uint64_t StatementWatchdog::watch(std::chrono::steady_clock::time_point deadline, Actions actions) {
  std::lock_guard lock(mu_);
  std::uint64_t id = ++next_id_;
  watched_[id] = Watched{deadline, std::move(actions)};
  ++generation_;
  cv_.notify_all();
  return id;
}

void StatementWatchdog::unwatch(std::uint64_t id) {
  std::unique_lock lock(mu_);
  acted_.wait(lock, [&] {
    auto it = watched_.find(id);
    return it == watched_.end() || !it->second.acting;
  });
  watched_.erase(id);
}

void StatementWatchdog::perform(std::uint64_t id, bool cut, const std::function<void()>& act) {
  if (cut) log_.warn("the server did not answer the cancel either; closing the connection's socket");
  else log_.warn("statement outlived its timeout and the server did not cancel it; cancelling it");
  if (act) act();
  std::lock_guard lock(mu_);
  Watched& after = watched_.at(id);
  after.acting = false;
  if (cut) {
    after.deadline = std::chrono::steady_clock::time_point::max();  // nothing more to do to it
  } else {
    after.cancelled = true;
    after.deadline = std::chrono::steady_clock::now() + grace_;
  }
  --in_flight_;
  ++generation_;  // the loop recomputes its next deadline
  cv_.notify_all();
  acted_.notify_all();
}

void StatementWatchdog::loop(std::stop_token st) {
  std::unique_lock lock(mu_);
  while (!st.stop_requested()) {
    auto now = std::chrono::steady_clock::now();
    auto earliest = std::chrono::steady_clock::time_point::max();
    // The statements due for an action now: (id, cut rather than cancel).
    std::vector<std::pair<std::uint64_t, bool>> due;
    for (auto& [id, w] : watched_) {
      if (w.acting) continue;
      if (w.deadline > now) {
        earliest = std::min(earliest, w.deadline);
        continue;
      }
      due.emplace_back(id, w.cancelled);
      w.acting = true;
    }
    // Each action on a thread of its own: a cancel request whose connect hangs (an unreachable
    // server) delays neither the next statement's action nor anyone's watch().
    for (auto [id, cut] : due) {
      Watched& w = watched_.at(id);  // acting: unwatch() leaves it in place until it is done
      std::function<void()> act = cut ? w.actions.cut : w.actions.cancel;
      ++in_flight_;
      std::thread([this, id, cut, act = std::move(act)] { perform(id, cut, act); }).detach();
    }
    // Sleep until the earliest deadline, or until a new watch (maybe an earlier one) arrives.
    std::uint64_t seen = generation_;
    auto changed = [&] { return generation_ != seen; };
    if (earliest == std::chrono::steady_clock::time_point::max()) cv_.wait(lock, st, changed);
    else cv_.wait_until(lock, st, earliest, changed);
  }
}

}  // namespace agentcron
