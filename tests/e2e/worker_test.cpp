// `agentcron run` and `agentcron once`, end to end: the built binary, a real PostgreSQL, real
// signals.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "support/process.hpp"
#include "support/run_record.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::Process;
using testing::run_agentcron;
using testing::TestDatabase;

// A slow task's payload says how long it sleeps: {"s":"1.5"}.
const char* kSleepCommand = R"cmd(["/bin/sh", "-c", "sleep $(tr -dc 0-9.)"])cmd";

class WorkerE2E : public ::testing::Test {
 protected:
  TestDatabase db;
  std::string config_path = "/tmp/agentcron-e2e-worker-" + std::to_string(::getpid()) + "-" +
                            ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".toml";

  void TearDown() override { ::unlink(config_path.c_str()); }

  // A config for this test's database; `extra` is appended (sections and handlers).
  std::string write_config(const std::string& scheduler, const std::string& extra, const std::string& url = "") {
    std::ofstream(config_path) << "[database]\nurl = \"" << (url.empty() ? db.url() : url) << "\"\n"
                               << "connection_limit = 4\npool_timeout = \"5s\"\nconnect_timeout = \"2s\"\n"
                               << "[scheduler]\n" << scheduler << "\n"
                               << "[retry]\nbase_delay = \"100ms\"\nmax_delay = \"500ms\"\n"
                               << "[log]\nformat = \"json\"\n" << extra;
    return config_path;
  }
  std::int64_t count(const std::string& where) {
    return db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE " + where);
  }
  std::int64_t worker_connections() {
    return db.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'agentcron/%' AND datname = current_database()");
  }
  // After the process exited: its backends leave pg_stat_activity a moment after it hung up.
  bool connections_closed() {
    return testing::eventually([&] { return worker_connections() == 0; }, std::chrono::seconds(5));
  }
  void insert_sleepers(int n, const std::string& seconds) {
    db.exec("INSERT INTO agentcron.agent_tasks (kind, payload) SELECT 'slow', '{\"s\":\"" + seconds +
            "\"}' FROM generate_series(1, " + std::to_string(n) + ")");
  }
};

TEST_F(WorkerE2E, SigtermFinishesWhatFitsTheGraceReleasesTheRestAndLeavesNothingBehind) {
  write_config("schedule = \"@every 200ms\"\nconcurrency = 8\n",
               "[shutdown]\ngrace = \"3s\"\n[handlers.slow]\ntype = \"exec\"\ncommand = " + std::string(kSleepCommand) +
                   "\nkill_after = \"1s\"\n");
  insert_sleepers(4, "1");
  insert_sleepers(4, "60");
  Process worker({"--config", config_path, "run"});
  ASSERT_TRUE(eventually([&] { return count("status = 'running'") == 8; })) << worker.err();
  insert_sleepers(5, "0");  // due, but nothing may be claimed after the signal
  worker.signal(SIGTERM);
  auto start = std::chrono::steady_clock::now();
  auto code = worker.wait(15s);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(code) << worker.err();
  EXPECT_EQ(*code, 0) << worker.err();
  EXPECT_LT(took, 3s + 1s + 1s);  // grace, kill_after of the cancelled sleepers, a second
  EXPECT_EQ(count("status = 'succeeded'"), 4);
  EXPECT_EQ(count("payload->>'s' = '60' AND status = 'pending' AND attempts = 0"), 4);
  EXPECT_EQ(count("payload->>'s' = '0' AND status = 'pending' AND attempts = 0"), 5);
  EXPECT_EQ(count("status = 'running'"), 0);
  EXPECT_TRUE(connections_closed());
  EXPECT_NE(worker.err().find("grace over: stopping unfinished tasks"), std::string::npos) << worker.err();
}

TEST_F(WorkerE2E, ASecondSigtermSkipsTheGrace) {
  write_config("schedule = \"@every 200ms\"\nconcurrency = 4\n",
               "[shutdown]\ngrace = \"60s\"\n[handlers.slow]\ntype = \"exec\"\ncommand = " + std::string(kSleepCommand) +
                   "\nkill_after = \"1s\"\n");
  insert_sleepers(4, "60");
  Process worker({"--config", config_path, "run"});
  ASSERT_TRUE(eventually([&] { return count("status = 'running'") == 4; })) << worker.err();
  worker.signal(SIGTERM);
  ASSERT_TRUE(worker.wait_for_log("waiting for running tasks", 10s)) << worker.err();
  worker.signal(SIGTERM);
  auto code = worker.wait(10s);
  ASSERT_TRUE(code) << worker.err();
  EXPECT_EQ(*code, 0);
  EXPECT_EQ(count("status = 'pending' AND attempts = 0"), 4);
  EXPECT_TRUE(connections_closed());
}

