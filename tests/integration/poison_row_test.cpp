// One bad row or one refused outcome harms only its own task: out-of-range scheduled_for values
// (refused at insert, repaired by migration 0004, and survived by the claim when the constraint
// is gone), an outcome the database refuses (a NOTIFY payload too long), and invalid UTF-8 from a
// handler — each fails its own task with a true reason while the good tasks of its kind run.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <atomic>
#include <latch>
#include <sstream>
#include <thread>

#include "agentcron/log.hpp"
#include "agentcron/migrator.hpp"
#include "agentcron/pool.hpp"
#include "agentcron/pg_task_store.hpp"
#include "agentcron/worker.hpp"
#include "support/fn_handler.hpp"
#include "support/migrations.hpp"
#include "support/run_worker.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;
using testing::FnHandler;
using testing::TestDatabase;

// Values no scheduler can keep: infinities, and years beyond what the worker's clock holds.
const char* const kOutOfRange[] = {"-infinity", "infinity", "0001-01-01 00:00:00+00", "5000-01-01 00:00:00+00",
                                   "294000-01-01 00:00:00+00", "1899-12-31 23:59:59+00"};

class PoisonRowTest : public ::testing::Test {
 protected:
  TestDatabase db;
  std::ostringstream logs;
  Logger log{LogFormat::json, LogLevel::info, std::make_shared<spdlog::sinks::ostream_sink_mt>(logs)};

  std::int64_t count(const std::string& where) {
    return db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE " + where);
  }
  // Runs a worker with `reg` until no task of `kinds` is pending-and-due or running.
  bool run_until_settled(HandlerRegistry reg, const std::string& kinds, std::chrono::milliseconds timeout = 30s) {
    Worker w(db.config(), std::move(reg), log, "poison-test");
    return testing::run_worker_until(
        w,
        [&] {
          return count("kind IN (" + kinds + ") AND (status = 'running' OR (status = 'pending' AND scheduled_for <= now()))") == 0;
        },
        timeout);
  }
  std::shared_ptr<Handler> ok() {
    return std::make_shared<FnHandler>([](const Task&, const HandlerContext&) { return TaskOutcome::success(); });
  }
};

TEST_F(PoisonRowTest, AScheduledForOutsideTheSchedulableRangeIsRefusedAtInsertWithTheConstraintsName) {
  for (const char* v : kOutOfRange) {
    try {
      db.exec(std::string("INSERT INTO agentcron.agent_tasks (kind, scheduled_for) VALUES ('good', '") + v + "')");
      ADD_FAILURE() << v << " was accepted";
    } catch (const pqxx::check_violation& e) {
      EXPECT_NE(std::string(e.what()).find("agent_tasks_scheduled_for_range"), std::string::npos) << e.what();
    }
  }
  db.exec("INSERT INTO agentcron.agent_tasks (kind, scheduled_for) VALUES ('good', '1900-01-01 00:00:00+00'), "
          "('good', '2199-12-31 23:59:59+00')");
  EXPECT_EQ(count("kind = 'good'"), 2);
}

// A database whose constraint was dropped (or never validated): every such row still leaves the
// claim standing, and the good tasks of the same kind run.
TEST_F(PoisonRowTest, ClaimsOfAKindKeepRunningBesideRowsTheConstraintCannotStop) {
  db.exec("ALTER TABLE agentcron.agent_tasks DROP CONSTRAINT agent_tasks_scheduled_for_range");
  for (const char* v : kOutOfRange)
    db.exec(std::string("INSERT INTO agentcron.agent_tasks (kind, scheduled_for) VALUES ('good', '") + v + "')");
  db.insert_due(50, "good");
  HandlerRegistry reg;
  reg.add("good", ok());
  ASSERT_TRUE(run_until_settled(std::move(reg), "'good'")) << logs.str();
  EXPECT_EQ(count("kind = 'good' AND status = 'succeeded'"), 50 + 3);  // the three in the past were due
  EXPECT_EQ(count("kind = 'good' AND status = 'pending' AND scheduled_for > now()"), 3);  // never due
  EXPECT_EQ(logs.str().find("claiming due tasks failed"), std::string::npos) << logs.str();
}

