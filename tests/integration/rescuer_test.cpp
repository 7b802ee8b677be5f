// Rescuer against a real PostgreSQL: where each kind of task whose worker died goes.
#include "agentcron/rescuer.hpp"

#include <gtest/gtest.h>

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

  Rescuer rescuer(store, log);
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

}  // namespace
}  // namespace agentcron