TEST_F(WorkerE2E, TasksOfASigkilledWorkerRunAgainAfterTheirLeaseExpires) {
  write_config("schedule = \"@every 200ms\"\nconcurrency = 4\nlease = \"3s\"\n",
               "[handlers.slow]\ntype = \"exec\"\ncommand = " + std::string(kSleepCommand) + "\n");
  insert_sleepers(4, "60");
  {
    Process doomed({"--config", config_path, "run"});
    ASSERT_TRUE(eventually([&] { return count("status = 'running'") == 4; })) << doomed.err();
    doomed.signal(SIGKILL);
    doomed.wait(5s);
  }
  // The sleepers of the dead worker are orphans now; its tasks stay `running` until the lease ends.
  db.exec("UPDATE agentcron.agent_tasks SET payload = '{\"s\":\"0\"}'");
  EXPECT_EQ(count("status = 'running'"), 4);
  Process rescuer({"--config", config_path, "run"});
  ASSERT_TRUE(eventually([&] { return count("status = 'succeeded'") == 4; }, 30s)) << rescuer.err();
  EXPECT_EQ(count("attempts = 2"), 4);  // the killed run counted, the rescued run succeeded
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.task_runs WHERE outcome = 'rescued'"), 4);
  rescuer.signal(SIGTERM);
  EXPECT_EQ(rescuer.wait(10s), 0);
}

TEST_F(WorkerE2E, ThreeProcessesShareTwentyThousandTasksEachRunExactlyOnce) {
  write_config("schedule = \"@every 250ms\"\nconcurrency = 32\nbatch_size = 100\n",
               "[handlers.noop]\ntype = \"notify\"\n");
  db.insert_due(20000);
  std::vector<std::unique_ptr<Process>> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(std::make_unique<Process>(std::vector<std::string>{"--config", config_path, "run"}));
  ASSERT_TRUE(eventually([&] { return count("status = 'succeeded'") == 20000; }, 120s));
  for (auto& w : workers) w->signal(SIGTERM);
  std::set<std::int64_t> seen;
  std::size_t total = 0;
  std::regex done("\"msg\":\"task succeeded\",\"task_id\":(\\d+)");
  for (auto& w : workers) {
    ASSERT_EQ(w->wait(20s), 0) << w->err();
    std::string err = w->err();
    std::size_t mine = 0;
    for (std::sregex_iterator it(err.begin(), err.end(), done), end; it != end; ++it) {
      seen.insert(std::stoll((*it)[1]));
      ++mine;
    }
    EXPECT_GT(mine, 0u) << "a worker did none of the work";
    total += mine;
  }
  EXPECT_EQ(total, 20000u);       // executions, over all processes…
  EXPECT_EQ(seen.size(), 20000u);  // …of 20 000 distinct tasks: each exactly once
  EXPECT_EQ(count("attempts <> 1"), 0);
  EXPECT_TRUE(connections_closed());
}

TEST_F(WorkerE2E, RecurringTaskRunsEveryTwoSecondsAndMissedOccurrencesCoalesce) {
  write_config("schedule = \"@every 100ms\"\n", "[handlers.tick]\ntype = \"notify\"\n");
  db.exec("INSERT INTO agentcron.agent_tasks (kind, cron) VALUES ('tick', '*/2 * * * * *')");
  auto runs = [&] { return db.scalar("SELECT count(*) FROM agentcron.task_runs WHERE outcome = 'succeeded'"); };
  {
    Process w({"--config", config_path, "run"});
    ASSERT_TRUE(eventually([&] { return runs() >= 3; }, 20s)) << w.err();
    w.signal(SIGTERM);
    ASSERT_EQ(w.wait(10s), 0);
  }
  // After the first run (due at insertion, on any second), runs follow the schedule: even seconds.
  EXPECT_EQ(db.scalar("SELECT count(*) FROM agentcron.task_runs WHERE outcome = 'succeeded' AND "
                      "started_at > (SELECT min(started_at) FROM agentcron.task_runs) AND "
                      "extract(second FROM date_trunc('second', started_at))::int % 2 = 1 AND "
                      "started_at - date_trunc('second', started_at) < interval '900 ms'"),
            0);
  std::int64_t before = runs();
  // The worker is away for 10 s: five occurrences are missed…
  db.exec("UPDATE agentcron.agent_tasks SET scheduled_for = now() - interval '10 seconds'");
  Process w({"--config", config_path, "run"});
  ASSERT_TRUE(eventually([&] { return runs() >= before + 1; }, 10s)) << w.err();
  // …and run once, then the schedule goes on from now: the next run is in the future.
  EXPECT_EQ(runs(), before + 1);
  EXPECT_EQ(count("kind = 'tick' AND scheduled_for > now() - interval '1 second' AND attempts = 0"), 1);
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(10s), 0);
}

