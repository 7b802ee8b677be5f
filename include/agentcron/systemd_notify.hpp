// systemd's notification protocol (sd_notify): READY=1, RELOADING=1, STOPPING=1, STATUS=,
// EXTEND_TIMEOUT_USEC= and WATCHDOG=1. Every call is a no-op when not run by systemd, i.e.
// without $NOTIFY_SOCKET.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "agentcron/duration.hpp"
#include "agentcron/log.hpp"
#include "agentcron/periodic.hpp"

namespace agentcron {

class Logger;

void notify_systemd(const std::string& state);
// Whether $NOTIFY_SOCKET names a socket to notify.
bool systemd_notify_enabled();
// WatchdogSec of the unit ($WATCHDOG_USEC for this process); 0 when there is none.
Millis systemd_watchdog_interval();
// Writes a Logger's journal entries through sd_journal_sendv (native protocol, fields kept).
JournalWriter systemd_journal_writer();

struct SystemdNotifierOptions {
  Millis watchdog{0};                           // WatchdogSec: pings at half of it; 0: no pings
  Millis status_every = std::chrono::seconds(5);  // STATUS= at most this often (when it changed)
  void validate() const;
};

// What the notifier reads on each round (any thread; they must be cheap).
struct SystemdNotifierSources {
  std::function<bool()> ready;                  // the first claim succeeded: READY=1
  std::function<std::uint64_t()> heartbeat;     // grows while the poller's thread makes progress
  std::function<std::string()> status;          // the STATUS= line
};

struct SystemdNotifierRound {
  bool ready_sent = false;   // READY=1 went out this round
  bool pinged = false;       // WATCHDOG=1 went out this round
  bool status_sent = false;  // STATUS= went out this round
};

// Says READY=1 once the first claim succeeded, then pings the watchdog only while the poller's
// heartbeat grows: a stuck poller stops the pings and systemd restarts the service. Before
// READY=1 it pings regardless (startup is bounded by TimeoutStartSec and EXTEND_TIMEOUT_USEC).
class SystemdNotifier {
 public:
  SystemdNotifier(SystemdNotifierOptions options, SystemdNotifierSources sources, Logger& log);
  SystemdNotifierRound run_once();
  void start() { periodic_.start(); }
  void request_stop() { periodic_.request_stop(); }
  void wait() { periodic_.wait(); }

 private:
  SystemdNotifierOptions options_;
  SystemdNotifierSources sources_;
  bool ready_ = false;
  std::uint64_t last_heartbeat_ = 0;
  std::string last_status_;
  std::chrono::steady_clock::time_point status_at_{};
  Periodic periodic_;  // last: joined before the members its rounds use go away
};

}  // namespace agentcron
