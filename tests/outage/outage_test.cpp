// Database outages with the built binary: PostgreSQL restarted under a running worker, and a
// worker started while PostgreSQL is down. These stop the shared cluster, so ctest runs them alone.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <httplib.h>

#include <cstdlib>
#include <fstream>
#include <regex>

#include <spdlog/sinks/ostream_sink.h>

#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "agentcron/duration.hpp"
#include "agentcron/log.hpp"
#include "agentcron/worker.hpp"
#include "support/fn_handler.hpp"
#include "support/process.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::Process;
using testing::TestDatabase;

void pg_ctl(const std::string& action) { ASSERT_TRUE(testing::run_pg_ctl(action)) << "pg_ctl " << action; }

class OutageTest : public ::testing::Test {
 protected:
  TestDatabase db;
  std::string config_path = "/tmp/agentcron-outage-" + std::to_string(::getpid()) + ".toml";

  void SetUp() override {
    // The password is ignored by the trust-auth cluster, and must never be printed.
    std::string url = db.url();
    url.replace(url.find("@"), 1, ":hunter2@");
    std::ofstream(config_path) << "[database]\nurl = \"" << url << "\"\nconnect_timeout = \"2s\"\n"
                               << "[scheduler]\nschedule = \"@every 200ms\"\n"
                               << "[retry]\nbase_delay = \"200ms\"\nmax_delay = \"1s\"\nbreaker_cooldown = \"2s\"\n"
                               << "[metrics]\nlisten = \"127.0.0.1:0\"\n"
                               << "[log]\nformat = \"json\"\n[handlers.noop]\ntype = \"notify\"\n";
  }
  void TearDown() override {
    // Whatever happened, leave the cluster running for the tests after this one.
    testing::ensure_cluster_running();
    db.reconnect();
    ::unlink(config_path.c_str());
  }
  // The port the worker's /metrics took (it logs where it listens).
  static int metrics_port(Process& w) {
    if (!w.wait_for_log("serving /metrics", 30s)) return 0;
    std::smatch m;
    std::string err = w.err();
    return std::regex_search(err, m, std::regex(R"re("listen":"127\.0\.0\.1:([0-9]+)")re")) ? std::stoi(m[1]) : 0;
  }
  // The status of GET `path` (-1: no answer) and its body.
  static std::pair<int, std::string> get(int port, const char* path) {
    auto r = httplib::Client("127.0.0.1", port).Get(path);
    return r ? std::pair{r->status, r->body} : std::pair{-1, std::string()};
  }
  std::int64_t succeeded() {
    try {
      return db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'succeeded'");
    } catch (const pqxx::broken_connection&) {
      db.reconnect();
      return -1;
    }
  }
};

TEST_F(OutageTest, WorkerSurvivesAPostgresRestartAndFinishesEveryTask) {
  Process w({"--config", config_path, "run"});
  db.insert_due(100);
  ASSERT_TRUE(eventually([&] { return succeeded() == 100; }, 30s)) << w.err();
  pg_ctl("-m fast restart");
  db.reconnect();
  db.insert_due(100);
  ASSERT_TRUE(eventually([&] { return succeeded() == 200; }, 60s)) << w.err();
  EXPECT_TRUE(w.running());
  std::string err = w.err();
  // The outage was noticed and logged (a lost LISTEN connection, a failed claim, or both).
  EXPECT_TRUE(err.find("LISTEN connection lost") != std::string::npos ||
              err.find("claiming due tasks failed") != std::string::npos)
      << err;
  EXPECT_EQ(err.find("hunter2"), std::string::npos);
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(15s), 0) << w.err();
}

TEST_F(OutageTest, ReadinessFollowsTheDatabaseWhileHealthStaysUp) {
  Process w({"--config", config_path, "run"});
  int port = metrics_port(w);
  ASSERT_GT(port, 0) << w.err();
  ASSERT_TRUE(eventually([&] { return get(port, "/readyz").first == 200; }, 30s)) << w.err();
  pg_ctl("-m fast stop");
  ASSERT_TRUE(eventually([&] { return get(port, "/readyz").first == 503; }, 60s)) << w.err();
  EXPECT_NE(get(port, "/readyz").second.find("database"), std::string::npos) << get(port, "/readyz").second;
  EXPECT_EQ(get(port, "/healthz").first, 200);
  pg_ctl("start");
  db.reconnect();
  ASSERT_TRUE(eventually([&] { return get(port, "/readyz").first == 200; }, 60s)) << get(port, "/readyz").second << w.err();
  db.insert_due(10);
  ASSERT_TRUE(eventually([&] { return succeeded() == 10; }, 30s)) << w.err();
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(15s), 0) << w.err();
}