TEST_F(WorkerE2E, ListenStartsADueTaskLongBeforeTheNextTick) {
  write_config("schedule = \"@yearly\"\nlisten = true\n", "[handlers.ping]\ntype = \"notify\"\n");
  Process w({"--config", config_path, "run"});
  ASSERT_TRUE(w.wait_for_log("worker started", 10s)) << w.err();
  ASSERT_TRUE(eventually([&] {
    return db.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'") == 1;
  }, 10s)) << w.err();
  db.exec("INSERT INTO agentcron.agent_tasks (kind) VALUES ('ping')");
  EXPECT_TRUE(eventually([&] { return count("status = 'succeeded'") == 1; }, 10s)) << w.err();
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(10s), 0);
}

TEST_F(WorkerE2E, SighupReloadsTheScheduleAndKeepsTheOldConfigWhenTheNewIsInvalid) {
  write_config("schedule = \"@yearly\"\nlisten = false\n", "[handlers.ping]\ntype = \"notify\"\n");
  Process w({"--config", config_path, "run"});
  ASSERT_TRUE(w.wait_for_log("worker started", 10s)) << w.err();
  db.exec("INSERT INTO agentcron.agent_tasks (kind) VALUES ('ping')");  // due, but no tick for a year
  // An invalid file is refused and the worker goes on.
  write_config("schedule = \"@every 200ms\"\nbatch_size = 0\n", "[handlers.ping]\ntype = \"notify\"\n");
  w.signal(SIGHUP);
  ASSERT_TRUE(w.wait_for_log("reload failed; keeping the old configuration", 10s)) << w.err();
  EXPECT_NE(w.err().find("scheduler.batch_size must be between 1 and 10000"), std::string::npos);
  EXPECT_EQ(count("status = 'succeeded'"), 0);
  write_config("schedule = \"@every 200ms\"\nlisten = false\n", "[handlers.ping]\ntype = \"notify\"\n");
  w.signal(SIGHUP);
  ASSERT_TRUE(w.wait_for_log("configuration reloaded", 10s)) << w.err();
  EXPECT_TRUE(eventually([&] { return count("status = 'succeeded'") == 1; }, 10s)) << w.err();
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(10s), 0);
}

