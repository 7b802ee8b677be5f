// agentcron through Debian's real PgBouncer in transaction-pooling mode, where several client
// connections share one server connection and nothing session-scoped survives a transaction.
#include <gtest/gtest.h>
#include <signal.h>
#include <spdlog/sinks/ostream_sink.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "agentcron/log.hpp"
#include "agentcron/migrator.hpp"
#include "agentcron/pg_task_store.hpp"
#include "agentcron/worker.hpp"
#include "support/bouncer.hpp"
#include "support/run_worker.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;
using testing::Bouncer;
using testing::TestDatabase;

class PgbouncerTest : public ::testing::Test {
 protected:
  TestDatabase db;
  Bouncer bouncer{db};
  std::ostringstream logs;
  Logger log{LogFormat::text, LogLevel::warn, std::make_shared<spdlog::sinks::ostream_sink_mt>(logs)};

  Config config(bool pgbouncer_mode) {
    Config c = db.config();
    c.database.url = bouncer.url() + (pgbouncer_mode ? "?pgbouncer=true" : "");
    c.database.pgbouncer = pgbouncer_mode;
    c.database.connection_limit = 4;
    return c;
  }
  // Claims and completes from several threads, each with its own pooled connections, through
  // one server connection. Returns how many operations failed.
  int hammer(const Config& c, int threads, int rounds) {
    ConnectionPool pool(PoolOptions::from_config(c, "bouncer"), log);
    PgTaskStore store(pool, StoreOptions::from_config(c), log);
    std::atomic<int> failures{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t)
      ts.emplace_back([&] {
        for (int r = 0; r < rounds; ++r) {
          try {
            auto tasks = store.claim_due(ClaimParams{5, {"noop"}, "bouncer", 60s});
            std::vector<Completion> cs;
            for (auto& task : tasks) {
              Completion x;
              x.id = task.id;
              x.claim_token = task.claim_token;
              x.attempt = task.attempt;
              cs.push_back(x);
            }
            store.complete_many(cs, "bouncer");
            store.status();
          } catch (const DatabaseError& e) {
            ++failures;
          }
        }
      });
    for (auto& t : ts) t.join();
    return failures;
  }
};

TEST_F(PgbouncerTest, PgbouncerModeWorksInTransactionPooling) {
  ASSERT_TRUE(bouncer.ready()) << bouncer.log();
  db.insert_due(400);
  EXPECT_EQ(hammer(config(true), 4, 30), 0) << logs.str();
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'succeeded'"), 400);
}

TEST_F(PgbouncerTest, NamedPreparedStatementsWouldBreakThereWhichIsWhyThatModeExists) {
  ASSERT_TRUE(bouncer.ready()) << bouncer.log();
  db.insert_due(400);
  // The control: the same load with prepared statements fails through a transaction pooler.
  EXPECT_GT(hammer(config(false), 4, 30), 0);
}

TEST_F(PgbouncerTest, MigrateAndAWholeWorkerRunThroughIt) {
  ASSERT_TRUE(bouncer.ready()) << bouncer.log();
  Config c = config(true);
  c.scheduler.schedule = "@every 100ms";
  c.scheduler.concurrency = 16;
  {
    ConnectionPool pool(PoolOptions::from_config(c, "m"), log);
    PgTaskStore store(pool, StoreOptions::from_config(c), log);
    EXPECT_EQ(Migrator(store, log).migrate(), 0);  // the advisory lock is transaction-scoped
  }
  db.insert_due(1000);
  class Noop final : public Handler {
   public:
    TaskOutcome run(const Task&, const HandlerContext&) override { return TaskOutcome::success(); }
  };
  HandlerRegistry reg;
  reg.add("noop", std::make_shared<Noop>());
  Worker worker(c, std::move(reg), log, "bouncer-worker");
  bool done = testing::run_worker_until(
      worker, [&] { return db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'succeeded'") == 1000; }, 60s);
  EXPECT_TRUE(done) << logs.str();
  EXPECT_EQ(db.scalar("SELECT max(attempts) FROM agentcron.agent_tasks"), 1);
  EXPECT_EQ(logs.str().find("LISTEN"), std::string::npos) << "pgbouncer mode must not LISTEN";
}

}  // namespace
}  // namespace agentcron
