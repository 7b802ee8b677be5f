// systemd's notification protocol, end to end: the built binary is given a NOTIFY_SOCKET (a
// datagram socket this test binds and reads, as systemd does) and a WATCHDOG_USEC, and a real
// PostgreSQL; the test checks the messages, their order and the watchdog's cadence.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "support/process.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using testing::Process;
using testing::TestDatabase;

// systemd's end of the protocol: an AF_UNIX datagram socket; each datagram is one sd_notify()
// call, its lines the assignments (READY=1, WATCHDOG=1, STATUS=…).
class NotifySocket {
 public:
  struct Message {
    Clock::time_point at;
    std::string text;
    bool has(const std::string& line) const { return ("\n" + text + "\n").find("\n" + line + "\n") != std::string::npos; }
  };

  NotifySocket() {
    path_ = "/tmp/agentcron-notify-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    ::unlink(path_.c_str());
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      throw std::runtime_error("cannot bind " + path_);
  }
  ~NotifySocket() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }

  // Receives until a message has `line` (returned) or `timeout` passes (nullopt). Every message
  // received is kept in messages().
  std::optional<Message> until(const std::string& line, std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(1, left.count()))) <= 0) continue;
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) continue;
      std::string text(buf, static_cast<std::size_t>(n));
      while (!text.empty() && text.back() == '\n') text.pop_back();
      messages_.push_back({Clock::now(), text});
      if (messages_.back().has(line)) return messages_.back();
    }
    return std::nullopt;
  }
  // Receives everything for `d`.
  void collect(std::chrono::milliseconds d) { until("\x01never", d); }
  const std::vector<Message>& messages() const { return messages_; }
  // The watchdog pings received from `from` on, and the longest silence between two of them
  // (or from `from` to the first, or from the last to `to`).
  std::chrono::milliseconds longest_silence(Clock::time_point from, Clock::time_point to) const {
    Clock::time_point last = from;
    Clock::duration longest{};
    for (const auto& m : messages_) {
      if (m.at < from || m.at > to || !m.has("WATCHDOG=1")) continue;
      longest = std::max(longest, m.at - last);
      last = m.at;
    }
    longest = std::max(longest, to - last);
    return std::chrono::duration_cast<std::chrono::milliseconds>(longest);
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::vector<Message> messages_;
};

class SystemdE2E : public ::testing::Test {
 protected:
  TestDatabase db;
  NotifySocket notify;
  std::string config_path = "/tmp/agentcron-e2e-systemd-" + std::to_string(::getpid()) + ".toml";

  void TearDown() override { ::unlink(config_path.c_str()); }
  std::string config(const std::string& extra = "") {
    std::ofstream(config_path) << "[database]\nurl = \"" << db.url() << "\"\nconnection_limit = 4\n"
                               << "[scheduler]\nschedule = \"* * * * * *\"\n"
                               << "[log]\nformat = \"json\"\n"
                               << "[handlers.noop]\ntype = \"notify\"\nchannel = \"systemd_test_done\"\n" << extra;
    return config_path;
  }
  std::unique_ptr<Process> start(const std::string& cfg, const std::string& watchdog_usec = "1000000") {
    return std::make_unique<Process>(std::vector<std::string>{"--config", cfg, "run"},
                                     std::map<std::string, std::string>{{"NOTIFY_SOCKET", notify.path()},
                                                                        {"WATCHDOG_USEC", watchdog_usec}});
  }
};

TEST_F(SystemdE2E, ReadyAfterTheFirstClaimWatchdogAtHalfItsIntervalReloadAndStopping) {
  db.insert_due(3);
  auto p = start(config());
  auto ready = notify.until("READY=1", 15s);
  ASSERT_TRUE(ready) << p->err();
  // READY=1 comes with the first STATUS= line, and only after a claim reached the database.
  EXPECT_NE(ready->text.find("STATUS=running "), std::string::npos) << ready->text;
  for (const auto& m : notify.messages()) EXPECT_FALSE(m.has("STOPPING=1")) << m.text;

  // WatchdogSec=1s: a ping every half second or so, never a silence near the interval.
  auto from = Clock::now();
  notify.collect(3000ms);
  auto to = Clock::now();
  std::size_t pings = std::count_if(notify.messages().begin(), notify.messages().end(),
                                    [&](const auto& m) { return m.at >= from && m.has("WATCHDOG=1"); });
  EXPECT_GE(pings, 4u);
  EXPECT_LT(notify.longest_silence(from, to), 1000ms) << "systemd would have restarted it";

  // SIGHUP: RELOADING=1 (with the monotonic time systemd 253 asks for), then READY=1 again.
  p->signal(SIGHUP);
  auto reloading = notify.until("RELOADING=1", 10s);
  ASSERT_TRUE(reloading) << p->err();
  EXPECT_NE(reloading->text.find("MONOTONIC_USEC="), std::string::npos) << reloading->text;
  EXPECT_TRUE(notify.until("READY=1", 10s)) << "no READY=1 after the reload";

  p->signal(SIGTERM);
  EXPECT_TRUE(notify.until("STOPPING=1", 10s));
  EXPECT_EQ(p->wait(30s), 0) << p->err();
}

// A poller stuck in a claim (here: blocked by a table lock, with timeouts longer than the test)
// stops the watchdog pings, so that systemd would restart the service; they resume once it moves.
TEST_F(SystemdE2E, AStuckPollerStopsTheWatchdogPings) {
  auto p = start(config("[timeouts]\nclaim = \"30s\"\nlock = \"30s\"\n"));
  ASSERT_TRUE(notify.until("READY=1", 15s)) << p->err();
  notify.collect(1500ms);  // pinging
  pqxx::work lock(db.sql());
  lock.exec("LOCK TABLE agentcron.agent_tasks IN ACCESS EXCLUSIVE MODE");
  auto from = Clock::now();
  notify.collect(5000ms);  // the next tick (every second) blocks on the lock
  auto to = Clock::now();
  EXPECT_GE(notify.longest_silence(from, to), 2500ms) << "the watchdog kept being pinged by a stuck poller";
  lock.commit();
  auto resumed_from = Clock::now();
  auto ping = notify.until("WATCHDOG=1", 5s);
  EXPECT_TRUE(ping) << "no ping after the poller moved again";
  if (ping) {
    EXPECT_GT(ping->at, resumed_from);
  }
  p->signal(SIGTERM);
  EXPECT_EQ(p->wait(30s), 0) << p->err();
}

// While the database is down at boot, the worker asks systemd for more start time and says why.
TEST_F(SystemdE2E, WaitingForTheDatabaseExtendsTheStartTimeout) {
  std::ofstream(config_path) << "[database]\nurl = \"postgresql://agentcron@127.0.0.1:1/agentcron\"\nconnect_timeout = \"1s\"\n"
                             << "[handlers.noop]\ntype = \"notify\"\nchannel = \"x\"\n";
  auto p = start(config_path, "0");
  auto extend = notify.until("STATUS=waiting for the database (attempt 1)", 15s);
  ASSERT_TRUE(extend) << p->err();
  EXPECT_NE(extend->text.find("EXTEND_TIMEOUT_USEC="), std::string::npos) << extend->text;
  for (const auto& m : notify.messages()) EXPECT_FALSE(m.has("READY=1")) << "READY=1 without a database";
  p->signal(SIGTERM);
  EXPECT_EQ(p->wait(30s), 0) << "a SIGTERM while waiting for the database is a clean stop";
}

}  // namespace
}  // namespace agentcron