TEST_F(OutageTest, WorkerStartedWhileTheDatabaseIsDownWaitsAndStartsWhenItComesUp) {
  db.insert_due(20);
  db.reconnect();
  pg_ctl("-m fast stop");
  Process w({"--config", config_path, "run"});
  // One log line per attempt, with backoff, the password redacted.
  ASSERT_TRUE(eventually([&] {
    std::string e = w.err();
    std::size_t n = 0;
    for (auto p = e.find("\"database unavailable\""); p != std::string::npos; p = e.find("\"database unavailable\"", p + 1)) ++n;
    return n >= 3;
  }, 30s)) << w.err();
  EXPECT_TRUE(w.running());
  std::string err = w.err();
  EXPECT_EQ(err.find("hunter2"), std::string::npos) << err;
  EXPECT_NE(err.find("password=***"), std::string::npos) << err;
  // Alive, not ready, and saying why.
  int port = metrics_port(w);
  ASSERT_GT(port, 0) << w.err();
  EXPECT_EQ(get(port, "/healthz").first, 200);
  EXPECT_EQ(get(port, "/readyz"), (std::pair<int, std::string>{503, "starting: waiting for the database\n"}));
  pg_ctl("start");
  ASSERT_TRUE(eventually([&] { return succeeded() == 20; }, 60s)) << w.err();
  EXPECT_NE(w.err().find("database is reachable"), std::string::npos);
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(15s), 0) << w.err();
}

// With scheduler.durable_claims = false a claim commits without waiting for its WAL flush: an
// immediate restart of PostgreSQL right after it loses the claim while its tasks run, and the
// same worker then claims them again while the first copies still run (the faults issue saw it
// in 2 runs of 3). Each task must run once at a time in this worker, and its success be counted
// once. The WAL writer is told to wait 10 s so that the claim is still unflushed at the restart;
// outcomes are durable here (synchronous_commit on for this database), as on a default server.
TEST_F(OutageTest, AnImmediateRestartThatLosesAClaimRunsNoTaskTwiceAtOnceInOneWorker) {
  constexpr int kTasks = 300;
  struct WalWriterDelay {
    TestDatabase& db;
    explicit WalWriterDelay(TestDatabase& d) : db(d) {
      db.exec("ALTER SYSTEM SET wal_writer_delay = '10s'");
      db.exec("SELECT pg_reload_conf()");
    }
    ~WalWriterDelay() {
      db.reconnect();
      db.exec("ALTER SYSTEM RESET wal_writer_delay");
      db.exec("SELECT pg_reload_conf()");
    }
  } slow_wal_writer(db);
  db.exec("ALTER DATABASE " + db.name() + " SET synchronous_commit = on");
  db.insert_due(kTasks, "slow");
  db.exec("CHECKPOINT");
  std::mutex mu;
  std::set<std::int64_t> active;
  std::map<std::int64_t, int> runs;
  int overlaps = 0;
  HandlerRegistry reg;
  reg.add("slow", std::make_shared<testing::FnHandler>([&](const Task& t, const HandlerContext&) {
            {
              std::lock_guard lock(mu);
              if (!active.insert(t.id).second) ++overlaps;
              ++runs[t.id];
            }
            std::this_thread::sleep_for(4s);  // the agent's work: it spans the restart
            std::lock_guard lock(mu);
            active.erase(t.id);
            return TaskOutcome::success();
          }));
  Config c = db.config();
  c.scheduler.schedule = "@every 200ms";
  c.scheduler.batch_size = kTasks;
  c.scheduler.concurrency = kTasks;
  c.scheduler.lease = 30s;
  c.database.connect_timeout = 2s;
  c.retry.base_delay = 100ms;
  c.retry.breaker_cooldown = 500ms;
  c.scheduler.durable_claims = false;  // the choice under test: claims that a crash can lose
  std::ostringstream logs;
  Logger log{LogFormat::json, LogLevel::warn, std::make_shared<spdlog::sinks::ostream_sink_mt>(logs)};
  Worker w(c, std::move(reg), log, "restart-test");
  std::thread runner([&] { w.run(); });
  bool claimed = eventually([&] {
    std::lock_guard lock(mu);
    return static_cast<int>(active.size()) == kTasks;
  }, 30s);
  if (claimed) pg_ctl("-m immediate restart");
  db.reconnect();
  bool done = claimed && eventually([&] { return succeeded() == kTasks; }, 60s);
  w.request_shutdown(1);
  runner.join();
  ASSERT_TRUE(claimed) << logs.str();
  ASSERT_TRUE(done) << "succeeded " << succeeded() << "\n" << logs.str().substr(0, 4000);
  WorkerStats st = w.stats();
  int executions = 0;
  for (const auto& [id, n] : runs) executions += n;
  std::printf("immediate restart after a claim of %d: %d executions, %llu claims refused as already running, "
              "%llu outcomes not recorded, %d overlapping runs\n",
              kTasks, executions, static_cast<unsigned long long>(st.poller.redelivered),
              static_cast<unsigned long long>(st.completer.not_recorded), overlaps);
  EXPECT_EQ(overlaps, 0);
  // A first copy whose outcome came back before the task was claimed again could not be recorded
  // (the row was pending): the task then ran again, after it — never beside it.
  EXPECT_EQ(executions, kTasks + static_cast<int>(st.completer.not_recorded));
  EXPECT_EQ(st.completer.succeeded, static_cast<std::uint64_t>(kTasks));  // tasks, not deliveries
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'succeeded' AND attempts = 1"), kTasks);
}

