// Rescuer against a real PostgreSQL: where each kind of task whose worker died goes.
#include "agentcron/janitor.hpp"
#include "agentcron/lease_keeper.hpp"
#include "agentcron/periodic.hpp"
#include "agentcron/rescuer.hpp"

#include <gtest/gtest.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <set>

#include "agentcron/executor.hpp"
#include "agentcron/handlers/handler.hpp"
#include "agentcron/retry.hpp"
#include "support/fn_handler.hpp"
#include "support/store_fixture.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;

class RescuerTest : public testing::StoreFixture {
 protected:

  // Claims every due task for a worker that then dies: its leases are already over.
  void claim_and_die(int n) {
    ASSERT_EQ(store.claim_due(ClaimParams{n, {"noop"}, "dead-worker", 60s}).size(), static_cast<std::size_t>(n));
    db.exec("UPDATE agentcron.agent_tasks SET locked_until = now() - interval '1 s'");
  }
  std::string row(std::int64_t id, const std::string& columns) {
    return db.text("SELECT concat_ws(',', " + columns + ") FROM agentcron.agent_tasks WHERE id = " + std::to_string(id));
  }
};

TEST_F(RescuerTest, ARecurringTaskWithItsAttemptsSpentWaitsForItsNextFireTime) {
  db.exec(
      "INSERT INTO agentcron.agent_tasks (kind, cron, timezone, max_attempts) VALUES "
      "('noop', '0 0 1 1 *', 'Asia/Tokyo', 1), "  // spent: to its next fire time
      "('noop', '0 0 1 1 *', 'UTC', 3), "         // attempts left: due again now, the attempt counted
      "('noop', 'not a cron', 'UTC', 1), "        // spent, and no next fire time: failed
      "('noop', NULL, 'UTC', 1)");                // a spent one-off task: failed
  claim_and_die(4);

  Rescuer rescuer({}, store, log);
  RescuerResult r = rescuer.run_once();
  EXPECT_EQ(r.to_pending, 2);
  EXPECT_EQ(r.to_failed, 2);

  EXPECT_EQ(row(1, "status, attempts, locked_by IS NULL"), "pending,0,t");
  EXPECT_EQ(row(1, "scheduled_for = (date_trunc('year', now() AT TIME ZONE 'Asia/Tokyo') + interval '1 year') "
                   "AT TIME ZONE 'Asia/Tokyo'"),
            "t")
      << "scheduled for " << row(1, "scheduled_for");
  EXPECT_EQ(row(1, "last_error"), "lease expired: worker dead-worker stopped renewing it");
  EXPECT_EQ(row(2, "status, attempts, scheduled_for <= now()"), "pending,1,t");
  EXPECT_EQ(row(3, "status, finished_at IS NOT NULL"), "failed,t");
  EXPECT_NE(row(3, "last_error").find("not a cron"), std::string::npos) << row(3, "last_error");
  EXPECT_EQ(row(4, "status"), "failed");
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.task_runs WHERE outcome = 'rescued' AND worker = 'dead-worker'"), 4);

  // Nothing is left for the next round.
  RescuerResult again = rescuer.run_once();
  EXPECT_EQ(again.to_pending + again.to_failed, 0);
}

TEST_F(RescuerTest, ALeaseRenewedAfterTheRescuerLookedIsLeftAlone) {
  db.exec("INSERT INTO agentcron.agent_tasks (kind, cron, max_attempts) VALUES ('noop', '0 0 1 1 *', 1)");
  claim_and_die(1);
  EXPECT_EQ(store.rescue_expired(10).recurring_left, 1);
  auto listed = store.expired_recurring(10);
  ASSERT_EQ(listed.size(), 1u);
  // The worker was only slow: it renews the lease before the rescuer moves the task.
  db.exec("UPDATE agentcron.agent_tasks SET locked_until = now() + interval '1 min'");
  RescueResult r = store.reschedule_expired({Reschedule{listed[0].id, listed[0].db_now + 1h, {}}});
  EXPECT_EQ(r.to_pending + r.to_failed, 0);
  EXPECT_EQ(row(1, "status, locked_by"), "running,dead-worker");
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.task_runs"), 0);
}

