// Poller::tick_after: a fleet's workers on one schedule start their rounds spread over at most a
// second (or a tenth of the gap between ticks), never past the next tick.
#include <gtest/gtest.h>

#include "agentcron/poller.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;

CronSchedule::Time at(int seconds_after_midnight) {
  return CronSchedule::Time(std::chrono::sys_days(std::chrono::year(2026) / 11 / 25).time_since_epoch() +
                            std::chrono::seconds(seconds_after_midnight));
}

TEST(PollerTick, WithoutJitterTheRoundStartsAtTheScheduledTick) {
  auto every5 = CronSchedule::parse("*/5 * * * * *");
  EXPECT_EQ(Poller::tick_after(every5, TimeZone::utc(), at(1), 0), at(5));
}

TEST(PollerTick, JitterSpreadsRoundsOverATenthOfTheGapOrASecond) {
  auto every5 = CronSchedule::parse("*/5 * * * * *");
  EXPECT_EQ(Poller::tick_after(every5, TimeZone::utc(), at(1), 0.5), at(5) + 250ms);  // a tenth of 5 s, halfway
  auto hourly = CronSchedule::parse("@hourly");
  EXPECT_EQ(Poller::tick_after(hourly, TimeZone::utc(), at(1), 0.5), at(3600) + 500ms);  // capped at a second
  // Two workers with different draws start apart, and no draw reaches the tick after.
  EXPECT_NE(Poller::tick_after(every5, TimeZone::utc(), at(1), 0.1), Poller::tick_after(every5, TimeZone::utc(), at(1), 0.9));
  EXPECT_LT(Poller::tick_after(every5, TimeZone::utc(), at(1), 1.0), at(10));
}

}  // namespace
}  // namespace agentcron
