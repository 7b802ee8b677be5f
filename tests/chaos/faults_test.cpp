// Chaos, faults: the built binary under kill -9, PostgreSQL restarts, a stalled network, a pool of
// one connection, and SIGTERMs at random moments. Each scenario is bounded, prints its figures,
// and checks the promises of docs/reliability.md: nothing lost, nothing failed, duplicates only
// where a worker died holding tasks, and every worker back at work soon after a fault.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <regex>

#include "support/process.hpp"
#include "support/run_record.hpp"
#include "support/tcp_proxy.hpp"
#include "support/test_db.hpp"

namespace agentcron {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using testing::eventually;
using testing::Process;
using testing::TestDatabase;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

class Chaos : public ::testing::Test {
 protected:
  TestDatabase db;
  std::string config_path = "/tmp/agentcron-chaos-" + std::to_string(::getpid()) + "-" +
                            ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".toml";

  void TearDown() override {
    ::unlink(config_path.c_str());
    // Whatever happened, leave the cluster running for the tests after this one.
    testing::ensure_cluster_running();
  }
  void write_config(const std::string& url, const std::string& rest) {
    std::ofstream(config_path) << "[database]\nurl = \"" << url << "\"\n" << rest << "[log]\nformat = \"json\"\n";
  }
  std::int64_t count(const std::string& where) {
    for (int attempt = 0;; ++attempt) {
      try {
        return db.scalar("SELECT count(*) FROM agentcron.agent_tasks WHERE " + where);
      } catch (const pqxx::broken_connection&) {  // the cluster restarted under us
        db.reconnect();
        if (attempt == 50) throw;
        std::this_thread::sleep_for(100ms);
      }
    }
  }
  int db_port() {
    std::smatch m;
    std::string url = db.url();
    return std::regex_search(url, m, std::regex(":([0-9]+)/")) ? std::stoi(m[1]) : 0;
  }
  static void pg_ctl(const std::string& action) { ASSERT_TRUE(testing::run_pg_ctl(action)) << "pg_ctl " << action; }
};

// kill -9 of one of two workers, ten times, during a drain of 10,000 tasks with a 3 s lease. An
// http endpoint in the test counts each task's runs. Nothing is lost or failed; the only
// duplicates are tasks a killed worker held; the tasks the last kill left behind are back in
// circulation within a lease and a rescue interval, and the drain ends.
TEST_F(Chaos, KillNineOfOneOfTwoWorkersTenTimesDuringADrain) {
  constexpr int kTasks = 10000;
  std::mutex mu;
  std::map<std::int64_t, int> runs;
  httplib::Server server;
  server.new_task_queue = [] { return new httplib::ThreadPool(64); };  // as many as the workers send at once
  server.Post("/run", [&](const httplib::Request& req, httplib::Response& res) {
    auto at = req.body.find("\"task_id\":");
    if (at != std::string::npos) {
      std::lock_guard lock(mu);
      ++runs[std::atoll(req.body.c_str() + at + 10)];
    }
    res.set_content("{}", "application/json");
  });
  int port = server.bind_to_any_port("127.0.0.1");
  std::thread serving([&] { server.listen_after_bind(); });
  write_config(db.url(), "connection_limit = 3\n[scheduler]\nschedule = \"@every 200ms\"\nconcurrency = 64\n"
                         "batch_size = 64\nlease = \"3s\"\n[metrics]\nlisten = \"\"\n"
                         "[handlers.call]\ntype = \"http\"\nurl = \"http://127.0.0.1:" + std::to_string(port) + "/run\"\n");
  db.exec("INSERT INTO agentcron.agent_tasks (kind, max_attempts) SELECT 'call', 10 FROM generate_series(1, " +
          std::to_string(kTasks) + ")");
  std::unique_ptr<Process> workers[2] = {std::make_unique<Process>(std::vector<std::string>{"--config", config_path, "run"}),
                                         std::make_unique<Process>(std::vector<std::string>{"--config", config_path, "run"})};
  auto start = Clock::now();
  std::int64_t in_flight_at_kills = 0;
  Clock::time_point last_kill;
  std::string left_by_last_kill;  // the ids the last kill left running, as a SQL list
  std::string last_victim;        // its rows: running under the dead worker
  for (int kill = 1; kill <= 10; ++kill) {
    // Spread over the drain: the tenth kill comes with about a tenth of the tasks left.
    ASSERT_TRUE(eventually([&] { return count("status = 'succeeded'") >= kill * kTasks / 12; }, 60s))
        << "kill " << kill << ": the drain stalled\n" << workers[0]->err().substr(0, 3000);
    auto& victim = workers[kill % 2];
    std::string pid = std::to_string(victim->pid());
    victim->signal(SIGKILL);
    victim->wait(10s);
    last_kill = Clock::now();
    std::string held = "locked_by LIKE '%:" + pid + ":%' AND status = 'running'";
    in_flight_at_kills += count(held);
    left_by_last_kill = db.text("SELECT coalesce(string_agg(id::text, ','), '0') FROM agentcron.agent_tasks WHERE " + held);
    last_victim = held;
    victim = std::make_unique<Process>(std::vector<std::string>{"--config", config_path, "run"});
  }
  bool rescued = eventually([&] { return count(last_victim) == 0; }, 30s);
  double rescued_after = seconds_since(last_kill);
  bool done_again = eventually([&] {
    return count("id IN (" + left_by_last_kill + ") AND status <> 'succeeded'") == 0;
  }, 30s);
  double after_last_kill = seconds_since(last_kill);
  bool drained = eventually([&] { return count("status = 'succeeded'") == kTasks; }, 60s);
  for (auto& w : workers) w->signal(SIGTERM);
  for (auto& w : workers) EXPECT_EQ(w->wait(30s), 0) << w->err().substr(0, 3000);
  server.stop();
  serving.join();
  ASSERT_TRUE(drained) << count("status = 'succeeded'") << " succeeded";
  long long executions = 0;
  for (const auto& [id, n] : runs) executions += n;
  long long duplicates = executions - kTasks;
  std::printf("chaos kill -9: %d tasks, 10 kills, %lld in flight at the kills, %lld duplicate runs, %zu tasks seen, "
              "the last kill's tasks rescued %.1f s and done %.1f s after it (%.1f s in all)\n",
              kTasks, static_cast<long long>(in_flight_at_kills), duplicates, runs.size(), rescued_after,
              after_last_kill, seconds_since(start));
  EXPECT_EQ(runs.size(), static_cast<std::size_t>(kTasks));  // 0 lost
  EXPECT_EQ(count("status = 'failed'"), 0);
  EXPECT_LE(duplicates, in_flight_at_kills);
  EXPECT_TRUE(rescued);
  EXPECT_TRUE(done_again);
  EXPECT_LE(rescued_after, 3.0 + 1.5 + 1.0);  // the lease, the rescue interval (lease / 2), a second
}

// PostgreSQL restarted five times, fast and immediate by turns, while tasks come due: the worker
// stays up, claims again within 5 s of each restart, and every task ends succeeded. The test
// cluster commits asynchronously, so an immediate restart can lose a completion: that task stays
// running under the worker until its lease (5 s here) expires and the rescuer returns it.
TEST_F(Chaos, PostgresRestartedFiveTimesDuringADrain) {
  write_config(db.url(), "connect_timeout = \"1s\"\n[scheduler]\nschedule = \"@every 200ms\"\nlease = \"5s\"\n"
                         "[retry]\nbreaker_cooldown = \"1s\"\n[metrics]\nlisten = \"\"\n[handlers.ready]\ntype = \"notify\"\n"
                         "[handlers.steady]\ntype = \"notify\"\n");
  // Due over the next 20 s: there is always something to claim. Two kinds, so that the claim
  // prepared again after each restart is the statement for several kinds (claim_statement(2)).
  db.exec("INSERT INTO agentcron.agent_tasks (kind, scheduled_for) "
          "SELECT CASE WHEN i % 2 = 0 THEN 'ready' ELSE 'steady' END, now() + (i % 200) * interval '100 milliseconds' "
          "FROM generate_series(1, 4000) i");
  Process w({"--config", config_path, "run"});
  ASSERT_TRUE(eventually([&] { return count("status = 'succeeded'") > 0; }, 20s)) << w.err();
  double worst = 0;
  for (int restart = 1; restart <= 5; ++restart) {
    pg_ctl(restart % 2 ? "-m fast restart" : "-m immediate restart");
    db.reconnect();
    auto back = Clock::now();
    std::int64_t before = count("status = 'succeeded'");
    bool claiming = eventually([&] { return count("status = 'succeeded'") > before; }, 10s);
    double took = seconds_since(back);
    worst = std::max(worst, took);
    ASSERT_TRUE(claiming) << "restart " << restart << ": no claim for 10 s\n" << w.err().substr(0, 3000);
    EXPECT_LE(took, 5.0) << "restart " << restart;
    ASSERT_TRUE(w.running()) << w.err().substr(0, 3000);
  }
  bool drained = eventually([&] { return count("status = 'succeeded'") == 4000; }, 60s);
  std::printf("chaos restarts: 5 restarts (fast, immediate), claiming again within %.1f s at worst, %lld of 4000 succeeded\n",
              worst, static_cast<long long>(count("status = 'succeeded'")));
  EXPECT_TRUE(drained);
  EXPECT_TRUE(w.running());
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(60s), 0) << w.err().substr(0, 3000);
}

