// Completer::decide: the next state of every kind of finished run (pure logic).
#include "agentcron/completer.hpp"

#include <gtest/gtest.h>

#include "agentcron/cron.hpp"

namespace agentcron {
namespace {

SysTime at(const char* iso) { return *parse_iso8601(iso); }

class DecideTest : public ::testing::Test {
 protected:
  Backoff backoff{Millis(1000), Millis(60000), 2};
  std::mt19937_64 rng{7};
  SysTime now = at("2026-03-07T12:00:00.500Z");

  FinishedRun run(TaskOutcome o, int attempt = 1, int max_attempts = 5, std::optional<std::string> cron = std::nullopt) {
    FinishedRun r;
    r.task.id = 42;
    r.task.kind = "k";
    r.task.attempt = attempt;
    r.task.max_attempts = max_attempts;
    r.task.cron = std::move(cron);
    r.outcome = std::move(o);
    r.started_at = now - std::chrono::seconds(1);
    r.finished_at = now;
    return r;
  }
  Completion decide(const FinishedRun& r) { return Completer::decide(r, backoff, now, rng); }
};

TEST_F(DecideTest, OneOffSuccessIsItsOwnRecord) {
  Completion c = decide(run(TaskOutcome::success()));
  EXPECT_EQ(c.status, Completion::Status::succeeded);
  EXPECT_EQ(c.run_outcome, "");
  EXPECT_EQ(c.error, "");
  EXPECT_EQ(c.attempt, 1);
}

TEST_F(DecideTest, RetryWithinAttemptsGoesBackToPendingWithBackoff) {
  Completion c = decide(run(TaskOutcome::retry("boom"), 3));
  EXPECT_EQ(c.status, Completion::Status::pending);
  ASSERT_TRUE(c.retry_delay);
  EXPECT_LE(*c.retry_delay, Millis(4000));  // base 1s * 2^(3-1), full jitter
  EXPECT_EQ(c.run_outcome, "retry");
  EXPECT_EQ(c.error, "boom");
}

TEST_F(DecideTest, RetryAfterIsTheEarliestRetryTimeUpToTheMaxDelay) {
  Completion c = decide(run(TaskOutcome::retry("429", now + std::chrono::seconds(45))));
  ASSERT_TRUE(c.retry_delay);
  EXPECT_GE(*c.retry_delay, Millis(45000));
  // An endpoint cannot park a task beyond retry.max_delay (60 s here), however far it asks.
  for (auto far : {std::chrono::hours(24 * 365 * 30), std::chrono::hours(2)}) {
    Completion capped = decide(run(TaskOutcome::retry("429", now + far)));
    ASSERT_TRUE(capped.retry_delay);
    EXPECT_EQ(*capped.retry_delay, Millis(60000));
  }
}

TEST_F(DecideTest, LastAttemptFails) {
  Completion c = decide(run(TaskOutcome::retry("boom"), 5, 5));
  EXPECT_EQ(c.status, Completion::Status::failed);
  EXPECT_EQ(c.run_outcome, "failed");
}

TEST_F(DecideTest, PermanentFailureFailsAtOnce) {
  Completion c = decide(run(TaskOutcome::failure("bad payload"), 1, 5));
  EXPECT_EQ(c.status, Completion::Status::failed);
  EXPECT_EQ(c.error, "bad payload");
}

TEST_F(DecideTest, RecurringSuccessGoesToItsNextFireTimeWithAttemptsReset) {
  Completion c = decide(run(TaskOutcome::success(), 2, 5, "*/10 * * * *"));
  EXPECT_EQ(c.status, Completion::Status::pending);
  EXPECT_TRUE(c.reset_attempts);
  ASSERT_TRUE(c.run_at);
  EXPECT_EQ(*c.run_at, at("2026-03-07T12:10:00Z"));
  EXPECT_EQ(c.run_outcome, "succeeded");  // a recurring task's history is in task_runs
}

TEST_F(DecideTest, MissedOccurrencesCoalesceIntoTheNextFutureOne) {
  // The task was due hours ago (every minute); it runs once now and next at the next minute.
  FinishedRun r = run(TaskOutcome::success(), 1, 5, "* * * * *");
  r.task.scheduled_for = now - std::chrono::hours(3);
  Completion c = decide(r);
  EXPECT_EQ(*c.run_at, at("2026-03-07T12:01:00Z"));
}

TEST_F(DecideTest, RecurringRetriesOnlyBeforeItsNextFireTime) {
  Completion soon = decide(run(TaskOutcome::retry("x"), 1, 5, "0 * * * *"));  // next fire in 1 h
  EXPECT_EQ(soon.status, Completion::Status::pending);
  EXPECT_TRUE(soon.retry_delay);
  EXPECT_FALSE(soon.reset_attempts);
  // Every second: the retry (>= 0 ms, up to 1 s) cannot come before a fire time 0.5 s away,
  // unless the jitter is tiny, so force it with Retry-After.
  Completion late = decide(run(TaskOutcome::retry("x", now + std::chrono::seconds(5)), 1, 5, "* * * * * *"));
  EXPECT_EQ(late.status, Completion::Status::pending);
  EXPECT_FALSE(late.retry_delay);
  EXPECT_TRUE(late.reset_attempts);
  EXPECT_EQ(*late.run_at, at("2026-03-07T12:00:01Z"));
  EXPECT_EQ(late.run_outcome, "failed");
}

TEST_F(DecideTest, RecurringOutOfAttemptsWaitsForItsNextFireTime) {
  Completion c = decide(run(TaskOutcome::retry("x"), 5, 5, "@daily"));
  EXPECT_EQ(c.status, Completion::Status::pending);
  EXPECT_TRUE(c.reset_attempts);
  EXPECT_EQ(*c.run_at, at("2026-03-08T00:00:00Z"));
}

TEST_F(DecideTest, BrokenScheduleFailsTheTask) {
  Completion c = decide(run(TaskOutcome::success(), 1, 5, "0 25 * * *"));
  EXPECT_EQ(c.status, Completion::Status::failed);
  EXPECT_NE(c.error.find("field 2 (hour)"), std::string::npos);
}

TEST_F(DecideTest, NotifyPayloadTravelsWithTheSuccess) {
  FinishedRun r = run(TaskOutcome::success());
  r.notify = std::make_pair(std::string("ready"), std::string("{\"task_id\":42}"));
  Completion c = decide(r);
  EXPECT_EQ(c.notify_channel, "ready");
  EXPECT_EQ(c.notify_payload, "{\"task_id\":42}");
}

TEST_F(DecideTest, NulBytesAreStrippedFromErrors) {
  Completion c = decide(run(TaskOutcome::retry(std::string("a\0b", 3))));
  EXPECT_EQ(c.error, "ab");
}

}  // namespace
}  // namespace agentcron

namespace agentcron {
namespace {

// decide() is pure; the completer's writes are tested against the in-memory store in
// tests/unit/services_test.cpp and against PostgreSQL in tests/integration/completer_test.cpp.
TEST(CompleterContract, DecideIsDeterministicForAGivenSeed) {
  FinishedRun r;
  r.task.id = 1;
  r.task.attempt = 2;
  r.outcome = TaskOutcome::retry("x");
  std::mt19937_64 a(5), b(5);
  Backoff bo{Millis(1000), Millis(60000), 2};
  auto now = std::chrono::system_clock::now();
  EXPECT_EQ(Completer::decide(r, bo, now, a).retry_delay, Completer::decide(r, bo, now, b).retry_delay);
}

}  // namespace
}  // namespace agentcron