// `once` must not say 0 when the batch's outcomes never reached the database: PostgreSQL stops
// while the tasks run, the outcomes cannot be written, and the exit code is 69.
TEST_F(OutageTest, OnceExits69WhenItsOutcomesCannotBeWritten) {
  std::string conf = config_path + ".once";
  std::ofstream(conf) << "[database]\nurl = \"" << db.url() << "\"\nconnect_timeout = \"1s\"\n"
                      << "[timeouts]\nupdate = \"1s\"\n[log]\nformat = \"json\"\n[metrics]\nlisten = \"\"\n"
                      << "[handlers.slow]\ntype = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep 2\"]\n";
  db.exec("INSERT INTO agentcron.agent_tasks (kind) SELECT 'slow' FROM generate_series(1, 3)");
  Process once({"--config", conf, "once"});
  ASSERT_TRUE(eventually([&] {
    return db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'running'") == 3;
  }, 20s)) << once.err();
  db.reconnect();
  pg_ctl("-m fast stop");
  auto code = once.wait(60s);
  ::unlink(conf.c_str());
  ASSERT_TRUE(code) << once.err();
  EXPECT_EQ(*code, 69) << once.err();
  EXPECT_NE(once.err().find("task outcomes could not be written"), std::string::npos) << once.err();
}

// The shutdown budget holds with the database gone at the worst moment: a SIGTERM while tasks
// run, then PostgreSQL stops before their outcomes can be written. The worker exits 0 within the
// budget that `config check` prints for its configuration.
TEST_F(OutageTest, ShutdownWithTheDatabaseGoneEndsWithinTheBudget) {
  std::string conf = config_path + ".budget";
  std::ofstream(conf) << "[database]\nurl = \"" << db.url() << "\"\nconnect_timeout = \"1s\"\npool_timeout = \"1s\"\n"
                      << "[timeouts]\nclaim = \"1s\"\nupdate = \"1s\"\n[shutdown]\ngrace = \"2s\"\n"
                      << "[scheduler]\nschedule = \"@every 200ms\"\n[log]\nformat = \"json\"\n[metrics]\nlisten = \"\"\n"
                      << "[handlers.slow]\ntype = \"exec\"\nkill_after = \"1s\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep 1\"]\n";
  auto check = testing::run_agentcron({"--config", conf, "config", "check"});
  std::smatch m;
  ASSERT_TRUE(std::regex_search(check.out, m, std::regex("shutdown budget: ([0-9a-z]+) at most"))) << check.out << check.err;
  auto budget = parse_duration(m[1].str());
  ASSERT_TRUE(budget) << m[1];
  db.exec("INSERT INTO agentcron.agent_tasks (kind) SELECT 'slow' FROM generate_series(1, 4)");
  Process w({"--config", conf, "run"});
  ASSERT_TRUE(eventually([&] {
    return db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE status = 'running'") == 4;
  }, 20s)) << w.err();
  db.reconnect();
  auto start = std::chrono::steady_clock::now();
  w.signal(SIGTERM);
  pg_ctl("-m immediate stop");
  auto code = w.wait(*budget + 30s);
  auto took = std::chrono::steady_clock::now() - start;
  ::unlink(conf.c_str());
  ASSERT_TRUE(code) << w.err();
  EXPECT_EQ(*code, 0) << w.err();
  std::printf("shutdown with the database gone: %.1f s of a %s budget\n", std::chrono::duration<double>(took).count(),
              m[1].str().c_str());
  EXPECT_LE(took, *budget) << w.err();
}

}  // namespace
}  // namespace agentcron