// The network between worker and database stalls for 20 s (a paused TCP proxy: nothing closes,
// nothing arrives). No hang: statements are cut by their timeouts, /readyz says not ready during
// the stall and ready after it, and nothing is lost.
TEST_F(Chaos, ATwentySecondNetworkStallDuringADrain) {
  testing::TcpProxy proxy(db_port());
  std::string url = std::regex_replace(db.url(), std::regex(":[0-9]+/"), ":" + std::to_string(proxy.port()) + "/");
  write_config(url, "connect_timeout = \"2s\"\npool_timeout = \"2s\"\n[timeouts]\nclaim = \"2s\"\nupdate = \"2s\"\n"
                    "[scheduler]\nschedule = \"@every 200ms\"\n[retry]\nbreaker_cooldown = \"1s\"\n"
                    "[metrics]\nlisten = \"127.0.0.1:0\"\n[handlers.ready]\ntype = \"notify\"\n");
  db.exec("INSERT INTO agentcron.agent_tasks (kind, scheduled_for) "
          "SELECT 'ready', now() + (i % 300) * interval '100 milliseconds' FROM generate_series(1, 3000) i");
  Process w({"--config", config_path, "run"});
  ASSERT_TRUE(w.wait_for_log("serving /metrics", 20s)) << w.err();
  std::smatch m;
  std::string err = w.err();
  ASSERT_TRUE(std::regex_search(err, m, std::regex(R"re("listen":"127\.0\.0\.1:([0-9]+)")re")));
  int metrics_port = std::stoi(m[1]);
  auto status = [&](const char* path) {
    auto r = httplib::Client("127.0.0.1", metrics_port).Get(path);
    return r ? r->status : -1;
  };
  ASSERT_TRUE(eventually([&] { return status("/readyz") == 200 && count("status = 'succeeded'") > 0; }, 20s)) << w.err();
  proxy.pause();
  auto stalled = Clock::now();
  bool not_ready = eventually([&] { return status("/readyz") == 503; }, 15s);
  double noticed = seconds_since(stalled);
  bool alive_during = status("/healthz") == 200;
  ASSERT_TRUE(eventually([&] { return seconds_since(stalled) >= 20; }, 25s));  // the stall lasts its 20 s
  proxy.resume();
  auto resumed = Clock::now();
  bool ready_again = eventually([&] { return status("/readyz") == 200; }, 30s);
  double recovered = seconds_since(resumed);
  bool drained = eventually([&] { return count("status = 'succeeded'") == 3000; }, 60s);
  std::printf("chaos network stall: 20 s; /readyz 503 after %.1f s, 200 again %.1f s after it ended; %lld of 3000 succeeded\n",
              noticed, recovered, static_cast<long long>(count("status = 'succeeded'")));
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(60s), 0) << w.err().substr(0, 3000);
  EXPECT_TRUE(not_ready);
  EXPECT_TRUE(alive_during);
  EXPECT_TRUE(ready_again) << w.err().substr(0, 3000);
  EXPECT_TRUE(drained);
  std::string log = w.err();
  // Statements were cut, not waited on: the server's or the client's timeout, or a cut socket.
  EXPECT_TRUE(log.find("\"sqlstate\":\"57014\"") != std::string::npos ||
              log.find("cancelling it") != std::string::npos || log.find("\"sqlstate\":\"08") != std::string::npos)
      << log.substr(0, 3000);
}

