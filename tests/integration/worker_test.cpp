// The worker's services against a real PostgreSQL: isolated failures within one tick, and a
// 10 000-task drain that runs every task exactly once within the batch and connection limits.
#include "agentcron/worker.hpp"

#include <gtest/gtest.h>
#include <httplib.h>
#include <spdlog/sinks/ostream_sink.h>

#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "agentcron/completer.hpp"
#include "agentcron/executor.hpp"
#include "agentcron/flow_control.hpp"
#include "agentcron/log.hpp"
#include "agentcron/metrics.hpp"
#include "agentcron/poller.hpp"
#include "agentcron/pg_task_store.hpp"
#include "support/fn_handler.hpp"
#include "support/run_worker.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;
using testing::TestDatabase;

using testing::FnHandler;

class WorkerTest : public ::testing::Test {
 protected:
  TestDatabase db;
  std::ostringstream logs;
  Logger log{LogFormat::json, LogLevel::warn, std::make_shared<spdlog::sinks::ostream_sink_mt>(logs)};
  std::mutex mu;
  std::map<std::int64_t, int> executions;

  std::shared_ptr<Handler> recording() {
    return std::make_shared<FnHandler>([this](const Task& t, const HandlerContext&) {
      std::lock_guard lock(mu);
      ++executions[t.id];
      return TaskOutcome::success();
    });
  }
};

TEST_F(WorkerTest, ThrowingCatchAllAndTimingOutHandlersFailAloneInOneTick) {
  Config c = db.config();
  HandlerRegistry reg;
  reg.add("ok", recording());
  reg.add("throws", std::make_shared<FnHandler>([](const Task&, const HandlerContext&) -> TaskOutcome {
            throw std::runtime_error("boom");
          }));
  reg.add("throws_anything", std::make_shared<FnHandler>([](const Task&, const HandlerContext&) -> TaskOutcome { throw 7; }));
  reg.add("hangs", std::make_shared<FnHandler>([](const Task&, const HandlerContext& ctx) {
            std::mutex m;
            std::condition_variable_any cv;
            std::unique_lock lock(m);
            cv.wait(lock, ctx.stop, [] { return false; });
            return TaskOutcome::success();
          }));
  db.insert_due(7, "ok");
  db.exec("INSERT INTO agentcron.agent_tasks (kind, timeout_ms) VALUES ('throws', NULL), ('throws_anything', NULL), ('hangs', 300)");

  ConnectionPool pool(PoolOptions::from_config(c, "w"), log);
  PgTaskStore store(pool, StoreOptions::from_config(c), log);
  CompleterOptions co;
  co.worker = "w";
  co.task_retry = Backoff{1s, 1s, 1};
  FlowControl flow;
  Completer completer(co, store, log, &flow);
  completer.start();
  Executor ex({16, 5min}, reg, [&](FinishedRun&& r) { completer.add(std::move(r)); }, log, &flow);
  SteadyClock clock;
  CircuitBreaker breaker(5, 1s, clock);
  PollerOptions po;
  po.worker = "w";
  po.kinds = reg.kinds();
  Poller poller(po, store, ex, flow, breaker, log);

  TickResult tick = poller.run_once();
  EXPECT_EQ(tick.claimed, 10);
  EXPECT_EQ(tick.batches, 1);
  ASSERT_TRUE(ex.wait_idle(std::chrono::steady_clock::now() + 10s));
  ASSERT_TRUE(completer.flush(std::chrono::steady_clock::now() + 10s));
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE kind = 'ok' AND status = 'succeeded'"), 7);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE kind <> 'ok' AND status = 'pending' AND attempts = 1 "
                      "AND last_error IS NOT NULL AND scheduled_for > created_at"),
            3)
      << [&] {
           pqxx::nontransaction tx(db.sql());
           std::string rows;
           for (const auto& r : tx.exec("SELECT id, kind, status, attempts, last_error, scheduled_for - created_at "
                                        "FROM agentcron.agent_tasks WHERE kind <> 'ok'"))
             for (const auto& f : r) rows += (f.is_null() ? "NULL" : f.c_str()) + std::string(f.num() + 1 == r.size() ? "\n" : " | ");
           return rows;
         }();
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.task_runs WHERE outcome = 'retry'"), 3);
  pqxx::nontransaction tx(db.sql());
  EXPECT_EQ(tx.exec1("SELECT last_error FROM agentcron.agent_tasks WHERE kind = 'hangs'")[0].as<std::string>(),
            "timed out after 300ms");
  EXPECT_EQ(tx.exec1("SELECT last_error FROM agentcron.agent_tasks WHERE kind = 'throws'")[0].as<std::string>(),
            "handler threw: boom");
}

