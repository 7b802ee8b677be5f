// Error classification, backoff and the circuit breaker (see retry.hpp).
#include "agentcron/retry.hpp"

#include <algorithm>
#include <cmath>

#include "agentcron/log.hpp"

namespace agentcron {

std::string_view to_string(ErrorClass c) {
  switch (c) {
    case ErrorClass::transient: return "transient";
    case ErrorClass::permanent: return "permanent";
    case ErrorClass::in_doubt: return "in_doubt";
  }
  return "?";
}

ErrorClass classify_sqlstate(std::string_view s) {
  if (s.size() != 5) return ErrorClass::permanent;
  if (s.starts_with("08")) return ErrorClass::transient;  // connection exceptions
  static constexpr std::string_view transient[] = {"40001", "40P01", "57P01", "57P02", "57P03",
                                                   "53300", "55P03", "57014"};
  return std::find(std::begin(transient), std::end(transient), s) != std::end(transient) ? ErrorClass::transient
                                                                                           : ErrorClass::permanent;
}

bool is_transient(const std::exception& e) {
  if (auto* d = dynamic_cast<const DatabaseError*>(&e)) return d->is_transient();
  return false;
}

std::string sqlstate(const std::exception& e) {
  if (auto* d = dynamic_cast<const DatabaseError*>(&e)) return d->sqlstate();
  return "";
}

Millis Backoff::cap(int attempt) const {
  double ms = static_cast<double>(base.count()) * std::pow(factor, std::max(0, attempt - 1));
  if (!std::isfinite(ms) || ms > static_cast<double>(max.count())) return max;
  return Millis(static_cast<std::int64_t>(ms));
}

Millis Backoff::delay(int attempt, std::mt19937_64& rng) const {
  std::uniform_int_distribution<std::int64_t> dist(0, cap(attempt).count());
  return Millis(dist(rng));
}

CircuitBreaker::CircuitBreaker(int threshold, Millis cooldown, const Clock& clock, Logger* log)
    : threshold_(threshold), cooldown_(cooldown), clock_(clock), log_(log) {}

bool CircuitBreaker::allow() {
  std::lock_guard lock(mu_);
  if (state_ == State::closed) return true;
  if (state_ == State::open) {
    if (clock_.now() - opened_at_ < cooldown_) return false;
    state_ = State::half_open;
    probe_out_ = false;
  }
  if (probe_out_) return false;
  probe_out_ = true;  // half-open: exactly one probe
  return true;
}

void CircuitBreaker::record_success() {
  std::lock_guard lock(mu_);
  if (state_ != State::closed && log_) log_->info("database circuit breaker closed", {{"after_failures", failures_}});
  state_ = State::closed;
  failures_ = 0;
  probe_out_ = false;
}

void CircuitBreaker::record_failure(std::string_view sqlstate, bool counts) {
  std::lock_guard lock(mu_);
  if (!counts && state_ != State::half_open) return;
  ++failures_;
  if (state_ == State::half_open || (state_ == State::closed && failures_ >= threshold_)) {
    if (log_)
      log_->warn("database circuit breaker opened", {{"failures", failures_},
                                                     {"sqlstate", sqlstate},
                                                     {"cooldown_ms", static_cast<std::int64_t>(cooldown_.count())}});
    state_ = State::open;
    opened_at_ = clock_.now();
    probe_out_ = false;
  }
}

CircuitBreaker::State CircuitBreaker::state() const {
  std::lock_guard lock(mu_);
  return state_;
}

void retry_transient(std::string_view what, int max_attempts, const Backoff& backoff, Logger& log,
                     const std::function<bool(Millis)>& sleep, const std::function<void()>& op,
                     CircuitBreaker* breaker) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  for (int attempt = 1;; ++attempt) {
    if (breaker && !breaker->allow()) throw BreakerOpen("database circuit breaker is open; " + std::string(what) + " not attempted");
    try {
      op();
      if (breaker) breaker->record_success();
      return;
    } catch (const DatabaseError& e) {
      if (!e.is_transient()) {  // permanent or in doubt: retrying cannot help, or may do harm
        if (breaker) breaker->record_failure(e.sqlstate(), false);  // but a failed probe reopens
        throw;
      }
      if (breaker) breaker->record_failure(e.sqlstate());
      if (attempt >= max_attempts) throw;
      Millis d = backoff.delay(attempt, rng);
      log.warn("database call failed, retrying", {{"op", what},
                                                  {"attempt", attempt},
                                                  {"sqlstate", e.sqlstate()},
                                                  {"error", e.what()},
                                                  {"retry_in_ms", static_cast<std::int64_t>(d.count())}});
      if (!sleep(d)) throw;
    }
  }
}

}  // namespace agentcron