// A stall longer than the lease: worker A reaches the database through a proxy that stops for
// 8 s, worker B directly. A's tasks run 10 s, longer than the 3 s lease, so they outlive their
// last renewal: A stops them before their leases run out, B rescues those tasks and runs them.
// Each run of an exec program records its start and end: no two runs of one task overlap, and
// every task ends succeeded.
TEST_F(Chaos, AStallLongerThanTheLeaseNeverRunsATaskTwiceAtOnce) {
  std::string dir = "/tmp/agentcron-chaos-fence-" + std::to_string(::getpid());
  ASSERT_EQ(std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str()), 0);
  std::string log = dir + "/runs-$AGENTCRON_TASK_ID";
  // A takes 8 tasks at a time; B has room for all of them, so a rescued task starts at once.
  auto rest = [&](int concurrency) {
    return "[scheduler]\nschedule = \"@every 200ms\"\nconcurrency = " + std::to_string(concurrency) + "\nlease = \"3s\"\n"
                     "[timeouts]\nupdate = \"1s\"\nclaim = \"1s\"\n[retry]\nbreaker_cooldown = \"1s\"\n"
                     "[metrics]\nlisten = \"\"\n[handlers.work]\ntype = \"exec\"\nkill_after = \"1s\"\n"
                     "command = [\"/bin/sh\", \"-c\", \"echo S $$ $(date +%s%N) >> " + log + "; "
                     "trap 'echo E $$ $(date +%s%N) >> " + log + "; exit 1' TERM; sleep 10 & wait; "
                     "echo E $$ $(date +%s%N) >> " + log + "\"]\n";
  };
  testing::TcpProxy proxy(db_port());
  std::string via_proxy = std::regex_replace(db.url(), std::regex(":[0-9]+/"), ":" + std::to_string(proxy.port()) + "/");
  write_config(via_proxy, "connect_timeout = \"1s\"\npool_timeout = \"1s\"\n" + rest(8));
  std::string config_a = config_path + ".a";
  std::rename(config_path.c_str(), config_a.c_str());
  write_config(db.url(), "connect_timeout = \"1s\"\n" + rest(32));
  db.exec("INSERT INTO agentcron.agent_tasks (kind, max_attempts) SELECT 'work', 10 FROM generate_series(1, 24)");
  Process a({"--config", config_a, "run"});
  ASSERT_TRUE(eventually([&] { return count("status = 'running' AND locked_by LIKE '%:" + std::to_string(a.pid()) + ":%'") >= 4; }, 20s))
      << a.err();
  Process b({"--config", config_path, "run"});
  proxy.pause();
  std::this_thread::sleep_for(8s);  // the stall: longer than the lease
  proxy.resume();
  bool done = eventually([&] { return count("status = 'succeeded'") == 24; }, 90s);
  a.signal(SIGTERM);
  b.signal(SIGTERM);
  EXPECT_EQ(a.wait(60s), 0) << a.err().substr(0, 3000);
  EXPECT_EQ(b.wait(60s), 0) << b.err().substr(0, 3000);
  ::unlink(config_a.c_str());
  ASSERT_TRUE(done) << count("status = 'succeeded'") << " succeeded\n" << a.err().substr(0, 3000);
  int overlaps = 0, runs = 0, twice = 0;
  for (int id = 1; id <= 24; ++id) {
    std::vector<testing::RunSpan> spans = testing::read_runs(dir + "/runs-" + std::to_string(id));
    runs += static_cast<int>(spans.size());
    if (spans.size() > 1) ++twice;
    overlaps += testing::overlapping(spans);
  }
  std::system(("rm -rf " + dir).c_str());
  std::printf("chaos stall past the lease: 24 tasks, %d runs, %d tasks run twice, %d overlapping; "
              "A stopped %s\n",
              runs, twice, overlaps,
              a.err().find("could not renew the task's lease") != std::string::npos ? "its unrenewed handlers" : "nothing");
  EXPECT_EQ(overlaps, 0);
  EXPECT_NE(a.err().find("could not renew the task's lease"), std::string::npos) << a.err().substr(0, 3000);
}