TEST_F(WorkerTest, ListensBeforeItsFirstClaimAndKeepsThatClaimsConnectionForTheNext) {
  // No tick for a year: the start-up claim is the only one until a notification. It must come
  // after LISTEN (a task inserted in between would wait a year), and on a connection other than
  // the listener's, so that the first pickup finds its statement prepared on a pooled connection
  // instead of opening one (session 1's benchmark saw that as a 21 ms first pickup).
  Config c = db.config();
  c.scheduler.schedule = "@yearly";
  HandlerRegistry reg;
  reg.add("noop", recording());
  Worker worker(c, std::move(reg), log, "listen-first");
  // pg_stat_activity shows the first 1 KiB of a query: the connection's first claim sends its
  // PREPARE before the EXECUTE, so the statement's name is what is looked for.
  auto backends = [&](const std::string& like) {
    return db.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
                     "application_name = 'agentcron/listen-first' AND query LIKE '" + like + "'");
  };
  bool inserted = false;
  bool done = testing::run_worker_until(
      worker, [&] {
        if (!inserted) {
          if (backends("LISTEN%") != 1 || backends("%agentcron_claim%") != 1) return false;
          db.insert_due(1);  // due now: only the notification can start it
          inserted = true;
        }
        return db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'succeeded'") == 1;
      },
      30s);
  EXPECT_TRUE(inserted) << "never saw a listener and a separate claim connection\n" << logs.str();
  EXPECT_TRUE(done) << logs.str();
  EXPECT_EQ(worker.stats().poller.notifications, 1u);
}

