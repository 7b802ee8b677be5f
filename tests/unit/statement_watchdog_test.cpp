// StatementWatchdog with recording actions: the two stages, and that an action which blocks (a
// cancel request to an unreachable server) delays no other statement.
#include "agentcron/statement_watchdog.hpp"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <atomic>
#include <future>
#include <latch>
#include <sstream>

#include "agentcron/log.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;

class StatementWatchdogTest : public ::testing::Test {
 protected:
  std::ostringstream logs;
  Logger log{LogFormat::text, LogLevel::info, std::make_shared<spdlog::sinks::ostream_sink_mt>(logs)};
};

TEST_F(StatementWatchdogTest, CancelsAtTheDeadlineThenCutsAfterTheGrace) {
  StatementWatchdog w(log, 20ms);
  std::atomic<int> cancels{0}, cuts{0};
  std::uint64_t id = w.watch(std::chrono::steady_clock::now() + 10ms, {[&] { ++cancels; }, [&] { ++cuts; }});
  ASSERT_TRUE(testing::eventually([&] { return cuts == 1; }, 5s));
  EXPECT_EQ(cancels, 1);
  w.unwatch(id);
  EXPECT_NE(logs.str().find("closing the connection's socket"), std::string::npos);
}

TEST_F(StatementWatchdogTest, AStatementThatReturnsInTimeIsLeftAlone) {
  StatementWatchdog w(log, 20ms);
  std::atomic<int> actions{0};
  {
    WatchedStatement s(w, 1h, {[&] { ++actions; }, [&] { ++actions; }});
  }
  EXPECT_EQ(actions, 0);
}

TEST_F(StatementWatchdogTest, ACancelThatBlocksDelaysNoOtherStatement) {
  StatementWatchdog w(log, 1h);
  std::latch cancelling(1), unreachable(1);
  std::uint64_t stuck = w.watch(std::chrono::steady_clock::now(), {[&] {
                                  cancelling.count_down();
                                  unreachable.wait();  // the cancel request's connect hangs
                                },
                                                                   {}});
  cancelling.wait();
  // Other threads' statements start and end while that cancel hangs.
  auto others = std::async(std::launch::async, [&] {
    for (int i = 0; i < 100; ++i) {
      WatchedStatement s(w, 1h, {});
    }
  });
  bool unblocked = others.wait_for(10s) == std::future_status::ready;
  // And another statement past its deadline gets its own cancel meanwhile.
  std::atomic<int> second_cancels{0};
  std::uint64_t second = w.watch(std::chrono::steady_clock::now(), {[&] { ++second_cancels; }, {}});
  bool second_cancelled = testing::eventually([&] { return second_cancels == 1; }, 10s);
  w.unwatch(second);
  // The stuck statement's own unwatch waits for its action: its connection is still in use.
  auto own = std::async(std::launch::async, [&] { w.unwatch(stuck); });
  bool own_waited = own.wait_for(50ms) == std::future_status::timeout;
  unreachable.count_down();
  own.get();
  others.get();
  EXPECT_TRUE(unblocked);
  EXPECT_TRUE(second_cancelled);
  EXPECT_TRUE(own_waited);
}

}  // namespace
}  // namespace agentcron