TEST_F(WorkerE2E, OnceExitCodes) {
  write_config("concurrency = 4\n",
               "[handlers.ok]\ntype = \"notify\"\n[handlers.bad]\ntype = \"exec\"\ncommand = [\"/bin/false\"]\n");
  // Nothing due: 0.
  EXPECT_EQ(run_agentcron({"--config", config_path, "once"}).code, 0);
  // All succeed: 0, one batch only.
  db.insert_due(80, "ok");
  auto r = run_agentcron({"--config", config_path, "once"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(count("status = 'succeeded'"), 50);  // batch_size
  // --drain takes the rest.
  EXPECT_EQ(run_agentcron({"--config", config_path, "once", "--drain"}).code, 0);
  EXPECT_EQ(count("status = 'succeeded'"), 80);
  // --max-tasks bounds it.
  db.insert_due(10, "ok");
  EXPECT_EQ(run_agentcron({"--config", config_path, "once", "--drain", "--max-tasks", "3"}).code, 0);
  EXPECT_EQ(count("status = 'succeeded'"), 83);
  // Some task failed: 1.
  db.exec("INSERT INTO agentcron.agent_tasks (kind) VALUES ('bad')");
  auto f = run_agentcron({"--config", config_path, "once", "--drain"});
  EXPECT_EQ(f.code, 1) << f.err;
  EXPECT_EQ(count("status = 'succeeded'"), 90);
  EXPECT_EQ(count("kind = 'bad' AND status = 'pending' AND attempts = 1 AND last_error = 'exit 1'"), 1);
  EXPECT_TRUE(connections_closed());
}

// The first SIGTERM during `once --drain` stops claiming at once — not after a running task
// happens to free a slot — and the running tasks get the grace, then go back to pending.
TEST_F(WorkerE2E, OnceDrainStopsClaimingAtTheFirstSigtermAndEndsWithinTheGrace) {
  write_config("concurrency = 2\nbatch_size = 2\n",
               "[shutdown]\ngrace = \"1s\"\n[handlers.slow]\ntype = \"exec\"\ncommand = " + std::string(kSleepCommand) +
                   "\nkill_after = \"1s\"\n");
  insert_sleepers(6, "60");
  Process once({"--config", config_path, "once", "--drain"});
  ASSERT_TRUE(eventually([&] { return count("status = 'running'") == 2; })) << once.err();
  once.signal(SIGTERM);
  auto start = std::chrono::steady_clock::now();
  auto code = once.wait(15s);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(code) << once.err();
  EXPECT_EQ(*code, 0) << once.err();  // nothing failed: two released, four never claimed
  EXPECT_LT(took, 1s + 1s + 2s);      // grace, kill_after, and a margin
  EXPECT_EQ(count("status = 'pending' AND attempts = 0"), 6);
  EXPECT_TRUE(connections_closed());
}

TEST_F(WorkerE2E, OnceAgainstAnUnreachableDatabaseExits69Promptly) {
  write_config("", "[handlers.ok]\ntype = \"notify\"\n", "postgresql://agentcron:hunter2@127.0.0.1:1/nothing");
  auto start = std::chrono::steady_clock::now();
  auto r = run_agentcron({"--config", config_path, "once"});
  EXPECT_EQ(r.code, 69) << r.err;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 20s);
  EXPECT_NE(r.err.find("database unavailable"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("hunter2"), std::string::npos) << r.err;
}

TEST_F(WorkerE2E, RunWithoutSchemaSaysToMigrate) {
  TestDatabase empty(TestDatabase::Schema::empty);
  write_config("", "[handlers.ok]\ntype = \"notify\"\n", empty.url());
  auto r = run_agentcron({"--config", config_path, "once"});
  EXPECT_EQ(r.code, 69);
  EXPECT_NE(r.err.find("run `agentcron migrate`"), std::string::npos) << r.err;
  auto m = run_agentcron({"--config", config_path, "once", "--migrate"});
  EXPECT_EQ(m.code, 0) << m.err;
}

TEST_F(WorkerE2E, BadConfigExits78) {
  write_config("batch_size = 0\n", "");
  auto r = run_agentcron({"--config", config_path, "run"});
  EXPECT_EQ(r.code, 78);
  EXPECT_NE(r.err.find(config_path + ":7: scheduler.batch_size must be between 1 and 10000, got 0"), std::string::npos) << r.err;
}

// A task never runs twice at the same time: an exec program that takes its time over SIGTERM
// (0.7 s in its trap) times out at 300 ms on every attempt. Its retry is written only once the
// program has ended, so the other worker, woken by that retry, never starts the next attempt
// while the last one is still stopping. Each run records its start and end.
TEST_F(WorkerE2E, TwoWorkersNeverRunOneTaskAtTheSameTimeAcrossTimeouts) {
  std::string dir = "/tmp/agentcron-e2e-overlap-" + std::to_string(::getpid());
  ASSERT_EQ(std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str()), 0);
  std::string log = dir + "/runs-$AGENTCRON_TASK_ID";
  write_config("schedule = \"@every 100ms\"\nconcurrency = 4\n",
               "[handlers.stubborn]\ntype = \"exec\"\nkill_after = \"5s\"\ncommand = [\"/bin/sh\", \"-c\", \""
               "echo S $$ $(date +%s%N) >> " + log + "; "
               "trap 'sleep 0.7; echo E $$ $(date +%s%N) >> " + log + "; exit 1' TERM; "
               "sleep 30 >/dev/null 2>&1 & wait\"]\n");
  db.exec("INSERT INTO agentcron.agent_tasks (kind, timeout_ms, max_attempts) "
          "SELECT 'stubborn', 300, 3 FROM generate_series(1, 4)");
  Process a({"--config", config_path, "run"});
  Process b({"--config", config_path, "run"});
  bool done = eventually([&] { return count("status = 'failed'") == 4; }, 60s);
  a.signal(SIGTERM);
  b.signal(SIGTERM);
  EXPECT_EQ(a.wait(15s), 0) << a.err();
  EXPECT_EQ(b.wait(15s), 0) << b.err();
  ASSERT_TRUE(done) << a.err() << b.err();
  for (int id = 1; id <= 4; ++id) {
    std::vector<testing::RunSpan> spans = testing::read_runs(dir + "/runs-" + std::to_string(id));
    ASSERT_EQ(spans.size(), 3u) << "task " << id;  // three attempts
    for (const auto& span : spans) EXPECT_NE(span.end, LLONG_MAX) << "task " << id << ": a run has no end";
    EXPECT_EQ(testing::overlapping(spans), 0) << "task " << id << ": an attempt started before the last had ended";
  }
  EXPECT_EQ(count("status = 'failed' AND last_error LIKE 'timed out after 300ms%'"), 4);
  std::system(("rm -rf " + dir).c_str());
}

}  // namespace
}  // namespace agentcron