// The lease keeper renews every task the worker holds — running, or finished with its outcome
// not written yet — and a running task whose extend matches no row (rescued and claimed by
// another worker) has its handler stopped and its outcome dropped.
TEST_F(RescuerTest, LeaseKeeperRenewsHeldTasksAndStopsTheHandlerOfALostLease) {
  db.insert_due(3);
  std::mutex mu;
  std::map<std::int64_t, FinishedRun> delivered;
  std::set<std::int64_t> stopped;
  HandlerRegistry reg;
  reg.add("noop", std::make_shared<testing::FnHandler>([&](const Task& t, const HandlerContext& ctx) {
            if (t.id == 3) return TaskOutcome::success();  // finishes at once; its outcome stays unwritten
            std::mutex m;
            std::condition_variable_any cv;
            std::unique_lock lock(m);
            cv.wait(lock, ctx.stop, [] { return false; });
            std::lock_guard g(mu);
            stopped.insert(t.id);
            return TaskOutcome::success();
          }));
  ExecutorOptions eo;
  eo.hold_until_forgotten = true;
  Executor ex(eo, reg, [&](FinishedRun&& r) {
    std::lock_guard g(mu);
    delivered.emplace(r.task.id, std::move(r));
  }, log);
  ex.submit(store.claim_due(ClaimParams{3, {"noop"}, "w1", 5s}));
  ASSERT_TRUE(testing::eventually([&] {
    std::lock_guard g(mu);
    return delivered.count(3) == 1;
  }));
  // Task 2 is rescued from under us and claimed by another worker; every lease is nearly over.
  db.exec("UPDATE agentcron.agent_tasks SET locked_by = 'other' WHERE id = 2");
  db.exec("UPDATE agentcron.agent_tasks SET locked_until = now() + interval '1 second'");
  LeaseKeeper keeper({"w1", 60s}, store, ex, log);
  LeaseKeeperResult r = keeper.run_once();
  EXPECT_EQ(r.extended, 2);  // 1 running, 3 finished but unwritten
  EXPECT_EQ(r.lost, 1);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE id IN (1, 3) AND locked_until > now() + interval '50 seconds'"), 2);
  EXPECT_EQ(db.text("SELECT locked_by FROM agentcron.agent_tasks WHERE id = 2"), "other");
  ASSERT_TRUE(testing::eventually([&] {
    std::lock_guard g(mu);
    return stopped.count(2) == 1;
  }));
  ex.cancel_all("test over");
  ASSERT_TRUE(ex.wait_idle(std::chrono::steady_clock::now() + 10s));
  std::lock_guard g(mu);
  EXPECT_EQ(delivered.count(2), 0u);  // its outcome was dropped: the row is the other worker's
  EXPECT_EQ(ex.leases_lost(), 1u);
  EXPECT_NE(logs.str().find("lost the lease of running tasks"), std::string::npos) << logs.str();
}

// A failed renewal is tried again soon, not a whole interval later.
TEST(PeriodicTest, AFailedRunIsRetriedAfterTheRetryIntervalNotTheFullInterval) {
  std::ostringstream logs;
  Logger log{LogFormat::text, LogLevel::info, std::make_shared<spdlog::sinks::ostream_sink_mt>(logs)};
  std::mutex mu;
  std::vector<std::chrono::steady_clock::time_point> runs;
  Periodic p("renewing", 1s, [&](std::stop_token) {
    std::lock_guard g(mu);
    runs.push_back(std::chrono::steady_clock::now());
    if (runs.size() == 1) throw DatabaseError("connection lost", "08006", ErrorClass::transient);
  }, log, 10ms);
  p.start();
  ASSERT_TRUE(testing::eventually([&] {
    std::lock_guard g(mu);
    return runs.size() >= 2;
  }, 10s));
  p.request_stop();
  p.wait();
  EXPECT_LT(runs[1] - runs[0], 700ms);  // the retry, where the interval would have been 1 s
  EXPECT_NE(logs.str().find("renewing failed; will run again"), std::string::npos);
}

}  // namespace
}  // namespace agentcron