TEST_F(WorkerTest, ServesItsCountersAndReadinessOverHttp) {
  Config c = db.config();
  c.scheduler.schedule = "@every 200ms";
  c.metrics.listen = "127.0.0.1:0";  // any free port: metrics_port() tells which
  HandlerRegistry reg;
  reg.add("noop", recording());
  Worker worker(c, std::move(reg), log, "metrics");
  EXPECT_EQ(worker.readiness().reason, "starting: waiting for the database");
  db.insert_due(25);
  auto get = [&](const char* path) { return httplib::Client("127.0.0.1", worker.metrics_port()).Get(path); };
  std::string metrics, ready_body;
  bool done = testing::run_worker_until(
      worker, [&] {
        if (worker.metrics_port() == 0) return false;
        auto m = get("/metrics");
        auto r = get("/readyz");
        if (!m || !r) return false;
        metrics = m->body;
        ready_body = r->body;
        return r->status == 200 &&
               metrics.find("agentcron_tasks_finished_total{outcome=\"succeeded\"} 25\n") != std::string::npos;
      },
      30s);
  EXPECT_TRUE(done) << "readyz: " << ready_body << "metrics:\n" << metrics << logs.str();
  EXPECT_NE(metrics.find("agentcron_tasks_claimed_total 25\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("agentcron_info{worker=\"metrics\"} 1\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("agentcron_listening 1\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("agentcron_pool_connection_limit 4\n"), std::string::npos) << metrics;
  EXPECT_EQ(worker.metrics_port(), 0);  // stopped with the worker
  EXPECT_EQ(worker.readiness().reason, "shutting down");
}

TEST_F(WorkerTest, AFreedSlotClaimsMoreWhenMoreIsDueWithoutWaitingForATick) {
  // No tick for a year and no LISTEN: only the claim a freed slot triggers can drain the queue,
  // one task at a time. (The race it guards against: a quick handler finishing before the
  // poller had recorded that its batch came back full.)
  Config c = db.config();
  c.scheduler.schedule = "@yearly";
  c.scheduler.listen = false;
  c.scheduler.concurrency = 1;
  HandlerRegistry reg;
  reg.add("noop", recording());
  db.insert_due(50);
  Worker worker(c, std::move(reg), log, "continuation");
  bool done = testing::run_worker_until(
      worker, [&] { return db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'succeeded'") == 50; }, 30s);
  EXPECT_TRUE(done) << logs.str();
  EXPECT_EQ(worker.stats().poller.largest_claim, 1);
}

TEST_F(WorkerTest, ADrainLargerThanTheSlotsNeverFallsBackToTicks) {
  // Many more tasks than slots, no tick for a year, no LISTEN: only freed slots and written
  // outcomes can keep the claims going, through rounds that find no room while outcomes are
  // still being written.
  Config c = db.config();
  c.scheduler.schedule = "@yearly";
  c.scheduler.listen = false;
  c.scheduler.concurrency = 1000;
  c.scheduler.batch_size = 500;
  HandlerRegistry reg;
  reg.add("noop", recording());
  db.insert_due(20000);
  Worker worker(c, std::move(reg), log, "no-ticks");
  bool done = testing::run_worker_until(
      worker, [&] { return db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'succeeded'") == 20000; },
      60s);
  EXPECT_TRUE(done) << db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'succeeded'");
}

TEST_F(WorkerTest, TenThousandTasksRunExactlyOnceInBatchesOfFiftyWithinTheConnectionLimit) {
  Config c = db.config();
  c.scheduler.batch_size = 50;
  c.scheduler.concurrency = 64;
  c.database.connection_limit = 3;
  c.scheduler.schedule = "@every 200ms";
  HandlerRegistry reg;
  reg.add("noop", recording());
  db.insert_due(10000);
  std::string id = "drain-" + std::to_string(::getpid());
  Worker worker(c, std::move(reg), log, id);

  std::atomic<bool> sampling{true};
  std::atomic<std::int64_t> peak_connections{0};
  std::thread sampler([&] {
    pqxx::connection s(db.conninfo());
    while (sampling) {
      pqxx::nontransaction tx(s);
      auto n = tx.exec1("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'agentcron/" + id + "'")[0].as<std::int64_t>();
      peak_connections = std::max(peak_connections.load(), n);
      std::this_thread::sleep_for(5ms);  // sampling cadence, not a wait for a condition
    }
  });
  bool done = testing::run_worker_until(
      worker, [&] { return db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'succeeded'") == 10000; },
      120s);
  sampling = false;
  sampler.join();
  ASSERT_TRUE(done) << logs.str();

  EXPECT_EQ(executions.size(), 10000u);
  int twice = 0;
  for (auto& [task, n] : executions) twice += n != 1;
  EXPECT_EQ(twice, 0);
  EXPECT_EQ(db.scalar("SELECT max(attempts) FROM agentcron.agent_tasks"), 1);
  EXPECT_LE(peak_connections, 3);
  EXPECT_GE(peak_connections, 1);
  WorkerStats st = worker.stats();
  EXPECT_LE(st.poller.largest_claim, 50);  // no claim returned more than batch_size rows
  EXPECT_GE(st.poller.claims, 10000u / 50);
  EXPECT_EQ(st.poller.claimed, 10000u);
  EXPECT_EQ(st.completer.succeeded, 10000u);
  // Closed: a backend leaves pg_stat_activity a moment after its client hangs up.
  EXPECT_TRUE(testing::eventually([&] {
    return db.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = "
                     "'agentcron/" + id + "'") == 0;
  }, 5s)) << "the worker's connections outlived it";
}

// A primary demoted to read-only (as after a failover) refuses every claim with 25006: the
// breaker opens and /readyz says so, its probes keep failing and reopening it, and once the
// server takes writes again claims resume — the breaker never jams half-open.
TEST_F(WorkerTest, ABreakerOpenedByAReadOnlyServerRecoversWhenWritesComeBack) {
  Config c = db.config();
  c.scheduler.schedule = "@every 100ms";
  c.retry.breaker_threshold = 2;
  c.retry.breaker_cooldown = 200ms;
  HandlerRegistry reg;
  reg.add("noop", recording());
  Worker worker(c, std::move(reg), log, "read-only");
  auto worker_backends = [&] {
    db.exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'agentcron/read-only'");
  };
  auto succeeded = [&] { return db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'succeeded'"); };
  std::string readiness_while_read_only, metrics_while_read_only;
  bool opened = false, recovered = false;
  db.insert_due(5);
  bool ok = testing::run_worker_until(
      worker, [&] {
        if (succeeded() < 5) return false;
        if (!opened) {
          // New sessions of this database are read-only; the worker's current ones are ended.
          db.exec("ALTER DATABASE " + db.name() + " SET default_transaction_read_only = on");
          worker_backends();
          db.insert_due(5);  // the test's own session predates the setting: it still writes
          opened = testing::eventually([&] {
            Readiness r = worker.readiness();
            if (r.ready) return false;
            readiness_while_read_only = r.reason;
            return r.reason.find("circuit breaker") != std::string::npos;
          }, 20s);
          metrics_while_read_only = render_metrics(worker.metrics());
          // Several cooldowns pass with probes failing on 25006.
          testing::eventually([&] { return logs.str().find("\"sqlstate\":\"25006\"") != std::string::npos; }, 5s);
          db.exec("ALTER DATABASE " + db.name() + " RESET default_transaction_read_only");
          worker_backends();
          return !opened;
        }
        recovered = succeeded() == 10 && worker.readiness().ready;
        return recovered;
      },
      40s);
  EXPECT_TRUE(opened) << readiness_while_read_only << "\n" << logs.str();
  EXPECT_TRUE(ok && recovered) << logs.str();
  EXPECT_NE(metrics_while_read_only.find("agentcron_database_circuit_state{state=\"closed\"} 0"), std::string::npos)
      << metrics_while_read_only;
}

}  // namespace
}  // namespace agentcron