TEST_F(PoisonRowTest, MigrationFailsLiveOutOfRangeRowsWithTheirValueAndLeavesTheRestAlone) {
  TestDatabase fresh{TestDatabase::Schema::empty};
  Config c = fresh.config();
  ConnectionPool pool(PoolOptions::from_config(c, "m"), log);
  PgTaskStore store(pool, StoreOptions::from_config(c), log);
  std::vector<Migration> before_0004 = testing::migrations_before(4);
  Migrator(store, log, before_0004).migrate();
  fresh.exec("INSERT INTO agentcron.agent_tasks (kind, scheduled_for, status, finished_at) VALUES "
             "('k', '-infinity', 'pending', NULL), ('k', 'infinity', 'pending', NULL), "
             "('k', 'infinity', 'cancelled', now()), ('k', now(), 'pending', NULL)");
  EXPECT_EQ(Migrator(store, log).migrate(), static_cast<int>(embedded_migrations().size() - before_0004.size()));
  EXPECT_EQ(fresh.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'failed' AND finished_at IS NOT NULL "
                         "AND last_error LIKE 'scheduled_for %infinity is outside the range agentcron can schedule%'"),
            2);
  EXPECT_EQ(fresh.text("SELECT last_error FROM agentcron.agent_tasks WHERE id = 1"),
            "scheduled_for -infinity is outside the range agentcron can schedule (1900-01-01 to 2200-01-01 UTC); "
            "failed by migration 0004");
  EXPECT_EQ(fresh.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'cancelled' AND last_error IS NULL"), 1);
  EXPECT_EQ(fresh.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'pending'"), 1);
}

// A notify task whose agent id makes its NOTIFY payload too long (22023): the database refuses
// that outcome for good. The task ends failed with the database's reason and a failed run — never
// rescued and run again, never "lease expired" — and the good tasks in its batch succeed.
TEST_F(PoisonRowTest, AnOutcomeTheDatabaseRefusesEndsItsTaskFailedWithTheReason) {
  db.insert_due(20, "ready");
  db.exec("INSERT INTO agentcron.agent_tasks (kind, agent_id) VALUES ('ready', repeat('a', 10000))");
  db.insert_due(20, "ready");
  HandlerRegistry reg;
  reg.add("ready", std::make_shared<NotifyHandler>("agentcron_ready"));
  Config c = db.config();
  Worker w(c, std::move(reg), log, "poison-test");
  ASSERT_TRUE(testing::run_worker_until(
      w, [&] { return count("kind = 'ready' AND status IN ('succeeded', 'failed')") == 41; }, 30s))
      << logs.str();
  EXPECT_EQ(count("kind = 'ready' AND status = 'succeeded'"), 40);
  std::string error = db.text("SELECT last_error FROM agentcron.agent_tasks WHERE length(agent_id) = 10000 AND status = 'failed'");
  EXPECT_NE(error.find("the database refused this run's outcome"), std::string::npos) << error;
  EXPECT_NE(error.find("payload string too long"), std::string::npos) << error;
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.task_runs r JOIN agentcron.agent_tasks t ON t.id = r.task_id "
                      "WHERE length(t.agent_id) = 10000 AND r.outcome = 'failed' AND r.error LIKE '%payload string too long%'"),
            1);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.task_runs WHERE outcome = 'rescued'"), 0);
  EXPECT_EQ(logs.str().find("lease expired"), std::string::npos);
  WorkerStats st = w.stats();
  EXPECT_EQ(st.completer.succeeded, 40u);
  EXPECT_EQ(st.completer.failed, 1u);
}

