// Retry: classification of database errors by SQLSTATE (transient, permanent, in doubt), capped
// exponential backoff with full jitter, and a circuit breaker for a database that keeps failing.
#pragma once
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>

#include "agentcron/clock.hpp"
#include "agentcron/duration.hpp"

namespace agentcron {

class Logger;

enum class ErrorClass {
  transient,  // retry with backoff: the same statement may well succeed
  permanent,  // retrying cannot help
  in_doubt,   // a commit whose outcome is unknown: never retry
};
std::string_view to_string(ErrorClass c);

// The class of a SQLSTATE per design.md: 08xxx, 40001, 40P01, 57P01-57P03, 53300, 55P03 and
// 57014 are transient; everything else permanent.
ErrorClass classify_sqlstate(std::string_view sqlstate);

// A database failure as the rest of agentcron sees it: the message (never a password), the
// SQLSTATE when the server sent one, and its class. The task store and pool throw only this.
class DatabaseError : public std::runtime_error {
 public:
  DatabaseError(std::string message, std::string sqlstate, ErrorClass cls)
      : std::runtime_error(std::move(message)), sqlstate_(std::move(sqlstate)), class_(cls) {}
  const std::string& sqlstate() const { return sqlstate_; }
  ErrorClass error_class() const { return class_; }
  bool is_transient() const { return class_ == ErrorClass::transient; }
  // Whether the statement's values themselves were refused, for good: a data exception (22xxx,
  // e.g. a NOTIFY payload too long), an integrity constraint (23xxx), a program limit (54xxx), or
  // values the client would not send (no SQLSTATE, permanent: e.g. text libpq cannot quote). The
  // same statement with other values may pass; these values never will. A read-only server
  // (25006) or a missing privilege refuses every statement, not these values.
  bool refuses_values() const {
    if (class_ != ErrorClass::permanent) return false;
    return sqlstate_.empty() || sqlstate_.rfind("22", 0) == 0 || sqlstate_.rfind("23", 0) == 0 ||
           sqlstate_.rfind("54", 0) == 0;
  }
  // Whether the failure says the database does not take this worker's statements at all: a lost
  // or cut connection, a timeout, a server shutting down, out of resources, read-only, or
  // refusing this role, database or schema. Not the statement's own values, and not a lock
  // conflict, deadlock or serialization failure, which another try may pass.
  bool says_database_unwell() const {
    if (refuses_values()) return false;
    return sqlstate_ != "55P03" && sqlstate_ != "40P01" && sqlstate_ != "40001";
  }

 private:
  std::string sqlstate_;
  ErrorClass class_;
};

// An applied migration's file has changed since it was applied: nothing more is migrated, and
// the command exits with ExitCode::data_error.
class MigrationChanged : public DatabaseError {
 public:
  explicit MigrationChanged(std::string message) : DatabaseError(std::move(message), "", ErrorClass::permanent) {}
};

// The circuit breaker is open: the database was not called.
class BreakerOpen : public DatabaseError {
 public:
  explicit BreakerOpen(std::string message) : DatabaseError(std::move(message), "", ErrorClass::transient) {}
};

// Questions to ask any exception.
bool is_transient(const std::exception& e);
std::string sqlstate(const std::exception& e);  // "" when none

// Exponential backoff: min(max, base * factor^(attempt-1)), with full jitter (uniform 0..that).
struct Backoff {
  Millis base = std::chrono::seconds(1);
  Millis max = std::chrono::minutes(10);
  double factor = 2;

  Millis cap(int attempt) const;  // the delay before jitter; attempt counts from 1
  Millis delay(int attempt, std::mt19937_64& rng) const;
};

// Stops calling a database that keeps failing: after `threshold` consecutive failures that count
// it opens for `cooldown`, then lets one probe through (half-open); a success closes it, and a
// probe that fails for any reason — a permanent error too, such as 25006 from a primary demoted
// to read-only — opens it again (a probe whose failure went unrecorded would jam it half-open).
class CircuitBreaker {
 public:
  enum class State { closed, open, half_open };
  CircuitBreaker(int threshold, Millis cooldown, const Clock& clock, Logger* log = nullptr);

  // Whether a call may go ahead now. In half-open state only one caller gets true.
  bool allow();
  void record_success();
  // `counts`: whether the failure counts toward opening a closed breaker (the half-open probe's
  // failure always reopens it).
  void record_failure(std::string_view sqlstate = "", bool counts = true);
  State state() const;

 private:
  mutable std::mutex mu_;
  int threshold_;
  Millis cooldown_;
  const Clock& clock_;
  Logger* log_;
  State state_ = State::closed;
  int failures_ = 0;
  Clock::time_point opened_at_{};
  bool probe_out_ = false;
};

// Runs `op` and retries it on transient DatabaseErrors, up to `max_attempts` in all, sleeping the
// backoff between attempts through `sleep` (which returns false when asked to stop). Permanent
// and in-doubt errors propagate at once: never retry a commit whose outcome is unknown. Each
// retry is logged once with the SQLSTATE and the attempt. The breaker, when given, is asked first.
void retry_transient(std::string_view what, int max_attempts, const Backoff& backoff, Logger& log,
                     const std::function<bool(Millis)>& sleep, const std::function<void()>& op,
                     CircuitBreaker* breaker = nullptr);

}  // namespace agentcron