// One connection for everything, fifty slots: the LISTEN connection is given up, claims and
// outcome writes take turns, and everything completes.
TEST_F(Chaos, OneConnectionAndFiftySlots) {
  write_config(db.url(), "connection_limit = 1\n[scheduler]\nschedule = \"@every 100ms\"\nconcurrency = 50\n"
                         "[metrics]\nlisten = \"\"\n[handlers.ready]\ntype = \"notify\"\n"
                         "[handlers.script]\ntype = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep 0.05\"]\n");
  db.insert_due(3000, "ready");
  db.insert_due(200, "script");
  auto start = Clock::now();
  Process w({"--config", config_path, "run"});
  bool done = eventually([&] { return count("status = 'succeeded'") == 3200; }, 90s);
  std::printf("chaos one connection, 50 slots: %lld of 3200 succeeded in %.1f s\n",
              static_cast<long long>(count("status = 'succeeded'")), seconds_since(start));
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(30s), 0) << w.err().substr(0, 3000);
  EXPECT_TRUE(done) << w.err().substr(0, 3000);
  EXPECT_EQ(w.err().find("pool timeout after"), std::string::npos);  // nobody starved for the one connection
}

// SIGTERM at thirty random moments — during start-up, claims, runs and outcome writes: exit 0
// every time, and afterwards no connection of agentcron and no task left running.
TEST_F(Chaos, SigtermThirtyTimesAtRandomMoments) {
  write_config(db.url(), "[scheduler]\nschedule = \"@every 100ms\"\nconcurrency = 16\n[shutdown]\ngrace = \"1s\"\n"
                         "[metrics]\nlisten = \"\"\n[handlers.script]\ntype = \"exec\"\nkill_after = \"1s\"\n"
                         "command = [\"/bin/sh\", \"-c\", \"sleep 0.3\"]\n[handlers.ready]\ntype = \"notify\"\n");
  db.insert_due(2000, "ready");
  db.insert_due(400, "script");
  std::mt19937 rng(std::random_device{}());
  int zero = 0;
  double longest = 0;
  for (int i = 0; i < 30; ++i) {
    Process w({"--config", config_path, "run"});
    ASSERT_TRUE(w.wait_for_log("\"ts\"", 10s)) << w.err();  // it runs (its first log line)
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 400));  // the random moment
    w.signal(SIGTERM);
    auto t = Clock::now();
    auto code = w.wait(30s);
    longest = std::max(longest, seconds_since(t));
    ASSERT_TRUE(code) << "round " << i << "\n" << w.err().substr(0, 3000);
    EXPECT_EQ(*code, 0) << "round " << i << "\n" << w.err().substr(0, 3000);
    if (code && *code == 0) ++zero;
  }
  std::int64_t running = count("status = 'running'");
  bool closed = eventually([&] {
    return db.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'agentcron/%' "
                     "AND datname = current_database()") == 0;
  }, 10s);
  std::printf("chaos SIGTERM: %d of 30 exits were 0, the longest took %.1f s; %lld tasks left running, %lld succeeded\n",
              zero, longest, static_cast<long long>(running), static_cast<long long>(count("status = 'succeeded'")));
  EXPECT_EQ(running, 0);
  EXPECT_TRUE(closed);
}

}  // namespace
}  // namespace agentcron