// The fleet-stopping reply of the faults issue: an agent printing invalid UTF-8 and a few KiB of
// Japanese. Its task ends with a readable last_error; the worker goes on with the next tasks.
TEST_F(PoisonRowTest, AHandlerReplyOfInvalidUtf8FailsOnlyItsTaskWithReadableText) {
  std::string reply = "\xFF\xFE bad ";
  for (int i = 0; i < 3000; ++i) reply += "\xE6\x97\xA5";  // 9 000 bytes: cut at the 8 KiB limit
  reply += "\xE6\x97";                                       // ending inside a character
  HandlerRegistry reg;
  reg.add("agent", std::make_shared<FnHandler>([&](const Task& t, const HandlerContext&) {
            if (t.payload.find("bad") != std::string::npos) return TaskOutcome::failure(reply);
            return TaskOutcome::success(reply);  // kept as the task's result: the same rules
          }));
  db.exec("INSERT INTO agentcron.agent_tasks (kind, payload) VALUES ('agent', '{\"bad\": true}')");
  db.insert_due(10, "agent");
  ASSERT_TRUE(run_until_settled(std::move(reg), "'agent'")) << logs.str();
  EXPECT_EQ(count("kind = 'agent' AND status = 'succeeded' AND octet_length(result) BETWEEN 8000 AND 8192"), 10);
  std::string error = db.text("SELECT last_error FROM agentcron.agent_tasks WHERE payload ? 'bad' AND status = 'failed'");
  EXPECT_EQ(error.rfind("\xEF\xBF\xBD\xEF\xBF\xBD bad \xE6\x97\xA5", 0), 0u);
  EXPECT_LE(error.size(), 8192u);
  EXPECT_EQ(error.substr(error.size() - 3), "\xE2\x80\xA6");  // cut, and says so
}

// What a claim lost in a database crash looks like to the worker: its running tasks are pending
// again and the next claim hands them out again, at the same attempt. The worker refuses the
// copies while the first runs go on, and the first runs' outcomes finish the tasks.
TEST_F(PoisonRowTest, AClaimTheDatabaseLostIsNotRunAgainBesideTheRunningCopies) {
  std::latch release(1);
  std::atomic<int> runs{0};
  HandlerRegistry reg;
  reg.add("agent", std::make_shared<FnHandler>([&](const Task&, const HandlerContext&) {
            ++runs;
            release.wait();
            return TaskOutcome::success();
          }));
  db.insert_due(2, "agent");
  Config c = db.config();
  c.scheduler.concurrency = 10;
  Worker w(c, std::move(reg), log, "lost-claim-test");
  std::thread runner([&] { w.run(); });
  bool running = testing::eventually([&] { return runs == 2; }, 20s);
  // The claim's commit "lost": the rows as they were before it, and a wake-up for the poller.
  db.exec("UPDATE agentcron.agent_tasks SET status = 'pending', attempts = 0, locked_by = NULL, locked_until = NULL");
  db.exec("NOTIFY agentcron_due");
  bool refused = running && testing::eventually([&] { return w.stats().poller.redelivered == 2; }, 20s);
  bool running_again = count("status = 'running' AND locked_by = 'lost-claim-test' AND attempts = 1") == 2;
  release.count_down();
  bool done = testing::eventually([&] { return count("status = 'succeeded'") == 2; }, 20s);
  w.request_shutdown(1);
  runner.join();
  ASSERT_TRUE(running) << logs.str();
  EXPECT_TRUE(refused) << logs.str();
  EXPECT_TRUE(running_again);
  EXPECT_TRUE(done) << logs.str();
  EXPECT_EQ(runs, 2);  // once each
  WorkerStats st = w.stats();
  EXPECT_EQ(st.completer.succeeded, 2u);
  EXPECT_EQ(st.completer.not_recorded, 0u);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.task_runs"), 0);  // no rescue, no second run
}

}  // namespace
}  // namespace agentcron
