// StatementWatchdog: cancels statements that outlive their deadline on the client side, in two
// stages — first a cancel request (the server may just be slow to notice its own timeout), then,
// if the statement still has not returned after a grace, the connection is cut so that the
// blocked call fails as a broken connection. A hung server or a dead network must not hold a
// pooled connection forever. The actions run outside the watchdog's lock: a cancel request to an
// unreachable server (a blocking connect) delays nobody else's statements.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "agentcron/duration.hpp"

namespace agentcron {

class Logger;

class StatementWatchdog {
 public:
  // What to do to one statement past its deadline.
  struct Actions {
    std::function<void()> cancel;  // send a cancel request
    std::function<void()> cut;     // shut the connection's socket down
  };
  StatementWatchdog(Logger& log, Millis grace);
  ~StatementWatchdog();
  StatementWatchdog(const StatementWatchdog&) = delete;
  StatementWatchdog& operator=(const StatementWatchdog&) = delete;

  // Watches a statement that must be done by `deadline`; returns its handle for unwatch().
  std::uint64_t watch(std::chrono::steady_clock::time_point deadline, Actions actions);
  // The statement returned. Waits while one of its actions is under way (its connection must
  // outlive the action), never for another statement's.
  void unwatch(std::uint64_t id);

 private:
  struct Watched {
    std::chrono::steady_clock::time_point deadline;
    Actions actions;
    bool cancelled = false;  // the cancel request went out; next comes the cut
    bool acting = false;     // an action runs right now, outside the lock
  };
  void loop(std::stop_token st);
  void perform(std::uint64_t id, bool cut, const std::function<void()>& act);  // on its own thread

  Logger& log_;
  Millis grace_;
  std::mutex mu_;
  std::condition_variable_any cv_;       // the loop: a new watch, or stop
  std::condition_variable acted_;        // unwatch(): an action finished
  std::map<std::uint64_t, Watched> watched_;
  std::uint64_t next_id_ = 0;
  std::uint64_t generation_ = 0;
  int in_flight_ = 0;  // actions running on their own threads
  std::jthread thread_;
};

// Watches one statement for as long as it lives.
class WatchedStatement {
 public:
  WatchedStatement(StatementWatchdog& w, Millis after, StatementWatchdog::Actions actions)
      : w_(w), id_(w.watch(std::chrono::steady_clock::now() + after, std::move(actions))) {}
  ~WatchedStatement() { w_.unwatch(id_); }
  WatchedStatement(const WatchedStatement&) = delete;
  WatchedStatement& operator=(const WatchedStatement&) = delete;

 private:
  StatementWatchdog& w_;
  std::uint64_t id_;
};

}  // namespace agentcron
