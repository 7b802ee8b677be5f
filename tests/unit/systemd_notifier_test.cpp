// SystemdNotifier's rounds: what it says when, from fake sources. Without $NOTIFY_SOCKET the
// messages go nowhere; the round's result says what went out.
#include "agentcron/systemd_notify.hpp"

#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>

#include "agentcron/log.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;

class NotifierTest : public ::testing::Test {
 protected:
  Logger log{LogFormat::text, LogLevel::info, std::make_shared<spdlog::sinks::null_sink_mt>()};
  bool ready = false;
  std::uint64_t beats = 0;
  std::string status = "running 0";
  SystemdNotifier notifier(Millis watchdog, Millis status_every = 5s) {
    SystemdNotifierOptions o;
    o.watchdog = watchdog;
    o.status_every = status_every;
    return SystemdNotifier(o, {[this] { return ready; }, [this] { return beats; }, [this] { return status; }}, log);
  }
};

TEST_F(NotifierTest, ReadyOnceTheFirstClaimSucceededAndOnlyOnce) {
  auto n = notifier(Millis(0));
  EXPECT_FALSE(n.run_once().ready_sent);
  ready = true;
  SystemdNotifierRound r = n.run_once();
  EXPECT_TRUE(r.ready_sent);
  EXPECT_TRUE(r.status_sent) << "READY=1 goes out with the first STATUS=";
  EXPECT_FALSE(n.run_once().ready_sent);
}

TEST_F(NotifierTest, AfterReadyTheWatchdogIsPingedOnlyWhileThePollersHeartbeatGrows) {
  auto n = notifier(1s);
  EXPECT_TRUE(n.run_once().pinged) << "before READY=1 the process itself is the proof of life";
  ready = true;
  EXPECT_TRUE(n.run_once().pinged);
  EXPECT_FALSE(n.run_once().pinged) << "pinged although the poller did not move";
  beats += 3;
  EXPECT_TRUE(n.run_once().pinged);
  EXPECT_FALSE(n.run_once().pinged);
}

TEST_F(NotifierTest, NoWatchdogNoPings) {
  auto n = notifier(Millis(0));
  ready = true;
  beats = 1;
  EXPECT_FALSE(n.run_once().pinged);
}

TEST_F(NotifierTest, StatusGoesOutWhenItChangedAndNotMoreOftenThanAsked) {
  auto n = notifier(Millis(0), 1h);
  ready = true;
  EXPECT_TRUE(n.run_once().status_sent);
  status = "running 5";
  EXPECT_FALSE(n.run_once().status_sent) << "within status_every of the last";
  auto quick = notifier(Millis(0), 1ms);
  EXPECT_TRUE(quick.run_once().status_sent);
  EXPECT_FALSE(quick.run_once().status_sent) << "sent again although unchanged";
}

TEST_F(NotifierTest, OptionsOutOfRangeAreRefused) {
  EXPECT_THROW(notifier(Millis(-1)), std::invalid_argument);
  EXPECT_THROW(notifier(Millis(0), Millis(0)), std::invalid_argument);
}

}  // namespace
}  // namespace agentcron
