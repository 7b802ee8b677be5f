// Error classification, backoff, the circuit breaker (with a fake clock) and retry_transient.
#include "agentcron/retry.hpp"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <sstream>

#include "agentcron/log.hpp"
#include "support/fake_clock.hpp"

namespace agentcron {
namespace {

using testing::FakeClock;

TEST(Classify, EveryTransientClassOfTheDesign) {
  for (const char* s : {"08000", "08003", "08006", "08001", "08004", "08P01", "40001", "40P01", "57P01", "57P02",
                        "57P03", "53300", "55P03", "57014"})
    EXPECT_EQ(classify_sqlstate(s), ErrorClass::transient) << s;
}

TEST(Classify, EverythingElseIsPermanent) {
  for (const char* s : {"23505", "23502", "22P02", "42P01", "42601", "42883", "28P01", "3D000", "53100", "53200",
                        "25P02", "40002", "57000", "XX000", "P0001", "0A000", "", "0800", "080000"})
    EXPECT_EQ(classify_sqlstate(s), ErrorClass::permanent) << s;
}

TEST(Classify, QuestionsToAnException) {
  DatabaseError t("x", "40001", ErrorClass::transient);
  DatabaseError p("x", "23505", ErrorClass::permanent);
  std::runtime_error other("x");
  EXPECT_TRUE(is_transient(t));
  EXPECT_FALSE(is_transient(p));
  EXPECT_FALSE(is_transient(other));
  EXPECT_EQ(sqlstate(p), "23505");
  EXPECT_EQ(sqlstate(other), "");
}

TEST(Backoff, CapsGrowthAndJittersWithinTheCap) {
  Backoff b{Millis(100), Millis(1000), 2};
  EXPECT_EQ(b.cap(1), Millis(100));
  EXPECT_EQ(b.cap(2), Millis(200));
  EXPECT_EQ(b.cap(4), Millis(800));
  EXPECT_EQ(b.cap(5), Millis(1000));
  EXPECT_EQ(b.cap(500), Millis(1000));
  std::mt19937_64 rng(1);
  Millis lo = Millis::max(), hi = Millis::zero();
  for (int i = 0; i < 2000; ++i) {
    Millis d = b.delay(3, rng);
    ASSERT_GE(d, Millis(0));
    ASSERT_LE(d, Millis(400));
    lo = std::min(lo, d);
    hi = std::max(hi, d);
  }
  EXPECT_LT(lo, Millis(40));   // full jitter reaches near zero…
  EXPECT_GT(hi, Millis(360));  // …and near the cap
}

TEST(CircuitBreaker, OpensAfterThresholdThenLetsOneProbeThrough) {
  FakeClock clock;
  CircuitBreaker b(3, Millis(30000), clock);
  EXPECT_TRUE(b.allow());
  b.record_failure("08006");
  b.record_failure("08006");
  EXPECT_EQ(b.state(), CircuitBreaker::State::closed);
  b.record_failure("08006");
  EXPECT_EQ(b.state(), CircuitBreaker::State::open);
  EXPECT_FALSE(b.allow());
  clock.t += std::chrono::seconds(29);
  EXPECT_FALSE(b.allow());
  clock.t += std::chrono::seconds(2);
  EXPECT_TRUE(b.allow());   // the probe
  EXPECT_FALSE(b.allow());  // only one
  b.record_failure("08006");
  EXPECT_EQ(b.state(), CircuitBreaker::State::open);
  clock.t += std::chrono::seconds(31);
  EXPECT_TRUE(b.allow());
  b.record_success();
  EXPECT_EQ(b.state(), CircuitBreaker::State::closed);
  EXPECT_TRUE(b.allow());
  EXPECT_TRUE(b.allow());
}

// After a failover the old primary answers 25006 (read-only), a permanent error: a probe that
// fails so must reopen the breaker, or it stays half-open with its one probe out, forever.
TEST(CircuitBreaker, AProbeThatFailsPermanentlyReopensItInsteadOfJammingIt) {
  FakeClock clock;
  CircuitBreaker b(1, Millis(1000), clock);
  b.record_failure("57P01");
  clock.t += std::chrono::seconds(2);
  ASSERT_TRUE(b.allow());  // the probe
  EXPECT_EQ(b.state(), CircuitBreaker::State::half_open);
  b.record_failure("25006", /*counts=*/false);
  EXPECT_EQ(b.state(), CircuitBreaker::State::open);
  clock.t += std::chrono::seconds(2);
  EXPECT_TRUE(b.allow());  // a new probe after the cooldown: not jammed
  b.record_success();
  EXPECT_EQ(b.state(), CircuitBreaker::State::closed);
  b.record_failure("25006", /*counts=*/false);  // closed: a failure that does not count leaves it closed
  EXPECT_EQ(b.state(), CircuitBreaker::State::closed);
}

// Only a refusal of the values themselves ends a task's outcome as failed; a database that
// refuses everything (read-only, no privilege) or is unreachable gets the outcome again later.
TEST(DatabaseErrorTest, RefusesValuesOnlyForDataConstraintAndLimitErrorsAndClientRefusals) {
  auto err = [](const char* state, ErrorClass c) { return DatabaseError("x", state, c); };
  EXPECT_TRUE(err("22023", ErrorClass::permanent).refuses_values());  // NOTIFY payload too long
  EXPECT_TRUE(err("23505", ErrorClass::permanent).refuses_values());
  EXPECT_TRUE(err("54000", ErrorClass::permanent).refuses_values());
  EXPECT_TRUE(err("", ErrorClass::permanent).refuses_values());       // libpq would not quote it
  EXPECT_FALSE(err("25006", ErrorClass::permanent).refuses_values());  // read-only server
  EXPECT_FALSE(err("42501", ErrorClass::permanent).refuses_values());  // no privilege
  EXPECT_FALSE(err("08003", ErrorClass::transient).refuses_values());  // pool closed
  EXPECT_FALSE(err("08006", ErrorClass::in_doubt).refuses_values());
}

TEST(CircuitBreaker, SuccessResetsTheCount) {
  FakeClock clock;
  CircuitBreaker b(2, Millis(1000), clock);
  b.record_failure();
  b.record_success();
  b.record_failure();
  EXPECT_EQ(b.state(), CircuitBreaker::State::closed);
}

class RetryTest : public ::testing::Test {
 protected:
  std::ostringstream out;
  Logger log{LogFormat::text, LogLevel::info, std::make_shared<spdlog::sinks::ostream_sink_mt>(out)};
  std::vector<Millis> slept;
  std::function<bool(Millis)> sleep = [this](Millis d) {
    slept.push_back(d);
    return true;
  };
};

TEST_F(RetryTest, RetriesTransientUntilSuccessAndLogsEachRetryOnce) {
  int calls = 0;
  retry_transient("claim", 5, Backoff{Millis(10), Millis(100), 2}, log, sleep, [&] {
    if (++calls < 3) throw DatabaseError("serialization failure", "40001", ErrorClass::transient);
  });
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(slept.size(), 2u);
  std::string s = out.str();
  EXPECT_NE(s.find("attempt=1 sqlstate=40001"), std::string::npos) << s;
  EXPECT_NE(s.find("attempt=2 sqlstate=40001"), std::string::npos) << s;
  EXPECT_EQ(std::count(s.begin(), s.end(), '\n'), 2);
}

TEST_F(RetryTest, PermanentAndInDoubtPropagateAtOnce) {
  int calls = 0;
  EXPECT_THROW(retry_transient("x", 5, Backoff{}, log, sleep,
                               [&] {
                                 ++calls;
                                 throw DatabaseError("dup", "23505", ErrorClass::permanent);
                               }),
               DatabaseError);
  EXPECT_EQ(calls, 1);
  calls = 0;
  // Never retry a commit whose outcome is unknown.
  EXPECT_THROW(retry_transient("x", 5, Backoff{}, log, sleep,
                               [&] {
                                 ++calls;
                                 throw DatabaseError("lost during COMMIT", "08006", ErrorClass::in_doubt);
                               }),
               DatabaseError);
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(slept.empty());
}

TEST_F(RetryTest, GivesUpAfterMaxAttemptsAndStopsWhenSleepIsInterrupted) {
  int calls = 0;
  auto fail = [&] {
    ++calls;
    throw DatabaseError("down", "08006", ErrorClass::transient);
  };
  EXPECT_THROW(retry_transient("x", 3, Backoff{Millis(1), Millis(1), 1}, log, sleep, fail), DatabaseError);
  EXPECT_EQ(calls, 3);
  calls = 0;
  EXPECT_THROW(retry_transient("x", 10, Backoff{}, log, [](Millis) { return false; }, fail), DatabaseError);
  EXPECT_EQ(calls, 1);
}

TEST_F(RetryTest, OpenBreakerStopsCallingTheDatabase) {
  FakeClock clock;
  CircuitBreaker breaker(2, Millis(1000), clock, &log);
  int calls = 0;
  auto fail = [&] {
    ++calls;
    throw DatabaseError("down", "08006", ErrorClass::transient);
  };
  EXPECT_THROW(retry_transient("x", 10, Backoff{Millis(1), Millis(1), 1}, log, sleep, fail, &breaker), BreakerOpen);
  EXPECT_EQ(calls, 2);
  EXPECT_NE(out.str().find("circuit breaker opened"), std::string::npos);
}

}  // namespace
}  // namespace agentcron
