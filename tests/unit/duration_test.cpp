// Duration strings.
#include "agentcron/duration.hpp"

#include <gtest/gtest.h>

namespace agentcron {
namespace {

using namespace std::chrono_literals;

TEST(Duration, ParsesEveryUnitAndCombinations) {
  EXPECT_EQ(parse_duration("250ms"), Millis(250));
  EXPECT_EQ(parse_duration("15s"), Millis(15s));
  EXPECT_EQ(parse_duration("5m"), Millis(5min));
  EXPECT_EQ(parse_duration("1h"), Millis(1h));
  EXPECT_EQ(parse_duration("7d"), Millis(24h * 7));
  EXPECT_EQ(parse_duration("1h30m"), Millis(90min));
  EXPECT_EQ(parse_duration("0"), Millis(0));
}

TEST(Duration, RejectsWithAReason) {
  std::string why;
  EXPECT_FALSE(parse_duration("15", &why));
  EXPECT_NE(why.find("missing unit"), std::string::npos);
  EXPECT_FALSE(parse_duration("15 s", &why));
  EXPECT_FALSE(parse_duration("1w", &why));
  EXPECT_NE(why.find("unknown unit \"w\""), std::string::npos);
  EXPECT_FALSE(parse_duration("", &why));
  EXPECT_FALSE(parse_duration("-5s", &why));
  EXPECT_FALSE(parse_duration("99999999999999999999d", &why));
  EXPECT_NE(why.find("too large"), std::string::npos);
}

TEST(Duration, FormatsShortestExact) {
  EXPECT_EQ(format_duration(Millis(1500)), "1500ms");
  EXPECT_EQ(format_duration(Millis(15s)), "15s");
  EXPECT_EQ(format_duration(Millis(90min)), "1h30m");
  EXPECT_EQ(format_duration(Millis(24h * 7)), "7d");
  EXPECT_EQ(format_duration(Millis(0)), "0s");
  for (const char* s : {"250ms", "15s", "5m", "1h", "7d", "1d2h3m4s"}) EXPECT_EQ(format_duration(*parse_duration(s)), s);
}

}  // namespace
}  // namespace agentcron
