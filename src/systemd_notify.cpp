// systemd notifications through libsystemd (see systemd_notify.hpp).
#include "agentcron/systemd_notify.hpp"

#include <sys/uio.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>

#include <algorithm>
#include <cstdlib>

#include "agentcron/service.hpp"

namespace agentcron {

void notify_systemd(const std::string& state) { sd_notify(0, state.c_str()); }

bool systemd_notify_enabled() {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  return socket && *socket;
}

Millis systemd_watchdog_interval() {
  std::uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0) return Millis(0);
  return std::max(Millis(1), std::chrono::duration_cast<Millis>(std::chrono::microseconds(usec)));
}

JournalWriter systemd_journal_writer() {
  return [](const std::vector<std::string>& fields) {
    std::vector<iovec> iov;
    iov.reserve(fields.size());
    for (const auto& f : fields) iov.push_back({const_cast<char*>(f.data()), f.size()});
    return sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) >= 0;
  };
}

void SystemdNotifierOptions::validate() const {
  require_option(watchdog >= Millis(0), "systemd notifier", "watchdog must be >= 0");
  require_option(status_every > Millis(0), "systemd notifier", "status_every must be > 0");
}

namespace {
// A round every half watchdog interval (at most a second apart: READY=1 should not wait long).
Millis round_interval(const SystemdNotifierOptions& o) {
  return o.watchdog > Millis(0) ? std::clamp(o.watchdog / 2, Millis(1), Millis(1000)) : Millis(1000);
}
}  // namespace

SystemdNotifier::SystemdNotifier(SystemdNotifierOptions options, SystemdNotifierSources sources, Logger& log)
    : options_(validated(std::move(options))),
      sources_(std::move(sources)),
      periodic_("notifying systemd", round_interval(options_), [this](std::stop_token) { run_once(); }, log) {}

SystemdNotifierRound SystemdNotifier::run_once() {
  SystemdNotifierRound r;
  std::string message;
  if (!ready_ && sources_.ready && sources_.ready()) {
    ready_ = r.ready_sent = true;
    message += "READY=1\n";
  }
  if (options_.watchdog > Millis(0)) {
    std::uint64_t beat = sources_.heartbeat ? sources_.heartbeat() : 0;
    // Before READY=1 the poller has not started: the process being here is the proof of life;
    // READY=1 itself comes from a claim that just reached the database.
    if (!ready_ || r.ready_sent || beat != last_heartbeat_) {
      r.pinged = true;
      message += "WATCHDOG=1\n";
    }
    last_heartbeat_ = beat;
  }
  auto now = std::chrono::steady_clock::now();
  if (sources_.status && (r.ready_sent || now - status_at_ >= options_.status_every)) {
    std::string status = sources_.status();
    if (r.ready_sent || status != last_status_) {  // READY=1 always carries one
      r.status_sent = true;
      message += "STATUS=" + status + "\n";
      last_status_ = std::move(status);
      status_at_ = now;
    }
  }
  if (!message.empty()) notify_systemd(message);
  return r;
}

}  // namespace agentcron
